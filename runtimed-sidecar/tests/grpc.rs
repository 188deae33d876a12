//! The runtimed.v1 API over a real unix socket, and the agent's bounded state.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kruntimes_runtimed::agent::lifecycle::{Config, ExecSpec, Interpreter};
use kruntimes_runtimed::agent::{Agent, Bounds};
use kruntimes_runtimed::grpc::{RuntimedClient, connect_unix, serve_unix};
use kruntimes_runtimed::proto;
use tonic::transport::Channel;

mod common;
use common::{follow_stdout, pattern};

struct Server {
    dir: tempfile::TempDir,
    client: RuntimedClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(bounds: Bounds) -> Server {
    start_with(bounds, |_| {}).await.0
}

/// A server whose agent's configuration `configure` adjusts; the agent too.
async fn start_with(bounds: Bounds, configure: impl FnOnce(&mut Config)) -> (Server, Arc<Agent>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("ws"));
    config.grace = Duration::from_millis(200);
    configure(&mut config);
    let agent = Arc::new(Agent::new(config, bounds).unwrap());
    let held = agent.clone();
    let socket = dir.path().join("runtimed.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_socket = socket.clone();
    tokio::spawn(async move {
        serve_unix(agent, &server_socket, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = connect_with_retry(&socket).await;
    let server = Server {
        dir,
        client,
        stop: Some(stop),
    };
    (server, held)
}

async fn connect_with_retry(socket: &Path) -> RuntimedClient<Channel> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..20 {
        if let Ok(client) = connect_unix(socket).await {
            return client;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    panic!("the server never listened on {}", socket.display());
}

fn bash(uid: &str, script: &str) -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        run_uid: uid.into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(script.into()),
        timeout_ms: 10_000,
        ..Default::default()
    }
}

async fn wait_terminal(client: &mut RuntimedClient<Channel>, id: &str) -> proto::Execution {
    let mut follow = client
        .logs(proto::LogsRequest {
            execution_id: id.into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while follow.message().await.unwrap().is_some() {}
    wait_status_terminal(client.clone(), id, Duration::from_secs(30)).await
}

async fn logs(
    client: &mut RuntimedClient<Channel>,
    id: &str,
    request: proto::LogsRequest,
) -> Vec<proto::LogChunk> {
    let mut stream = client
        .logs(proto::LogsRequest {
            execution_id: id.into(),
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks.push(chunk);
    }
    chunks
}

fn joined(chunks: &[proto::LogChunk], stream: proto::Stream) -> String {
    let bytes: Vec<u8> = chunks
        .iter()
        .filter(|c| c.stream == stream as i32)
        .flat_map(|c| c.data.clone())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// Every event of one ExecuteAndFollow call.
async fn execute_and_follow(
    client: &mut RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
) -> Vec<proto::execution_event::Event> {
    let mut stream = client
        .execute_and_follow(request)
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.expect("every message carries an event"));
    }
    events
}

/// `started` first and once, `ended` last and once, output between: returned as
/// (created, output chunks, final state).
fn parts(
    events: Vec<proto::execution_event::Event>,
) -> (bool, Vec<proto::LogChunk>, proto::Execution) {
    use proto::execution_event::Event;
    let mut events = events.into_iter();
    let Some(Event::Started(started)) = events.next() else {
        panic!("the first event is not `started`");
    };
    let mut output = Vec::new();
    let mut ended = None;
    for event in events {
        assert!(ended.is_none(), "an event after `ended`: {event:?}");
        match event {
            Event::Output(chunk) => output.push(chunk),
            Event::Ended(execution) => ended = Some(execution),
            Event::Started(_) => panic!("a second `started`"),
        }
    }
    (started.created, output, ended.expect("no `ended` event"))
}

#[tokio::test]
async fn execute_and_follow_gives_the_start_the_output_and_the_end_in_one_call() {
    let mut s = start(Bounds::default()).await;
    let script = "echo out1; echo err1 >&2; sleep 0.05; echo out2; echo err2 >&2; exit 3";
    let events = execute_and_follow(&mut s.client, bash("follow", script)).await;
    let (created, output, ended) = parts(events);
    assert!(created);
    assert_eq!(joined(&output, proto::Stream::Stdout), "out1\nout2\n");
    assert_eq!(joined(&output, proto::Stream::Stderr), "err1\nerr2\n");
    assert_eq!(ended.phase, proto::Phase::Failed as i32, "{ended:?}");
    assert_eq!(ended.exit_code, Some(3));
    assert_eq!(ended.stdout.unwrap().total_bytes, 10);
    assert!(
        ended.workspace.is_empty(),
        "removed before the end is reported"
    );
    // The same as Status gives afterwards.
    let status = s
        .client
        .status(proto::StatusRequest {
            execution_id: "follow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status, ended);

    // Idempotent as Execute: the existing execution, followed from its start.
    let again = execute_and_follow(&mut s.client, bash("follow", "echo never")).await;
    let (created, output, ended_again) = parts(again);
    assert!(!created);
    assert_eq!(joined(&output, proto::Stream::Stdout), "out1\nout2\n");
    assert_eq!(ended_again, ended);

    // Refused as Execute refuses: no stream, the error at once.
    let refused = s
        .client
        .execute_and_follow(bash("../escape", "true"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_client_that_stops_following_leaves_the_execution_running() {
    let mut s = start(Bounds::default()).await;
    let mut stream = s
        .client
        .execute_and_follow(bash("left", "echo first; sleep 0.3; echo > done.txt"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(proto::execution_event::Event::Started(_))
    ));
    drop(stream);
    let status = wait_terminal(&mut s.client, "left").await;
    assert_eq!(status.phase, proto::Phase::Succeeded as i32, "{status:?}");
}

#[tokio::test]
async fn execute_logs_and_status_round_trip_over_a_unix_socket() {
    let mut s = start(Bounds::default()).await;
    let health = s
        .client
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.ready && health.workspace_writable);
    let response = s
        .client
        .execute(bash(
            "round-trip",
            "echo out1; echo err1 >&2; echo out2; exit 7",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.execution_id, "round-trip");
    assert!(response.created);
    let status = wait_terminal(&mut s.client, "round-trip").await;
    assert_eq!(status.phase, proto::Phase::Failed as i32);
    assert_eq!(status.exit_code, Some(7));
    assert_eq!(status.stdout.unwrap().total_bytes, 10);

    let all = logs(&mut s.client, "round-trip", proto::LogsRequest::default()).await;
    assert_eq!(joined(&all, proto::Stream::Stdout), "out1\nout2\n");
    assert_eq!(joined(&all, proto::Stream::Stderr), "err1\n");
    // Offsets resume without duplicates.
    let rest = logs(
        &mut s.client,
        "round-trip",
        proto::LogsRequest {
            stream: proto::Stream::Stdout as i32,
            stdout_offset: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (rest[0].offset, rest[0].data.as_slice()),
        (5, b"out2\n".as_slice())
    );
}

#[tokio::test]
async fn execute_is_idempotent_on_the_run_uid() {
    let mut s = start(Bounds::default()).await;
    let counter = s.dir.path().join("counter");
    let mut request = bash("once", r#"echo x >> "$COUNTER"; sleep 0.2"#);
    request.env = vec![proto::EnvVar {
        name: "COUNTER".into(),
        value: counter.display().to_string(),
    }];
    let first = s
        .client
        .execute(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = s
        .client
        .execute(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.execution_id, second.execution_id);
    wait_terminal(&mut s.client, "once").await;
    let third = s.client.execute(request).await.unwrap().into_inner();
    assert!(
        !third.created,
        "a terminal execution is still the same execution"
    );
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x\n");
}

#[tokio::test]
async fn cancel_forget_list_and_errors() {
    let mut s = start(Bounds::default()).await;
    s.client.execute(bash("long", "sleep 1000")).await.unwrap();
    let refused = s
        .client
        .forget(proto::ForgetRequest {
            execution_id: "long".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    s.client
        .cancel(proto::CancelRequest {
            execution_id: "long".into(),
            grace_ms: 50,
        })
        .await
        .unwrap();
    let status = wait_terminal(&mut s.client, "long").await;
    assert_eq!(status.phase, proto::Phase::Cancelled as i32);
    let listed = s
        .client
        .list(proto::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    s.client
        .forget(proto::ForgetRequest {
            execution_id: "long".into(),
        })
        .await
        .unwrap();
    let missing = s
        .client
        .status(proto::StatusRequest {
            execution_id: "long".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = s
        .client
        .execute(bash("../escape", "true"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert_eq!(workspaces_left(&s.workspace()), Vec::<String>::new());
}

/// The entries of a workspace root other than spare workspaces, which are checked to
/// be empty directories and no more than the agent keeps.
fn workspaces_left(root: &Path) -> Vec<String> {
    let mut spares = 0;
    let mut left = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with("+spare-") {
            spares += 1;
            // Empty but for, at most, one empty script file kept for the next Run.
            let inside: Vec<_> = std::fs::read_dir(entry.path())
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            assert!(inside.len() <= 1, "{name}: {inside:?}");
            for kept in inside {
                assert!(
                    ["main.sh", "main.py"].contains(&kept.file_name().to_str().unwrap()),
                    "{name}: {kept:?}"
                );
                assert_eq!(kept.metadata().unwrap().len(), 0, "{name}: {kept:?}");
            }
        } else {
            left.push(name);
        }
    }
    assert!(
        spares <= kruntimes_runtimed::limits::SPARE_WORKSPACES,
        "{spares} spare workspaces"
    );
    left
}

#[tokio::test]
async fn execute_beyond_capacity_is_refused() {
    let mut s = start(Bounds {
        max_running: 1,
        ..Bounds::default()
    })
    .await;
    s.client.execute(bash("first", "sleep 1000")).await.unwrap();
    let refused = s.client.execute(bash("second", "true")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    s.client
        .cancel(proto::CancelRequest {
            execution_id: "first".into(),
            grace_ms: 50,
        })
        .await
        .unwrap();
    wait_terminal(&mut s.client, "first").await;
    s.client.execute(bash("second", "true")).await.unwrap();
}

fn quick(uid: &str) -> ExecSpec {
    ExecSpec {
        run_uid: uid.into(),
        interpreter: Some(Interpreter::Exec),
        command: vec!["true".into()],
        keep_workspace: true,
        ..ExecSpec::default()
    }
}

#[tokio::test]
async fn terminal_executions_beyond_the_count_bound_are_forgotten_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(
        Config::new(dir.path()),
        Bounds {
            max_retained: 2,
            retention: Duration::from_secs(3600),
            max_running: 8,
        },
    )
    .unwrap();
    for uid in ["a", "b"] {
        agent.execute(quick(uid)).await.unwrap().0.wait().await;
    }
    assert_eq!(
        agent.sweep(Instant::now()),
        0,
        "exactly at the bound: nothing forgotten"
    );
    agent.execute(quick("c")).await.unwrap().0.wait().await;
    assert_eq!(agent.sweep(Instant::now()), 1);
    let left: Vec<String> = agent
        .list()
        .iter()
        .map(|e| e.run_uid().to_owned())
        .collect();
    assert_eq!(left, ["b", "c"]);
    assert!(
        !dir.path().join("a").exists(),
        "a forgotten execution's workspace goes too"
    );
    assert!(dir.path().join("b").exists());
}

#[tokio::test]
async fn terminal_executions_are_forgotten_after_the_retention_period() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(3600);
    let agent = Agent::new(
        Config::new(dir.path()),
        Bounds {
            retention,
            ..Bounds::default()
        },
    )
    .unwrap();
    let done = agent.execute(quick("done")).await.unwrap().0;
    let ended = done.wait().await.ended_at.unwrap();
    let running = agent.execute(ExecSpec {
        run_uid: "running".into(),
        interpreter: Some(Interpreter::Exec),
        command: vec!["sleep".into(), "1000".into()],
        ..ExecSpec::default()
    });
    let running = running.await.unwrap().0;
    assert_eq!(agent.sweep(ended + retention - Duration::from_millis(1)), 0);
    assert_eq!(agent.sweep(ended + retention), 1);
    assert!(agent.get("done").is_err());
    assert_eq!(
        agent.sweep(ended + retention * 10),
        0,
        "a running execution is never forgotten"
    );
    assert!(agent.get("running").is_ok());
    running.cancel(Some(Duration::from_millis(50)));
    running.wait().await;
}

#[tokio::test]
async fn the_sidecar_proxy_forwards_every_call_to_the_agent() {
    let mut agent = start(Bounds::default()).await;
    let sidecar_socket = agent.dir.path().join("sidecar.sock");
    let agent_socket = agent.dir.path().join("runtimed.sock");
    let proxy = kruntimes_runtimed::sidecar::Proxy::new(&agent_socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listen = sidecar_socket.clone();
    tokio::spawn(async move {
        kruntimes_runtimed::grpc::serve_service_unix(proxy, &listen, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let mut client = connect_with_retry(&sidecar_socket).await;
    assert!(
        client
            .health(proto::HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    client
        .execute(bash("via-sidecar", "echo through; exit 4"))
        .await
        .unwrap();
    let status = wait_terminal(&mut client, "via-sidecar").await;
    assert_eq!(status.exit_code, Some(4));
    let chunks = logs(&mut client, "via-sidecar", proto::LogsRequest::default()).await;
    assert_eq!(joined(&chunks, proto::Stream::Stdout), "through\n");
    // And in one call.
    let events = execute_and_follow(&mut client, bash("followed", "echo along; exit 5")).await;
    let (created, output, ended) = parts(events);
    assert!(created);
    assert_eq!(joined(&output, proto::Stream::Stdout), "along\n");
    assert_eq!(ended.exit_code, Some(5));
    // The agent sees the same execution.
    let direct = agent
        .client
        .status(proto::StatusRequest {
            execution_id: "via-sidecar".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(direct.exit_code, Some(4));
    let _ = stop.send(());
}

#[tokio::test]
async fn the_sidecar_is_not_ready_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = kruntimes_runtimed::sidecar::Proxy::new(&dir.path().join("absent.sock")).unwrap();
    let socket = dir.path().join("sidecar.sock");
    let listen = socket.clone();
    tokio::spawn(async move {
        kruntimes_runtimed::grpc::serve_service_unix(proxy, &listen, std::future::pending())
            .await
            .unwrap();
    });
    let mut client = connect_with_retry(&socket).await;
    let health = client
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!health.ready);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_runs_leave_tasks_fds_state_and_workspaces_flat() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(
        Config::new(dir.path()),
        Bounds {
            max_retained: 10,
            ..Bounds::default()
        },
    )
    .unwrap();
    let batch = |from: usize| {
        let agent = &agent;
        async move {
            for i in from..from + 100 {
                let (e, _) = agent
                    .execute(ExecSpec {
                        run_uid: format!("load-{i}"),
                        interpreter: Some(Interpreter::Bash),
                        script: Some("echo out; echo err >&2".into()),
                        ..ExecSpec::default()
                    })
                    .await
                    .unwrap();
                e.wait().await;
            }
        }
    };
    batch(0).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks, fds) = (metrics.num_alive_tasks(), open_fds());
    batch(100).await;
    // Tasks end a moment after their execution is reported terminal.
    for _ in 0..100 {
        if metrics.num_alive_tasks() <= tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics.num_alive_tasks() <= tasks,
        "tasks grew: {tasks} -> {}",
        metrics.num_alive_tasks()
    );
    assert!(open_fds() <= fds, "fds grew: {fds} -> {}", open_fds());
    agent.sweep(Instant::now());
    assert_eq!(agent.list().len(), 10);
    let entries = workspaces_left(dir.path());
    assert!(
        entries.is_empty(),
        "workspaces or input files left: {entries:?}"
    );
}

/// An exec Run of a program that does not exist ends as a shell would report it: the
/// Execution on the wire is Failed with exit code 127, reason ProgramNotFound, and a
/// message naming the program.
#[tokio::test]
async fn a_missing_program_is_failed_with_127_on_the_wire() {
    let mut server = start(Bounds::default()).await;
    let request = proto::ExecuteRequest {
        run_uid: "missing".into(),
        interpreter: proto::Interpreter::Exec as i32,
        command: vec!["krt-missing-tool".into(), "--flag".into()],
        timeout_ms: 10_000,
        ..Default::default()
    };
    server.client.execute(request).await.unwrap();
    let end = wait_terminal(&mut server.client, "missing").await;
    assert_eq!(
        (end.phase, end.exit_code, end.reason.as_str()),
        (proto::Phase::Failed as i32, Some(127), "ProgramNotFound"),
        "{end:?}"
    );
    assert!(
        end.message
            .contains("\"krt-missing-tool\" not found in PATH"),
        "{}",
        end.message
    );
}

/// A follower slower than the program, that keeps reading (a pause after each of its
/// chunks), still gets every byte: the program goes at its pace.
#[tokio::test]
async fn a_slow_follower_that_keeps_reading_gets_every_byte() {
    const BYTES: usize = 4 << 20;
    let (mut server, _agent) = start_with(Bounds::default(), |config| {
        config.output_limit = 64 * 1024;
    })
    .await;
    let (request, expected) = pattern(BYTES);
    let pace = |_| tokio::time::sleep(Duration::from_millis(2));
    let followed = follow_stdout(&mut server.client, request, pace).await;
    assert_eq!(followed.gaps, vec![], "no byte may be missing");
    assert_eq!(followed.received, BYTES as u64);
    assert_eq!(followed.sha256, expected);
}

/// A follower that stops reading holds the program up for the stall bound only: then
/// it is detached, the Run goes on to its end, the stream holds no more than its limit
/// and the follow buffer, and the follower, reading again, finds one gap, the bytes it
/// missed, all counted.
#[tokio::test]
async fn a_stalled_follower_is_detached_and_finds_one_gap() {
    const BYTES: usize = 16 << 20;
    const LIMIT: usize = 64 * 1024;
    const BUFFER: usize = 256 * 1024;
    let (mut server, agent) = start_with(Bounds::default(), |config| {
        config.output_limit = LIMIT;
        config.follow.buffer = BUFFER;
        config.follow.stall = Duration::from_millis(300);
    })
    .await;
    let (request, _) = pattern(BYTES);
    let status_client = server.client.clone();
    let paused = std::cell::Cell::new(false);
    let followed = follow_stdout(&mut server.client, request, |_| {
        let first = !paused.replace(true);
        let (agent, status_client) = (agent.clone(), status_client.clone());
        async move {
            if !first {
                return;
            }
            // Not reading: the Run must still end, within a bound.
            let end = wait_status_terminal(status_client, "pattern", Duration::from_secs(30)).await;
            assert_eq!(end.phase, proto::Phase::Succeeded as i32, "{end:?}");
            let kept = agent.get("pattern").unwrap().stdout.kept();
            assert!(kept <= LIMIT + BUFFER, "{kept} bytes kept");
        }
    })
    .await;
    assert_eq!(followed.gaps.len(), 1, "{:?}", followed.gaps);
    let missed = followed.gaps[0].1;
    assert!(missed > 0);
    assert_eq!(followed.received + missed, BYTES as u64);
    let stats = followed.ended.unwrap().stdout.unwrap();
    assert_eq!(stats.total_bytes, BYTES as u64);
    // The follower missed no more than runtimed dropped of what it retains.
    assert!(
        missed <= stats.dropped_bytes,
        "{missed} > {}",
        stats.dropped_bytes
    );
}

/// Polls Status (not Logs) until the execution is terminal, for at most `bound`.
async fn wait_status_terminal(
    mut client: RuntimedClient<Channel>,
    id: &str,
    bound: Duration,
) -> proto::Execution {
    let deadline = Instant::now() + bound;
    loop {
        let status = client
            .status(proto::StatusRequest {
                execution_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.phase != proto::Phase::Running as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {bound:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
