//! The process lifecycle on real processes: exit codes and signals, timeout and cancel
//! killing everything (escaped processes included, checked in /proc), bounded output,
//! capabilities, environment, sources, the spawner and programs that cannot be started.
//! The workspace's tests are in `workspace.rs`.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kruntimes_runtimed::Reason;
use kruntimes_runtimed::agent::lifecycle::{Config, ExecSpec, Interpreter, Phase, Supervisor};

mod common;
use common::processes_with_argument;
use common::supervisor::{
    Spawn, assert_gone, bash, stdout_of, supervisor, supervisor_in, wait_for_first_line,
};

#[tokio::test]
async fn exit_codes_and_signals_give_the_right_phase() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let ok = sup.start(bash("ok", "echo hi")).await.unwrap().wait().await;
    assert_eq!((ok.phase, ok.exit_code), (Phase::Succeeded, Some(0)));
    let failed = sup
        .start(bash("failed", "exit 3"))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!((failed.phase, failed.exit_code), (Phase::Failed, Some(3)));
    let killed = sup
        .start(bash("killed", "kill -9 $$"))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!((killed.phase, killed.signal), (Phase::Failed, Some(9)));
    assert_eq!(killed.exit_code, None);
}

async fn timeout_kills_a_term_ignoring_program_and_escaped_processes_in(mode: Spawn) {
    let uid = &mode.uid("timeout");
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    // One child leaves the session (setsid), one is double-forked out of the tree.
    let script = r#"
trap '' TERM
setsid sleep 1000 & echo "$!"
( setsid sleep 1001 & echo "$!" )
( trap '' TERM; sleep 1002 ) & echo "$!"
echo ready
sleep 1000
"#;
    let mut spec = bash(uid, script);
    spec.timeout = Some(Duration::from_millis(700));
    let execution = sup.start(spec).await.unwrap();
    let leader = execution.snapshot().pid.unwrap() as i32;
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::TimedOut);
    assert_eq!(end.signal, Some(9), "TERM was ignored, so KILL ended it");
    let out = stdout_of(&execution);
    assert!(out.contains("ready"), "{out}");
    let mut pids: Vec<i32> = out.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(pids.len(), 3, "{out}");
    pids.push(leader);
    assert_gone(&pids, uid);
}

#[tokio::test]
async fn timeout_kills_a_term_ignoring_program_and_escaped_processes() {
    timeout_kills_a_term_ignoring_program_and_escaped_processes_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn timeout_kills_a_term_ignoring_program_and_escaped_processes_when_forked_here() {
    timeout_kills_a_term_ignoring_program_and_escaped_processes_in(Spawn::Fork).await;
}

async fn cancel_stops_the_run_and_every_process_of_it_in(mode: Spawn) {
    let uid = &mode.uid("cancel");
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    let execution = sup
        .start(bash(uid, "( setsid sleep 1000 & echo $! ); sleep 1000"))
        .await
        .unwrap();
    // Wait until the escaped process exists, so the cancel has to find it.
    wait_for_first_line(&execution).await;
    assert!(execution.cancel(Some(Duration::from_millis(100))));
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::Cancelled);
    let pids: Vec<i32> = stdout_of(&execution)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1);
    assert_gone(&pids, uid);
    assert!(
        !execution.cancel(None),
        "a terminal execution cannot be cancelled"
    );
}

#[tokio::test]
async fn cancel_stops_the_run_and_every_process_of_it() {
    cancel_stops_the_run_and_every_process_of_it_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn cancel_stops_the_run_and_every_process_of_it_when_forked_here() {
    cancel_stops_the_run_and_every_process_of_it_in(Spawn::Fork).await;
}

async fn background_processes_left_after_a_normal_exit_are_killed_in(mode: Spawn) {
    let uid = &mode.uid("leftover");
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    let execution = sup
        .start(bash(uid, "( setsid sleep 1000 >/dev/null 2>&1 & echo $! )"))
        .await
        .unwrap();
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::Succeeded);
    let pids: Vec<i32> = stdout_of(&execution)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1);
    assert_gone(&pids, uid);
}

#[tokio::test]
async fn background_processes_left_after_a_normal_exit_are_killed() {
    background_processes_left_after_a_normal_exit_are_killed_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn background_processes_left_after_a_normal_exit_are_killed_when_forked_here() {
    background_processes_left_after_a_normal_exit_are_killed_in(Spawn::Fork).await;
}

async fn the_process_runs_in_its_own_session_and_group_in(mode: Spawn) {
    let uid = &mode.uid("session");
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    let execution = sup
        .start(ExecSpec {
            run_uid: uid.clone(),
            interpreter: Some(Interpreter::Exec),
            command: vec!["cat".into(), "/proc/self/stat".into()],
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    let end = execution.wait().await;
    let out = stdout_of(&execution);
    let fields: Vec<&str> = out[out.rfind(')').unwrap() + 2..].split(' ').collect();
    let pid = end.pid.unwrap().to_string();
    assert_eq!(fields[2], pid, "process group: {out}");
    assert_eq!(fields[3], pid, "session: {out}");
}

#[tokio::test]
async fn the_process_runs_in_its_own_session_and_group() {
    the_process_runs_in_its_own_session_and_group_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn the_process_runs_in_its_own_session_and_group_when_forked_here() {
    the_process_runs_in_its_own_session_and_group_in(Spawn::Fork).await;
}

#[tokio::test]
async fn the_environment_is_scrubbed_and_input_is_given_twice() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    // SAFETY-irrelevant: a variable of the test process that must not leak.
    let input = br#"{"query":"world"}"#.to_vec();
    let env = sup
        .start(ExecSpec {
            run_uid: "env".into(),
            interpreter: Some(Interpreter::Exec),
            command: vec!["env".into()],
            env: vec![("MODE".into(), "dev".into())],
            input: Some(input.clone()),
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    env.wait().await;
    let mut names: Vec<String> = stdout_of(&env)
        .lines()
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "HOME",
            "KRT_INPUT_FILE",
            "KRT_RUN_ID",
            "LANG",
            "MODE",
            "PATH"
        ]
    );
    assert!(stdout_of(&env).contains(&format!("HOME={}", root.path().join("env").display())));

    let stdin = sup
        .start(bash(
            "stdin",
            r#"cat; echo; cat "$KRT_INPUT_FILE"; echo; pwd"#,
        ))
        .await
        .unwrap();
    stdin.wait().await;
    let mut spec = bash("stdin2", r#"cat; echo; cat "$KRT_INPUT_FILE"; echo; pwd"#);
    spec.input = Some(input);
    let stdin2 = sup.start(spec).await.unwrap();
    stdin2.wait().await;
    let out = stdout_of(&stdin2);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"{"query":"world"}"#);
    assert_eq!(lines[1], r#"{"query":"world"}"#);
    assert_eq!(lines[2], root.path().join("stdin2").display().to_string());
    // Without input, stdin is empty.
    assert!(
        stdout_of(&stdin).starts_with("\n\n"),
        "{:?}",
        stdout_of(&stdin)
    );
}

#[tokio::test]
async fn python_with_files_entrypoint_and_args() {
    let root = tempfile::tempdir().unwrap();
    let mut config = Config::new(root.path());
    config.python = "/usr/bin/python3".into();
    let sup = Supervisor::new(config).unwrap();
    let execution = sup
        .start(ExecSpec {
            run_uid: "py".into(),
            interpreter: Some(Interpreter::Python),
            entrypoint: Some("app/run.py".into()),
            files: vec![
                (
                    "app/run.py".into(),
                    b"import sys\nfrom lib.util import g\nprint(g(sys.argv[1:]))\n".to_vec(),
                ),
                ("lib/__init__.py".into(), Vec::new()),
                (
                    "lib/util.py".into(),
                    b"def g(a):\n    return 'hello ' + ','.join(a)\n".to_vec(),
                ),
            ],
            args: vec!["a".into(), "b".into()],
            env: vec![("PYTHONPATH".into(), ".".into())],
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    let end = execution.wait().await;
    assert_eq!(
        end.phase,
        Phase::Succeeded,
        "{}",
        String::from_utf8_lossy(&execution.stderr.kept_bytes())
    );
    assert_eq!(stdout_of(&execution), "hello a,b\n");
}

#[tokio::test]
async fn fifty_megabytes_of_output_keep_only_head_and_tail() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path()); // 64 KiB per stream
    let execution = sup
        .start(bash(
            "big",
            "head -c 50000000 /dev/zero | tr '\\0' x; echo -n err >&2",
        ))
        .await
        .unwrap();
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::Succeeded);
    let (total, dropped, truncated) = execution.stdout.stats();
    assert_eq!(total, 50_000_000);
    assert_eq!(execution.stdout.kept(), 64 * 1024);
    assert_eq!(dropped, 50_000_000 - 64 * 1024);
    assert!(truncated);
    assert!(execution.stdout.kept_bytes().iter().all(|b| *b == b'x'));
    assert_eq!(execution.stderr.kept_bytes(), b"err");
    assert_eq!(execution.stderr.stats(), (3, 0, false));
}

#[tokio::test]
async fn output_is_visible_while_the_program_runs() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let gate = root.path().join("gate");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.01; done; echo second",
        gate.display()
    );
    let execution = sup.start(bash("stream", &script)).await.unwrap();
    for _ in 0..500 {
        if stdout_of(&execution) == "first\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stdout_of(&execution), "first\n");
    assert_eq!(execution.snapshot().phase, Phase::Running);
    std::fs::write(&gate, b"").unwrap();
    execution.wait().await;
    assert_eq!(stdout_of(&execution), "first\nsecond\n");
}

#[tokio::test]
async fn a_killed_spawner_fails_its_runs_and_is_started_again() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    // Named after this process: the marker is looked for in every process on the
    // machine, where another test run may have a Run of the same name.
    let uid = &format!("lost-{}", std::process::id());
    let execution = sup
        .start(bash(uid, "( setsid sleep 1000 & echo $! ); sleep 1000"))
        .await
        .unwrap();
    wait_for_first_line(&execution).await;
    let leader = execution.snapshot().pid.unwrap() as i32;
    let first = sup.spawner_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = execution.wait().await;
    assert_eq!(
        (
            end.phase,
            end.reason.map(Reason::as_str).unwrap_or_default()
        ),
        (Phase::Error, "SpawnerLost")
    );
    let mut pids: Vec<i32> = stdout_of(&execution)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1);
    pids.push(leader);
    assert_gone(&pids, uid);
    // The next Run gets a new spawner.
    let next = sup
        .start(bash("after-lost", "echo again"))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(next.phase, Phase::Succeeded, "{next:?}");
    assert_ne!(sup.spawner_pid(), Some(first));
}

#[tokio::test]
async fn an_orphan_of_a_run_is_seen_by_the_children_proof_until_it_is_killed() {
    use kruntimes_runtimed::agent::procs::holds_only_known_children;
    use kruntimes_runtimed::agent::reaper::Reaper;
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let reaper = Reaper::global().unwrap();
    let ok = sup
        .start(bash("proof-ok", "true"))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(ok.phase, Phase::Succeeded);
    assert!(
        holds_only_known_children(&reaper),
        "only the spawner is a child of this process"
    );
    let execution = sup
        .start(bash("proof", "( setsid sleep 1000 & echo $! ); sleep 1000"))
        .await
        .unwrap();
    wait_for_first_line(&execution).await;
    let pids: Vec<i32> = stdout_of(&execution)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1);
    // The subshell has exited: its `setsid sleep` is this process's orphan now.
    let mut adopted = false;
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap();
        let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        if ppid == std::process::id() {
            adopted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(adopted, "the escaped sleep was not adopted");
    assert!(
        !holds_only_known_children(&reaper),
        "an adopted orphan must make the proof fail"
    );
    assert!(execution.cancel(Some(Duration::from_millis(100))));
    assert_eq!(execution.wait().await.phase, Phase::Cancelled);
    assert_gone(&pids, "proof");
    assert!(holds_only_known_children(&reaper), "the orphan is gone");
}

/// The spawner looks programs up as `execvp` does (what `Command` did before it used
/// `posix_spawn`): a relative path from the workspace, a file without `#!` run by
/// `/bin/sh`, a name on the Run's own PATH, and a missing program named in the error.
#[tokio::test]
async fn programs_are_found_and_started_as_execvp_does() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let exec = |uid: &str, command: &[&str], path: Option<&str>| ExecSpec {
        run_uid: uid.into(),
        interpreter: Some(Interpreter::Exec),
        command: command.iter().map(|c| (*c).to_owned()).collect(),
        files: vec![("bin/hello".into(), b"echo \"no shebang $1\"\n".to_vec())],
        executable: ["bin/hello".to_owned()].into(),
        env: path
            .map(|p| vec![("PATH".to_owned(), p.to_owned())])
            .unwrap_or_default(),
        timeout: Some(Duration::from_secs(10)),
        ..ExecSpec::default()
    };
    let relative = sup
        .start(exec("rel", &["./bin/hello", "a"], None))
        .await
        .unwrap();
    let end = relative.wait().await;
    assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
    assert_eq!(stdout_of(&relative), "no shebang a\n");
    // A relative PATH entry, searched from the workspace, after one that has no such file.
    let on_path = sup
        .start(exec("path", &["hello", "b"], Some("/nonexistent:bin")))
        .await
        .unwrap();
    let end = on_path.wait().await;
    assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
    assert_eq!(stdout_of(&on_path), "no shebang b\n");
    let missing = exec("missing", &["no-such-program-krt"], None);
    let not_found = "\"no-such-program-krt\" not found in PATH";
    fails_to_start(&sup, missing, Reason::ProgramNotFound, 127, not_found).await;
}

/// Starts `spec` and checks that it failed before its program ran: phase Failed with
/// `reason`, exit code `code` and a message holding `part`.
async fn fails_to_start(sup: &Supervisor, spec: ExecSpec, reason: Reason, code: i32, part: &str) {
    let end = sup.start(spec).await.unwrap().wait().await;
    assert_eq!(
        (end.phase, end.reason, end.exit_code),
        (Phase::Failed, Some(reason), Some(code)),
        "{end:?}"
    );
    assert!(end.message.contains(part), "{part:?} in {}", end.message);
}

fn exec_spec(uid: &str, command: &[&str], env: &[(&str, &str)]) -> ExecSpec {
    ExecSpec {
        run_uid: uid.into(),
        interpreter: Some(Interpreter::Exec),
        command: command.iter().map(|c| (*c).to_owned()).collect(),
        env: env
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        timeout: Some(Duration::from_secs(10)),
        ..ExecSpec::default()
    }
}

/// A missing program, or a `PATH` that hides one that exists, ends Failed with exit code
/// 127 (as a shell reports it) and a message naming the program and where it was looked
/// for; a file without execute permission, Failed with 126.
async fn a_program_that_cannot_be_started_fails_naming_it_in(mode: Spawn) {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    let missing = exec_spec(&mode.uid("nosuch"), &["krt-no-such-program"], &[]);
    let expected = format!(
        "program \"krt-no-such-program\" not found in PATH \"{}\"",
        kruntimes_runtimed::limits::DEFAULT_PATH
    );
    fails_to_start(&sup, missing, Reason::ProgramNotFound, 127, &expected).await;

    // `ls` exists, but not on the Run's own PATH.
    let hidden = exec_spec(&mode.uid("hidden"), &["ls"], &[("PATH", "/nonexistent")]);
    let expected = "program \"ls\" not found in PATH \"/nonexistent\"";
    fails_to_start(&sup, hidden, Reason::ProgramNotFound, 127, expected).await;

    let absolute = exec_spec(&mode.uid("absolute"), &["/nonexistent/tool"], &[]);
    let expected = "program \"/nonexistent/tool\" not found: no such file";
    fails_to_start(&sup, absolute, Reason::ProgramNotFound, 127, expected).await;

    let mut not_executable = exec_spec(&mode.uid("noexec"), &["./tool"], &[]);
    not_executable.files = vec![("tool".into(), b"#!/bin/sh\necho hi\n".to_vec())];
    let expected = "program \"./tool\" cannot be executed: permission denied";
    fails_to_start(
        &sup,
        not_executable,
        Reason::ProgramNotExecutable,
        126,
        expected,
    )
    .await;
}

#[tokio::test]
async fn a_program_that_cannot_be_started_fails_naming_it() {
    a_program_that_cannot_be_started_fails_naming_it_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn a_program_that_cannot_be_started_fails_naming_it_when_forked_here() {
    a_program_that_cannot_be_started_fails_naming_it_in(Spawn::Fork).await;
}

/// 8 MiB of arguments is more than `exec` takes (a quarter of an 8 MiB stack limit by
/// default): Failed with exit code 126 and a message naming the cause and the sizes.
async fn an_argument_list_too_long_fails_naming_the_cause_and_sizes_in(mode: Spawn) {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor_in(root.path(), mode);
    // Each argument below the kernel's 128 KiB limit for one string: the total is over.
    let argument = "x".repeat(64 * 1024);
    let mut spec = exec_spec(&mode.uid("e2big"), &["true"], &[]);
    spec.args = vec![argument; 128];
    // 129 strings (true and its 128 arguments) of their length plus a NUL each.
    let argv_bytes = 5 + 128 * (64 * 1024 + 1);
    let sizes = format!(
        "argument list too long to start \"true\": its 129 arguments take {argv_bytes} bytes"
    );
    fails_to_start(&sup, spec, Reason::ArgumentListTooLong, 126, &sizes).await;
}

#[tokio::test]
async fn an_argument_list_too_long_fails_naming_the_cause_and_sizes() {
    an_argument_list_too_long_fails_naming_the_cause_and_sizes_in(Spawn::Spawner).await;
}

#[tokio::test]
async fn an_argument_list_too_long_fails_naming_the_cause_and_sizes_when_forked_here() {
    an_argument_list_too_long_fails_naming_the_cause_and_sizes_in(Spawn::Fork).await;
}

/// A request larger than the socket's buffer (2 MB of arguments and environment) goes
/// to the spawner in more than one write, and arrives whole.
#[tokio::test]
async fn a_spawn_request_larger_than_the_socket_buffer_arrives_whole() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    // Each string below the kernel's 128 KiB limit for one argument.
    let mut spec = bash(
        "large",
        r#"printf '%s %s %s %s\n' "$#" "${#1}" "${#BIG0}" "${#BIG9}""#,
    );
    spec.args = vec!["a".repeat(100_000); 10];
    spec.env = (0..10)
        .map(|i| (format!("BIG{i}"), "b".repeat(100_000)))
        .collect();
    let execution = sup.start(spec).await.unwrap();
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
    assert_eq!(stdout_of(&execution), "10 100000 100000 100000\n");
}

/// A directory already at the Run's workspace path is not the Run's: the Run fails
/// with `WorkspaceUnavailable` and the directory is left as it was.
#[tokio::test]
async fn an_existing_directory_at_the_workspace_path_is_refused_and_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let taken = root.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let end = sup.start(bash("taken", "true")).await.unwrap().wait().await;
    assert_eq!(
        (
            end.phase,
            end.reason.map(Reason::as_str).unwrap_or_default()
        ),
        (Phase::Error, "WorkspaceUnavailable")
    );
    assert!(end.message.contains("File exists"), "{}", end.message);
    assert_eq!(
        std::fs::read_to_string(taken.join("keep.txt")).unwrap(),
        "mine"
    );
}

/// Tests that need root: the default nextest profile leaves them out, `--profile full`
/// runs them (as root, as `.ci/run` does).
mod needs_root {
    use super::*;

    async fn every_capability_is_dropped_and_no_new_privs_is_set_in(mode: Spawn) {
        kruntimes_testkit::privilege::require_root(
            "only root holds capabilities (and CAP_SETPCAP, to empty the bounding set) for the Run to lose",
        );
        let uid = &mode.uid("caps");
        let root = tempfile::tempdir().unwrap();
        let sup = supervisor_in(root.path(), mode);
        let execution = sup
            .start(bash(uid, "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status; ps -o sid= -o pgid= -o pid= -p $$ 2>/dev/null || cat /proc/self/stat")).await
            .unwrap();
        let end = execution.wait().await;
        assert_eq!(
            end.phase,
            Phase::Succeeded,
            "{}",
            String::from_utf8_lossy(&execution.stderr.kept_bytes())
        );
        let out = stdout_of(&execution);
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let line = out.lines().find(|l| l.starts_with(field)).unwrap();
            assert_eq!(
                line.split_whitespace().nth(1),
                Some("0000000000000000"),
                "{line}"
            );
        }
        let nnp = out.lines().find(|l| l.starts_with("NoNewPrivs")).unwrap();
        assert_eq!(nnp.split_whitespace().nth(1), Some("1"));
    }

    #[tokio::test]
    async fn every_capability_is_dropped_and_no_new_privs_is_set() {
        every_capability_is_dropped_and_no_new_privs_is_set_in(Spawn::Spawner).await;
    }

    #[tokio::test]
    async fn every_capability_is_dropped_and_no_new_privs_is_set_when_forked_here() {
        every_capability_is_dropped_and_no_new_privs_is_set_in(Spawn::Fork).await;
    }

    /// A process that leaves the Run's session and clears its environment (`setsid env -i`)
    /// and an env-cleared double fork carry nothing that tells them apart as the Run's once
    /// the Run's shell has exited; its cgroup does: after the Run, none of them exists.
    #[tokio::test]
    async fn processes_that_clear_their_environment_do_not_outlive_the_run() {
        kruntimes_testkit::privilege::require_root("Run cgroups are made in this process's cgroup");
        let root = tempfile::tempdir().unwrap();
        let sup = supervisor(root.path());
        if let Err(why) = kruntimes_runtimed::agent::cgroup::RunCgroups::discover(0) {
            panic!("needs a writable cgroup v2 hierarchy, as a Runtime pod's has: {why}");
        }
        // Durations no other process uses: how they are found in /proc.
        let escaped = format!("1000.{}1", std::process::id());
        let forked = format!("1000.{}2", std::process::id());
        let script = format!(
            "setsid env -i sleep {escaped} &\n\
             env -i sh -c '(sleep {forked} &) &'\n\
             while [ ! -e gate ]; do sleep 0.01; done"
        );
        let execution = sup.start(bash("env-cleared", &script)).await.unwrap();
        let mut started = false;
        for _ in 0..500 {
            started = processes_with_argument(&escaped).len() == 1
                && processes_with_argument(&forked).len() == 1;
            if started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started, "the Run's background processes never started");
        std::fs::write(root.path().join("env-cleared/gate"), b"").unwrap();
        let end = execution.wait().await;
        assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
        assert_eq!(processes_with_argument(&escaped), Vec::<i32>::new());
        assert_eq!(processes_with_argument(&forked), Vec::<i32>::new());
    }
}
