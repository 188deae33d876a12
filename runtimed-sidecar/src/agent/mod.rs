//! `runtimed agent`: the executions an agent holds, with bounded state: at most
//! `max_running` running, terminal ones forgotten after `retention` and beyond
//! `max_retained` (oldest first). The modules below are the agent's process:
//!
//! - [`lifecycle`]: one Run as processes;
//! - [`cgroup`]: a cgroup per Run, where the agent may make them;
//! - [`spawner`]: the helper process that starts the Runs' processes;
//! - [`reaper`]: the one place that waits for children;
//! - [`procs`]: finding and killing every process of a Run;
//! - [`spares`]: emptied workspace directories kept for the next Runs;
//! - [`workspace`]: writing a Run's files into its workspace;
//! - [`output`]: a Run's bounded output streams;
//! - [`service`]: the agent's gRPC service.

pub mod cgroup;
pub mod lifecycle;
pub mod output;
pub mod procs;
pub mod reaper;
pub mod service;
pub mod spares;
pub mod spawner;
pub mod workspace;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::limits;
use crate::{Error, lock};
use lifecycle::{Config, ExecSpec, Execution, Supervisor};
use output::Follower;

/// Bounds on the agent's state.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long a terminal execution is kept.
    pub retention: Duration,
    /// Terminal executions kept at most.
    pub max_retained: usize,
    /// Executions running at once.
    pub max_running: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            retention: limits::DEFAULT_RETENTION,
            max_retained: limits::DEFAULT_MAX_RETAINED,
            max_running: limits::DEFAULT_MAX_RUNNING,
        }
    }
}

/// The agent: a supervisor and the executions it knows.
#[derive(Debug)]
pub struct Agent {
    supervisor: Supervisor,
    bounds: Bounds,
    held: Mutex<Held>,
}

/// What the agent holds, indexed so that the per-Execute bookkeeping costs what is
/// running or due, not what is retained (up to `max_retained`, thousands): the agent
/// used to walk every retained execution twice per Execute (docs/benchmarks.md).
#[derive(Debug, Default)]
struct Held {
    all: HashMap<String, Arc<Execution>>,
    /// Executions not yet seen terminal: every running one, and those that ended since
    /// the last [`Held::settle`].
    live: Vec<Arc<Execution>>,
    /// Terminal executions by end time (monotonic), oldest first.
    ended: BTreeSet<(Instant, String)>,
}

impl Held {
    /// Moves the executions that have become terminal from `live` to `ended`.
    fn settle(&mut self) {
        let ended = &mut self.ended;
        self.live.retain(|e| match e.ended_at() {
            Some(at) => {
                ended.insert((at, e.run_uid().to_owned()));
                false
            }
            None => true,
        });
    }
}

impl Agent {
    /// An agent running processes as `config` says.
    pub fn new(config: Config, bounds: Bounds) -> Result<Self, Error> {
        Ok(Self {
            supervisor: Supervisor::new(config)?,
            bounds,
            held: Mutex::new(Held::default()),
        })
    }

    /// The supervisor's configuration.
    pub fn config(&self) -> &Config {
        self.supervisor.config()
    }

    /// The bounds.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Starts `spec`, or returns the execution that already has its run uid.
    /// The bool is true when a new execution was created.
    pub async fn execute(&self, spec: ExecSpec) -> Result<(Arc<Execution>, bool), Error> {
        let (execution, created, _) = self.start(spec, false).await?;
        Ok((execution, created))
    }

    /// [`Agent::execute`], with followers of stdout and stderr from offset 0. For a new
    /// execution they are registered before its program starts, so the program waits
    /// for them from its first byte (see [`output::OutputStream`]).
    pub async fn execute_and_follow(
        &self,
        spec: ExecSpec,
    ) -> Result<(Arc<Execution>, bool, [Follower; 2]), Error> {
        let (execution, created, followers) = self.start(spec, true).await?;
        let followers = followers.unwrap_or_else(|| follow_from_start(&execution));
        Ok((execution, created, followers))
    }

    async fn start(
        &self,
        spec: ExecSpec,
        follow: bool,
    ) -> Result<(Arc<Execution>, bool, Option<[Follower; 2]>), Error> {
        // The execution is published (phase Running, no process yet) before it is
        // launched: a second Execute of the uid meanwhile gets it, and the lock is not
        // held while the workspace is written and the spawner answers, so Runs are
        // prepared side by side and Status, Logs and List never wait for a start.
        let created = {
            let mut held = lock(&self.held);
            self.sweep_held(&mut held, Instant::now());
            if let Some(existing) = held.all.get(&spec.run_uid) {
                return Ok((existing.clone(), false, None));
            }
            let running = held.live.len();
            if running >= self.bounds.max_running {
                return Err(Error::Capacity(running));
            }
            let created = self.supervisor.create(spec)?;
            let execution = created.execution().clone();
            held.all
                .insert(execution.run_uid().to_owned(), execution.clone());
            held.live.push(execution);
            created
        };
        let followers = follow.then(|| follow_from_start(created.execution()));
        // In a task of its own: a caller that goes away (a client that reset its call)
        // must not leave the execution half-started (see `Supervisor::launch`).
        let supervisor = self.supervisor.clone();
        let launched = tokio::spawn(async move { supervisor.launch(created).await });
        match launched.await {
            Ok(execution) => Ok((execution, true, followers)),
            Err(e) => Err(Error::io(
                "starting the execution",
                std::io::Error::other(e),
            )),
        }
    }

    /// The execution with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Execution>, Error> {
        lock(&self.held)
            .all
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Every execution held, oldest start first.
    pub fn list(&self) -> Vec<Arc<Execution>> {
        let mut all: Vec<_> = {
            let mut held = lock(&self.held);
            self.sweep_held(&mut held, Instant::now());
            held.all.values().cloned().collect()
        };
        all.sort_by_key(|e| (e.snapshot().started, e.run_uid().to_owned()));
        all
    }

    /// Running executions.
    pub fn running(&self) -> usize {
        let mut held = lock(&self.held);
        held.settle();
        held.live.len()
    }

    /// Drops a terminal execution and its workspace.
    pub async fn forget(&self, id: &str) -> Result<(), Error> {
        let forgotten = {
            let mut held = lock(&self.held);
            let execution = held
                .all
                .get(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if !execution.phase().is_terminal() {
                return Err(Error::StillRunning(id.to_owned()));
            }
            held.settle();
            let forgotten = held.all.remove(id);
            if let Some(at) = forgotten.as_ref().and_then(|e| e.ended_at()) {
                held.ended.remove(&(at, id.to_owned()));
            }
            forgotten
        };
        // Outside the lock: a large workspace takes a while.
        if let Some(execution) = forgotten {
            execution.remove_workspace().await;
        }
        Ok(())
    }

    /// Forgets terminal executions that ended `retention` or more before `now`, then the
    /// oldest beyond `max_retained`. Returns how many were forgotten.
    pub fn sweep(&self, now: Instant) -> usize {
        self.sweep_held(&mut lock(&self.held), now)
    }

    fn sweep_held(&self, held: &mut Held, now: Instant) -> usize {
        held.settle();
        let mut forgotten = 0;
        while let Some((ended, _)) = held.ended.first() {
            let expired = now.saturating_duration_since(*ended) >= self.bounds.retention;
            if !expired && held.ended.len() <= self.bounds.max_retained {
                break;
            }
            let Some((_, id)) = held.ended.pop_first() else {
                break;
            };
            if let Some(execution) = held.all.remove(&id) {
                execution.remove_workspace_in_background();
            }
            forgotten += 1;
        }
        forgotten
    }

    /// Stops every running execution and waits for them (agent shutdown). They end
    /// `Error` with reason `AgentStopping`, not `Cancelled`: nobody cancelled them.
    pub async fn shutdown(&self) {
        let all: Vec<_> = lock(&self.held).all.values().cloned().collect();
        for e in &all {
            e.stop(lifecycle::StopRequest {
                cause: lifecycle::StopCause::AgentStopping,
                grace: None,
            });
        }
        for e in &all {
            e.wait().await;
        }
    }
}

/// Followers of both output streams of `execution` from their first byte.
fn follow_from_start(execution: &Execution) -> [Follower; 2] {
    [execution.stdout.follow(0), execution.stderr.follow(0)]
}
