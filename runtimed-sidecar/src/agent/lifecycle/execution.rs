//! One execution: its phase and exit, its output streams, its cancel handle and its
//! workspace's removal.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

use crate::Reason;
use crate::agent::output::OutputStream;
use crate::agent::reaper::Exit;
use crate::agent::spares::Spares;
use crate::{limits, lock};

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The process runs (or is being prepared).
    Running,
    /// Exit 0.
    Succeeded,
    /// Non-zero exit or killed by a signal.
    Failed,
    /// The timeout elapsed.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// The platform failed; see the reason.
    Error,
}

impl Phase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

/// Why an execution is asked to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// A `Cancel` call: it ends `Cancelled`.
    Cancelled,
    /// The agent itself is stopping (SIGTERM to PID 1: the pod is being deleted or
    /// its container stopped). Nobody cancelled the Run, so it ends `Error` with reason
    /// `AgentStopping`, never `Cancelled`.
    AgentStopping,
}

/// A request to stop an execution early: its cause and the SIGTERM-to-SIGKILL grace
/// (`None`: the configured one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// Why.
    pub cause: StopCause,
    /// The grace period.
    pub grace: Option<Duration>,
}

/// An immutable view of an execution.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The phase.
    pub phase: Phase,
    /// The first process, once started.
    pub pid: Option<u32>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal, when it was killed by one.
    pub signal: Option<i32>,
    /// When the process started.
    pub started: Option<SystemTime>,
    /// When the execution became terminal.
    pub ended: Option<SystemTime>,
    /// Monotonic end, for retention.
    pub ended_at: Option<Instant>,
    /// Why it is in its phase (`None` while running).
    pub reason: Option<Reason>,
    /// Detail.
    pub message: String,
    /// Whether the workspace still exists.
    pub workspace_present: bool,
}

/// One execution: its state, output and cancel handle.
#[derive(Debug)]
pub struct Execution {
    pub(super) run_uid: String,
    pub(super) workspace: PathBuf,
    pub(super) state: watch::Sender<Snapshot>,
    /// Standard output.
    pub stdout: Arc<OutputStream>,
    /// Standard error.
    pub stderr: Arc<OutputStream>,
    pub(super) cancel: Mutex<Option<oneshot::Sender<StopRequest>>>,
    pub(super) spares: Arc<Spares>,
    /// False once a process of the Run outlived the kill of all of them: its workspace
    /// is then removed, never kept as a spare.
    pub(super) reusable: AtomicBool,
}

impl Execution {
    /// The Run's uid (also the execution id).
    pub fn run_uid(&self) -> &str {
        &self.run_uid
    }

    /// The workspace directory.
    pub fn workspace(&self) -> &PathBuf {
        &self.workspace
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// The current phase (no copy of the snapshot).
    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// When the execution became terminal (monotonic), if it is.
    pub fn ended_at(&self) -> Option<Instant> {
        self.state.borrow().ended_at
    }

    /// Waits until the execution is terminal and returns its final state.
    pub async fn wait(&self) -> Snapshot {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| s.phase.is_terminal()).await {
            Ok(s) => s.clone(),
            Err(_) => self.snapshot(),
        }
    }

    /// Asks the execution to stop: SIGTERM, `grace` (or the configured one), SIGKILL.
    /// Returns false when it was already terminal or cancelling.
    pub fn cancel(&self, grace: Option<Duration>) -> bool {
        self.stop(StopRequest {
            cause: StopCause::Cancelled,
            grace,
        })
    }

    /// Asks the execution to stop for `request`'s cause, as [`Execution::cancel`] does
    /// for a `Cancel` call. Returns false when it was already terminal or stopping.
    pub fn stop(&self, request: StopRequest) -> bool {
        let sender = lock(&self.cancel).take();
        sender.is_some_and(|tx| tx.send(request).is_ok())
    }

    /// Deletes the workspace (after the execution is terminal). Only one this execution
    /// made: a directory that was already at its path (the start then failed with
    /// `WorkspaceUnavailable`) is not its to delete. A small workspace (no
    /// subdirectory, at most [`limits::INLINE_REMOVAL_ENTRIES`] entries: what nearly
    /// every Run leaves) is removed on the caller's thread; a larger one on the
    /// blocking pool, so the agent's one thread never walks a large tree.
    pub async fn remove_workspace(self: &Arc<Self>) {
        if let Some(removal) = self.start_removal() {
            let _ = removal.await;
        }
    }

    /// [`Execution::remove_workspace`] without waiting for a large workspace's removal
    /// (retention, under the agent's lock).
    pub fn remove_workspace_in_background(self: &Arc<Self>) {
        drop(self.start_removal());
    }

    /// Removes a small workspace now; returns the removal of a larger one, running.
    fn start_removal(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.state.borrow().workspace_present {
            return None;
        }
        let reusable = self.reusable.load(Ordering::Relaxed);
        if reusable
            && let Some(removed) = self
                .spares
                .retire_small(&self.workspace, limits::INLINE_REMOVAL_ENTRIES)
        {
            self.removed(removed);
            return None;
        }
        let remove = {
            let execution = self.clone();
            move || {
                let removed = if reusable {
                    execution.spares.retire(&execution.workspace)
                } else {
                    fs::remove_dir_all(&execution.workspace)
                };
                execution.removed(removed);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn_blocking(remove)),
            // Outside a runtime, the caller's thread is the only one there is.
            Err(_) => {
                remove();
                None
            }
        }
    }

    fn removed(&self, removed: io::Result<()>) {
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(workspace = %self.workspace.display(), error = %e, "cannot remove workspace");
            }
        }
        self.state.send_modify(|s| s.workspace_present = false);
    }
}

pub(super) fn finish(
    execution: &Execution,
    phase: Phase,
    exit: Option<Exit>,
    reason: Reason,
    message: String,
) {
    execution.state.send_modify(|s| {
        s.phase = phase;
        match exit {
            Some(Exit::Code(c)) => s.exit_code = Some(c),
            Some(Exit::Signal(sig)) => s.signal = Some(sig),
            None => {}
        }
        s.ended = Some(SystemTime::now());
        s.ended_at = Some(Instant::now());
        s.reason = Some(reason);
        s.message = message;
    });
}

/// Milliseconds since the epoch.
pub fn unix_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
