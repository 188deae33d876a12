//! One running execution, supervised to its end: its exit, timeout, cancel or a full
//! workspace; then the kill of every process of the Run, the drain of its pipes and the
//! removal of its workspace.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::execution::{Execution, Phase, StopCause, StopRequest, finish};
use super::usage::WorkspaceUsage;
use crate::Reason;
use crate::agent::cgroup::{RunCgroup, RunCgroups};
use crate::agent::output::OutputStream;
use crate::agent::procs::{
    holds_only_known_children, is_zombie, run_processes, signal_run, signal_run_all_of_proc,
    walks_subtree,
};
use crate::agent::reaper::{Exit, Reaper};
use crate::agent::spawner::Spawner;
use crate::agent::workspace::disk_usage;
use crate::{limits, lock};

pub(super) struct Driver {
    pub(super) execution: Arc<Execution>,
    pub(super) grace: Duration,
    pub(super) leader: i32,
    pub(super) keep: bool,
    pub(super) workspace_limit: Option<u64>,
    pub(super) check_interval: Duration,
    /// How long the pipes are drained once every process is gone: what the output's
    /// followers may hold the pipe's reader up ([`crate::agent::output::FollowLimits`])
    /// plus [`limits::PIPE_DRAIN_TIMEOUT`].
    pub(super) drain_timeout: Duration,
    pub(super) usage: Arc<WorkspaceUsage>,
    pub(super) reaper: Arc<Reaper>,
    pub(super) spawner: Option<Arc<Spawner>>,
    /// The Run's input file, removed once it is terminal.
    pub(super) input: Option<PathBuf>,
    /// The Run's cgroup, and where it goes back once the Run is over.
    pub(super) cgroup: Option<RunCgroup>,
    pub(super) cgroups: Option<Arc<RunCgroups>>,
}

/// How an execution ends, before the rest of the Run is killed.
struct Outcome {
    phase: Phase,
    reason: Reason,
    exit: Option<Exit>,
    message: String,
    /// Whether the workspace goes.
    remove: bool,
}

enum Stop {
    Exited(Exit),
    TimedOut,
    /// Stopped early: a `Cancel` call or the agent's own shutdown.
    Stopped(StopRequest),
    WorkspaceFull(String),
    /// The exit status can no longer come: the spawner process ended (killed) while
    /// the Run was running.
    Lost,
}

impl Driver {
    pub(super) async fn drive(
        mut self,
        mut exit_rx: oneshot::Receiver<Exit>,
        cancel_rx: oneshot::Receiver<StopRequest>,
        timeout: Duration,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) {
        let out_task = Some(tokio::spawn(pump(stdout, self.execution.stdout.clone())));
        let err_task = Some(tokio::spawn(pump(stderr, self.execution.stderr.clone())));

        let cancel = async {
            match cancel_rx.await {
                Ok(request) => request,
                Err(_) => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            exit = &mut exit_rx => match exit {
                Ok(exit) => Stop::Exited(exit),
                Err(_) => Stop::Lost,
            },
            () = tokio::time::sleep(timeout) => Stop::TimedOut,
            request = cancel => Stop::Stopped(request),
            message = self.watch_workspace() => Stop::WorkspaceFull(message),
        };
        self.usage.remove(&self.execution.run_uid);
        // No cancel after this point.
        drop(lock(&self.execution.cancel).take());
        let Outcome {
            phase,
            reason,
            exit,
            mut message,
            remove,
        } = self.outcome(stop, exit_rx).await;
        // Whatever is left of the Run (background processes, escaped ones) goes now.
        let leftover = self.kill_all().await;
        if leftover > 0 {
            self.execution.reusable.store(false, Ordering::Relaxed);
            message = format!("{leftover} process(es) of the Run could not be killed");
        }
        for task in [out_task, err_task].into_iter().flatten() {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.drain_timeout, task)
                .await
                .is_err()
            {
                abort.abort();
                message = "output pipe still open after every process was killed".into();
            }
        }
        if let Some(input) = &self.input {
            let _ = fs::remove_file(input);
        }
        if remove {
            self.execution.remove_workspace().await;
        }
        if let (Some(cgroups), Some(cgroup)) = (&self.cgroups, self.cgroup.take()) {
            cgroups.release(cgroup);
        }
        finish(&self.execution, phase, exit, reason, message);
        // Only now, so that a client whose `Logs` follow has ended finds the execution
        // terminal (one Status call, no polling).
        self.execution.stdout.close();
        self.execution.stderr.close();
    }

    /// How the execution ends for `stop`: at once for an exit, after the Run's
    /// processes were ended (SIGTERM, grace, SIGKILL) for a timeout, a cancel or a full
    /// workspace.
    async fn outcome(&self, stop: Stop, exit_rx: oneshot::Receiver<Exit>) -> Outcome {
        let (phase, reason, exit) = match stop {
            Stop::Exited(exit) => {
                let phase = if exit == Exit::Code(0) {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                let reason = match exit {
                    Exit::Code(0) => Reason::Completed,
                    Exit::Code(_) => Reason::NonZeroExit,
                    Exit::Signal(_) => Reason::Signaled,
                };
                (phase, reason, Some(exit))
            }
            Stop::TimedOut => {
                let exit = self.terminate(exit_rx, self.grace).await;
                (Phase::TimedOut, Reason::DeadlineExceeded, exit)
            }
            Stop::Stopped(request) => {
                let exit = self
                    .terminate(exit_rx, request.grace.unwrap_or(self.grace))
                    .await;
                if request.cause == StopCause::AgentStopping {
                    // Nobody cancelled it: the platform ended it.
                    return Outcome {
                        phase: Phase::Error,
                        reason: Reason::AgentStopping,
                        exit,
                        message: "runtimed's agent was stopping (its pod deleted or its \
                                  container stopped) and ended the Run's processes"
                            .into(),
                        remove: !self.keep,
                    };
                }
                (Phase::Cancelled, Reason::Cancelled, exit)
            }
            Stop::WorkspaceFull(full) => {
                let exit = self.terminate(exit_rx, self.grace).await;
                // Removed even when it was to be kept: keeping it would keep the disk full.
                return Outcome {
                    phase: Phase::Failed,
                    reason: Reason::WorkspaceFull,
                    exit,
                    message: full,
                    remove: true,
                };
            }
            Stop::Lost => {
                // Its processes (the first one now adopted by this process) are killed
                // after this with everything else of the Run.
                return Outcome {
                    phase: Phase::Error,
                    reason: Reason::SpawnerLost,
                    exit: None,
                    message: "the spawner process ended before the Run's exit was known; \
                              every process of the Run was killed"
                        .into(),
                    remove: !self.keep,
                };
            }
        };
        Outcome {
            phase,
            reason,
            exit,
            message: String::new(),
            remove: !self.keep,
        }
    }

    /// Measures the workspace every `check_interval` while a size limit is set; returns
    /// a message once this Run has to fail because the workspaces together exceed it.
    async fn watch_workspace(&self) -> String {
        let Some(limit) = self.workspace_limit else {
            return std::future::pending().await;
        };
        // The first look one interval in: at the start the workspace holds only the
        // inline files, already checked against the limit.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.check_interval,
            self.check_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let dir = self.execution.workspace.clone();
            // One byte past the limit is enough to know this workspace alone exceeds it.
            let stop_at = limit.saturating_add(1);
            let size = tokio::task::spawn_blocking(move || disk_usage(&dir, stop_at))
                .await
                .unwrap_or(0);
            if let Some(message) = self.usage.record(&self.execution.run_uid, size, limit) {
                return message;
            }
        }
    }

    /// SIGTERM to every process of the Run, `grace`, then SIGKILL until none is left.
    async fn terminate(
        &self,
        mut exit_rx: oneshot::Receiver<Exit>,
        grace: Duration,
    ) -> Option<Exit> {
        signal_run(self.leader, &self.execution.run_uid, Signal::SIGTERM);
        if let Some(cgroup) = &self.cgroup {
            // Also those the look above cannot tell apart (left the session, cleared
            // their environment, re-parented).
            for pid in cgroup.pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        if let Ok(Ok(exit)) = tokio::time::timeout(grace, &mut exit_rx).await {
            return Some(exit);
        }
        self.kill_all().await;
        exit_rx.await.ok()
    }

    /// SIGKILL to every process of the Run, found through its cgroup and through
    /// `/proc`; returns how many could not be killed.
    async fn kill_all(&self) -> usize {
        let in_cgroup = self.kill_cgroup().await;
        in_cgroup.max(self.kill_found().await)
    }

    /// SIGKILL to everything in the Run's cgroup (`cgroup.kill`: processes forked
    /// meanwhile too), then waits, as many rounds as [`Driver::kill_found`], until it is
    /// empty and what it held has been reaped. Returns how many processes are still in
    /// it. Nothing to do without a cgroup, or with an empty one (the usual end).
    async fn kill_cgroup(&self) -> usize {
        let Some(cgroup) = &self.cgroup else {
            return 0;
        };
        if cgroup.is_empty() {
            return 0;
        }
        let killed = cgroup.pids();
        if let Err(e) = cgroup.kill() {
            tracing::warn!(cgroup = %cgroup.path().display(), error = %e, "cgroup.kill failed");
        }
        let mut rounds = 0;
        while !cgroup.is_empty() && rounds < limits::MAX_KILL_ROUNDS {
            rounds += 1;
            tokio::time::sleep(limits::KILL_ROUND_PAUSE).await;
        }
        let left = cgroup.pids().len();
        wait_reaped(killed, rounds).await;
        left
    }

    /// SIGKILL rounds until no process of the Run is found through `/proc` (see
    /// [`crate::agent::procs`]); returns how many remain. Then waits (same bound) until
    /// the reaper has collected the ones it killed, so that when a Run is terminal not
    /// even a zombie of it is left in `/proc`.
    async fn kill_found(&self) -> usize {
        let uid = self.execution.run_uid.clone();
        let leader = self.leader;
        // Nothing to look for when it is provable that nothing of the Run is left: its
        // first process was reaped while the spawner had no stray child, and this
        // process holds no orphan at all (`holds_only_known_children`). The usual case
        // (a Run that leaves no background process), and it saves reading every
        // entry of /proc for each Run.
        if let Some(spawner) = &self.spawner
            && spawner.take_clean_exit(leader)
            && holds_only_known_children(&self.reaper)
        {
            return 0;
        }
        // A second look, through all of /proc, when the first finds nothing: the
        // subtree walk races with orphans being re-parented between threads
        // (`signal_run_all_of_proc`), and nothing may be left behind.
        let round = move |uid: &str| {
            let found = signal_run(leader, uid, Signal::SIGKILL);
            if found.is_empty() {
                signal_run_all_of_proc(leader, uid, Signal::SIGKILL)
            } else {
                found
            }
        };
        let mut killed: Vec<i32> = Vec::new();
        let mut rounds = 0;
        let mut cleared = false;
        while rounds < limits::MAX_KILL_ROUNDS {
            rounds += 1;
            // With the subtree walk, a round is a few small reads plus, once per Run,
            // the confirming look through /proc: done here, which saves two thread
            // hand-offs per Run. Without it, every look reads all of /proc, on a
            // blocking thread.
            let found = if walks_subtree() {
                round(&uid)
            } else {
                let uid = uid.clone();
                tokio::task::spawn_blocking(move || round(&uid))
                    .await
                    .unwrap_or_default()
            };
            if found.is_empty() {
                cleared = true;
                break;
            }
            killed.extend(found);
            tokio::time::sleep(limits::KILL_ROUND_PAUSE).await;
        }
        if !cleared {
            let uid = uid.clone();
            return tokio::task::spawn_blocking(move || run_processes(leader, &uid).len())
                .await
                .unwrap_or(0);
        }
        wait_reaped(killed, rounds).await;
        0
    }
}

/// Waits until none of `killed` is a zombie any more (its parent, or this process as
/// the subreaper, has reaped it), for what is left of [`limits::MAX_KILL_ROUNDS`] after
/// `rounds`.
async fn wait_reaped(mut killed: Vec<i32>, mut rounds: usize) {
    killed.sort_unstable();
    killed.dedup();
    while rounds < limits::MAX_KILL_ROUNDS {
        killed.retain(|pid| is_zombie(*pid));
        if killed.is_empty() {
            break;
        }
        rounds += 1;
        tokio::time::sleep(limits::KILL_ROUND_PAUSE).await;
    }
}

/// The first read buffer of a pipe.
const FIRST_READ_BYTES: usize = 4096;

async fn pump(fd: std::os::fd::OwnedFd, stream: Arc<OutputStream>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    // Small at first (most Runs write little: no 64 KiB to allocate and fault in per
    // stream), doubled while reads fill it, up to READ_CHUNK_BYTES.
    let mut buf = vec![0u8; FIRST_READ_BYTES];
    loop {
        // Only what the stream can take without dropping bytes a follower that keeps up
        // has not read: until then the pipe fills and the program waits.
        let room = stream.room(buf.len()).await;
        let want = buf.len().min(room);
        match pipe.read(&mut buf[..want]).await {
            Ok(0) => return,
            Ok(n) => {
                stream.push(&buf[..n]);
                if n == buf.len() && buf.len() < limits::READ_CHUNK_BYTES {
                    buf.resize((buf.len() * 2).min(limits::READ_CHUNK_BYTES), 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
