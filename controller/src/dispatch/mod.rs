//! Run dispatch: per Runtime, a bounded FIFO queue of Runs and the warm pods that run
//! them. The [`scheduler`](crate::scheduler) decides which Run goes where; a task per
//! dispatched Run makes one `ExecuteAndFollow` call to the pod's sidecar over TLS with
//! the Runtime's token ([`execute`]), writes `Running` when runtimed accepted it and the
//! terminal status when it ended, then frees the slot.
//!
//! The dispatcher knows nothing of the Kubernetes API: the Run reconciler submits Runs,
//! the Runtime and Pod watchers set each pool, and statuses go to a [`StatusSink`].
//! Slots are counted per Run uid, so a Run is never counted twice, and a pod's running
//! executions are read from runtimed's `List` before the first Run goes to it: after a
//! controller restart no pod gets more than `concurrency` Runs.

mod execute;
mod sink;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kruntimes_api::v1alpha1::RunStatus;
use kruntimes_runtimed_api::client::{TlsClient, TlsTarget};
use kruntimes_runtimed_api::proto;
use tokio::sync::watch;

pub use sink::{RunKey, StatusSink};

use crate::metrics::Metrics;
use crate::scheduler::{self, MAX_QUEUED_RUNS_PER_RUNTIME, PodSlots, QueuedRun};

/// How often a Run whose Execute provably did not reach runtimed (the connection
/// failed before runtimed answered) is dispatched again before it ends in `Error`.
pub const MAX_DISPATCH_ATTEMPTS: u32 = 5;

/// First wait before such a retry; doubled on each attempt.
pub const DISPATCH_BACKOFF: Duration = Duration::from_millis(200);

/// How often following a started Run may fail in a row (the sidecar restarting, the
/// network) before the Run ends in `Error`: a stale pod never leaves a Run `Running`.
pub const MAX_FOLLOW_MISSES: u32 = 5;

/// Time allowed for the TCP and TLS handshakes with a sidecar.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for runtimed's answer to a unary call (`Status`, `List`): a
/// connected pod that stopped answering does not hold a Run's task.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long past a Run's deadline (its start plus its timeout) the dispatcher waits
/// for runtimed to report its end before it asks whether the pod still answers: room
/// for runtimed's own end of the Run (SIGTERM, its grace of 5 s by default, SIGKILL)
/// and the drain of its output. A pod that then does not answer ends the Run `Error` /
/// `RuntimedUnreachable`, so no Run stays `Running` past its deadline with its pod
/// unreachable.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(30);

/// How long a Run found `Running` after a restart waits for its pod to appear in the
/// pool (with an IP and the Runtime's credentials) before it is re-attached anyway, and
/// so found lost if the pod is gone: a new controller learns its pools from reflectors
/// that fill in after the Runs' first reconciles.
pub const ADOPTION_WAIT: Duration = Duration::from_secs(30);

/// How soon a Run waiting for its pool to be known (see [`ADOPTION_WAIT`]) is submitted
/// again.
pub const ADOPTION_RETRY: Duration = Duration::from_secs(1);

/// How long a submitted Run may wait in its queue before `Pending` /
/// `WaitingForCapacity` is written: a Run dispatched sooner is written `Running` (with
/// its `queuedAt`) and never `Pending`, which saves one API write per Run on the happy
/// path, and a Run that waits longer is said to wait well before anyone looks.
pub const PENDING_WRITE_DELAY: Duration = Duration::from_millis(500);

/// What a [`Dispatcher`] can be tuned with; the default is what the controller runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchOptions {
    /// [`DEADLINE_GRACE`].
    pub deadline_grace: Duration,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self {
            deadline_grace: DEADLINE_GRACE,
        }
    }
}

/// A Runtime, as the dispatcher knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuntimeKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// How to reach and trust a Runtime's sidecars: from the Runtime's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The bearer token.
    pub token: String,
    /// The sidecars' certificate (PEM), the only root trusted for them.
    pub certificate_pem: Vec<u8>,
    /// The name it is issued for.
    pub server_name: String,
    /// runtimed's gRPC port.
    pub port: u16,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server_name", &self.server_name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A warm pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// Its name.
    pub name: String,
    /// Its IP (empty until it has one).
    pub ip: String,
    /// PodReady.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// What the watchers know of a Runtime's pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpec {
    /// Runs at once per pod.
    pub concurrency: u32,
    /// Its pods.
    pub pods: Vec<PodTarget>,
    /// Its Secret's credentials (`None` until the Secret exists).
    pub credentials: Option<Credentials>,
}

/// A Run handed to the dispatcher.
#[derive(Clone, Debug)]
pub struct Submission {
    /// Which Run.
    pub key: RunKey,
    /// Its creation time (Unix seconds), the FIFO order with the name.
    pub created: i64,
    /// What to execute.
    pub request: proto::ExecuteRequest,
    /// Its status while it waits (`Pending` with `queuedAt`), the base of later writes.
    pub status: RunStatus,
    /// Whether `status` is what the API already has; if not, it is written once the Run
    /// has waited [`PENDING_WRITE_DELAY`] in the queue.
    pub status_written: bool,
    /// Orders this Run's status writes: the delayed `Pending` write before `Running`.
    pub write_order: WriteOrder,
    /// A Run already `Running` on this pod (found after a controller restart): it is
    /// followed there, never started again elsewhere.
    pub running_on: Option<String>,
    /// Dispatch attempts that failed before runtimed accepted the Run (0 when
    /// submitted).
    pub attempts: u32,
}

/// One Run's status writes, in the order they were decided: a write holds it while it
/// is in flight.
#[derive(Clone, Debug, Default)]
pub struct WriteOrder(Arc<tokio::sync::Mutex<()>>);

impl WriteOrder {
    /// Holds back every status write of the Run until the guard is dropped: the
    /// reconciler holds it while it adds the Run's finalizer, so that `Running` is
    /// written after it (and the finalizer patch's `resourceVersion` test holds). `None`
    /// when a write holds it already.
    pub fn hold(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.0.clone().try_lock_owned().ok()
    }
}

/// What [`Dispatcher::submit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Queued (or re-attached); it will be dispatched.
    Queued,
    /// Already queued or running: nothing changed.
    Known,
    /// The Runtime's queue is full ([`MAX_QUEUED_RUNS_PER_RUNTIME`]); submit it again
    /// later.
    QueueFull,
    /// A Run already running on a pod this dispatcher does not know yet (after a
    /// restart); submit it again after [`ADOPTION_RETRY`].
    PodNotKnownYet,
}

#[derive(Debug)]
struct InFlight {
    cancel: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Pool {
    spec: PoolSpec,
    queue: BTreeMap<(i64, String), Submission>,
    /// When each queued Run (by uid) entered the queue.
    queued_since: HashMap<String, Instant>,
    /// Run uids this dispatcher runs, per pod.
    busy: HashMap<String, HashSet<String>>,
    /// Run uids runtimed's `List` reported running per pod that this dispatcher does
    /// not run (after a restart: Runs not re-attached yet, or deleted ones still
    /// ending). They take slots too; read again on every pool update while any are left.
    foreign: HashMap<String, HashSet<String>>,
    inflight: HashMap<String, InFlight>,
    /// Pods whose running executions were read from runtimed.
    synced: HashSet<String>,
    /// Pods being read from runtimed now.
    syncing: HashSet<String>,
    /// Runs (by uid) found running on a pod not known yet, since when.
    adopting_since: HashMap<String, Instant>,
}

impl Pool {
    fn slots(&self) -> Vec<PodSlots> {
        self.spec
            .pods
            .iter()
            .map(|p| PodSlots {
                name: p.name.clone(),
                ready: p.ready && !p.ip.is_empty() && self.synced.contains(&p.name),
                terminating: p.terminating,
                busy: self.busy_in(&p.name),
            })
            .collect()
    }

    /// Runs executing in `pod`: its own and the foreign ones, each uid once.
    fn busy_in(&self, pod: &str) -> u32 {
        let own = self.busy.get(pod);
        let foreign = self.foreign.get(pod).map_or(0, |f| {
            f.iter()
                .filter(|uid| own.is_none_or(|o| !o.contains(*uid)))
                .count()
        });
        own.map_or(0, HashSet::len) as u32 + foreign as u32
    }

    /// Runs executing in all its pods.
    fn busy_total(&self) -> u32 {
        self.spec.pods.iter().map(|p| self.busy_in(&p.name)).sum()
    }

    fn is_queued(&self, uid: &str) -> bool {
        self.queue.values().any(|s| s.key.uid == uid)
    }

    fn is_known(&self, uid: &str) -> bool {
        self.inflight.contains_key(uid) || self.is_queued(uid)
    }

    /// Drops the Run `uid` from the queue, if it waits there.
    fn dequeue(&mut self, uid: &str) {
        self.queue.retain(|_, s| s.key.uid != uid);
        self.queued_since.remove(uid);
    }
}

/// An open connection to one pod's sidecar, and what it was opened with: a pod with a
/// new IP or its Runtime with new credentials gets a new one.
struct Connection {
    target: TlsTarget,
    client: TlsClient,
}

struct Inner {
    pools: Mutex<HashMap<RuntimeKey, Pool>>,
    /// One HTTP/2 connection per pod, shared by the calls of all its Runs: a Run's
    /// dispatch costs no TCP or TLS handshake.
    connections: Mutex<HashMap<(RuntimeKey, String), Connection>>,
    sink: Arc<dyn StatusSink>,
    metrics: Arc<Metrics>,
    deadline_grace: Duration,
}

/// The dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher writing statuses to `sink`. Needs a tokio runtime.
    pub fn new(sink: Arc<dyn StatusSink>) -> Self {
        Self::with_metrics(sink, Arc::new(Metrics::default()))
    }

    /// As [`Dispatcher::new`], recording into `metrics`.
    pub fn with_metrics(sink: Arc<dyn StatusSink>, metrics: Arc<Metrics>) -> Self {
        Self::with_options(sink, metrics, DispatchOptions::default())
    }

    /// As [`Dispatcher::with_metrics`], tuned with `options`.
    pub fn with_options(
        sink: Arc<dyn StatusSink>,
        metrics: Arc<Metrics>,
        options: DispatchOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pools: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                sink,
                metrics,
                deadline_grace: options.deadline_grace,
            }),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn pools(&self) -> MutexGuard<'_, HashMap<RuntimeKey, Pool>> {
        match self.inner.pools.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<(RuntimeKey, String), Connection>> {
        match self.inner.connections.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Sets what is known of a Runtime's pool, and dispatches what now fits.
    pub fn set_pool(&self, runtime: &RuntimeKey, spec: PoolSpec) {
        {
            let mut pools = self.pools();
            let pool = pools.entry(runtime.clone()).or_default();
            let names: HashSet<&str> = spec.pods.iter().map(|p| p.name.as_str()).collect();
            pool.synced.retain(|p| names.contains(p.as_str()));
            pool.foreign.retain(|p, _| names.contains(p.as_str()));
            // Foreign slots are read again: they end without this dispatcher seeing it.
            let stale: Vec<String> = pool
                .foreign
                .iter()
                .filter(|(_, uids)| !uids.is_empty())
                .map(|(pod, _)| pod.clone())
                .collect();
            for pod in stale {
                pool.synced.remove(&pod);
            }
            if pool.spec.credentials != spec.credentials {
                // New credentials (a rotation): read the pods again with them.
                pool.synced.clear();
            }
            // Connections to pods that left the pool go with them.
            self.connections()
                .retain(|(key, pod), _| key != runtime || names.contains(pod.as_str()));
            pool.spec = spec;
            self.count_pods(&pools);
        }
        self.pump(runtime);
    }

    /// `kruntimes_pool_pods{state}` over every pool.
    fn count_pods(&self, pools: &HashMap<RuntimeKey, Pool>) {
        let mut counts = [0i64; 3];
        for pod in pools.values().flat_map(|p| &p.spec.pods) {
            let state = if pod.terminating {
                2
            } else if pod.ready {
                0
            } else {
                1
            };
            counts[state] += 1;
        }
        for (state, count) in ["ready", "unready", "terminating"].iter().zip(counts) {
            self.metrics()
                .pool_pods
                .get_or_create(&crate::metrics::PodStateLabels {
                    state: (*state).to_owned(),
                })
                .set(count);
        }
    }

    /// Whether `pod` of `runtime` is still in its pool and not being deleted.
    fn pod_alive(&self, runtime: &RuntimeKey, pod: &str) -> bool {
        self.pools()
            .get(runtime)
            .is_some_and(|p| p.spec.pods.iter().any(|t| t.name == pod && !t.terminating))
    }

    /// Whether `pod` is in the pool of `runtime` and not being deleted.
    pub fn has_pod(&self, runtime: &RuntimeKey, pod: &str) -> bool {
        self.pod_alive(runtime, pod)
    }

    /// Runs of `runtime` executing now (for the Runtime's `status.capacity.busy`).
    pub fn busy(&self, runtime: &RuntimeKey) -> u32 {
        self.pools().get(runtime).map_or(0, Pool::busy_total)
    }

    /// Runs executing now in each pool (for the Runtimes' `status.capacity.busy`).
    pub fn busy_by_runtime(&self) -> Vec<(RuntimeKey, u32)> {
        self.pools()
            .iter()
            .map(|(key, p)| (key.clone(), p.busy_total()))
            .collect()
    }

    /// Runs executing in each pod of `runtime` (for the pods' deletion cost).
    pub fn busy_by_pod(&self, runtime: &RuntimeKey) -> std::collections::BTreeMap<String, u32> {
        self.pools()
            .get(runtime)
            .map_or_else(Default::default, |p| {
                p.spec
                    .pods
                    .iter()
                    .map(|t| (t.name.clone(), p.busy_in(&t.name)))
                    .collect()
            })
    }

    /// Runs of `runtime` waiting for a slot.
    pub fn queued(&self, runtime: &RuntimeKey) -> usize {
        self.pools().get(runtime).map_or(0, |p| p.queue.len())
    }

    /// Hands a Run to the dispatcher.
    pub fn submit(&self, runtime: &RuntimeKey, submission: Submission) -> Submitted {
        let uid = submission.key.uid.clone();
        let written = submission.status_written;
        let outcome = {
            let mut pools = self.pools();
            let pool = pools.entry(runtime.clone()).or_default();
            if submission.running_on.is_some() && !pool.inflight.contains_key(&uid) {
                // Queued before its `Running` status was seen (a restart while another
                // controller dispatched it): it runs already, so it is followed where it
                // runs instead of waiting for a slot its own execution holds.
                pool.dequeue(&uid);
            }
            if pool.is_known(&uid) {
                return Submitted::Known;
            }
            if let Some(pod) = submission.running_on.clone() {
                let uid = &submission.key.uid;
                let known = pool.spec.credentials.is_some()
                    && pool
                        .spec
                        .pods
                        .iter()
                        .any(|p| p.name == pod && !p.ip.is_empty());
                let since = *pool
                    .adopting_since
                    .entry(uid.clone())
                    .or_insert_with(Instant::now);
                if !known && since.elapsed() < ADOPTION_WAIT {
                    return Submitted::PodNotKnownYet;
                }
                pool.adopting_since.remove(uid);
                self.start(runtime, pool, pod, submission);
                return Submitted::Queued;
            }
            if pool.queue.len() >= MAX_QUEUED_RUNS_PER_RUNTIME {
                Submitted::QueueFull
            } else {
                let order = (submission.created, submission.key.name.clone());
                pool.queued_since
                    .entry(submission.key.uid.clone())
                    .or_insert_with(Instant::now);
                pool.queue.insert(order, submission);
                Submitted::Queued
            }
        };
        if outcome == Submitted::Queued {
            self.pump(runtime);
            if !written && self.is_queued(runtime, &uid) {
                self.write_pending_later(runtime, uid);
            }
        }
        outcome
    }

    /// Whether the Run `uid` waits in the queue of `runtime`.
    fn is_queued(&self, runtime: &RuntimeKey, uid: &str) -> bool {
        self.pools().get(runtime).is_some_and(|p| p.is_queued(uid))
    }

    /// Writes the `Pending` status of the Run `uid` if it still waits in its queue after
    /// [`PENDING_WRITE_DELAY`]. Its [`WriteOrder`] is taken while the Run is known to be
    /// queued, so a `Running` write of the same Run always comes after this one.
    fn write_pending_later(&self, runtime: &RuntimeKey, uid: String) {
        let this = self.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PENDING_WRITE_DELAY).await;
            let taken = {
                let mut pools = this.pools();
                let queued = pools
                    .get_mut(&runtime)
                    .and_then(|p| p.queue.values_mut().find(|s| s.key.uid == uid));
                let Some(submission) = queued.filter(|s| !s.status_written) else {
                    return;
                };
                let Ok(order) = submission.write_order.0.clone().try_lock_owned() else {
                    return;
                };
                submission.status_written = true;
                (order, submission.key.clone(), submission.status.clone())
            };
            let (_order, key, status) = taken;
            if let Err(e) = this.inner.sink.write(&key, &status).await {
                // Informational only: the Run's next write says where it is.
                tracing::info!(run = %key.name, error = %e, "cannot write the queued Run's Pending status");
            }
        });
    }

    /// Cancels a Run: a queued one is dropped (the caller writes `Cancelled`), a
    /// dispatched one is cancelled in runtimed and ends `Cancelled` there. Whether the
    /// Run was dispatched.
    pub fn cancel(&self, runtime: &RuntimeKey, uid: &str) -> bool {
        let mut pools = self.pools();
        let Some(pool) = pools.get_mut(runtime) else {
            return false;
        };
        pool.dequeue(uid);
        match pool.inflight.get(uid) {
            Some(inflight) => {
                let _ = inflight.cancel.send(true);
                true
            }
            None => false,
        }
    }

    /// Drops a queued Run from its queue (the caller writes its end); whether it runs
    /// here already (its task then writes its end, and the caller must not).
    pub fn withdraw(&self, runtime: &RuntimeKey, uid: &str) -> bool {
        let mut pools = self.pools();
        let Some(pool) = pools.get_mut(runtime) else {
            return false;
        };
        pool.dequeue(uid);
        pool.inflight.contains_key(uid)
    }

    /// Assigns queued Runs to free slots and starts them; reads unsynced ready pods'
    /// executions from runtimed first.
    fn pump(&self, runtime: &RuntimeKey) {
        let mut pools = self.pools();
        let Some(pool) = pools.get_mut(runtime) else {
            return;
        };
        let Some(credentials) = pool.spec.credentials.clone() else {
            return;
        };
        for pod in pool.spec.pods.clone() {
            let unsynced = !pool.synced.contains(&pod.name) && !pool.syncing.contains(&pod.name);
            if pod.ready && !pod.terminating && !pod.ip.is_empty() && unsynced {
                pool.syncing.insert(pod.name.clone());
                let this = self.clone();
                let runtime = runtime.clone();
                let target = target(&pod, &credentials);
                tokio::spawn(async move { this.sync(runtime, pod.name, target).await });
            }
        }
        let queue: Vec<QueuedRun> = pool
            .queue
            .iter()
            .map(|((created, name), s)| QueuedRun {
                uid: s.key.uid.clone(),
                created: (*created, name.clone()),
            })
            .collect();
        let assignments = scheduler::assign(&queue, &pool.slots(), pool.spec.concurrency);
        for assignment in assignments {
            let Some(order) = pool
                .queue
                .iter()
                .find(|(_, s)| s.key.uid == assignment.uid)
                .map(|(k, _)| k.clone())
            else {
                continue;
            };
            if let Some(submission) = pool.queue.remove(&order) {
                self.start(runtime, pool, assignment.pod, submission);
            }
        }
    }

    /// Occupies a slot of `pod` and starts the Run's task.
    fn start(&self, runtime: &RuntimeKey, pool: &mut Pool, pod: String, submission: Submission) {
        let uid = submission.key.uid.clone();
        pool.busy
            .entry(pod.clone())
            .or_default()
            .insert(uid.clone());
        let (cancel, cancelled) = watch::channel(false);
        pool.inflight.insert(uid, InFlight { cancel });
        let this = self.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let outcome = this.run(&runtime, &pod, submission, cancelled).await;
            this.finish(&runtime, &pod, outcome);
        });
    }

    /// The task of one Run ended: a Run that provably never reached runtimed goes back
    /// to the queue; the slot is freed either way.
    fn finish(&self, runtime: &RuntimeKey, pod: &str, outcome: execute::Outcome) {
        {
            let mut pools = self.pools();
            if let Some(pool) = pools.get_mut(runtime) {
                let uid = outcome.uid().to_owned();
                if let Some(busy) = pool.busy.get_mut(pod) {
                    busy.remove(&uid);
                }
                if let Some(foreign) = pool.foreign.get_mut(pod) {
                    foreign.remove(&uid);
                }
                pool.inflight.remove(&uid);
                self.metrics().runs_active.dec();
                if let execute::Outcome::Retry(submission) = outcome {
                    self.metrics().run_retries.inc();
                    let order = (submission.created, submission.key.name.clone());
                    pool.queued_since.insert(uid, Instant::now());
                    pool.queue.insert(order, *submission);
                }
            }
        }
        self.pump(runtime);
    }

    /// Reads the executions running in `pod` into its busy slots, then marks it synced.
    async fn sync(&self, runtime: RuntimeKey, pod: String, target: TlsTarget) {
        let running = execute::running_executions(&target).await;
        {
            let mut pools = self.pools();
            let Some(pool) = pools.get_mut(&runtime) else {
                return;
            };
            pool.syncing.remove(&pod);
            match running {
                Ok(uids) => {
                    let foreign = uids
                        .into_iter()
                        .filter(|uid| !pool.inflight.contains_key(uid))
                        .collect();
                    pool.foreign.insert(pod.clone(), foreign);
                    pool.synced.insert(pod.clone());
                }
                Err(e) => {
                    tracing::warn!(pod, error = %e, "cannot list the pod's executions; it takes no Run yet");
                }
            }
        }
        self.pump(&runtime);
    }

    fn credentials(&self, runtime: &RuntimeKey) -> Option<Credentials> {
        self.pools()
            .get(runtime)
            .and_then(|p| p.spec.credentials.clone())
    }

    fn pod_ip(&self, runtime: &RuntimeKey, pod: &str) -> Option<String> {
        self.pools().get(runtime).and_then(|p| {
            p.spec
                .pods
                .iter()
                .find(|t| t.name == pod && !t.ip.is_empty())
                .map(|t| t.ip.clone())
        })
    }
}

/// The TLS target of `pod` with the Runtime's credentials.
fn target(pod: &PodTarget, credentials: &Credentials) -> TlsTarget {
    let authority = if pod.ip.contains(':') {
        format!("[{}]:{}", pod.ip, credentials.port)
    } else {
        format!("{}:{}", pod.ip, credentials.port)
    };
    TlsTarget {
        authority,
        server_name: credentials.server_name.clone(),
        certificate_pem: credentials.certificate_pem.clone(),
        token: credentials.token.clone(),
    }
}
