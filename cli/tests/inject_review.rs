//! `krt inject` and `krt review` as users run them: the real binary, exit statuses,
//! output parsed back.

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_json::Value;

fn krt(args: &[&str]) -> Output {
    krt_stdin(args, None)
}

fn krt_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("krt runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // krt may exit before reading (a bad flag): a broken pipe here is not a failure.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    kruntimes_testkit::fixtures::path(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn documents(output: &Output) -> Vec<Value> {
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn temp_file(name: &str, content: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("krt-inject-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: x}}
spec:
  containers: [{name: main, image: "busybox:1", command: [sleep, "1"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: "busybox:1"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {a: b}
"#;

#[test]
fn inject_renders_pods_and_templates_and_passes_the_rest_through() {
    let file = temp_file("manifests.yaml", MANIFESTS.as_bytes());
    let out = krt(&["inject", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let docs = documents(&out);
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["spec"]["initContainers"][1]["name"], "runtimed");
    assert_eq!(
        docs[0]["spec"]["containers"][0]["command"][0],
        "/krt/bin/runtimed"
    );
    let tpl = &docs[1]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(tpl["spec"]["initContainers"][0]["name"], "krt-install");
    assert!(tpl["metadata"]["annotations"]["kruntimes.io/injection-status"].is_string());
    assert_eq!(docs[2]["data"]["a"], "b");
    assert!(stderr(&out).contains("ConfigMap/cm): passed through unchanged"));
}

#[test]
fn inject_is_idempotent_through_the_cli() {
    let file = temp_file("once.yaml", MANIFESTS.as_bytes());
    let once = krt(&["inject", "-f", file.to_str().unwrap()]);
    let twice = krt_stdin(&["inject", "-f", "-"], Some(&once.stdout));
    assert_eq!(twice.status.code(), Some(0));
    assert_eq!(documents(&once), documents(&twice));
}

/// A Pod carrying a made-up injection status (issue #19): `krt inject` refuses it and
/// prints it unchanged, its own init container, volume and command kept.
#[test]
fn inject_refuses_a_forged_injection_status() {
    let pod = kruntimes_testkit::fixtures::pod_with_forged_injection_status();
    let out = krt_stdin(
        &["inject", "-f", "-"],
        Some(&serde_json::to_vec(&pod).unwrap()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("not written by this injector: it lists the init container \"setup\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(documents(&out), [pod]);
}

#[test]
fn inject_refuses_host_network_pods_and_bad_flags() {
    let pod = b"apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: 'x:1'}]\n";
    let out = krt_stdin(&["inject", "-f", "-"], Some(pod));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("spec.hostNetwork: Forbidden"),
        "{}",
        stderr(&out)
    );
    let out = krt_stdin(
        &["inject", "-f", "-", "--image", "runtimed:latest"],
        Some(pod),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = krt_stdin(&["inject", "-f", "-"], Some(b"a: [unclosed"));
    assert_eq!(out.status.code(), Some(2));
    let out = krt(&["inject", "-f", "/nonexistent/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

fn review(name: &str) -> (Output, Value) {
    let out = krt(&["review", "-f", &fixture(name)]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

#[test]
fn review_denies_an_invalid_workflow_with_exit_1() {
    let (out, json) = review("workflow-create-invalid.json");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json["response"]["allowed"], false);
    assert_eq!(
        json["response"]["uid"],
        "4b4c6a2e-0c1f-4f6e-9f3b-000000000001"
    );
    assert!(stderr(&out).contains("/validate denied"));
}

#[test]
fn review_allows_and_patches_a_runtime_pod() {
    let (out, json) = review("pod-create-runtime.json");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json["response"]["allowed"], true);
    assert_eq!(json["response"]["patchType"], "JSONPatch");
    assert!(stderr(&out).contains("/mutate allowed"));
}

#[test]
fn review_applies_the_pss_floor_flag() {
    let (out, _) = review("runtime-create-unlabeled-namespace.json");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = krt(&[
        "review",
        "-f",
        &fixture("runtime-create-unlabeled-namespace.json"),
        "--pss-floor",
        "restricted",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn review_rejects_broken_input_with_exit_2() {
    let out = krt_stdin(&["review", "-f", "-"], Some(b"{not json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("malformed AdmissionReview"));
    let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{}}}"#;
    let out = krt_stdin(&["review", "-f", "-"], Some(no_uid));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let big = vec![b' '; 7 * 1024 * 1024 + 1];
    let out = krt_stdin(&["review", "-f", "-"], Some(&big));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("larger than"));
}
