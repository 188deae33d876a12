//! The `runtimed` binary itself: `install DEST`, and an agent stopped by SIGTERM (what a
//! container runtime sends to PID 1) ends its Runs (`Error`, `AgentStopping`), leaves no
//! process and exits.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kruntimes_runtimed::grpc::connect_unix;
use kruntimes_runtimed::proto;

mod common;
use common::{RUNTIMED, agent, follow_stdout, pattern, processes_with_argument, sidecar};

#[test]
fn install_copies_the_executable_with_mode_0755() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("runtimed");
    let status = Command::new(RUNTIMED)
        .arg("install")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(RUNTIMED).unwrap()
    );
    let version = Command::new(&dest).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("runtimed "));
}

async fn connect(
    socket: &Path,
) -> kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel> {
    for _ in 0..200 {
        if let Ok(client) = connect_unix(socket).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("agent never listened");
}

#[tokio::test]
async fn sigterm_to_the_agent_ends_its_runs_agent_stopping_and_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = tokio::process::Command::new(RUNTIMED)
        .args(["agent", "--grace-ms", "100", "--socket"])
        .arg(&socket)
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .env("RUNTIMED_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client = connect(&socket).await;
    let mut events = client
        .execute_and_follow(proto::ExecuteRequest {
            run_uid: "long".into(),
            interpreter: proto::Interpreter::Bash as i32,
            script: Some("trap '' TERM; echo $$; sleep 1000".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    use proto::execution_event::Event;
    let pid: i32 = loop {
        match events.message().await.unwrap().unwrap().event {
            Some(Event::Output(chunk)) => {
                break String::from_utf8(chunk.data)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
            }
            Some(Event::Ended(e)) => panic!("ended before its output: {e:?}"),
            _ => {}
        }
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.message().await {
                Ok(Some(proto::ExecutionEvent {
                    event: Some(Event::Ended(e)),
                })) => return e,
                Ok(Some(_)) => {}
                other => panic!("the follow ended without the Run's end: {other:?}"),
            }
        }
    })
    .await
    .expect("the follower learns how the Run ended");
    // Nobody cancelled the Run: the agent's own stop is not a Cancel.
    assert_eq!(ended.phase, proto::Phase::Error as i32, "{ended:?}");
    assert_eq!(ended.reason, "AgentStopping", "{ended:?}");
    assert!(ended.message.contains("stopping"), "{ended:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("the agent exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the Run's process survived"
    );
}

fn probe(kind: &str, socket: &Path) -> bool {
    Command::new(RUNTIMED)
        .args(["probe", kind, "--socket"])
        .arg(socket)
        .env("RUNTIMED_LOG", "error")
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn probes_follow_the_sidecar_and_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent_socket = dir.path().join("agent.sock");
    let sidecar_socket = dir.path().join("sidecar.sock");
    // Nothing listens yet: both probes fail.
    assert!(!probe("startup", &sidecar_socket));
    assert!(!probe("ready", &sidecar_socket));

    let mut sidecar = tokio::process::Command::new(RUNTIMED)
        .args(["sidecar", "--listen"])
        .arg(&sidecar_socket)
        .arg("--agent-socket")
        .arg(&agent_socket)
        .env("RUNTIMED_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    connect(&sidecar_socket).await;
    // The sidecar serves but its agent is not up: started, not ready.
    assert!(probe("startup", &sidecar_socket));
    assert!(!probe("ready", &sidecar_socket));

    let mut agent = tokio::process::Command::new(RUNTIMED)
        .args(["agent", "--socket"])
        .arg(&agent_socket)
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .env("RUNTIMED_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    connect(&agent_socket).await;
    let mut ready = false;
    for _ in 0..100 {
        if probe("ready", &sidecar_socket) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the sidecar never became ready with its agent up");

    agent.kill().await.unwrap();
    let mut unready = false;
    for _ in 0..100 {
        if !probe("ready", &sidecar_socket) {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(unready, "the sidecar stayed ready with its agent gone");
    assert!(probe("startup", &sidecar_socket));
    sidecar.kill().await.unwrap();
}

#[tokio::test]
async fn agent_socket_mode_is_the_one_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = tokio::process::Command::new(RUNTIMED)
        .args(["agent", "--socket-mode", "0666", "--socket"])
        .arg(&socket)
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .env("RUNTIMED_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    connect(&socket).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o666);

    let refused = Command::new(RUNTIMED)
        .args(["agent", "--socket-mode", "0777", "--socket"])
        .arg(dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--socket-mode"));
}

/// Starts `runtimed ARGS` from a shell that has ended, and been reaped, before runtimed
/// starts: the parent it is started by is gone before its first look, as when
/// `krt run --local` is killed right after its fork. With `name_parent`, the shell's
/// pid is given as `--parent-pid`. Returns runtimed's pid and the pid of the process
/// that adopted it; its stderr goes to `log`.
fn start_orphaned(args: &[&str], name_parent: bool, log: &Path) -> (i32, i32) {
    let script = r#"
        parent=$$
        runtimed=$1; log=$2; name_parent=$3; shift 3
        if [ "$name_parent" = yes ]; then set -- "$@" --parent-pid "$parent"; fi
        ( while kill -0 "$parent" 2>/dev/null; do sleep 0.01; done
          exec "$runtimed" "$@" ) </dev/null >/dev/null 2>"$log" &
        echo $!
    "#;
    let output = Command::new("sh")
        .args(["-c", script, "sh", RUNTIMED])
        .arg(log)
        .arg(if name_parent { "yes" } else { "no" })
        .args(args)
        .env("RUNTIMED_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The shell is reaped: its child has been handed to a subreaper or to init.
    let adopter = stat_fields(pid).map_or(0, |f| f[1].parse().unwrap());
    (pid, adopter)
}

/// The fields of `/proc/<pid>/stat` after the command name (state, ppid, ...).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// Waits up to 20 s for `pid` to be gone (or a zombie its adopter has not reaped yet),
/// then checks that its log says it stopped for its parent; kills it and fails when it
/// is not gone.
async fn assert_stops_for_its_parent(pid: i32, log: &Path) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    for _ in 0..1000 {
        match stat_fields(pid) {
            Some(fields) if fields[0] != "Z" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {
                let log = log_text();
                assert!(log.contains("stopping: the parent process ended"), "{log}");
                return;
            }
        }
    }
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    panic!("runtimed {pid} outlived its parent: {}", log_text());
}

/// Sends `signal` to `pid`, gone or not.
fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

#[tokio::test]
async fn an_agent_whose_parent_ended_before_it_started_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, workspace, log) = (
        dir.path().join("agent.sock"),
        dir.path().join("ws"),
        dir.path().join("agent.log"),
    );
    let args = [
        "agent",
        "--exit-with-parent",
        "--socket",
        socket.to_str().unwrap(),
        "--workspace",
        workspace.to_str().unwrap(),
    ];
    let (pid, adopter) = start_orphaned(&args, false, &log);
    if adopter != 1 {
        // Not a failure of runtimed's: without --parent-pid, only adoption by init
        // tells a parent that ended before the start (see the next test).
        signal(pid, nix::sys::signal::Signal::SIGTERM);
        eprintln!(
            "skipped: needs orphans adopted by init: here process {adopter} (a subreaper) adopts them"
        );
        return;
    }
    assert_stops_for_its_parent(pid, &log).await;
}

#[tokio::test]
async fn a_sidecar_told_its_parent_pid_exits_when_that_parent_ended_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, agent_socket, log) = (
        dir.path().join("sidecar.sock"),
        dir.path().join("agent.sock"),
        dir.path().join("sidecar.log"),
    );
    let args = [
        "sidecar",
        "--exit-with-parent",
        "--listen",
        socket.to_str().unwrap(),
        "--agent-socket",
        agent_socket.to_str().unwrap(),
    ];
    let (pid, _) = start_orphaned(&args, true, &log);
    assert_stops_for_its_parent(pid, &log).await;
}

/// A follower that reads as fast as it can, through the sidecar to a separate agent
/// process (what `krt run --local` does), gets every byte of 64 MiB, 64 times what
/// the agent retains of a stream: the program waits for it.
#[tokio::test]
async fn a_fast_follower_through_the_sidecar_gets_every_byte_of_a_large_output() {
    const BYTES: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (agent, agent_socket) = agent(dir.path(), &[]);
    let (_sidecar, sidecar_socket) = sidecar(dir.path(), &agent_socket, &[]);
    connect(&agent_socket).await;
    let mut client = connect(&sidecar_socket).await;
    // A first Run, so that the peak measured before the large one includes what any
    // Run costs (the spawner's replies, the first allocations).
    let (small, _) = pattern(4096);
    let small = proto::ExecuteRequest {
        run_uid: "small".into(),
        ..small
    };
    follow_stdout(&mut client, small, |_| async {}).await;
    let agent_pid = agent.id().unwrap();
    let peak_before = peak_kib(agent_pid);
    let (request, expected) = pattern(BYTES);
    let followed = follow_stdout(&mut client, request, |_| async {}).await;
    let ended = followed.ended.as_ref().unwrap();
    assert_eq!(ended.phase, proto::Phase::Succeeded as i32, "{ended:?}");
    assert_eq!(followed.gaps, vec![], "no byte may be missing");
    assert_eq!(followed.received, BYTES as u64);
    assert_eq!(followed.sha256, expected);
    // What the agent keeps is bounded as before: the follower got the rest live.
    let stats = ended.stdout.unwrap();
    assert_eq!(stats.total_bytes, BYTES as u64);
    assert_eq!(
        stats.dropped_bytes,
        (BYTES - kruntimes_runtimed::limits::DEFAULT_OUTPUT_LIMIT) as u64
    );
    // Nor did the agent hold the output for the follower: its peak resident memory grew
    // by a fraction of what went through it (bounded output, follow buffer, channels).
    let grown = peak_kib(agent_pid).saturating_sub(peak_before);
    assert!(
        grown * 1024 < BYTES / 8,
        "the agent's peak grew by {grown} KiB"
    );
}

/// The peak resident memory of `pid` (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Tests that need root: the default nextest profile leaves them out, `--profile full`
/// runs them (as root, as `.ci/run` does).
mod needs_root {
    use super::*;

    /// An agent that is not root has no CAP_SETPCAP, so it cannot empty the bounding set;
    /// its Runs must still start, with no capability in any other set and no_new_privs.
    #[tokio::test]
    async fn an_agent_running_as_another_user_runs_runs_without_capabilities() {
        use std::os::unix::process::CommandExt;
        kruntimes_testkit::privilege::require_root("the test starts the agent as uid 65534");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let socket = dir.path().join("agent.sock");
        // A copy the other user can reach: the build's own may sit below a directory only
        // root may enter (a checkout in a `mktemp -d` directory).
        let binary = dir.path().join("runtimed");
        std::fs::copy(RUNTIMED, &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = std::process::Command::new(&binary);
        command
            .args(["agent", "--socket"])
            .arg(&socket)
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .env("RUNTIMED_LOG", "warn")
            .uid(65534)
            .gid(65534);
        let mut agent = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut client = connect(&socket).await;
        client
            .execute(proto::ExecuteRequest {
                run_uid: "nobody".into(),
                interpreter: proto::Interpreter::Bash as i32,
                script: Some(
                    "id -u; grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status"
                        .into(),
                ),
                timeout_ms: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut stream = client
            .logs(proto::LogsRequest {
                execution_id: "nobody".into(),
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            if chunk.stream == proto::Stream::Stdout as i32 {
                out.extend_from_slice(&chunk.data);
            }
        }
        let status = client
            .status(proto::StatusRequest {
                execution_id: "nobody".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            status.phase,
            proto::Phase::Succeeded as i32,
            "{status:?} {out}"
        );
        assert_eq!(out.lines().next(), Some("65534"), "{out}");
        for field in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            let line = out.lines().find(|l| l.starts_with(field)).unwrap();
            assert_eq!(
                line.split_whitespace().nth(1),
                Some("0000000000000000"),
                "{line}"
            );
        }
        let nnp = out.lines().find(|l| l.starts_with("NoNewPrivs")).unwrap();
        assert_eq!(nnp.split_whitespace().nth(1), Some("1"));
        agent.start_kill().unwrap();
        agent.wait().await.unwrap();
    }

    /// An agent killed with SIGKILL cannot end its Runs; its spawner, seeing it gone, kills
    /// what they left, down to a process that left the Run's session and cleared its
    /// environment (through the Run's cgroup).
    #[tokio::test]
    async fn the_processes_of_a_run_do_not_outlive_a_killed_agent() {
        kruntimes_testkit::privilege::require_root("Run cgroups are made in the agent's cgroup");
        // The agent is in this process's cgroup: where it can make Run cgroups, so can this.
        if let Err(why) = kruntimes_runtimed::agent::cgroup::RunCgroups::discover(0) {
            panic!("needs a writable cgroup v2 hierarchy, as a Runtime pod's has: {why}");
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, socket) = agent(dir.path(), &[]);
        let mut client = connect(&socket).await;
        let marker = format!("1000.{}3", std::process::id());
        client
            .execute(proto::ExecuteRequest {
                run_uid: "orphaned".into(),
                interpreter: proto::Interpreter::Bash as i32,
                script: Some(format!("setsid env -i sleep {marker} & sleep 1000")),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut escaped = Vec::new();
        for _ in 0..500 {
            escaped = processes_with_argument(&marker);
            if !escaped.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            escaped.len(),
            1,
            "the Run's background process never started"
        );
        agent.kill().await.unwrap();
        for _ in 0..1000 {
            if processes_with_argument(&marker).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for pid in processes_with_argument(&marker) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        panic!("a process of the Run outlived the killed agent");
    }
}
