//! A Run's workspace on real processes: removed after the Run unless kept, recycled as
//! a spare, written without following links, and held within the workspace size limit.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use kruntimes_runtimed::Reason;
use kruntimes_runtimed::agent::lifecycle::{Config, ExecSpec, Interpreter, Phase, Supervisor};
use kruntimes_runtimed::agent::workspace::{WriteError, write_files};

mod common;
use common::supervisor::{assert_gone, bash, stdout_of, supervisor, wait_for_first_line};

#[tokio::test]
async fn the_workspace_is_removed_after_the_run_unless_kept() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let gone = sup.start(bash("gone", "echo > out.txt")).await.unwrap();
    gone.wait().await;
    assert!(!root.path().join("gone").exists());
    let mut spec = bash("kept", "echo data > out.txt");
    spec.keep_workspace = true;
    let kept = sup.start(spec).await.unwrap();
    let end = kept.wait().await;
    assert!(end.workspace_present);
    assert_eq!(
        std::fs::read_to_string(root.path().join("kept/out.txt")).unwrap(),
        "data\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("kept/main.sh")).unwrap(),
        "echo data > out.txt"
    );
    kept.remove_workspace().await;
    assert!(!root.path().join("kept").exists());
}

/// The spawner starts each Run from its workspace and leaves it at once: a working
/// directory it kept would keep the deleted workspace's inode alive until its next
/// `chdir`, on the next Run's start path.
#[tokio::test]
async fn the_spawner_leaves_each_workspace_right_after_the_start() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let spawner = sup.spawner_pid().expect("runs start through the spawner");
    let execution = sup.start(bash("cwd", "pwd; sleep 1000")).await.unwrap();
    wait_for_first_line(&execution).await;
    assert_eq!(
        stdout_of(&execution).trim(),
        root.path().join("cwd").to_str().unwrap(),
        "the Run itself starts in its workspace"
    );
    let cwd = std::fs::read_link(format!("/proc/{spawner}/cwd")).unwrap();
    assert_eq!(cwd, Path::new("/"));
    execution.cancel(None);
    execution.wait().await;
}

/// A recycled workspace keeps its script file for the next Run: each Run still sees
/// only its own script, and a Run without that script never sees the file.
#[tokio::test]
async fn a_recycled_workspace_holds_only_the_runs_own_script() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let long = "echo a long first script; cat main.sh > /dev/null; ls -A";
    let first = sup.start(bash("first", long)).await.unwrap();
    first.wait().await;
    assert_eq!(stdout_of(&first), "a long first script\nmain.sh\n");
    let second = sup.start(bash("second", "cat main.sh")).await.unwrap();
    second.wait().await;
    assert_eq!(
        stdout_of(&second),
        "cat main.sh",
        "its own script, nothing left over"
    );
    let exec = sup
        .start(ExecSpec {
            run_uid: "exec".into(),
            interpreter: Some(Interpreter::Exec),
            command: vec!["ls".into(), "-A".into()],
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    let end = exec.wait().await;
    assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
    assert_eq!(
        stdout_of(&exec),
        "",
        "no script file in a Run without a script"
    );
}

/// A workspace past `INLINE_REMOVAL_ENTRIES` (or holding a directory) is removed on the
/// blocking pool, and still before the Run is reported terminal; the emptied directory
/// then serves the next Run, empty.
#[tokio::test]
async fn a_large_workspace_is_gone_when_the_run_is_terminal() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let many = kruntimes_runtimed::limits::INLINE_REMOVAL_ENTRIES + 1;
    let script = format!("for i in $(seq {many}); do : > f$i; done; mkdir -p a/b; echo x > a/b/c");
    let large = sup.start(bash("large", &script)).await.unwrap();
    let end = large.wait().await;
    assert_eq!(end.phase, Phase::Succeeded, "{end:?}");
    assert!(!end.workspace_present);
    assert!(!root.path().join("large").exists());
    let next = sup.start(bash("next", "ls -A")).await.unwrap();
    next.wait().await;
    assert_eq!(
        stdout_of(&next),
        "main.sh\n",
        "the next workspace holds only its script"
    );
}

#[tokio::test]
async fn a_missing_interpreter_is_an_error_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let mut config = Config::new(root.path());
    config.bash = "/nonexistent/bash".into();
    let sup = Supervisor::new(config).unwrap();
    let mut spec = bash("nobash", "true");
    spec.input = Some(b"{}".to_vec());
    let end = sup.start(spec).await.unwrap().wait().await;
    assert_eq!(end.phase, Phase::Error);
    assert_eq!(end.reason, Some(Reason::SpawnFailed));
    // Neither the workspace nor the input file is left (a spare is an empty directory).
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with("+spare-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test]
async fn invalid_specs_are_refused_before_anything_is_created() {
    let root = tempfile::tempdir().unwrap();
    let sup = supervisor(root.path());
    let mut escape = bash("escape", "true");
    escape.files = vec![("../outside".into(), b"x".to_vec())];
    assert!(sup.start(escape).await.is_err());
    assert!(sup.start(bash("../up", "true")).await.is_err());
    let mut reserved = bash("reserved", "true");
    reserved.env = vec![("KRT_RUN_ID".into(), "other".into())];
    assert!(sup.start(reserved).await.is_err());
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn a_symlink_planted_in_the_workspace_cannot_be_written_through() {
    let workspace = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("f"), workspace.path().join("main.sh")).unwrap();

    let through_dir = write_files(workspace.path(), [("lib/x.py", b"x".as_slice())]);
    assert!(
        matches!(through_dir, Err(WriteError::Refused { .. })),
        "{through_dir:?}"
    );
    let through_file = write_files(workspace.path(), [("main.sh", b"x".as_slice())]);
    assert!(
        matches!(through_file, Err(WriteError::Refused { .. })),
        "{through_file:?}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // An invalid path anywhere in the set means nothing at all is written.
    let mixed = write_files(
        workspace.path(),
        [("ok.txt", b"x".as_slice()), ("../x", b"x".as_slice())],
    );
    assert!(matches!(mixed, Err(WriteError::InvalidPath { .. })));
    assert!(!workspace.path().join("ok.txt").exists());

    // Nested directories are created one by one.
    write_files(workspace.path(), [("a/b/c.txt", b"abc".as_slice())]).unwrap();
    assert_eq!(
        std::fs::read(workspace.path().join("a/b/c.txt")).unwrap(),
        b"abc"
    );
}

fn limited(root: &Path, limit: u64, interval: Duration) -> Supervisor {
    let mut config = Config::new(root);
    config.grace = Duration::from_millis(300);
    config.workspace_size_limit = Some(limit);
    config.workspace_check_interval = interval;
    Supervisor::new(config).unwrap()
}

#[tokio::test]
async fn a_run_writing_past_the_workspace_size_limit_fails_and_its_files_go() {
    let root = tempfile::tempdir().unwrap();
    let sup = limited(root.path(), 1 << 20, Duration::from_millis(20));
    let mut spec = bash(
        "full",
        // Output first: the size check may stop the Run while `head` still writes.
        "echo written; head -c 4000000 /dev/zero > big.bin; sleep 30",
    );
    // Kept workspaces are removed too when full: keeping one would keep the disk full.
    spec.keep_workspace = true;
    let execution = sup.start(spec).await.unwrap();
    let end = execution.wait().await;
    assert_eq!(end.phase, Phase::Failed, "{end:?}");
    assert_eq!(end.reason, Some(Reason::WorkspaceFull));
    assert!(
        end.message.contains("limit of 1048576 bytes"),
        "{}",
        end.message
    );
    assert_eq!(stdout_of(&execution), "written\n");
    assert!(!root.path().join("full").exists());
    assert!(!end.workspace_present);
    assert_gone(&[end.pid.unwrap() as i32], "full");
}

#[tokio::test]
async fn a_run_below_the_workspace_size_limit_succeeds() {
    let root = tempfile::tempdir().unwrap();
    let sup = limited(root.path(), 1 << 20, Duration::from_millis(20));
    // A quarter of the limit, held for many checks.
    let end = sup
        .start(bash(
            "below",
            "head -c 262144 /dev/zero > part.bin; sleep 0.5",
        ))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(
        (
            end.phase,
            end.reason.map(Reason::as_str).unwrap_or_default()
        ),
        (Phase::Succeeded, "Completed")
    );
}

#[tokio::test]
async fn the_largest_workspace_fails_when_together_they_exceed_the_limit() {
    let root = tempfile::tempdir().unwrap();
    // Each fits alone; together they do not.
    let sup = limited(root.path(), 1 << 20, Duration::from_millis(20));
    let large = sup
        .start(bash("large", "head -c 700000 /dev/zero > a.bin; sleep 30"))
        .await
        .unwrap();
    // The smaller one holds its bytes until the larger one has been stopped.
    let gate = root.path().join("gate");
    let small = sup
        .start(bash(
            "small",
            &format!(
                "head -c 400000 /dev/zero > b.bin; while [ ! -e {} ]; do sleep 0.02; done",
                gate.display()
            ),
        ))
        .await
        .unwrap();
    let large_end = large.wait().await;
    std::fs::write(&gate, b"").unwrap();
    let small_end = small.wait().await;
    assert_eq!(
        (
            large_end.phase,
            large_end.reason.map(Reason::as_str).unwrap_or_default()
        ),
        (Phase::Failed, "WorkspaceFull")
    );
    assert_eq!(small_end.phase, Phase::Succeeded, "{small_end:?}");
}

#[test]
fn over_the_limit_means_more_than_the_limit_and_the_largest_fails() {
    use kruntimes_runtimed::agent::lifecycle::over_limit;
    use std::collections::HashMap;
    let sizes: HashMap<String, u64> = [("a".to_owned(), 60), ("b".to_owned(), 40)].into();
    assert_eq!(over_limit(&sizes, 100), None, "at the limit nothing fails");
    assert_eq!(
        over_limit(&sizes, 99),
        Some(("a", 100)),
        "one over: the largest"
    );
    let tie: HashMap<String, u64> = [("a".to_owned(), 50), ("b".to_owned(), 50)].into();
    assert_eq!(
        over_limit(&tie, 99),
        Some(("b", 100)),
        "a tie is broken by uid"
    );
}

#[tokio::test]
async fn inline_files_are_checked_against_the_workspace_size_limit() {
    let root = tempfile::tempdir().unwrap();
    // No measurement during these Runs: only the check before writing.
    let sup = limited(root.path(), 1000, Duration::from_secs(3600));
    let with_inline = |uid: &str, bytes: usize| {
        let mut spec = bash(uid, "true"); // 4 bytes of main.sh
        spec.files = vec![("data.bin".into(), vec![b'x'; bytes])];
        spec
    };
    let at = sup
        .start(with_inline("at", 996))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(at.phase, Phase::Succeeded, "{at:?}");
    let over = sup
        .start(with_inline("over", 997))
        .await
        .unwrap()
        .wait()
        .await;
    assert_eq!(
        (
            over.phase,
            over.reason.map(Reason::as_str).unwrap_or_default()
        ),
        (Phase::Error, "WorkspaceFull")
    );
    assert!(over.message.contains("1001 bytes"), "{}", over.message);
    assert!(!root.path().join("over").exists());
}

#[test]
fn a_full_filesystem_or_quota_is_told_apart_from_other_write_errors() {
    use kruntimes_runtimed::agent::workspace::is_no_space;
    use nix::errno::Errno;
    assert!(is_no_space(&std::io::Error::from_raw_os_error(
        Errno::ENOSPC as i32
    )));
    assert!(is_no_space(&std::io::Error::from_raw_os_error(
        Errno::EDQUOT as i32
    )));
    assert!(!is_no_space(&std::io::Error::from_raw_os_error(
        Errno::EACCES as i32
    )));
}
