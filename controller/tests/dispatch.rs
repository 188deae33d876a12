//! The dispatcher against real runtimed processes on loopback (agent and sidecar, TLS
//! with the pinned certificate and the bearer token): a Run end to end with its status
//! writes counted, failure and timeout, cancel, the agent killed mid-Run, the agent
//! stopped by SIGTERM (`PodLost`, not `Cancelled`), a pod that stops answering past the
//! Run's deadline, a pod that goes away, a restarted dispatcher that re-attaches, a
//! terminal status the API refuses for a while, a Run started while its writes are held
//! (the reconciler adding its finalizer), one whose Run object is gone (cancelled), and
//! concurrency never exceeded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kruntimes_api::v1alpha1::{RunPhase, RunStatus};
use kruntimes_controller::Error;
use kruntimes_controller::dispatch::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, Credentials, DispatchOptions, Dispatcher, PENDING_WRITE_DELAY,
    PodTarget, PoolSpec, RunKey, RuntimeKey, StatusSink, Submission, WriteOrder,
};
use kruntimes_controller::metrics::Metrics;
use kruntimes_runtimed_api::proto;
use kruntimes_testkit::runtimed::{Identity, Pod};

/// Every status written, in order.
#[derive(Default)]
struct Recorder {
    writes: Mutex<Vec<(RunKey, RunStatus)>>,
    changed: tokio::sync::Notify,
    /// How many terminal writes to refuse (as an API server answering 500), and how
    /// many were refused.
    refuse_terminal: AtomicU32,
    refused: AtomicU32,
    /// Runs whose every write finds no Run (as for one deleted meanwhile).
    gone: Mutex<Vec<String>>,
}

impl StatusSink for Recorder {
    fn write<'a>(
        &'a self,
        run: &'a RunKey,
        status: &'a RunStatus,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if self.gone.lock().unwrap().contains(&run.uid) {
                let status = kube::core::Status::failure("not found", "NotFound").with_code(404);
                return Err(Error::kube(
                    "apply status",
                    kube::Error::Api(status.boxed()),
                ));
            }
            let terminal = status.phase.is_some_and(RunPhase::is_terminal);
            let refuse = terminal
                && self
                    .refuse_terminal
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if refuse {
                self.refused.fetch_add(1, Ordering::SeqCst);
                let status =
                    kube::core::Status::failure("injected", "InternalError").with_code(500);
                return Err(Error::kube(
                    "apply status",
                    kube::Error::Api(status.boxed()),
                ));
            }
            self.writes
                .lock()
                .unwrap()
                .push((run.clone(), status.clone()));
            self.changed.notify_waiters();
            Ok(())
        })
    }
}

impl Recorder {
    fn of(&self, uid: &str) -> Vec<RunStatus> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.uid == uid)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Waits (60 s at most) until a status of `uid` satisfies `done`, and returns it.
    async fn until(&self, uid: &str, done: impl Fn(&RunStatus) -> bool) -> RunStatus {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(found) = self.of(uid).into_iter().find(|s| done(s)) {
                    return found;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("{uid}: no such status: {:?}", self.of(uid)))
    }

    async fn terminal(&self, uid: &str) -> RunStatus {
        self.until(uid, |s| s.phase.is_some_and(RunPhase::is_terminal))
            .await
    }

    async fn running(&self, uid: &str) -> RunStatus {
        self.until(uid, |s| s.phase == Some(RunPhase::Running))
            .await
    }
}

/// Kills every process whose environment carries the Run's marker.
fn kill_marked(uid: &str) {
    let marker = format!("KRT_RUN_ID={uid}").into_bytes();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let marked = std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker));
        if marked {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn runtime() -> RuntimeKey {
    RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    }
}

fn pool(pods: &[(&str, &Pod)], concurrency: u32) -> PoolSpec {
    let first = pods[0].1;
    PoolSpec {
        concurrency,
        pods: pods
            .iter()
            .map(|(name, pod)| PodTarget {
                name: (*name).into(),
                ip: pod.addr.ip().to_string(),
                ready: true,
                terminating: false,
            })
            .collect(),
        credentials: Some(Credentials {
            token: first.token.clone(),
            certificate_pem: first.certificate_pem.clone().into_bytes(),
            server_name: first.server_name.clone(),
            port: first.addr.port(),
        }),
    }
}

fn submission(uid: &str, script: &str, created: i64) -> Submission {
    Submission {
        key: RunKey {
            namespace: "team-a".into(),
            name: format!("run-{uid}"),
            uid: uid.into(),
        },
        created,
        request: proto::ExecuteRequest {
            run_uid: uid.into(),
            interpreter: proto::Interpreter::Bash as i32,
            script: Some(script.into()),
            ..Default::default()
        },
        status: RunStatus {
            phase: Some(RunPhase::Pending),
            ..Default::default()
        },
        status_written: true,
        write_order: WriteOrder::default(),
        running_on: None,
        attempts: 0,
    }
}

fn setup(pods: &[(&str, &Pod)], concurrency: u32) -> (Arc<Recorder>, Dispatcher) {
    let sink = Arc::new(Recorder::default());
    let dispatcher = Dispatcher::new(sink.clone());
    dispatcher.set_pool(&runtime(), pool(pods, concurrency));
    (sink, dispatcher)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_succeeds_with_its_tails_in_two_writes_after_the_queued_one() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 2);
    dispatcher.submit(&runtime(), submission("u1", "echo out; echo err >&2", 1));
    let end = sink.terminal("u1").await;
    assert_eq!(end.phase, Some(RunPhase::Succeeded), "{end:?}");
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(end.pod.as_deref(), Some("p0"));
    assert_eq!(end.execution_id.as_deref(), Some("u1"));
    let output = end.output.clone().unwrap();
    assert_eq!(output.stdout_tail, "out\n");
    assert_eq!(output.stderr_tail, "err\n");
    assert!(end.start_time.is_some() && end.completion_time.is_some());
    let writes: Vec<_> = sink.of("u1").iter().map(|s| s.phase).collect();
    assert_eq!(writes, [Some(RunPhase::Running), Some(RunPhase::Succeeded)]);
    // The slot is freed right after the terminal write.
    let freed = async {
        while dispatcher.busy(&runtime()) != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), freed)
        .await
        .expect("the slot is freed");
}

/// `submission`, its `Pending` status not written yet (as the reconciler submits a new
/// Run).
fn unwritten(uid: &str, script: &str, created: i64) -> Submission {
    let mut submission = submission(uid, script, created);
    submission.status.reason = Some("WaitingForCapacity".into());
    submission.status.queued_at = Some("2026-01-01T00:00:00Z".into());
    submission.status_written = false;
    submission
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_dispatched_at_once_is_never_written_pending() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    dispatcher.submit(&runtime(), unwritten("now", "true", 1));
    sink.terminal("now").await;
    tokio::time::sleep(PENDING_WRITE_DELAY * 2).await;
    let writes = sink.of("now");
    let phases: Vec<_> = writes.iter().map(|s| s.phase).collect();
    assert_eq!(phases, [Some(RunPhase::Running), Some(RunPhase::Succeeded)]);
    let running = &writes[0];
    assert_eq!(running.queued_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(
        running.reason, None,
        "no stale WaitingForCapacity: {running:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_waits_for_a_slot_is_written_pending_then_running_without_its_reason() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    let mut first = submission("first", "sleep 2", 1);
    first.request.timeout_ms = 60_000;
    dispatcher.submit(&runtime(), first);
    sink.running("first").await;
    dispatcher.submit(&runtime(), unwritten("second", "true", 2));
    sink.terminal("second").await;
    let writes = sink.of("second");
    let phases: Vec<_> = writes.iter().map(|s| s.phase).collect();
    assert_eq!(
        phases,
        [
            Some(RunPhase::Pending),
            Some(RunPhase::Running),
            Some(RunPhase::Succeeded)
        ],
        "{writes:?}"
    );
    assert_eq!(writes[0].reason.as_deref(), Some("WaitingForCapacity"));
    assert_eq!(writes[1].reason, None, "{:?}", writes[1]);
    assert_eq!(writes[1].queued_at, writes[0].queued_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_starts_while_its_write_order_is_held_and_is_written_running_after() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("echo > {}", marker.display());
    let held_run = submission("held", &script, 1);
    // As the reconciler holds it while it adds the Run's finalizer.
    let held = held_run
        .write_order
        .hold()
        .expect("a new Run's writes are free");
    dispatcher.submit(&runtime(), held_run);
    let started = async {
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("the process started while the writes were held");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.of("held").is_empty(), "{:?}", sink.of("held"));
    drop(held);
    sink.terminal("held").await;
    let phases: Vec<_> = sink.of("held").iter().map(|s| s.phase).collect();
    assert_eq!(phases, [Some(RunPhase::Running), Some(RunPhase::Succeeded)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_running_write_finds_no_run_is_cancelled() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    sink.gone.lock().unwrap().push("deleted".into());
    let mut deleted = submission("deleted", "sleep 100", 1);
    deleted.request.timeout_ms = 600_000;
    dispatcher.submit(&runtime(), deleted);
    let target = kruntimes_runtimed_api::client::TlsTarget {
        authority: pod.addr.to_string(),
        server_name: pod.server_name.clone(),
        certificate_pem: pod.certificate_pem.clone().into_bytes(),
        token: pod.token.clone(),
    };
    let mut client = kruntimes_runtimed_api::client::connect_tls(&target, CONNECT_TIMEOUT)
        .await
        .unwrap();
    // runtimed ends it cancelled: long before its `sleep 100`.
    let cancelled = async {
        loop {
            let request = proto::StatusRequest {
                execution_id: "deleted".into(),
            };
            if let Ok(answer) = client.status(request).await {
                let execution = answer.into_inner();
                if execution.phase != proto::Phase::Running as i32 {
                    return execution;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let execution = tokio::time::timeout(Duration::from_secs(30), cancelled)
        .await
        .expect("the deleted Run ended");
    assert_eq!(
        execution.phase,
        proto::Phase::Cancelled as i32,
        "{execution:?}"
    );
    assert!(sink.of("deleted").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_program_and_a_timeout_end_in_their_phases() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 2);
    dispatcher.submit(&runtime(), submission("fail", "exit 7", 1));
    let mut slow = submission("slow", "sleep 100", 2);
    slow.request.timeout_ms = 300;
    dispatcher.submit(&runtime(), slow);
    let failed = sink.terminal("fail").await;
    assert_eq!(
        (failed.phase, failed.exit_code),
        (Some(RunPhase::Failed), Some(7))
    );
    let timed_out = sink.terminal("slow").await;
    assert_eq!(timed_out.phase, Some(RunPhase::TimedOut), "{timed_out:?}");
    assert_eq!(timed_out.reason.as_deref(), Some("DeadlineExceeded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_a_running_run_cancelled_and_a_queued_one_never_starts() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    dispatcher.submit(&runtime(), submission("long", "sleep 100", 1));
    dispatcher.submit(&runtime(), submission("queued", "echo never", 2));
    sink.running("long").await;
    assert_eq!(
        dispatcher.queued(&runtime()),
        1,
        "one slot: the second waits"
    );
    assert!(
        !dispatcher.cancel(&runtime(), "queued"),
        "a queued Run is only dropped"
    );
    assert!(dispatcher.cancel(&runtime(), "long"));
    let end = sink.terminal("long").await;
    assert_eq!(end.phase, Some(RunPhase::Cancelled), "{end:?}");
    assert!(
        sink.of("queued").is_empty(),
        "the dropped Run was never dispatched"
    );
    assert_eq!(dispatcher.queued(&runtime()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_killed_mid_run_ends_it_in_error_never_running_forever() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    dispatcher.submit(&runtime(), submission("doomed", "sleep 100", 1));
    sink.running("doomed").await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pod.agent_pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let end = sink.terminal("doomed").await;
    kill_marked("doomed");
    assert_eq!(end.phase, Some(RunPhase::Error), "{end:?}");
    assert!(end.reason.is_some() && end.message.is_some(), "{end:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_agent_is_stopped_ends_pod_lost_not_cancelled() {
    let pod = Pod::start(&["--grace-ms", "100"]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    dispatcher.submit(&runtime(), submission("stopped", "sleep 100", 1));
    sink.running("stopped").await;
    // What the kubelet sends to the agent (PID 1 of the container) when the pod is
    // deleted; the controller never cancelled the Run.
    std::process::Command::new("kill")
        .args(["-TERM", &pod.agent_pid().to_string()])
        .status()
        .unwrap();
    let end = sink.terminal("stopped").await;
    assert_eq!(end.phase, Some(RunPhase::Error), "{end:?}");
    assert_eq!(end.reason.as_deref(), Some("PodLost"), "{end:?}");
    assert!(
        end.message.as_deref().unwrap().contains("AgentStopping"),
        "{end:?}"
    );
}

/// Sends `signal` to each of `pids`.
fn signal_all(signal: &str, pids: &[u32]) {
    for pid in pids {
        std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_deadline_on_a_pod_that_stopped_answering_ends_in_error() {
    let pod = Pod::start(&[]);
    let sink = Arc::new(Recorder::default());
    let grace = Duration::from_millis(500);
    let dispatcher = Dispatcher::with_options(
        sink.clone(),
        Arc::new(Metrics::default()),
        DispatchOptions {
            deadline_grace: grace,
        },
    );
    dispatcher.set_pool(&runtime(), pool(&[("p0", &pod)], 1));
    let mut silent = submission("silent", "sleep 100", 1);
    silent.request.timeout_ms = 1000;
    dispatcher.submit(&runtime(), silent);
    sink.running("silent").await;
    let started = std::time::Instant::now();
    // runtimed stops answering with its connection open (a frozen node, a network
    // that drops packets): no error reaches the dispatcher, nothing ends the call,
    // and the pod is still in the pool, neither deleted nor unready.
    let pids = [pod.sidecar_pid(), pod.agent_pid()];
    signal_all("-STOP", &pids);
    let end = sink.terminal("silent").await;
    let took = started.elapsed();
    signal_all("-CONT", &pids);
    kill_marked("silent");
    assert_eq!(end.phase, Some(RunPhase::Error), "{end:?}");
    assert_eq!(
        end.reason.as_deref(),
        Some("RuntimedUnreachable"),
        "{end:?}"
    );
    assert!(
        end.message.as_deref().unwrap().contains("deadline passed"),
        "{end:?}"
    );
    // The timeout, the grace, then one connection attempt and one call, bounded.
    let bound = Duration::from_millis(1000) + grace + CONNECT_TIMEOUT + CALL_TIMEOUT;
    assert!(
        took >= Duration::from_millis(1000) && took <= bound + Duration::from_secs(2),
        "ended after {took:?}, expected within {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_goes_away_mid_run_ends_it_pod_lost() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    dispatcher.submit(&runtime(), submission("pod-gone", "sleep 100", 1));
    sink.running("pod-gone").await;
    // The pod is lost with its node: gone from the pool, runtimed killed outright.
    let mut gone = pool(&[("p0", &pod)], 1);
    gone.pods.clear();
    dispatcher.set_pool(&runtime(), gone);
    for pid in [pod.sidecar_pid(), pod.agent_pid()] {
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    }
    let end = sink.terminal("pod-gone").await;
    // The Run's own process outlives a killed agent here (no PID namespace to end
    // with it, as in a pod): end it so nothing of the test is left.
    kill_marked("pod-gone");
    drop(pod);
    assert_eq!(end.phase, Some(RunPhase::Error), "{end:?}");
    assert_eq!(end.reason.as_deref(), Some("PodLost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_dispatcher_reattaches_to_a_running_run_and_it_completes_once() {
    let pod = Pod::start(&[]);
    let (first_sink, first) = setup(&[("p0", &pod)], 1);
    let script = "echo started; sleep 1; echo done";
    first.submit(&runtime(), submission("again", script, 1));
    let running = first_sink.running("again").await;
    drop(first);
    // A restarted controller: a new dispatcher finds the Run Running on p0.
    let (sink, second) = setup(&[("p0", &pod)], 1);
    let mut resumed = submission("again", script, 1);
    resumed.status = running;
    resumed.running_on = Some("p0".into());
    second.submit(&runtime(), resumed);
    // The pod's one slot is taken by it: this one waits until it ended.
    second.submit(&runtime(), submission("next", "echo next", 2));
    let end = sink.terminal("again").await;
    assert_eq!(end.phase, Some(RunPhase::Succeeded), "{end:?}");
    assert_eq!(
        end.output.unwrap().stdout_tail,
        "started\ndone\n",
        "followed from its start, run once"
    );
    assert!(
        sink.of("again")
            .iter()
            .all(|s| s.phase != Some(RunPhase::Running)),
        "a re-attached Run is not written Running again"
    );
    let next = sink.terminal("next").await;
    assert_eq!(next.phase, Some(RunPhase::Succeeded));
    let next_started = next.start_time.unwrap();
    assert!(
        next_started >= end.completion_time.unwrap(),
        "the slot was respected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_status_the_api_refuses_is_written_again_until_it_is_taken() {
    let pod = Pod::start(&[]);
    let (sink, dispatcher) = setup(&[("p0", &pod)], 1);
    sink.refuse_terminal.store(2, Ordering::SeqCst);
    dispatcher.submit(&runtime(), submission("flaky", "echo ok", 1));
    let end = sink.terminal("flaky").await;
    assert_eq!(end.phase, Some(RunPhase::Succeeded), "{end:?}");
    assert_eq!(
        sink.refused.load(Ordering::SeqCst),
        2,
        "refused twice first"
    );
    // The slot is not held while the end is written again.
    dispatcher.submit(&runtime(), submission("after", "echo after", 2));
    let after = sink.terminal("after").await;
    assert_eq!(after.phase, Some(RunPhase::Succeeded), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_runs_on_two_pods_never_exceed_their_concurrency() {
    let identity = Identity::new();
    let a = Pod::start_with(&[], &identity);
    let b = Pod::start_with(&[], &identity);
    // Both pods listen on 127.0.0.1 with their own ports; the pool gives one port, so
    // each pod is its own Runtime here, with the same credentials.
    let sink = Arc::new(Recorder::default());
    let dispatcher = Dispatcher::new(sink.clone());
    let rt_b = RuntimeKey {
        namespace: "team-a".into(),
        name: "bash-b".into(),
    };
    dispatcher.set_pool(&runtime(), pool(&[("a", &a)], 2));
    dispatcher.set_pool(&rt_b, pool(&[("b", &b)], 2));
    for i in 0..50 {
        let rt = if i % 2 == 0 { runtime() } else { rt_b.clone() };
        dispatcher.submit(&rt, submission(&format!("r{i:02}"), "sleep 0.05", i));
    }
    for i in 0..50 {
        let end = sink.terminal(&format!("r{i:02}")).await;
        assert_eq!(end.phase, Some(RunPhase::Succeeded), "r{i:02}: {end:?}");
    }
    // Replay the writes: per pod, the Runs between their Running and terminal writes.
    let mut open: HashMap<String, i32> = HashMap::new();
    let mut most: HashMap<String, i32> = HashMap::new();
    for (_, status) in sink.writes.lock().unwrap().iter() {
        let pod = status.pod.clone().unwrap();
        let count = open.entry(pod.clone()).or_default();
        *count += if status.phase == Some(RunPhase::Running) {
            1
        } else {
            -1
        };
        let m = most.entry(pod).or_default();
        *m = (*m).max(*count);
    }
    assert_eq!(most.get("a"), Some(&2), "{most:?}");
    assert_eq!(most.get("b"), Some(&2), "{most:?}");
}
