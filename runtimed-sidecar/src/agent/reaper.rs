//! The one place in the process that waits for children. This process is made a child
//! subreaper, so orphans of every Run are re-parented to it; a thread collects every
//! exited child: a Run's first process has its status delivered to whoever spawned it,
//! anything else (an adopted orphan) is simply reaped. Nothing else in the process may
//! wait for children, so spawning goes through [`Reaper::spawn`].

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

#[derive(Debug, Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    /// Children spawned so far: lets the reaper wait for a spawn without missing one.
    spawned: u64,
}

/// The process-wide child reaper.
#[derive(Debug)]
pub struct Reaper {
    registry: Mutex<Registry>,
    spawned: Condvar,
    /// Reaps begun and finished: a reader of this process's `children` lists compares
    /// them to know that no entry left a list while it read (see
    /// [`Reaper::reaps_started`]).
    reaps_started: AtomicU64,
    reaps_done: AtomicU64,
}

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

impl Reaper {
    /// The reaper of this process, started on first use; also makes this process a
    /// child subreaper.
    pub fn global() -> io::Result<Arc<Self>> {
        if let Some(r) = REAPER.get() {
            return Ok(r.clone());
        }
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let reaper = REAPER
            .get_or_init(|| {
                let reaper = Arc::new(Self {
                    registry: Mutex::new(Registry::default()),
                    spawned: Condvar::new(),
                    reaps_started: AtomicU64::new(0),
                    reaps_done: AtomicU64::new(0),
                });
                let thread_reaper = reaper.clone();
                let spawned = std::thread::Builder::new()
                    .name("runtimed-reaper".into())
                    .spawn(move || thread_reaper.run());
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the reaper thread");
                }
                reaper
            })
            .clone();
        Ok(reaper)
    }

    /// Spawns `command` and returns the child with a receiver of its exit.
    pub fn spawn(&self, command: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut registry = self
            .registry
            .lock()
            .map_err(|_| io::Error::other("reaper registry poisoned"))?;
        // Spawning under the lock: the reaper cannot take a status before it is
        // registered, and a child that fails to exec is reaped by std, not by us.
        let child = command.spawn()?;
        let (tx, rx) = oneshot::channel();
        registry.waiting.insert(child.id() as i32, tx);
        registry.spawned += 1;
        drop(registry);
        self.spawned.notify_all();
        Ok((child, rx))
    }

    fn run(&self) {
        loop {
            let spawned_before = match self.registry.lock() {
                Ok(registry) => registry.spawned,
                Err(_) => return,
            };
            // Peek without reaping, so a child std is about to reap (failed exec) is
            // left to std.
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.reap(pid);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: wait for a spawn since the count was read (a spawn
                    // between waitid and here is seen through the count, not lost).
                    let Ok(guard) = self.registry.lock() else {
                        return;
                    };
                    let _ = self.spawned.wait_timeout_while(
                        guard,
                        Duration::from_millis(200),
                        |registry| registry.spawned == spawned_before,
                    );
                }
            }
        }
    }

    /// Reaps begun so far (counted before the `waitpid` that removes the child from
    /// this process's `children` lists). With [`Reaper::reaps_done`] read before a
    /// look at those lists and this one after: equal means no reap overlapped the look.
    pub fn reaps_started(&self) -> u64 {
        self.reaps_started.load(Ordering::SeqCst)
    }

    /// Reaps finished so far (counted after the `waitpid`).
    pub fn reaps_done(&self) -> u64 {
        self.reaps_done.load(Ordering::SeqCst)
    }

    /// The children spawned through [`Reaper::spawn`] and not reaped yet.
    pub fn waiting_pids(&self) -> Vec<i32> {
        crate::lock(&self.registry)
            .waiting
            .keys()
            .copied()
            .collect()
    }

    fn reap(&self, pid: Pid) {
        let Ok(mut registry) = self.registry.lock() else {
            return;
        };
        self.reaps_started.fetch_add(1, Ordering::SeqCst);
        let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        self.reaps_done.fetch_add(1, Ordering::SeqCst);
        let exit = match status {
            Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal as i32),
            _ => return,
        };
        if let Some(tx) = registry.waiting.remove(&pid.as_raw()) {
            let _ = tx.send(exit);
        }
    }
}
