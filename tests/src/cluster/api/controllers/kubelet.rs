//! The kubelet: starts each Pod bound to the node through [`PodRunner`], copies the
//! running Pod's status into the stored one, and on deletion stops it with the grace
//! period and then lets the object go (`deletionGracePeriodSeconds: 0`, removed once
//! no finalizer is left). Status writes go straight to the store (no admission of
//! `pods/status`). A Pod the node refuses is marked `Failed` with the node's reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::{Value, json};

use crate::cluster::api::store::{ObjectKey, Store};
use crate::cluster::api::{Server, meta};
use crate::cluster::contract::{AccountToken, PodRunner, RunningPod, VolumeSource};

/// How often a status or finalization write is retried on a conflicting write.
const WRITE_ATTEMPTS: usize = 10;

enum PodState {
    Starting,
    Running(Arc<dyn RunningPod>),
    /// Deleted and stopping with its grace period; kept so that a server shutdown
    /// meanwhile stops it too instead of leaving its processes behind.
    Stopping(Arc<dyn RunningPod>),
    Done,
}

/// The node's agent.
pub(crate) struct Kubelet {
    node: Arc<dyn PodRunner>,
    node_name: String,
    pods: Mutex<HashMap<String, PodState>>,
    /// Set by `stop_all`: a Pod whose start completes afterwards is stopped at once.
    stopping_all: std::sync::atomic::AtomicBool,
    /// Pods whose start (and, for a late one, its stop) is in progress: `stop_all`
    /// waits for none to be left, so the server never exits before a late Pod is
    /// stopped.
    starting: tokio::sync::watch::Sender<usize>,
}

/// How long `stop_all` waits for Pods still starting once the running ones stopped:
/// a Pod's start (its init containers) and then its stop take a few seconds.
pub(crate) const START_WAIT_ON_SHUTDOWN: Duration = Duration::from_secs(30);

/// Secrets and ConfigMaps as the store holds them now, and tokens of the
/// ServiceAccounts stored.
struct StoreVolumes(Arc<Server>);

impl VolumeSource for StoreVolumes {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self
            .0
            .store
            .get(&ObjectKey::new("", "secrets", namespace, name))?;
        let mut out = BTreeMap::new();
        for (k, v) in secret
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .ok()?;
            out.insert(k.clone(), decoded);
        }
        for (k, v) in secret
            .get("stringData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
        }
        Some(out)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let cm = self
            .0
            .store
            .get(&ObjectKey::new("", "configmaps", namespace, name))?;
        let data = cm.get("data").and_then(Value::as_object);
        Some(
            data.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect(),
        )
    }

    fn service_account_token(&self, namespace: &str, account: &str) -> Option<AccountToken> {
        // The TokenRequest API refuses an account that does not exist.
        self.0
            .store
            .get(&ObjectKey::new("", "serviceaccounts", namespace, account))?;
        Some(AccountToken {
            token: self.0.mint_token(namespace, account)?,
            ca_pem: self.0.ca_pem.clone(),
        })
    }
}

fn pod_key(pod: &Value) -> Option<ObjectKey> {
    Some(ObjectKey::new(
        "",
        "pods",
        meta::meta_str(pod, "namespace")?,
        meta::meta_str(pod, "name")?,
    ))
}

/// Writes `change` to the stored Pod `key` if it still has `uid`, retrying on conflicts.
fn write_pod(
    store: &Store,
    key: &ObjectKey,
    uid: &str,
    mut change: impl FnMut(&mut Value) -> bool,
) {
    for _ in 0..WRITE_ATTEMPTS {
        let Some(mut pod) = store.get(key) else {
            return;
        };
        if meta::meta_str(&pod, "uid") != Some(uid) {
            return;
        }
        let rv = meta::meta_str(&pod, "resourceVersion")
            .unwrap_or("")
            .to_owned();
        let remove = change(&mut pod);
        let written = if remove {
            store.remove(key, &rv).map(|_| ())
        } else {
            store.put(key, pod, Some(&rv)).map(|_| ())
        };
        if written.is_ok() {
            return;
        }
    }
}

fn set_status(store: &Store, key: &ObjectKey, uid: &str, status: &PodStatus) {
    let Ok(mut new_status) = serde_json::to_value(status) else {
        return;
    };
    write_pod(store, key, uid, |pod| {
        // The scheduler's condition stays unless the node reports its own.
        let scheduled = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned());
        if let (Some(scheduled), Some(conditions)) = (
            scheduled,
            new_status
                .get_mut("conditions")
                .and_then(Value::as_array_mut),
        ) && !conditions.iter().any(|c| c["type"] == "PodScheduled")
        {
            conditions.insert(0, scheduled);
        }
        pod["status"] = new_status.clone();
        false
    });
}

/// Marks a stopped Pod as such; removes it when no finalizer holds it.
fn finalize(store: &Store, key: &ObjectKey, uid: &str) {
    write_pod(store, key, uid, |pod| {
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        meta::finalizers(pod).is_empty()
    });
}

impl Kubelet {
    pub(crate) fn new(node: Arc<dyn PodRunner>, node_name: &str) -> Kubelet {
        Kubelet {
            node,
            node_name: node_name.to_owned(),
            pods: Mutex::new(HashMap::new()),
            stopping_all: std::sync::atomic::AtomicBool::new(false),
            starting: tokio::sync::watch::Sender::new(0),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodState>> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One pass over the Pods bound to the node.
    pub(crate) fn reconcile(self: &Arc<Self>, server: &Arc<Server>) {
        let (pods, _) = server.store.list("", "pods", None);
        let bound: Vec<Value> = pods
            .into_iter()
            .filter(|p| {
                p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(&self.node_name)
            })
            .collect();
        let mut states = self.states();
        let mut seen = Vec::new();
        for pod in bound {
            let (Some(uid), Some(key)) = (
                meta::meta_str(&pod, "uid").map(str::to_owned),
                pod_key(&pod),
            ) else {
                continue;
            };
            seen.push(uid.clone());
            let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
            let grace = Duration::from_secs(
                pod.pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            match (states.get(&uid), deleting) {
                (None, false) => {
                    states.insert(uid.clone(), PodState::Starting);
                    self.spawn_start(server, pod, key, uid);
                }
                (None, true) => {
                    states.insert(uid.clone(), PodState::Done);
                    finalize(&server.store, &key, &uid);
                }
                (Some(PodState::Running(running)), true) => {
                    let running = running.clone();
                    states.insert(uid.clone(), PodState::Stopping(running.clone()));
                    let (store, me) = (server.store.clone(), self.clone());
                    tokio::spawn(async move {
                        running.stop(grace).await;
                        me.states().insert(uid.clone(), PodState::Done);
                        finalize(&store, &key, &uid);
                    });
                }
                (Some(PodState::Done), true) => finalize(&server.store, &key, &uid),
                _ => {}
            }
        }
        // Pods removed without the node's help (grace 0 from the harness, namespace
        // sweep of an unstarted Pod): stop what still runs.
        let gone: Vec<String> = states
            .keys()
            .filter(|u| !seen.contains(u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(PodState::Running(running) | PodState::Stopping(running)) =
                states.remove(&uid)
            {
                tokio::spawn(async move { running.stop(Duration::ZERO).await });
            }
        }
    }

    fn spawn_start(
        self: &Arc<Self>,
        server: &Arc<Server>,
        pod: Value,
        key: ObjectKey,
        uid: String,
    ) {
        let (me, store, server) = (self.clone(), server.store.clone(), server.clone());
        self.starting.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            // Counted out once the start ended (and a late Pod was stopped).
            let started_guard = StartGuard(me.clone());
            let typed: Result<Pod, _> = serde_json::from_value(pod);
            let started = match typed {
                Ok(typed) => me
                    .node
                    .start(typed, Arc::new(StoreVolumes(server)))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("the Pod does not decode: {e}")),
            };
            match started {
                Ok(running) => {
                    let running: Arc<dyn RunningPod> = Arc::from(running);
                    let mut status = running.status();
                    let late = {
                        let mut states = me.states();
                        let late = me.stopping_all.load(std::sync::atomic::Ordering::SeqCst);
                        if !late {
                            states.insert(uid.clone(), PodState::Running(running.clone()));
                        }
                        late
                    };
                    if late {
                        // Started after the server's shutdown began: stop it now.
                        running.stop(crate::cluster::api::SHUTDOWN_GRACE).await;
                        return;
                    }
                    drop(running);
                    drop(started_guard);
                    loop {
                        let current = status.borrow_and_update().clone();
                        set_status(&store, &key, &uid, &current);
                        if status.changed().await.is_err() {
                            return;
                        }
                    }
                }
                Err(message) => {
                    me.states().insert(uid.clone(), PodState::Done);
                    write_pod(&store, &key, &uid, |pod| {
                        pod["status"]["phase"] = json!("Failed");
                        pod["status"]["reason"] = json!("NodeError");
                        pod["status"]["message"] = json!(message);
                        false
                    });
                }
            }
        });
    }

    /// Fault injection: SIGKILL container `container` of the running Pod with `uid`.
    pub(crate) fn kill_container(&self, uid: &str, container: &str) -> Result<(), String> {
        let running = match self.states().get(uid) {
            Some(PodState::Running(running)) => running.clone(),
            _ => return Err(format!("the node does not run a Pod with uid {uid}")),
        };
        running.kill_container(container).map_err(|e| e.to_string())
    }

    /// Stops every Pod still running or stopping (server shutdown): a deleted Pod still
    /// in its grace period is stopped with `grace` too (stopping twice is harmless:
    /// the second stop ends what the first has not ended yet).
    pub(crate) async fn stop_all(&self, grace: Duration) {
        let running: Vec<Arc<dyn RunningPod>> = {
            let mut states = self.states();
            // Under the lock: a start completing from now on sees the flag.
            self.stopping_all
                .store(true, std::sync::atomic::Ordering::SeqCst);
            states
                .drain()
                .filter_map(|(_, s)| match s {
                    PodState::Running(r) | PodState::Stopping(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
        futures::future::join_all(running.iter().map(|r| r.stop(grace))).await;
        let mut starting = self.starting.subscribe();
        let none_left = starting.wait_for(|n| *n == 0);
        if tokio::time::timeout(START_WAIT_ON_SHUTDOWN, none_left)
            .await
            .is_err()
        {
            tracing::warn!(
                "Pods still starting {START_WAIT_ON_SHUTDOWN:?} after the shutdown began; not waiting for them"
            );
        }
    }
}

/// Counts a Pod's start out of [`Kubelet::starting`] when dropped.
struct StartGuard(Arc<Kubelet>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        self.0.starting.send_modify(|n| *n = n.saturating_sub(1));
    }
}
