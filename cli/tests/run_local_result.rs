//! `krt run --local --result-file PATH`: the result document tells the program's exit
//! status from krt's own where the numbers are the same (2, 124, 130), for a Run and a
//! Workflow, and it is written also on bad input and on signals; a bad path is refused
//! before anything runs.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use kruntimes_testkit::runtimed::binary as runtimed;

#[path = "support/krt_process.rs"]
mod support;
use serde_json::Value;
use support::{first_line, read_stderr_until, signal};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_manifest(dir: &Path, spec: &str) -> PathBuf {
    let path = dir.join("run.yaml");
    let text = format!(
        "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata:\n  name: t\nspec:\n  runtimeRef: {{name: bash}}\n{spec}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn krt(file: &Path, result: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_krt"));
    command
        .args(["run", "--local", "-f"])
        .arg(file)
        .arg("--result-file")
        .arg(result)
        .env("KRT_RUNTIMED_BIN", runtimed());
    command
}

fn run(file: &Path, result: &Path) -> Output {
    krt(file, result).output().unwrap()
}

fn result(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no result at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `krtExitStatus`, `source`, `reason`, `phase` and `exitCode` of a result.
fn summary(result: &Value) -> (i64, &str, &str, Option<&str>, Option<i64>) {
    (
        result["krtExitStatus"].as_i64().unwrap(),
        result["source"].as_str().unwrap(),
        result["reason"].as_str().unwrap(),
        result["phase"].as_str(),
        result["exitCode"].as_i64(),
    )
}

#[test]
fn a_program_exiting_2_is_told_from_krt_refusing_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let file = run_manifest(dir.path(), "  interpreter: bash\n  script: 'exit 2'\n");
    let out = run(&file, &path);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let program = result(&path);
    assert_eq!(
        summary(&program),
        (2, "program", "ProgramFailed", Some("Failed"), Some(2))
    );
    assert_eq!(program["apiVersion"], "krt.kruntimes.io/v1");
    assert_eq!(program["kind"], "RunResult");
    assert_eq!(program["local"], true);
    assert_eq!(program["object"]["name"], "t");
    assert_eq!(program["run"]["reason"], "NonZeroExit");

    let file = run_manifest(dir.path(), "  interpreter: cobol\n  script: 'exit 2'\n");
    let out = run(&file, &path);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let refused = result(&path);
    assert_eq!(summary(&refused), (2, "krt", "InvalidInput", None, None));
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("spec.interpreter"), "{message}");
    assert_eq!(refused["object"], Value::Null, "nothing was validated");
}

#[test]
fn a_timeout_is_told_from_a_program_exiting_124() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let file = run_manifest(
        dir.path(),
        "  interpreter: bash\n  timeout: 1s\n  script: 'exec sleep 30'\n",
    );
    let out = run(&file, &path);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert_eq!(
        summary(&result(&path)),
        (124, "krt", "TimedOut", Some("TimedOut"), None)
    );

    let file = run_manifest(dir.path(), "  interpreter: bash\n  script: 'exit 124'\n");
    let out = run(&file, &path);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert_eq!(
        summary(&result(&path)),
        (124, "program", "ProgramFailed", Some("Failed"), Some(124))
    );
}

#[test]
fn a_workflow_names_the_failed_step_and_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let file = dir.path().join("wf.yaml");
    std::fs::write(
        &file,
        "apiVersion: kruntimes.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: wf\nspec:\n  jobs:\n  - name: a\n    steps:\n    - name: ok\n      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'true'}\n    - name: bad\n      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'exit 3'}\n  - name: b\n    needs: [a]\n    steps:\n    - name: s\n      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'true'}\n",
    )
    .unwrap();
    let out = run(&file, &path);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let wf = result(&path);
    assert_eq!(
        summary(&wf),
        (3, "program", "ProgramFailed", Some("Failed"), Some(3))
    );
    assert_eq!(wf["step"], "a/bad");
    assert_eq!(wf["object"]["kind"], "Workflow");
    assert!(wf.get("run").is_none(), "{wf}");
    let jobs: Vec<(&str, &str)> = wf["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap(), j["phase"].as_str().unwrap()))
        .collect();
    assert_eq!(jobs, [("a", "Failed"), ("b", "Skipped")]);
    let steps = &wf["jobs"][0]["steps"];
    assert_eq!(steps[0]["name"], "ok");
    assert_eq!(steps[0]["phase"], "Succeeded");
    assert_eq!(steps[0]["exitCode"], 0);
    assert_eq!(steps[1]["phase"], "Failed");
    assert_eq!(steps[1]["exitCode"], 3);
    assert_eq!(wf["jobs"][1]["steps"][0]["phase"], Value::Null, "never ran");
}

#[test]
fn a_bad_result_path_is_refused_naming_the_flag_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let file = run_manifest(
        dir.path(),
        &format!(
            "  interpreter: bash\n  script: 'touch {}'\n",
            marker.display()
        ),
    );
    for path in [
        dir.path().join("missing/result.json"),
        dir.path().to_owned(),
    ] {
        let out = run(&file, &path);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!("krt run: --result-file {}:", path.display())),
            "{stderr}"
        );
        assert!(
            !marker.exists(),
            "the Run ran despite the bad --result-file"
        );
    }
    // The same Run with a good path does run: the marker test above can fail.
    let out = run(&file, &dir.path().join("result.json"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(marker.exists());
}

fn spawn(file: &Path, result: &Path) -> Child {
    krt(file, result)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the Run's first line on krt's stdout.
fn started(krt: &mut Child) {
    assert_eq!(first_line(krt), "started");
}

#[test]
fn ctrl_c_is_krts_130_and_a_second_signal_still_writes_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let file = run_manifest(
        dir.path(),
        "  interpreter: bash\n  script: 'echo started; exec sleep 1000'\n",
    );
    let mut krt = spawn(&file, &path);
    started(&mut krt);
    signal(krt.id(), "INT");
    let out = krt.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let first = result(&path);
    assert_eq!(
        summary(&first),
        (130, "krt", "Interrupted", Some("Cancelled"), None)
    );
    assert!(
        first["message"].as_str().unwrap().contains("SIGINT"),
        "{first}"
    );

    // It ignores SIGTERM, so the cancel waits for the agent's grace period: the second
    // signal exits first, and the result says so.
    let file = run_manifest(
        dir.path(),
        "  interpreter: bash\n  script: \"trap '' TERM; echo started; while :; do sleep 0.1; done\"\n",
    );
    let mut krt = spawn(&file, &path);
    started(&mut krt);
    signal(krt.id(), "TERM");
    let _stderr = read_stderr_until(&mut krt, "cancelling");
    signal(krt.id(), "INT");
    assert_eq!(krt.wait().unwrap().code(), Some(143));
    let forced = result(&path);
    assert_eq!(summary(&forced), (143, "krt", "Interrupted", None, None));
    let message = forced["message"].as_str().unwrap();
    assert!(message.contains("without waiting"), "{message}");
    assert_eq!(forced["object"]["name"], "t");
}

#[test]
fn a_closed_stdout_is_krts_141() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let file = run_manifest(
        dir.path(),
        "  interpreter: bash\n  script: 'echo started; while :; do echo line; sleep 0.01; done'\n",
    );
    let mut krt = spawn(&file, &path);
    started(&mut krt);
    drop(krt.stdout.take());
    let out = krt.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert_eq!(
        summary(&result(&path)),
        (141, "krt", "StdoutClosed", Some("Cancelled"), None)
    );
}
