//! The cluster commands' argument and error handling: against a mocked API server
//! (testkit's tower-test verifier, no network) for what the API answers (403
//! Forbidden, 404, a log's records), and through the binary for what happens before
//! any request (no kubeconfig, an unreachable server, bad flags).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use http::Method;
use krt::cluster::records::Stream;
use krt::cluster::submit::{Submission, submit};
use krt::cluster::{Cluster, ClusterError, cancel, logs, wait};
use krt::commands::run::result_file::ResultSink;
use kruntimes_testkit::apiserver::{self, Answer, Scenario};
use serde_json::json;

const RUNS: &str = "/apis/kruntimes.io/v1alpha1/namespaces/team/runs";

fn mocked() -> (Cluster, apiserver::ApiServerVerifier) {
    let (client, verifier) = apiserver::client();
    (Cluster::with_client(client, "team"), verifier)
}

#[tokio::test]
async fn forbidden_names_the_verb_the_resource_and_the_namespace() {
    let (cluster, mut server) = mocked();
    let scenario = Scenario::new("get forbidden").then(
        Method::GET,
        format!("{RUNS}/r1"),
        Answer::Json(403, apiserver::status(403, "Forbidden")),
    );
    let (result, _) = tokio::join!(wait::get_run(&cluster, "r1"), server.run(&scenario));
    let err = result.unwrap_err();
    assert!(matches!(err, ClusterError::Forbidden { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("forbidden: you may not get runs.kruntimes.io in namespace team:"),
        "{message}"
    );
    assert_eq!(err.exit_code(), 1);
}

#[tokio::test]
async fn cancelling_a_run_that_does_not_exist_says_so() {
    let (cluster, mut server) = mocked();
    let scenario = Scenario::new("patch not found").then(
        Method::PATCH,
        format!("{RUNS}/gone"),
        Answer::Json(404, apiserver::status(404, "NotFound")),
    );
    let targets = vec!["run/gone".to_owned()];
    let (result, seen) = tokio::join!(cancel::cancel(&cluster, &targets), server.run(&scenario));
    assert_eq!(seen[0].body, json!({"spec": {"cancel": true}}));
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Run \"gone\" not found in namespace team; list them with `krt get runs -n team`"
    );
    assert_eq!(err.exit_code(), 1);
}

#[tokio::test]
async fn a_bad_target_is_refused_before_any_request() {
    let (cluster, server) = mocked();
    let targets = vec!["ok".to_owned(), "pod/x".to_owned()];
    let err = cancel::cancel(&cluster, &targets).await.unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    drop(cluster);
    server.no_more_requests().await;
}

#[tokio::test]
async fn logs_of_a_run_whose_pod_is_gone_come_from_the_status() {
    let (cluster, mut server) = mocked();
    let run = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "team", "uid": "u-1"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo"},
        "status": {"phase": "Succeeded", "pod": "bash-0", "executionId": "u-1", "exitCode": 0,
                   "output": {"stdoutTail": "tail\n", "stderrTail": "", "truncated": false}}});
    let scenario = Scenario::new("logs from tails")
        .then(Method::GET, format!("{RUNS}/r"), Answer::Json(200, run))
        .then(
            Method::GET,
            "/api/v1/namespaces/team/pods/bash-0",
            Answer::Json(404, apiserver::status(404, "NotFound")),
        );
    let (result, _) = tokio::join!(
        logs::logs(&cluster, "r", false, Some(Stream::Stderr)),
        server.run(&scenario)
    );
    assert_eq!(result.unwrap(), 0);
}

#[tokio::test]
async fn logs_read_the_records_of_the_run_from_the_pod_log() {
    let (cluster, mut server) = mocked();
    let run = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "team", "uid": "u-1"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo"},
        "status": {"phase": "Running", "pod": "bash-0", "executionId": "u-1",
                   "startTime": "2026-01-01T00:00:10Z"}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bash-0", "namespace": "team",
                     "annotations": {"kruntimes.io/injection-status": "{\"container\":\"main\"}"}},
        "spec": {"containers": [{"name": "sidecar"}, {"name": "main"}]}});
    // One record of the Run as the log's whole body (the mock answers JSON).
    let record = json!({"krt": 1, "run": "u-1", "stream": "stdout", "offset": 0, "data": "x\n"});
    let scenario = Scenario::new("logs from the pod")
        .then(Method::GET, format!("{RUNS}/r"), Answer::Json(200, run))
        .then(
            Method::GET,
            "/api/v1/namespaces/team/pods/bash-0",
            Answer::Json(200, pod),
        )
        .then(
            Method::GET,
            "/api/v1/namespaces/team/pods/bash-0/log",
            Answer::Json(200, record),
        );
    let (result, seen) = tokio::join!(
        logs::logs(&cluster, "r", false, Some(Stream::Stderr)),
        server.run(&scenario)
    );
    assert_eq!(result.unwrap(), 0);
    let log = &seen[2];
    assert_eq!(
        log.query_value("container"),
        Some("main"),
        "the injected container"
    );
    assert_eq!(log.query_value("follow"), None);
    assert_eq!(
        log.query_value("sinceTime"),
        Some("2026-01-01T00:00:09Z"),
        "a second before the Run started"
    );
}

/// `submit` of Run `r` (its script `script`) against the mocked API server playing
/// `scenario`, with a result file; returns krt's status and the result written.
async fn submit_run(script: &str, wait: bool, scenario: Scenario) -> (i32, serde_json::Value) {
    let (cluster, mut server) = mocked();
    let run = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": script}});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let sink = ResultSink::prepare(&path, false).unwrap();
    let submission = Submission::Run(Box::new(serde_json::from_value(run).unwrap()));
    let (ending, _) = tokio::join!(
        submit(&cluster, submission, wait, &sink),
        server.run(&scenario)
    );
    let ending = ending.unwrap();
    sink.finish(&ending);
    let result = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (ending.status, result)
}

#[tokio::test]
async fn a_followed_run_that_failed_writes_the_programs_status_as_its_result() {
    let ended = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "team"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "exit 2"},
        "status": {"phase": "Failed", "exitCode": 2, "reason": "NonZeroExit"}});
    // Created, then read once: terminal, with no pod left to read a log from.
    let scenario = Scenario::new("run --wait, failed")
        .then(Method::POST, RUNS, Answer::Echo(201))
        .then(Method::GET, format!("{RUNS}/r"), Answer::Json(200, ended));
    let (status, result) = submit_run("exit 2", true, scenario).await;
    assert_eq!(status, 2);
    assert_eq!(result["source"], "program");
    assert_eq!(result["reason"], "ProgramFailed");
    assert_eq!(result["exitCode"], 2);
    assert_eq!(result["phase"], "Failed");
    assert_eq!(result["local"], false);
    assert_eq!(
        result["object"],
        json!({"kind": "Run", "name": "r", "namespace": "team"})
    );
}

#[tokio::test]
async fn a_run_created_without_wait_is_krts_0_and_names_the_run() {
    let scenario = Scenario::new("run, created").then(Method::POST, RUNS, Answer::Echo(201));
    let (status, result) = submit_run("true", false, scenario).await;
    assert_eq!(status, 0);
    assert_eq!(result["source"], "krt");
    assert_eq!(result["reason"], "Created");
    assert_eq!(result["phase"], serde_json::Value::Null, "not followed");
    assert_eq!(result["object"]["name"], "r");
}

fn krt() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_krt"));
    command
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    command
}

#[test]
fn without_a_kubeconfig_krt_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let out = krt()
        .args(["get", "runs"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("krt get: no cluster configured:"), "{err}");
    assert!(err.contains("--kubeconfig FILE"), "{err}");
    let out = krt()
        .args(["logs", "r", "--kubeconfig"])
        .arg(home.path().join("nope"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read --kubeconfig"), "{err}");
}

#[test]
fn an_unreachable_api_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    let config = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://127.0.0.1:{port}"), "insecure-skip-tls-verify": true}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}],
        "current-context": "x"});
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let out = krt()
        .args(["get", "runs", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the Kubernetes API server https://127.0.0.1:{port}"
        )),
        "{err}"
    );
    let out = krt()
        .args(["get", "runs", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--context", "other"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("other"), "an unknown context is named: {err}");
}

#[test]
fn bad_run_flags_are_bad_input_before_any_request() {
    let cases: [&[&str]; 5] = [
        &["run"],
        &["run", "--runtime", "bash"],
        &["run", "--runtime", "bash", "--script", "/nonexistent/s.sh"],
        &[
            "run",
            "--runtime",
            "bash",
            "--timeout",
            "soon",
            "--",
            "true",
        ],
        &["run", "--local", "--runtime", "bash"],
    ];
    for args in cases {
        let out = krt()
            .args(args)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("no cluster configured"), "{args:?}: {err}");
    }
    let out = krt().args(["get", "pods"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_refused_manifest_or_no_cluster_is_krts_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let manifest = dir.path().join("run.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: t}\nspec: {runtimeRef: {name: bash}, interpreter: cobol, script: 'exit 2'}\n",
    )
    .unwrap();
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let out = krt()
        .args(["run", "--wait", "-f"])
        .arg(&manifest)
        .arg("--result-file")
        .arg(&path)
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = read(&path);
    assert_eq!(refused["source"], "krt");
    assert_eq!(refused["reason"], "InvalidInput");
    assert_eq!(refused["local"], false);

    let out = krt()
        .args(["run", "--wait", "--runtime", "bash", "--result-file"])
        .arg(&path)
        .args(["--", "true"])
        .env("HOME", dir.path())
        .env("KUBECONFIG", dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let no_cluster = read(&path);
    assert_eq!(no_cluster["source"], "krt");
    assert_eq!(no_cluster["reason"], "PlatformError");
    let message = no_cluster["message"].as_str().unwrap();
    assert!(message.starts_with("no cluster configured"), "{message}");
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = krt().args(["completion", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("describe") && script.contains("cancel"),
            "{shell}"
        );
    }
}
