//! API mode: the namespace and Runtime reflectors fed by a mocked API server (tower-test
//! `mock::pair`, as kube-rs's controller-rs tests do), then reviews whose answers depend
//! on namespace labels and Runtimes; the same rules with stores filled directly; and
//! `/readyz` waiting for both caches.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kruntimes_api::v1alpha1::Runtime;
use kruntimes_pss::Level;
use kruntimes_testkit::apiserver::{self, RequestLog, Seen};
use kruntimes_testkit::{certs, fixtures, http};
use kruntimes_webhook::admission::{Endpoint, Handlers, Lookup, Runtimes};
use kruntimes_webhook::cluster::{Cluster, NamespaceCache, RuntimeCache};
use kruntimes_webhook::inject::InjectConfig;
use kruntimes_webhook::server::{ReadinessCheck, ServeConfig, serve};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tokio::sync::Notify;

fn namespaces() -> Vec<Value> {
    vec![
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "strict", "resourceVersion": "11",
                "labels": {"kubernetes.io/metadata.name": "strict",
                    "pod-security.kubernetes.io/enforce": "restricted"}}}),
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "team-a", "resourceVersion": "12",
                "labels": {"kubernetes.io/metadata.name": "team-a"}}}),
    ]
}

/// The Runtime `bash` of namespace team-a: Runs up to 10 minutes, input `{"n": int}`,
/// git from github.com only.
fn runtime_bash() -> Value {
    json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "team-a", "uid": "rt-uid-1",
            "generation": 3, "resourceVersion": "21"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "main", "image": "bash:5"}]}},
            "limits": {"maxTimeout": "10m"},
            "inputSchema": {"type": "object", "required": ["n"],
                "properties": {"n": {"type": "integer"}}},
            "git": {"allowedHosts": ["github.com"]},
        },
    })
}

/// The lists the mocked API server answers the reflectors with: the namespaces and the
/// Runtime `bash`.
fn lists() -> Vec<(String, Value)> {
    vec![
        (
            "/api/v1/namespaces".to_owned(),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                "metadata": {"resourceVersion": "100"}, "items": namespaces()}),
        ),
        (
            "/apis/kruntimes.io/v1alpha1/runtimes".to_owned(),
            json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "RuntimeList",
                "metadata": {"resourceVersion": "200"}, "items": [runtime_bash()]}),
        ),
    ]
}

struct Mocked {
    cluster: Arc<Cluster>,
    /// The API server answers once this is notified.
    gate: Arc<Notify>,
    seen: RequestLog,
    server: tokio::task::JoinHandle<()>,
}

fn mocked_cluster() -> Mocked {
    let (client, api) = apiserver::client();
    let gate = Arc::new(Notify::new());
    let seen = RequestLog::default();
    let server = tokio::spawn({
        let (gate, seen) = (gate.clone(), seen.clone());
        async move {
            gate.notified().await;
            api.serve_lists(lists(), seen).await;
        }
    });
    Mocked {
        cluster: Arc::new(Cluster::start(client)),
        gate,
        seen,
        server,
    }
}

async fn wait_synced(cluster: &Cluster) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cluster.is_synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both caches synced within 30 s");
}

fn api_handlers(
    namespaces: Arc<dyn kruntimes_webhook::admission::NamespaceLevels>,
    runtimes: Arc<dyn Runtimes>,
) -> Handlers {
    Handlers::standalone(InjectConfig::default(), Level::Baseline)
        .with_namespaces(namespaces)
        .with_runtimes(runtimes)
}

/// The response of `handlers` to `review`.
fn respond(handlers: &Handlers, review: Value) -> Value {
    let review = serde_json::from_value(review).unwrap();
    let out = handlers.review(Endpoint::Validate, review).unwrap();
    serde_json::to_value(out).unwrap()["response"].clone()
}

/// run-create.json (Run "hello" in team-a, Runtime "bash", timeout 1m) with its spec
/// changed by `edit`.
fn run_review(edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = fixtures::json("run-create.json");
    edit(&mut review["request"]["object"]["spec"]);
    review
}

fn causes(response: &Value) -> Vec<(String, String)> {
    response["status"]["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap().to_owned(),
                        c["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The reviews every API-mode source of namespaces and Runtimes must answer alike.
fn check_reviews(handlers: &Handlers) {
    check_pod_security_by_namespace(handlers);
    check_runs_against_the_runtime(handlers);
    check_missing_runtimes_and_workflow_steps(handlers);
}

/// Pod Security of Runtime templates follows the namespaces' labels.
fn check_pod_security_by_namespace(handlers: &Handlers) {
    // Pod Security from the namespace's labels: `strict` enforces restricted, so a
    // template that only meets baseline is refused there and allowed in team-a.
    let r = respond(
        handlers,
        fixtures::json("runtime-create-restricted-namespace.json"),
    );
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    let mut unlabeled = fixtures::json("runtime-create-restricted-namespace.json");
    unlabeled["request"]["namespace"] = json!("team-a");
    unlabeled["request"]["object"]["metadata"]["namespace"] = json!("team-a");
    let r = respond(handlers, unlabeled);
    assert_eq!(r["allowed"], true, "{r}");
}

/// A Run against its Runtime: timeout, input schema, git hosts.
fn check_runs_against_the_runtime(handlers: &Handlers) {
    // A valid Run: allowed, and no standalone warning.
    let r = respond(handlers, run_review(|_| {}));
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none_or(Value::is_null), "{r}");

    // timeout: 10m is the Runtime's maxTimeout; 10m1s is over.
    let r = respond(handlers, run_review(|s| s["timeout"] = json!("10m")));
    assert_eq!(r["allowed"], true, "{r}");
    let r = respond(handlers, run_review(|s| s["timeout"] = json!("10m1s")));
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(
        causes(&r),
        [(
            "spec.timeout".to_owned(),
            "Invalid value: \"10m1s\" (must not exceed the Runtime's limits.maxTimeout (10m))"
                .to_owned()
        )]
    );

    // input against the inputSchema: every error with its path inside the input.
    let r = respond(
        handlers,
        run_review(|s| s["input"] = json!({"n": "three", "m": 1})),
    );
    assert_eq!(r["allowed"], false, "{r}");
    let c = causes(&r);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0, "spec.input");
    assert!(
        c[0].1
            .contains("at /n: \"three\" is not of type \"integer\""),
        "{c:?}"
    );
    let r = respond(handlers, run_review(|s| s["input"] = json!([])));
    assert_eq!(r["allowed"], false, "{r}");
    assert!(causes(&r)[0].1.contains("at /:"), "{r}");
    let r = respond(handlers, run_review(|s| s["input"] = json!({"n": 3})));
    assert_eq!(r["allowed"], true, "{r}");

    // git: github.com is allowed, gitlab.com is not.
    let git = |url: &'static str| {
        run_review(move |s| {
            let spec = s.as_object_mut().unwrap();
            spec.remove("script");
            spec.insert("git".into(), json!({"url": url}));
            spec.insert("entrypoint".into(), json!("main.sh"));
        })
    };
    let r = respond(handlers, git("https://github.com/org/repo"));
    assert_eq!(r["allowed"], true, "{r}");
    let r = respond(handlers, git("https://gitlab.com/org/repo"));
    assert_eq!(r["allowed"], false, "{r}");
    let c = causes(&r);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0, "spec.git.url");
    assert!(c[0].1.starts_with("Forbidden: \"gitlab.com\""), "{c:?}");
}

/// Runtimes not found, Workflow steps, and cancellations.
fn check_missing_runtimes_and_workflow_steps(handlers: &Handlers) {
    // A Runtime that does not exist (yet): a warning, not a denial.
    let r = respond(
        handlers,
        run_review(|s| s["runtimeRef"]["name"] = json!("python")),
    );
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        r["warnings"],
        json!(["Runtime \"python\" not found in \"team-a\": timeout, input and git not checked"])
    );
    // Same name, other namespace: not found either.
    let mut elsewhere = run_review(|_| {});
    elsewhere["request"]["namespace"] = json!("strict");
    elsewhere["request"]["object"]["metadata"]["namespace"] = json!("strict");
    let r = respond(handlers, elsewhere);
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not found in \"strict\""),
        "{r}"
    );

    // A Workflow step: the same rules at the step's path.
    let mut wf = fixtures::json("workflow-create-invalid.json");
    wf["request"]["namespace"] = json!("team-a");
    let object = &mut wf["request"]["object"];
    object["metadata"]["namespace"] = json!("team-a");
    object["spec"] = json!({"jobs": [{"name": "build", "steps": [
        {"name": "ok", "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash",
            "script": "true", "timeout": "5m"}},
        {"name": "long", "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash",
            "script": "true", "timeout": "1h"}},
    ]}]});
    let r = respond(handlers, wf);
    assert_eq!(r["allowed"], false, "{r}");
    let c = causes(&r);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0, "spec.jobs[0].steps[1].run.timeout");

    // Cancelling a Run is not checked against the Runtime again: the Runtime may have
    // lowered its maxTimeout since the Run was admitted.
    let mut cancel = fixtures::json("run-update-cancel.json");
    cancel["request"]["namespace"] = json!("team-a");
    for object in ["object", "oldObject"] {
        cancel["request"][object]["spec"]["runtimeRef"]["name"] = json!("bash");
        cancel["request"][object]["spec"]["timeout"] = json!("1h");
    }
    let r = respond(handlers, cancel);
    assert_eq!(r["allowed"], true, "{r}");
}

#[tokio::test]
async fn reflectors_from_a_mocked_api_server_drive_the_reviews() {
    let m = mocked_cluster();
    assert!(!m.cluster.is_synced());
    m.gate.notify_one();
    wait_synced(&m.cluster).await;
    let handlers = api_handlers(m.cluster.namespace_levels(), m.cluster.runtimes());
    let requests_after_sync = m.seen.requests().len();
    check_reviews(&handlers);

    let seen = m.seen.requests();
    // Reviews read the caches: no API request was made for any of them.
    assert_eq!(seen.len(), requests_after_sync, "{seen:#?}");
    // One list and one watch per cache; the namespace one asks for metadata only.
    let lists: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.query_value("watch") != Some("true"))
        .collect();
    assert_eq!(lists.len(), 2, "{seen:#?}");
    let namespace_list = lists
        .iter()
        .find(|r| r.path == "/api/v1/namespaces" && !r.query.is_empty())
        .unwrap();
    let accept = namespace_list.accept.as_deref().unwrap_or_default();
    assert!(
        accept.contains("as=PartialObjectMetadataList"),
        "{namespace_list:?}"
    );
    assert!(
        lists
            .iter()
            .any(|r| r.path == "/apis/kruntimes.io/v1alpha1/runtimes" && !r.query.is_empty()),
        "{seen:#?}"
    );
    m.server.abort();
    Arc::try_unwrap(m.cluster).unwrap().shutdown().await;
}

#[test]
fn stores_filled_directly_give_the_same_answers() {
    let (ns_store, mut ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    ns_writer.apply_watcher_event(&Event::Init);
    for ns in namespaces() {
        ns_writer.apply_watcher_event(&Event::InitApply(serde_json::from_value(ns).unwrap()));
    }
    ns_writer.apply_watcher_event(&Event::InitDone);
    let (rt_store, mut rt_writer) = reflector::store::<Runtime>();
    rt_writer.apply_watcher_event(&Event::Init);
    rt_writer.apply_watcher_event(&Event::InitApply(
        serde_json::from_value(runtime_bash()).unwrap(),
    ));
    rt_writer.apply_watcher_event(&Event::InitDone);
    let handlers = api_handlers(
        Arc::new(NamespaceCache(ns_store)),
        Arc::new(RuntimeCache {
            store: rt_store,
            synced: Arc::new(AtomicBool::new(true)),
        }),
    );
    check_reviews(&handlers);

    // A map of Runtimes works as a source too (what `krt` can use offline).
    let runtime: Runtime = serde_json::from_value(runtime_bash()).unwrap();
    let map = BTreeMap::from([(("team-a".to_owned(), "bash".to_owned()), runtime)]);
    let labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::from([(
        "strict".to_owned(),
        BTreeMap::from([(
            "pod-security.kubernetes.io/enforce".to_owned(),
            "restricted".to_owned(),
        )]),
    )]);
    check_reviews(&api_handlers(Arc::new(labels), Arc::new(map)));
}

#[test]
fn a_runtime_cache_not_synced_yet_warns_instead_of_denying() {
    let (store, _writer) = reflector::store::<Runtime>();
    let cache = RuntimeCache {
        store,
        synced: Arc::new(AtomicBool::new(false)),
    };
    assert!(matches!(cache.lookup("team-a", "bash"), Lookup::NotSynced));
    let handlers = api_handlers(
        Arc::new(kruntimes_webhook::admission::Unlabeled),
        Arc::new(cache),
    );
    let r = respond(&handlers, run_review(|s| s["timeout"] = json!("23h")));
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        r["warnings"],
        json!(["Runtime cache not synced yet: \"bash\" not checked (timeout, input, git)"])
    );
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    http::get(addr, "/readyz").await
}

#[tokio::test]
async fn readyz_waits_for_tls_and_both_caches() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let m = mocked_cluster();
    let handlers = api_handlers(m.cluster.namespace_levels(), m.cluster.runtimes());
    let readiness: Arc<dyn ReadinessCheck> = m.cluster.clone();
    let config = ServeConfig::new(&cert_file, &key_file, handlers)
        .with_reload_interval(Duration::from_millis(20))
        .with_readiness(readiness);
    let running = serve(
        config,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    // Neither the certificate nor the caches yet.
    let (status, body) = readyz(running.admin_addr).await;
    assert_eq!(status, 503);
    assert!(body.contains("no serving certificate loaded"), "{body}");
    assert!(body.contains("runtimes cache not synced"), "{body}");

    // The certificate, but not the caches: still 503.
    certs::self_signed().write_to(dir.path());
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (status, body) = readyz(running.admin_addr).await;
            assert_eq!(status, 503, "{body}");
            if !body.contains("certificate") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("certificate loaded within 30 s");
    assert!(body.contains("namespaces cache not synced"), "{body}");

    // The API server answers: ready.
    m.gate.notify_one();
    wait_synced(&m.cluster).await;
    assert_eq!(readyz(running.admin_addr).await, (200, "ok\n".to_owned()));
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    m.server.abort();
}

#[test]
fn the_registration_in_the_docs_is_the_deployed_one() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let deployed =
        std::fs::read_to_string(format!("{root}/deploy/webhook-configurations.yaml")).unwrap();
    let docs = std::fs::read_to_string(format!("{root}/docs/webhook.md")).unwrap();
    let section = docs
        .split("## Registering the webhook")
        .nth(1)
        .expect("docs/webhook.md has a Registering the webhook section");
    assert!(
        section.contains(&format!("```yaml\n{deployed}```")),
        "docs/webhook.md and deploy/webhook-configurations.yaml differ"
    );
    // The choices the docs explain, read back from the YAML itself.
    let objects: Vec<Value> = deployed
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    assert_eq!(objects.len(), 2);
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["kruntimes.io/ca-bundle"],
            "self-managed"
        );
        for webhook in object["webhooks"].as_array().unwrap() {
            assert_eq!(webhook["failurePolicy"], "Fail");
            assert_eq!(webhook["sideEffects"], "None");
            assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
            assert_eq!(
                webhook["namespaceSelector"]["matchExpressions"][0]["values"],
                json!(["kube-system", "kruntimes-system"])
            );
        }
    }
    assert_eq!(objects[1]["webhooks"][0]["reinvocationPolicy"], "IfNeeded");
}
