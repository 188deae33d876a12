//! `krt run --local` and what ends it early or stresses it: SIGTERM and SIGHUP handled
//! like Ctrl-C (cancel, clean up, 128 + the signal), a second signal that exits at
//! once, a closed stdout, the private run directory, a Workflow wider than the agent's
//! capacity, and a step's line longer than krt holds.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kruntimes_testkit::runtimed::binary as runtimed;

#[path = "support/krt_process.rs"]
mod support;
use support::{first_line, read_stderr_until, signal};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run_manifest(dir: &Path, script: &str) -> PathBuf {
    write(
        dir,
        "run.yaml",
        &format!(
            "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata:\n  name: t\nspec:\n  runtimeRef: {{name: bash}}\n  interpreter: bash\n  script: {script:?}\n"
        ),
    )
}

/// krt on `file` with its own TMPDIR (so its run directory can be found), stdout piped.
fn spawn_krt(file: &Path, tmp: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(["run", "--local", "-f"])
        .arg(file)
        .env("KRT_RUNTIMED_BIN", runtimed())
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("krt-run-")
        })
        .collect()
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

#[test]
fn sigterm_and_sighup_cancel_like_ctrl_c_and_leave_nothing_behind() {
    for (name, code) in [("TERM", 143), ("HUP", 129)] {
        let tmp = tempfile::tempdir().unwrap();
        let file = run_manifest(tmp.path(), "echo $$; exec sleep 1000");
        let mut krt = spawn_krt(&file, tmp.path());
        let pid = first_line(&mut krt);
        assert_eq!(
            run_dirs(tmp.path()).len(),
            1,
            "the run directory exists while it runs"
        );
        signal(krt.id(), name);
        let out = krt.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "SIG{name}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("cancelling"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            ended(&pid),
            "SIG{name}: the Run's process {pid} is still there"
        );
        assert_eq!(
            run_dirs(tmp.path()),
            Vec::<PathBuf>::new(),
            "SIG{name}: the run directory is left"
        );
    }
}

#[test]
fn the_run_directory_is_private_to_its_user() {
    let tmp = tempfile::tempdir().unwrap();
    let file = run_manifest(tmp.path(), "echo $$; exec sleep 1000");
    let mut krt = spawn_krt(&file, tmp.path());
    first_line(&mut krt);
    let dirs = run_dirs(tmp.path());
    assert_eq!(dirs.len(), 1);
    let mode = std::fs::metadata(&dirs[0]).unwrap().permissions().mode() & 0o777;
    signal(krt.id(), "INT");
    assert_eq!(krt.wait().unwrap().code(), Some(130));
    assert_eq!(mode, 0o700, "{}: mode {mode:o}", dirs[0].display());
}

#[test]
fn a_second_signal_exits_without_waiting_for_the_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    // It ignores SIGTERM, so the cancel waits for the agent's grace period (5 s) before
    // SIGKILL; the second signal must not wait for that.
    let file = run_manifest(
        tmp.path(),
        "trap '' TERM; echo $$; while :; do sleep 0.1; done",
    );
    let mut krt = spawn_krt(&file, tmp.path());
    first_line(&mut krt);
    signal(krt.id(), "INT");
    // The first signal is being handled once krt says so.
    let _stderr = read_stderr_until(&mut krt, "cancelling");
    let second = Instant::now();
    signal(krt.id(), "INT");
    let status = krt.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        second.elapsed() < Duration::from_secs(4),
        "krt waited {:?} after the second signal: it waited for the grace period",
        second.elapsed()
    );
}

#[test]
fn a_closed_stdout_cancels_the_run_and_exits_141_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = run_manifest(
        tmp.path(),
        "echo $$ >&2; while :; do echo line; sleep 0.01; done",
    );
    let mut krt = spawn_krt(&file, tmp.path());
    let mut stderr = std::io::BufReader::new(krt.stderr.take().unwrap());
    let mut pid = String::new();
    stderr.read_line(&mut pid).unwrap();
    drop(krt.stdout.take());
    let status = krt.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(141), "{rest}");
    assert!(
        !rest.contains("error"),
        "no error message for a closed pipe: {rest}"
    );
    assert!(
        ended(pid.trim()),
        "the Run's process {} is still there",
        pid.trim()
    );
}

#[test]
fn a_workflow_wider_than_the_agent_waits_for_free_slots() {
    let tmp = tempfile::tempdir().unwrap();
    // 100 independent jobs (the validation limit) on an agent that runs 64 at once.
    let mut jobs = String::new();
    for j in 0..100 {
        jobs.push_str(&format!(
            "  - name: j{j}\n    steps:\n    - name: s\n      run: {{runtimeRef: {{name: bash}}, interpreter: bash, script: 'sleep 0.2; echo done {j}'}}\n"
        ));
    }
    let file = write(
        tmp.path(),
        "wf.yaml",
        &format!(
            "apiVersion: kruntimes.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: wide\nspec:\n  jobs:\n{jobs}"
        ),
    );
    let out = spawn_krt(&file, tmp.path()).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for j in 0..100 {
        assert!(
            stdout.contains(&format!("[j{j}/s] done {j}\n")),
            "job {j} missing"
        );
    }
    assert!(
        !text(&out.stderr).contains("capacity"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_step_line_longer_than_krt_holds_arrives_whole_and_prefixed_once() {
    let tmp = tempfile::tempdir().unwrap();
    // 512 KiB without a newline (8 times what krt holds; within runtimed's output
    // bound, so nothing is dropped), then one more line.
    let file = write(
        tmp.path(),
        "wf.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: long\nspec:\n  jobs:\n  - name: a\n    steps:\n    - name: s\n      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'head -c 524288 /dev/zero | tr \"\\\\0\" x; echo; echo next'}\n",
    );
    let out = spawn_krt(&file, tmp.path()).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let expected = format!("[a/s] {}\n[a/s] next\n", "x".repeat(1 << 19));
    assert_eq!(stdout.len(), expected.len());
    assert!(
        stdout == expected,
        "the long line was cut, repeated or prefixed again"
    );
}
