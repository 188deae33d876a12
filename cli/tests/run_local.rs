//! `krt run --local` end to end: the real krt binary starts the real runtimed agent and
//! drives it over gRPC on a unix socket.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use kruntimes_testkit::runtimed::binary as runtimed;

fn krt_run(file: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(["run", "--local", "-f"])
        .arg(file)
        .env("KRT_RUNTIMED_BIN", runtimed())
        .output()
        .unwrap()
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn manifest(spec: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata:\n  name: t\nspec:\n  runtimeRef: {{name: bash}}\n{spec}"
    );
    std::fs::write(file.path(), text).unwrap();
    file
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_hello_example_succeeds_and_streams_both_outputs() {
    let out = krt_run(&example("local-hello.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("hello from runtimed, args: --fast\n"),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "a line on stderr\n");
}

#[test]
fn the_python_example_gets_its_files_input_and_env() {
    let out = krt_run(&example("local-python.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello, world (stdin agrees) dev ['one', 'two']\n"
    );
}

#[test]
fn a_failing_program_gives_its_own_exit_code() {
    let file = manifest("  interpreter: bash\n  script: 'echo out; echo err >&2; exit 5'\n");
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
}

#[test]
fn a_timeout_gives_124() {
    let file = manifest("  interpreter: bash\n  script: 'sleep 1000'\n  timeout: 1s\n");
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("timed out"));
}

/// `krt run --local` of a Run that prints its pid and sleeps: krt (stdout read up to
/// that line), the Run's pid, and the manifest to keep until krt ends.
fn start_sleeping_run(stderr: Stdio) -> (std::process::Child, u32, tempfile::NamedTempFile) {
    use std::io::BufRead;
    let file = manifest("  interpreter: bash\n  script: 'echo $$; exec sleep 1000'\n");
    let mut krt = Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(["run", "--local", "-f"])
        .arg(file.path())
        .env("KRT_RUNTIMED_BIN", runtimed())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(krt.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let pid: u32 = first.trim().parse().expect("the Run's pid");
    (krt, pid, file)
}

#[test]
fn ctrl_c_cancels_the_run_gives_130_and_leaves_no_process() {
    let (krt, pid, _file) = start_sleeping_run(Stdio::piped());
    let interrupted = Command::new("kill")
        .args(["-INT", &krt.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = krt.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cancelling"),
        "{}",
        text(&out.stderr)
    );
    let proc = PathBuf::from(format!("/proc/{pid}"));
    assert!(!proc.exists(), "the Run's process {pid} is still there");
}

/// Whether `pid` has ended: no such process, or a zombie its new parent (init here,
/// which may not reap) has not reaped yet.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn krt_killed_hard_leaves_neither_runtimed_nor_the_run_running() {
    let (mut krt, run, _file) = start_sleeping_run(Stdio::null());
    // krt's children: the agent and the sidecar (the Run is the spawner's child).
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", krt.id()))
        .unwrap()
        .flat_map(|task| {
            std::fs::read_to_string(task.unwrap().path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(|pid| pid.parse().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(children.len(), 2, "agent and sidecar: {children:?}");
    // Each is told krt's pid, so that a krt killed before the child first looks at its
    // parent counts as gone too (the child is then init's, not krt's).
    for child in &children {
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let given = args
            .windows(2)
            .find(|pair| pair[0] == b"--parent-pid")
            .map(|pair| pair[1]);
        assert_eq!(
            given,
            Some(krt.id().to_string().as_bytes()),
            "process {child}: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    krt.kill().unwrap(); // SIGKILL: krt cannot stop anything itself
    krt.wait().unwrap();
    // Bounded wait: the children check for their parent every 500 ms, then the agent
    // cancels the Run (SIGTERM; `sleep` ends at once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let all = || children.iter().chain([&run]).all(|pid| ended(*pid));
    while !all() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for pid in children.iter().chain([&run]) {
        assert!(
            ended(*pid),
            "process {pid} is still running after krt was killed"
        );
    }
}

#[test]
fn an_invalid_run_gives_2_with_its_violations() {
    // No program source at all.
    let file = manifest("  interpreter: bash\n");
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Run/t:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_workflow_example_runs_its_jobs_in_needs_order() {
    let out = krt_run(&example("workflow.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], "[fetch/download] fetching");
    assert_eq!(lines[4], "[report/summary] all green");
    let unit = lines
        .iter()
        .position(|l| *l == "[test/unit] unit tests")
        .unwrap();
    let integration = lines
        .iter()
        .position(|l| *l == "[test/integration] integration tests")
        .unwrap();
    assert!(unit < integration, "steps of a job run in order: {stdout}");
    assert!(lines.contains(&"[lint/shellcheck] lint ok"));
    assert!(text(&out.stderr).contains("krt run: job report: Succeeded"));
}

fn workflow(jobs: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "apiVersion: kruntimes.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n{jobs}"
    );
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn a_failed_job_skips_its_dependents_and_gives_its_exit_code() {
    let file = workflow(
        "  jobs:
  - name: a
    steps:
    - name: s
      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'exit 3'}
  - name: b
    needs: [a]
    steps:
    - name: s
      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'echo never'}
",
    );
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("job a: Failed"));
    assert!(text(&out.stderr).contains("job b: Skipped"));
}

#[test]
fn a_workflow_timeout_gives_124() {
    let file = workflow(
        "  timeout: 1s
  jobs:
  - name: a
    steps:
    - name: s
      run: {runtimeRef: {name: bash}, interpreter: bash, script: 'sleep 1000'}
",
    );
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("job a: Cancelled"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_runtimed_is_named_with_the_command_that_builds_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(["run", "--local", "-f"])
        .arg(example("local-hello.yaml"))
        .env("KRT_RUNTIMED_BIN", "/nonexistent/runtimed")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("KRT_RUNTIMED_BIN"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_longest_run_name_runs() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // 243 characters: a DNS subdomain of four labels (63 + 63 + 63 + 51, dots included).
    let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(51));
    assert_eq!(name.len(), 243);
    std::fs::write(
        file.path(),
        format!("apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata:\n  name: {name}\nspec:\n  runtimeRef: {{name: bash}}\n  interpreter: bash\n  script: echo ok\n"),
    )
    .unwrap();
    let out = krt_run(file.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
}
