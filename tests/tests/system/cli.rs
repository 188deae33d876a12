//! `krt` against the cluster, as a user runs it (the binary of this build, the
//! administrator's kubeconfig): `krt run --wait` printing a Run's output live and in
//! order and exiting with its status, Ctrl-C cancelling, `krt logs` while the pod
//! holds the output and from the status tails once it is gone, `get`, `describe` and
//! `cancel`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kruntimes_api::v1alpha1::{Run, RunPhase, Runtime};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::runs::{finished, phase, ready_runtime, runtime};
use crate::support::{Cluster, WAIT, eventually};

/// The `krt` binary of this build, beside the test binary's directory.
fn krt_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let krt = dir.join("krt");
    assert!(
        krt.is_file(),
        "{} does not exist: build it first (cargo build -p krt)",
        krt.display()
    );
    krt
}

/// `krt COMMAND --kubeconfig K -n NS ARGS...`, stdin closed (the access flags right
/// after the command: what follows `--` is the Run's command).
fn krt(cluster: &Cluster, ns: &str, args: &[&str]) -> tokio::process::Command {
    krt_as(&cluster.kubeconfig, ns, args)
}

/// `krt` with another kubeconfig (another user).
fn krt_as(kubeconfig: &Path, ns: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(krt_binary());
    command
        .arg(args[0])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("-n")
        .arg(ns)
        .args(&args[1..])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `krt ARGS` to its end: (exit code, stdout, stderr).
async fn krt_output(cluster: &Cluster, ns: &str, args: &[&str]) -> (i32, String, String) {
    krt_output_as(&cluster.kubeconfig, ns, args).await
}

/// Runs `krt ARGS` with another kubeconfig: (exit code, stdout, stderr).
async fn krt_output_as(kubeconfig: &Path, ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(WAIT, krt_as(kubeconfig, ns, args).output())
        .await
        .unwrap_or_else(|_| panic!("krt {args:?} did not end within {WAIT:?}"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `krt run -f FILE --wait` started, stdout and stderr piped; its stdout's lines.
fn spawn_run_wait(
    cluster: &Cluster,
    ns: &str,
    file: &Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = krt(
        cluster,
        ns,
        &["run", "-f", file.to_str().unwrap(), "--wait"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdout)
}

fn write_run(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let manifest = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": name},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": script},
    });
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[tokio::test]
async fn krt_run_wait_streams_live_output_and_exits_with_the_runs_status() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("krt-run").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 4)).await;
    let dir = tempfile::tempdir().unwrap();

    live_output_in_order_with_the_programs_code(&cluster, &ns, dir.path()).await;
    other_endings(&cluster, &ns, dir.path()).await;
    an_invalid_manifest_creates_nothing(&cluster, &ns, dir.path()).await;
    logs_after_completion(&cluster, &ns).await;
    get_and_describe(&cluster, &ns).await;
    a_workflow_prefixes_each_steps_output(&cluster, &ns, dir.path()).await;
    not_found_names_what_is_missing(&cluster, &ns).await;
    cluster.delete_namespace(&ns).await;
}

/// Live: the first line is printed while the program still sleeps before its last.
async fn live_output_in_order_with_the_programs_code(cluster: &Cluster, ns: &str, dir: &Path) {
    let script =
        "for i in 1 2 3; do echo out $i; echo err $i >&2; done; sleep 3; echo last; exit 3";
    let file = write_run(dir, "live", script);
    let (mut child, mut stdout) = spawn_run_wait(cluster, ns, &file);
    let stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            all.push(line);
        }
        all
    });
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), ns);
    let mut lines = Vec::new();
    let mut phase_when_printed = None;
    while let Some(line) = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("krt run --wait prints the Run's output")
        .unwrap()
    {
        if phase_when_printed.is_none() {
            // Printed while the program still runs (it sleeps before its last line):
            // the Run is not terminal yet.
            phase_when_printed = Some(phase(&runs.get("live").await.unwrap()));
        }
        lines.push(line);
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lines, ["out 1", "out 2", "out 3", "last"]);
    assert_eq!(status.code(), Some(3), "the program's exit code");
    assert_eq!(
        phase_when_printed,
        Some(RunPhase::Running),
        "the first line was printed only once the Run had ended: not live"
    );
    let stderr = stderr.await.unwrap();
    let program: Vec<&String> = stderr.iter().filter(|l| l.starts_with("err ")).collect();
    assert_eq!(program, ["err 1", "err 2", "err 3"], "{stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("run/live created")),
        "{stderr:?}"
    );
}

/// Other endings: a command's code, a timeout, success.
async fn other_endings(cluster: &Cluster, ns: &str, dir: &Path) {
    let (code, _, err) = krt_output(
        cluster,
        ns,
        &[
            "run",
            "--runtime",
            "bash",
            "--wait",
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
    )
    .await;
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("run/krt-"),
        "the generated name is shown: {err}"
    );
    let sleeper = dir.join("sleep.sh");
    std::fs::write(&sleeper, "sleep 60\n").unwrap();
    let (code, _, err) = krt_output(
        cluster,
        ns,
        &[
            "run",
            "--runtime",
            "bash",
            "--script",
            sleeper.to_str().unwrap(),
            "--timeout",
            "1s",
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 124, "TimedOut: {err}");
    let (code, out, err) = krt_output(
        cluster,
        ns,
        &[
            "run",
            "--runtime",
            "bash",
            "--name",
            "ok",
            "--wait",
            "--",
            "echo",
            "fine",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "fine\n"), "{err}");
}

/// An invalid manifest: exit 2 with the violation, nothing created.
async fn an_invalid_manifest_creates_nothing(cluster: &Cluster, ns: &str, dir: &Path) {
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "bad"}, "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "exec"}}).to_string()).unwrap();
    let (code, _, err) =
        krt_output(cluster, ns, &["run", "-f", bad.to_str().unwrap(), "--wait"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("command"), "{err}");
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), ns);
    assert!(runs.get_opt("bad").await.unwrap().is_none());
}

/// `logs` after completion: the whole output, each stream apart.
async fn logs_after_completion(cluster: &Cluster, ns: &str) {
    let (code, out, err) = krt_output(cluster, ns, &["logs", "live"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "out 1\nout 2\nout 3\nlast\n"),
        "{err}"
    );
    assert_eq!(err, "err 1\nerr 2\nerr 3\n");
    let (_, out, err) = krt_output(cluster, ns, &["logs", "live", "--stream", "stderr"]).await;
    assert_eq!((out.as_str(), err.as_str()), ("", "err 1\nerr 2\nerr 3\n"));
}

/// `get` and `describe` of the Runs `live` and `ok`.
async fn get_and_describe(cluster: &Cluster, ns: &str) {
    let (code, out, _) = krt_output(cluster, ns, &["get", "runs"]).await;
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("PHASE") && header.contains("EXIT CODE"),
        "{out}"
    );
    let live = out.lines().find(|l| l.starts_with("live ")).unwrap();
    assert!(live.contains("Failed") && live.contains(" 3 "), "{live}");
    let (_, out, _) = krt_output(cluster, ns, &["get", "runs", "ok", "-o", "name"]).await;
    assert_eq!(out, "run/ok\n");
    let (_, out, _) = krt_output(cluster, ns, &["get", "runs", "ok", "-o", "json"]).await;
    let object: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(object["status"]["phase"], "Succeeded");
    let (_, out, _) = krt_output(cluster, ns, &["get", "runtimes", "--no-headers"]).await;
    assert!(out.starts_with("bash ") && out.contains("1/1"), "{out}");
    let (code, out, err) = krt_output(cluster, ns, &["describe", "run", "live"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Phase:          Failed") && out.contains("Exit Code:      3"),
        "{out}"
    );
    assert!(out.contains("Events:"), "{out}");
}

/// A Workflow: each step's output prefixed, a progress line per step, the first
/// failed step's exit code.
async fn a_workflow_prefixes_each_steps_output(cluster: &Cluster, ns: &str, dir: &Path) {
    let workflow = dir.join("wf.yaml");
    let step = |script: &str| json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": script});
    std::fs::write(&workflow, json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "wf"}, "spec": {"jobs": [
            {"name": "a", "steps": [{"name": "hello", "run": step("echo hi")}]},
            {"name": "b", "needs": ["a"], "steps": [{"name": "fail", "run": step("echo bye; exit 5")}]},
        ]}}).to_string()).unwrap();
    let (code, out, err) = krt_output(
        cluster,
        ns,
        &["run", "-f", workflow.to_str().unwrap(), "--wait"],
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert_eq!(out, "[a/hello] hi\n[b/fail] bye\n", "{err}");
    assert!(err.contains("krt run: [a/hello] Succeeded"), "{err}");
    assert!(err.contains("krt run: [b/fail] Failed"), "{err}");
    assert!(err.contains("krt run: job b: Failed"), "{err}");
}

/// NotFound names what is missing.
async fn not_found_names_what_is_missing(cluster: &Cluster, ns: &str) {
    let (code, _, err) = krt_output(cluster, ns, &["logs", "absent"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("Run \"absent\" not found in namespace"),
        "{err}"
    );
}

#[tokio::test]
async fn ctrl_c_cancels_and_logs_fall_back_to_tails_once_the_pod_is_gone() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("krt-cancel").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 4)).await;
    let dir = tempfile::tempdir().unwrap();
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);

    // SIGINT while --wait follows: spec.cancel is set, krt waits for Cancelled, 130.
    let file = write_run(dir.path(), "interrupted", "echo started; sleep 60");
    let (mut child, mut stdout) = spawn_run_wait(&cluster, &ns, &file);
    let first = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("started"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let run = runs.get("interrupted").await.unwrap();
    assert_eq!(run.spec.cancel, Some(true));
    assert_eq!(
        phase(&run),
        RunPhase::Cancelled,
        "krt waited for the terminal phase"
    );

    // krt cancel on a Run created without --wait.
    let file = write_run(dir.path(), "background", "echo kept in the tail; sleep 60");
    let (code, out, err) = krt_output(&cluster, &ns, &["run", "-f", file.to_str().unwrap()]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "run/background created\n"),
        "{err}"
    );
    eventually("background running", || async {
        let run = runs.get("background").await.ok()?;
        (run.status?.phase? == RunPhase::Running).then_some(())
    })
    .await;
    let (code, out, err) = krt_output(&cluster, &ns, &["cancel", "background"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "run/background cancel requested\n"),
        "{err}"
    );
    let cancelled = finished(&runs, "background").await;
    assert_eq!(phase(&cancelled), RunPhase::Cancelled);
    let (code, _, err) = krt_output(&cluster, &ns, &["cancel", "pod/x"]).await;
    assert_eq!(code, 2, "{err}");

    // The pods go (the Runtime scaled to 0): logs come from the status tails, said so.
    let runtimes: Api<Runtime> = Api::namespaced(cluster.client.clone(), &ns);
    runtimes
        .patch(
            "bash",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let pod = cancelled.status.as_ref().unwrap().pod.clone().unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client.clone(), &ns);
    eventually("the Runtime's pod gone", || async {
        pods.get_opt(&pod).await.ok()?.is_none().then_some(())
    })
    .await;
    let (code, out, err) = krt_output(&cluster, &ns, &["logs", "background"]).await;
    assert_eq!((code, out.as_str()), (0, "kept in the tail\n"), "{err}");
    assert!(
        err.contains("pod is gone") && err.contains("tails"),
        "{err}"
    );
    cluster.delete_namespace(&ns).await;
}

/// A user with a read-only Role on Runs in one namespace: `krt get runs` works, `krt
/// run` and `krt logs` exit 1 naming what RBAC refused (the verb, the resource and the
/// namespace), as docs/cli.md ("RBAC") says.
#[tokio::test]
async fn krt_names_what_rbac_forbids_a_user_with_a_read_only_role() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!(
            "skipped: this scenario needs a user with no rights of its own (the emulated \
             cluster's `jane`, viewer.kubeconfig); KUBECONFIG names a real cluster"
        );
        return;
    }
    let viewer = cluster.kubeconfig.with_file_name("viewer.kubeconfig");
    let ns = cluster.namespace("krt-rbac").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 4)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_run(dir.path(), "done", "echo hello");
    let (code, _, err) = krt_output(&cluster, &ns, &["run", "-f", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    finished(&runs, "done").await;

    // Before any binding jane may not even list.
    let (code, _, err) = krt_output_as(&viewer, &ns, &["get", "runs"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("you may not list"), "{err}");

    let role_rules = |with_pods: bool| {
        let mut rules = vec![
            json!({"apiGroups": ["kruntimes.io"], "resources": ["runs"], "verbs": ["get", "list", "watch"]}),
        ];
        if with_pods {
            rules.push(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}));
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "run-viewer"}, "rules": rules})
    };
    let rbac_api = |kind: &str| -> Api<kube::api::DynamicObject> {
        let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
        let resource = kube::api::ApiResource::from_gvk(&gvk);
        Api::namespaced_with(cluster.client.clone(), &ns, &resource)
    };
    let (roles, bindings) = (rbac_api("Role"), rbac_api("RoleBinding"));
    let apply = PatchParams::apply("kruntimes-e2e");
    roles
        .patch("run-viewer", &apply, &Patch::Apply(role_rules(false)))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "jane-run-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "run-viewer"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]});
    bindings
        .patch("jane-run-viewer", &apply, &Patch::Apply(binding))
        .await
        .unwrap();

    let (code, out, err) = krt_output_as(&viewer, &ns, &["get", "runs"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("done"), "{out}");

    let (code, _, err) =
        krt_output_as(&viewer, &ns, &["run", "--runtime", "bash", "--", "true"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "you may not create runs.kruntimes.io in namespace {ns}"
        )),
        "{err}"
    );
    assert!(
        err.contains("User \"jane\" cannot create resource \"runs\""),
        "{err}"
    );

    // krt logs reads the pod, then its log: each refusal names what was refused.
    let (code, _, err) = krt_output_as(&viewer, &ns, &["logs", "done"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("you may not get pods in namespace {ns}")),
        "{err}"
    );
    roles
        .patch("run-viewer", &apply, &Patch::Apply(role_rules(true)))
        .await
        .unwrap();
    let (code, _, err) = krt_output_as(&viewer, &ns, &["logs", "done"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("you may not get pods/log in namespace {ns}")),
        "{err}"
    );
    assert!(err.contains("cannot get resource \"pods/log\""), "{err}");
    cluster.delete_namespace(&ns).await;
}
