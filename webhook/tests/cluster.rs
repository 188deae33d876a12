//! API mode against a real apiserver: the namespace and Runtime reflectors of
//! `cluster.rs` fed by a live cluster, and the decisions that depend on them (Pod Security
//! level from the namespace's labels, a Run's timeout against its Runtime's `maxTimeout`).
//! `api_mode.rs` covers the same logic against a mocked API server on every run; this is
//! the part no mock proves: real list/watch, real RBAC-free admin credentials, real
//! object encodings.
//!
//! It needs a cluster with the kruntimes CRDs installed
//! (`kubectl apply --server-side -f charts/kruntimes/crds/`), so it is `#[ignore]`d and
//! shows as skipped in a normal run; `KUBECONFIG=... cargo test -p kruntimes-webhook
//! --test cluster -- --ignored` runs it. Run without a cluster, it fails rather than
//! passing vacuously.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kruntimes_api::v1alpha1::Runtime;
use kruntimes_pss::Level;
use kruntimes_webhook::admission::{Handlers, Lookup, parse_review};
use kruntimes_webhook::cluster::{Cluster, client};
use kruntimes_webhook::inject::InjectConfig;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// An AdmissionReview CREATE of `object` as the apiserver sends it.
fn review(kind: &str, resource: &str, namespace: &str, object: &Value) -> Vec<u8> {
    let gvk = json!({"group": "kruntimes.io", "version": "v1alpha1", "kind": kind});
    let gvr = json!({"group": "kruntimes.io", "version": "v1alpha1", "resource": resource});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("e2e-{kind}"),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn run(namespace: &str, timeout: &str) -> Value {
    json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash",
            "script": "echo hi", "timeout": timeout}
    })
}

#[tokio::test]
#[ignore = "needs a cluster: KUBECONFIG and --ignored"]
async fn api_mode_reads_namespace_levels_and_runtimes_from_the_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "this test needs a cluster: set KUBECONFIG"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(None).await.unwrap();
    let namespace = format!("krt-webhook-e2e-{}", std::process::id());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": namespace,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let runtimes: Api<Runtime> = Api::namespaced(client.clone(), &namespace);
    let runtime: Runtime = serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": namespace},
        "spec": {
            "template": {"spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "main", "image": "bash:5.2",
                    "securityContext": {"allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}}}]}},
            "limits": {"maxTimeout": "1m"}
        }
    }))
    .unwrap();
    runtimes
        .create(&PostParams::default(), &runtime)
        .await
        .unwrap();

    let cluster = Cluster::start(client.clone());
    let started = Instant::now();
    // Synced, and the watch has delivered the Runtime created just before.
    while !(cluster.is_synced()
        && matches!(
            cluster.runtimes().lookup(&namespace, "bash"),
            Lookup::Found(_)
        ))
    {
        assert!(
            started.elapsed() < SYNC_TIMEOUT,
            "caches not synced with the Runtime within {SYNC_TIMEOUT:?}: {}",
            cluster.sync_status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handlers = Handlers::standalone(InjectConfig::default(), Level::Baseline)
        .with_namespaces(cluster.namespace_levels())
        .with_runtimes(cluster.runtimes());
    let answer = |body: Vec<u8>| {
        let review = parse_review(&body).unwrap();
        let out = handlers.validate(review).unwrap();
        serde_json::to_value(out.response.unwrap()).unwrap()
    };

    // Within the Runtime's maxTimeout: allowed, with no warning about the Runtime.
    let within = answer(review("Run", "runs", &namespace, &run(&namespace, "30s")));
    assert_eq!(within["allowed"], true, "{within}");
    assert!(within.get("warnings").is_none(), "{within}");

    // Over it: denied, naming the field and the Runtime's limit.
    let over = answer(review("Run", "runs", &namespace, &run(&namespace, "5m")));
    assert_eq!(over["allowed"], false, "{over}");
    let message = over["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.timeout"), "{message}");
    assert!(message.contains("maxTimeout (1m)"), "{message}");

    // A Runtime whose template breaks `restricted`, in a namespace enforcing it: denied
    // with the Pod Security reasons, although the floor is only baseline.
    let mut privileged = serde_json::to_value(&runtime).unwrap();
    privileged["metadata"]["name"] = json!("loose");
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": true});
    let loose = answer(review("Runtime", "runtimes", &namespace, &privileged));
    assert_eq!(loose["allowed"], false, "{loose}");
    let message = loose["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );

    cluster.shutdown().await;
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}
