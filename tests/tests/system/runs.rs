//! A Runtime becomes a warm pool, and Runs created through the API become processes in
//! its pods and end in the phase that tells what happened.

use kruntimes_api::v1alpha1::{Run, RunPhase, Runtime};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::{Cluster, eventually};

/// A Runtime whose pods pass Pod Security `restricted`.
pub(crate) fn runtime(name: &str, replicas: i32, concurrency: i32) -> Runtime {
    kruntimes_e2e::fixtures::restricted_runtime(name, replicas, concurrency)
}

pub(crate) fn run(name: &str, runtime: &str, spec: Value) -> Run {
    let mut spec = spec;
    spec["runtimeRef"] = json!({"name": runtime});
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Creates `runtime` in `namespace` and waits until every replica is ready.
pub(crate) async fn ready_runtime(cluster: &Cluster, namespace: &str, runtime: Runtime) -> Runtime {
    let runtimes: Api<Runtime> = Api::namespaced(cluster.client.clone(), namespace);
    let name = runtime.metadata.name.clone().unwrap();
    let replicas = runtime.spec.replicas;
    runtimes
        .create(&PostParams::default(), &runtime)
        .await
        .unwrap();
    eventually(&format!("Runtime {name} ready"), || async {
        let current = runtimes.get(&name).await.ok()?;
        let status = current.status.as_ref()?;
        (status.ready_replicas == Some(replicas)).then_some(current)
    })
    .await
}

/// Waits until Run `name` is terminal and returns it.
pub(crate) async fn finished(runs: &Api<Run>, name: &str) -> Run {
    eventually(&format!("Run {name} terminal"), || async {
        let run = runs.get(name).await.ok()?;
        let phase = run.status.as_ref()?.phase?;
        phase.is_terminal().then_some(run)
    })
    .await
}

pub(crate) fn phase(run: &Run) -> RunPhase {
    run.status.as_ref().and_then(|s| s.phase).unwrap()
}

#[tokio::test]
async fn runs_reach_the_phase_that_tells_what_happened() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("runs").await;
    ready_runtime(&cluster, &ns, runtime("bash", 2, 2)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let post = PostParams::default();
    let cases = [
        (
            "ok",
            json!({"interpreter": "bash", "script": "echo out; echo err >&2"}),
        ),
        ("fails", json!({"interpreter": "bash", "script": "exit 3"})),
        (
            "slow",
            json!({"interpreter": "bash", "script": "sleep 60", "timeout": "2s"}),
        ),
        (
            "stdin",
            json!({"interpreter": "python", "script":
            "import json,os; print(json.load(open(os.environ['KRT_INPUT_FILE']))['n'] * 2)",
            "input": {"n": 21}}),
        ),
    ];
    for (name, spec) in &cases {
        runs.create(&post, &run(name, "bash", spec.clone()))
            .await
            .unwrap();
    }
    let ok = finished(&runs, "ok").await;
    assert_eq!(phase(&ok), RunPhase::Succeeded, "{:?}", ok.status);
    let output = ok.status.as_ref().unwrap().output.as_ref().unwrap();
    assert_eq!(
        (output.stdout_tail.as_str(), output.stderr_tail.as_str()),
        ("out\n", "err\n")
    );
    assert!(ok.status.as_ref().unwrap().pod.is_some());

    let fails = finished(&runs, "fails").await;
    assert_eq!(phase(&fails), RunPhase::Failed);
    assert_eq!(fails.status.as_ref().unwrap().exit_code, Some(3));

    let slow = finished(&runs, "slow").await;
    assert_eq!(phase(&slow), RunPhase::TimedOut, "{:?}", slow.status);

    let stdin = finished(&runs, "stdin").await;
    assert_eq!(phase(&stdin), RunPhase::Succeeded, "{:?}", stdin.status);
    assert_eq!(
        stdin
            .status
            .as_ref()
            .unwrap()
            .output
            .as_ref()
            .unwrap()
            .stdout_tail,
        "42\n"
    );

    // Cancelled through spec.cancel while it runs.
    runs.create(
        &post,
        &run(
            "cancelled",
            "bash",
            json!({"interpreter": "bash", "script": "sleep 60"}),
        ),
    )
    .await
    .unwrap();
    eventually("Run cancelled running", || async {
        let run = runs.get("cancelled").await.ok()?;
        (run.status?.phase? == RunPhase::Running).then_some(())
    })
    .await;
    runs.patch(
        "cancelled",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .unwrap();
    let cancelled = finished(&runs, "cancelled").await;
    assert_eq!(
        phase(&cancelled),
        RunPhase::Cancelled,
        "{:?}",
        cancelled.status
    );

    // A Run naming no Runtime says so and runs nothing.
    runs.create(
        &post,
        &run(
            "orphan",
            "nope",
            json!({"interpreter": "bash", "script": "echo no"}),
        ),
    )
    .await
    .unwrap();
    let orphan = eventually("Run orphan reports the missing Runtime", || async {
        let run = runs.get("orphan").await.ok()?;
        let status = run.status.clone()?;
        status.message.as_deref()?.contains("nope").then_some(run)
    })
    .await;
    let status = orphan.status.unwrap();
    assert!(
        status.start_time.is_none() && status.pod.is_none(),
        "{status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// Creates a Run whose entrypoint escapes its files in `runs`' namespace and checks
/// that the validating webhook refused it through the API server: a 422 with the
/// webhook's message and a cause naming `spec.entrypoint`, and nothing created. Returns
/// that Run and the refusal's message.
pub(crate) async fn escaping_run_is_refused(runs: &Api<Run>) -> (Run, String) {
    let escaping = run(
        "escape",
        "bash",
        json!({"interpreter": "bash", "files": {"a.sh": "echo"}, "entrypoint": "../a.sh"}),
    );
    let err = runs
        .create(&PostParams::default(), &escaping)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    // The webhook's own code and causes reach the client, as kube-apiserver passes them.
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    assert!(
        status.message.contains("denied the request"),
        "{}",
        status.message
    );
    let causes = status.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.field == "spec.entrypoint"),
        "{causes:?}"
    );
    assert!(
        runs.get_opt("escape").await.unwrap().is_none(),
        "nothing is created"
    );
    (escaping, status.message)
}

#[tokio::test]
async fn admission_refuses_through_the_api_server() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("admission").await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let (escaping, _) = escaping_run_is_refused(&runs).await;

    // kubectl sees the same refusal.
    let manifest = serde_json::to_string(&escaping).unwrap();
    let out = cluster.kubectl(
        &["-n", &ns, "apply", "--server-side", "-f", "-"],
        Some(&manifest),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kubectl words a 422 its own way ("The request is invalid: ...").
    assert!(
        stderr.contains("spec.entrypoint") && stderr.contains("'..'"),
        "{stderr}"
    );
    cluster.delete_namespace(&ns).await;
}

/// Waits until kubectl reads `replicas` as Runtime `name`'s `readyReplicas`.
async fn kubectl_ready_replicas(cluster: &Cluster, ns: &str, name: &str, replicas: u32) {
    let jsonpath = "jsonpath={.status.readyReplicas}";
    eventually(&format!("Runtime {name} at {replicas} ready"), || async {
        let ready = cluster.kubectl_ok(&["-n", ns, "get", "runtime", name, "-o", jsonpath], None);
        (ready.trim() == replicas.to_string()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_runtime_is_a_warm_pool_of_injected_pods_that_kubectl_sees() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("pool").await;
    let manifest = serde_json::to_string(&runtime("pool", 1, 2)).unwrap();
    cluster.kubectl_ok(
        &["-n", &ns, "apply", "--server-side", "-f", "-"],
        Some(&manifest),
    );
    kubectl_ready_replicas(&cluster, &ns, "pool", 1).await;
    // Its pods carry the injected sidecar.
    let pods = cluster.kubectl_ok(
        &[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "kruntimes.io/runtime=pool",
            "-o",
            "jsonpath={.items[*].spec.initContainers[*].name}",
        ],
        None,
    );
    assert!(
        pods.split_whitespace().any(|name| name == "runtimed"),
        "{pods}"
    );
    // Scaling through the scale subresource.
    cluster.kubectl_ok(&["-n", &ns, "scale", "runtime/pool", "--replicas=2"], None);
    kubectl_ready_replicas(&cluster, &ns, "pool", 2).await;
    // A Run through kubectl, waited for with kubectl.
    let run_manifest = serde_json::to_string(&run(
        "hello",
        "pool",
        json!({"interpreter": "bash", "script": "echo hello"}),
    ))
    .unwrap();
    cluster.kubectl_ok(&["-n", &ns, "create", "-f", "-"], Some(&run_manifest));
    cluster.kubectl_ok(
        &[
            "-n",
            &ns,
            "wait",
            "run/hello",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=60s",
        ],
        None,
    );
    let stdout = cluster.kubectl_ok(
        &[
            "-n",
            &ns,
            "get",
            "run",
            "hello",
            "-o",
            "jsonpath={.status.output.stdoutTail}",
        ],
        None,
    );
    assert_eq!(stdout, "hello\n");
    cluster.kubectl_ok(&["-n", &ns, "delete", "run", "hello"], None);
    cluster.delete_namespace(&ns).await;
}
