//! The executions an agent holds, with bounded state: at most `max_running` running,
//! terminal ones forgotten after `retention` and beyond `max_retained` (oldest first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;
use crate::lifecycle::{Config, ExecSpec, Execution, Supervisor};
use crate::limits;

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
    executions: Mutex<HashMap<String, Arc<Execution>>>,
}

impl Agent {
    /// An agent running processes as `config` says.
    pub fn new(config: Config, bounds: Bounds) -> Result<Self, Error> {
        Ok(Self {
            supervisor: Supervisor::new(config)?,
            bounds,
            executions: Mutex::new(HashMap::new()),
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

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Execution>>> {
        match self.executions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts `spec`, or returns the execution that already has its run uid.
    /// The bool is true when a new execution was created.
    pub fn execute(&self, spec: ExecSpec) -> Result<(Arc<Execution>, bool), Error> {
        self.sweep(Instant::now());
        let mut map = self.map();
        if let Some(existing) = map.get(&spec.run_uid) {
            return Ok((existing.clone(), false));
        }
        let running = map.values().filter(|e| !e.phase().is_terminal()).count();
        if running >= self.bounds.max_running {
            return Err(Error::Capacity(running));
        }
        let uid = spec.run_uid.clone();
        let execution = self.supervisor.start(spec)?;
        map.insert(uid, execution.clone());
        Ok((execution, true))
    }

    /// The execution with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Execution>, Error> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Every execution held, oldest start first.
    pub fn list(&self) -> Vec<Arc<Execution>> {
        self.sweep(Instant::now());
        let mut all: Vec<_> = self.map().values().cloned().collect();
        all.sort_by_key(|e| (e.snapshot().started, e.run_uid().to_owned()));
        all
    }

    /// Running executions.
    pub fn running(&self) -> usize {
        self.map()
            .values()
            .filter(|e| !e.phase().is_terminal())
            .count()
    }

    /// Drops a terminal execution and its workspace.
    pub fn forget(&self, id: &str) -> Result<(), Error> {
        let mut map = self.map();
        let execution = map.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if !execution.phase().is_terminal() {
            return Err(Error::StillRunning(id.to_owned()));
        }
        if let Some(execution) = map.remove(id) {
            execution.remove_workspace();
        }
        Ok(())
    }

    /// Forgets terminal executions that ended `retention` or more before `now`, then the
    /// oldest beyond `max_retained`. Returns how many were forgotten.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.map();
        // Runs on every Execute: first a look without allocating, which is all it costs
        // while nothing is due (the usual case).
        let (count, oldest) = map
            .values()
            .filter_map(|e| e.ended_at())
            .fold((0usize, None::<Instant>), |(n, oldest), ended| {
                (n + 1, Some(oldest.map_or(ended, |o| o.min(ended))))
            });
        let expired_any =
            oldest.is_some_and(|o| now.saturating_duration_since(o) >= self.bounds.retention);
        if count <= self.bounds.max_retained && !expired_any {
            return 0;
        }
        let mut terminal: Vec<(Instant, String)> = map
            .iter()
            .filter_map(|(id, e)| Some((e.ended_at()?, id.clone())))
            .collect();
        terminal.sort();
        let expired = terminal
            .iter()
            .take_while(|(ended, _)| now.saturating_duration_since(*ended) >= self.bounds.retention)
            .count();
        let over = terminal.len().saturating_sub(self.bounds.max_retained);
        let n = expired.max(over);
        for (_, id) in &terminal[..n] {
            if let Some(execution) = map.remove(id) {
                execution.remove_workspace();
            }
        }
        n
    }

    /// Cancels every running execution and waits for them (agent shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<_> = self.map().values().cloned().collect();
        for e in &all {
            e.cancel(None);
        }
        for e in &all {
            e.wait().await;
        }
    }
}
