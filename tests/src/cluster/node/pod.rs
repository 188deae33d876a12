//! One Pod on the node: its state, the lifecycle task that starts its containers in the
//! kubelet's order, and stopping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::container;
use super::env::PodFacts;
use super::network::Sandbox;
use super::plan::{ContainerPlan, Kind};
use super::process::signal;
use super::status::{self, Phase, State};
use super::volumes::Prepared;
use crate::cluster::contract::{NodeError, RunningPod, VolumeSource};

/// How long stopping waits for SIGKILLed processes to be gone before it gives up
/// (a process in uninterruptible sleep); then it tears the sandbox down regardless.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Grace period of sidecars stopped because the Pod's containers ended, when the Pod
/// names no `terminationGracePeriodSeconds` (the Kubernetes default).
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What every task of a Pod shares.
pub(super) struct Shared {
    pub(super) key: String,
    pub(super) pod: Pod,
    pub(super) plans: Vec<ContainerPlan>,
    pub(super) restart_policy: String,
    pub(super) dir: PathBuf,
    pub(super) image_binaries: BTreeMap<String, PathBuf>,
    pub(super) volumes: BTreeMap<String, Prepared>,
    pub(super) source: Arc<dyn VolumeSource>,
    pub(super) facts: PodFacts,
    pub(super) pause_pid: u32,
    pub(super) state: Mutex<State>,
    pub(super) tx: watch::Sender<PodStatus>,
    pub(super) sandbox: Mutex<Option<Sandbox>>,
    pub(super) stopping: AtomicBool,
    pub(super) lifecycle: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Changes the state and publishes the status.
    pub(super) fn update(&self, change: impl FnOnce(&mut State)) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        change(&mut state);
        let status = status::render(&self.plans, &mut state, &self.restart_policy);
        drop(state);
        self.tx.send_replace(status);
    }

    pub(super) fn snapshot(&self) -> Option<State> {
        self.state.lock().ok().map(|s| s.clone())
    }

    pub(super) fn is_running(&self, idx: usize) -> bool {
        self.snapshot()
            .and_then(|s| s.containers.get(idx).map(|c| c.running()))
            .unwrap_or(false)
    }

    pub(super) fn pid(&self, idx: usize) -> Option<u32> {
        self.snapshot()
            .and_then(|s| s.containers.get(idx).and_then(|c| c.pid))
    }

    pub(super) fn set_waiting(&self, idx: usize, reason: &str, message: String) {
        self.update(|s| {
            if let Some(c) = s.containers.get_mut(idx) {
                c.phase = Phase::Waiting {
                    reason: reason.to_owned(),
                    message: Some(message.clone()),
                };
            }
        });
    }

    /// `<pod dir>/logs/<container>.log`: stdout and stderr of the container.
    pub(super) fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    /// Waits until `done` holds for the state, or `deadline` passes; returns whether it held.
    async fn wait_until(&self, deadline: Option<Instant>, done: impl Fn(&State) -> bool) -> bool {
        let mut rx = self.tx.subscribe();
        loop {
            rx.borrow_and_update();
            match self.snapshot() {
                Some(state) if done(&state) => return true,
                None => return false,
                Some(_) => {}
            }
            let changed = rx.changed();
            let outcome = match deadline {
                Some(at) => tokio::time::timeout_at(at.into(), changed).await.ok(),
                None => Some(changed.await),
            };
            if !matches!(outcome, Some(Ok(()))) {
                return self.snapshot().is_some_and(|s| done(&s));
            }
        }
    }

    /// Signals the containers chosen by `which` that are running (the main process, or
    /// the `unshare` above it while its PID 1 is not known yet).
    fn signal_containers(&self, which: impl Fn(&ContainerPlan) -> bool, sig: Signal) {
        let Some(state) = self.snapshot() else { return };
        for (idx, (plan, ctr)) in self.plans.iter().zip(&state.containers).enumerate().rev() {
            if which(plan) && ctr.running() {
                match sig {
                    Signal::SIGKILL => {
                        self.sigkill(idx);
                    }
                    _ => ctr.pid.into_iter().for_each(|pid| signal(pid, sig)),
                }
            }
        }
    }

    /// SIGKILL to container `idx` (its PID 1, or the `unshare` above it while that is
    /// not known); whether it was running.
    pub(super) fn sigkill(&self, idx: usize) -> bool {
        let mut target = None;
        self.update(|s| {
            if let Some(c) = s.containers.get_mut(idx).filter(|c| c.running()) {
                c.killed = true;
                target = c.pid.or(c.outer);
            }
        });
        target
            .inspect(|pid| signal(*pid, Signal::SIGKILL))
            .is_some()
    }

    fn all_ended(&self, which: impl Fn(&ContainerPlan) -> bool) -> impl Fn(&State) -> bool {
        let chosen: Vec<bool> = self.plans.iter().map(which).collect();
        move |s: &State| {
            s.containers
                .iter()
                .zip(&chosen)
                .all(|(c, chosen)| !chosen || !c.running())
        }
    }

    /// SIGTERM to the chosen containers, SIGKILL at `deadline`.
    async fn terminate(&self, which: impl Fn(&ContainerPlan) -> bool + Copy, deadline: Instant) {
        // A container started a moment ago may not have its PID 1 yet: wait for it (at
        // most until the deadline), so that it too gets SIGTERM rather than SIGKILL.
        let chosen: Vec<bool> = self.plans.iter().map(which).collect();
        let known = move |s: &State| {
            s.containers
                .iter()
                .zip(&chosen)
                .all(|(c, chosen)| !chosen || !c.running() || c.pid.is_some())
        };
        self.wait_until(Some(deadline), known).await;
        self.signal_containers(which, Signal::SIGTERM);
        if self.wait_until(Some(deadline), self.all_ended(which)).await {
            return;
        }
        let give_up = Instant::now() + KILL_WAIT;
        while Instant::now() < give_up {
            self.signal_containers(which, Signal::SIGKILL);
            let soon = (Instant::now() + Duration::from_millis(100)).min(give_up);
            if self.wait_until(Some(soon), self.all_ended(which)).await {
                return;
            }
        }
    }

    /// SIGKILL to everything and the sandbox torn down, without waiting: for `Drop`.
    pub(super) fn kill_now(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(mut task) = self.lifecycle.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        self.signal_containers(|_| true, Signal::SIGKILL);
        if let Ok(mut sandbox) = self.sandbox.lock() {
            sandbox.take();
        }
    }

    fn grace(&self) -> Duration {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_GRACE, Duration::from_secs)
    }
}

fn is_sidecar(plan: &ContainerPlan) -> bool {
    plan.kind == Kind::Sidecar
}

fn is_not_sidecar(plan: &ContainerPlan) -> bool {
    plan.kind != Kind::Sidecar
}

/// The kubelet's order: init containers one after another (a native sidecar until its
/// startup probe passed), then every container; once they all ended (and the Pod will
/// not restart them), its sidecars are stopped.
pub(super) async fn lifecycle(shared: Arc<Shared>) {
    run_init_containers(&shared).await;
    let Some(state) = shared.snapshot() else {
        return;
    };
    if state.init_failed || !state.initialized {
        return;
    }
    let regular: Vec<usize> = (0..shared.plans.len())
        .filter(|i| shared.plans[*i].kind == Kind::Regular)
        .collect();
    for idx in regular {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        start_container(&shared, idx).await;
    }
    let ended = shared.all_ended(|p| p.kind == Kind::Regular);
    let finished = |s: &State| {
        ended(s)
            && shared
                .plans
                .iter()
                .zip(&s.containers)
                .all(|(p, c)| p.kind != Kind::Regular || c.terminated().is_some())
    };
    if shared.restart_policy != "Always" && shared.wait_until(None, finished).await {
        let deadline = Instant::now() + shared.grace();
        shared.terminate(is_sidecar, deadline).await;
    }
}

/// Starts container `idx`; whether it runs. A failure of the node itself leaves the
/// container waiting in `CreateContainerError` and is written to `logs/node.log`.
async fn start_container(shared: &Arc<Shared>, idx: usize) -> bool {
    match container::start(shared, idx).await {
        Ok(started) => started,
        Err(error) => {
            let log = shared.dir.join("logs").join("node.log");
            let line = format!(
                "{} container {}: {error}\n",
                shared.key, shared.plans[idx].name
            );
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            shared.set_waiting(idx, "CreateContainerError", error.to_string());
            false
        }
    }
}

/// Returns with `initialized` set, or with the Pod stuck or failed as its status says.
async fn run_init_containers(shared: &Arc<Shared>) {
    for idx in 0..shared.plans.len() {
        let kind = shared.plans[idx].kind;
        if kind == Kind::Regular {
            continue;
        }
        if shared.stopping.load(Ordering::SeqCst) || !start_container(shared, idx).await {
            return;
        }
        if kind == Kind::Sidecar {
            let up = shared
                .wait_until(None, |s| {
                    s.containers[idx].started || !s.containers[idx].running()
                })
                .await;
            if !up || !shared.is_running(idx) {
                return;
            }
            continue;
        }
        shared
            .wait_until(None, |s| s.containers[idx].terminated().is_some())
            .await;
        let code = shared
            .snapshot()
            .and_then(|s| s.containers[idx].terminated());
        if code != Some(0) {
            if shared.restart_policy == "Never" {
                shared.update(|s| s.init_failed = true);
                let deadline = Instant::now() + shared.grace();
                shared.terminate(is_sidecar, deadline).await;
            }
            return;
        }
    }
    shared.update(|s| s.initialized = true);
}

/// The handle the API server's kubelet holds.
#[derive(Debug)]
pub(super) struct PodHandle {
    pub(super) shared: Arc<Shared>,
}

impl RunningPod for PodHandle {
    fn status(&self) -> watch::Receiver<PodStatus> {
        self.shared.tx.subscribe()
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.stopping.store(true, Ordering::SeqCst);
            if let Ok(mut task) = shared.lifecycle.lock()
                && let Some(task) = task.take()
            {
                task.abort();
            }
            let deadline = Instant::now() + grace;
            shared.terminate(is_not_sidecar, deadline).await;
            shared.terminate(is_sidecar, deadline).await;
            shared.terminate(|_| true, Instant::now()).await;
            if let Ok(mut sandbox) = shared.sandbox.lock() {
                sandbox.take();
            }
            let _ = std::fs::remove_dir_all(shared.dir.join("volumes"));
            let _ = std::fs::remove_dir_all(shared.dir.join("containers"));
        })
    }

    fn kill_container(&self, container: &str) -> Result<(), NodeError> {
        let shared = &self.shared;
        let unknown = |reason: String| NodeError::Unsupported {
            pod: shared.key.clone(),
            reason,
        };
        let idx = shared
            .plans
            .iter()
            .position(|p| p.name == container)
            .ok_or_else(|| unknown(format!("no container {container:?}")))?;
        if shared.sigkill(idx) {
            Ok(())
        } else {
            Err(unknown(format!("container {container:?} is not running")))
        }
    }
}

impl Drop for PodHandle {
    fn drop(&mut self) {
        self.shared.kill_now();
    }
}

/// Where a pod's files live on the node: `<node dir>/pods/<namespace>_<name>_<uid>`.
pub(super) fn pod_dir(node_dir: &Path, pod: &Pod) -> PathBuf {
    let meta = &pod.metadata;
    node_dir.join("pods").join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    ))
}
