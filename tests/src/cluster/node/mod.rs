//! The node of the emulated cluster: it runs Pods as real processes on the host, each
//! in namespaces of its own, so that the webhook's injected pods, the controller and
//! runtimed meet as in a cluster, with no container engine. docs/test-cluster.md
//! ("Node") describes what it emulates and what it refuses; in short:
//!
//! - It needs root (as CI runs it); without root, [`PodRunner::start`] returns a
//!   [`NodeError`] saying so, and the tests print that reason and skip.
//! - Images are not pulled: the host's filesystem stands in for every image, seen
//!   through per-container overlays, so the host is never changed. There is no image
//!   entrypoint: a container without `command` is refused. Image paths the host lacks
//!   are mapped to host files with [`NodeConfig::with_image_binary`].
//! - Per pod, a sandbox process holds the network, UTS and IPC namespaces (and a mount
//!   namespace for memory-backed emptyDirs); per container, a mount and a PID namespace,
//!   the command being PID 1 as in a real pod (`script` builds the root).
//! - Network: a bridge `krtnN` (`10.213.N.1/24`) per node, a veth per pod. The host
//!   reaches pod IPs; pods reach the host at the bridge address, not at its loopback.
//! - Init containers in order, native sidecars kept running, then the containers;
//!   nothing is restarted. Exec startup and readiness probes; liveness is ignored.
//! - stdout and stderr of each container go to
//!   `<node dir>/pods/<ns>_<name>_<uid>/logs/<container>.log` ([`Node::log_path`]).
//!
//! This is a test harness, not a sandbox: it runs trusted test code only.

mod container;
mod env;
mod network;
mod plan;
mod pod;
mod probe;
mod process;
mod script;
mod status;
mod token;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::cluster::contract::{NodeError, PodRunner, RunningPod, VolumeSource};
use env::PodFacts;
use network::{Bridge, Sandbox};
use pod::{PodHandle, Shared};
use process::io_error;
use status::{Ctr, Phase, State};

/// Longest hostname the kernel takes (and the kubelet truncates pod names to).
const MAX_HOSTNAME: usize = 63;

/// How the node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    node_name: String,
    dir: Option<PathBuf>,
    image_binaries: BTreeMap<String, PathBuf>,
    image_entrypoints: BTreeMap<String, Vec<String>>,
    keep_dir: bool,
}

impl NodeConfig {
    /// A node called `node_name` (the `spec.nodeName` of the Pods bound to it).
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            dir: None,
            image_binaries: BTreeMap::new(),
            image_entrypoints: BTreeMap::new(),
            keep_dir: std::env::var("KRT_TEST_NODE_KEEP_DIR").is_ok_and(|v| v == "1"),
        }
    }

    /// Keeps the node's files under `dir` (created if missing).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Every container sees host file `host_path` at `image_path` (read-only): for the
    /// binaries an image would hold, such as the runtimed image's
    /// `/usr/local/bin/runtimed`.
    pub fn with_image_binary(
        mut self,
        image_path: impl Into<String>,
        host_path: impl Into<PathBuf>,
    ) -> Self {
        self.image_binaries
            .insert(image_path.into(), host_path.into());
        self
    }

    /// Images of `repository` (any tag or digest) have the entrypoint `entrypoint`, an
    /// image path (map it to a host file with [`NodeConfig::with_image_binary`]): a
    /// container of such an image without `command` runs it, with its `args`, as a
    /// container runtime runs an image's `ENTRYPOINT`.
    pub fn with_image_entrypoint(
        mut self,
        repository: impl Into<String>,
        entrypoint: impl Into<String>,
    ) -> Self {
        self.image_entrypoints
            .insert(repository.into(), vec![entrypoint.into()]);
        self
    }

    /// Keeps the node's directory (and the logs in it) when the node is dropped.
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }
}

/// The node. Dropping it kills every Pod still running on it and removes its bridge.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    dir: PathBuf,
    bridge: tokio::sync::Mutex<Option<Arc<Bridge>>>,
    pods: Mutex<Vec<Weak<Shared>>>,
    api_service: Mutex<Option<std::net::SocketAddr>>,
}

static NODE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Node {
    /// A node with `config`; makes its directory. The bridge is made on the first start.
    pub fn new(config: NodeConfig) -> Result<Node, NodeError> {
        let dir = config.dir.clone().unwrap_or_else(|| {
            let n = NODE_SEQUENCE.fetch_add(1, Ordering::SeqCst);
            std::env::temp_dir().join(format!("krt-node-{}-{n}", std::process::id()))
        });
        std::fs::create_dir_all(dir.join("pods"))
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        Ok(Node {
            inner: Arc::new(Inner {
                config,
                dir,
                bridge: tokio::sync::Mutex::new(None),
                pods: Mutex::new(Vec::new()),
                api_service: Mutex::new(None),
            }),
        })
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The directory of `pod` on the node: `logs/`, `volumes/<volume>` (an emptyDir
    /// not backed by memory can be read and written there by a test) and `containers/`.
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        pod::pod_dir(&self.inner.dir, pod)
    }

    /// The log file of `container` of `pod` (see the module docs).
    pub fn log_path(&self, pod: &Pod, container: &str) -> PathBuf {
        self.pod_dir(pod)
            .join("logs")
            .join(format!("{container}.log"))
    }

    /// The node's address as its pods reach it (their `status.hostIP`): the bridge's.
    /// A server on the host that pods must call (a git server, an object store)
    /// listens there or on all addresses, never on `127.0.0.1`. Makes the bridge if
    /// no pod did yet, so it needs root, as [`PodRunner::start`] does.
    pub async fn host_ip(&self) -> Result<std::net::Ipv4Addr, NodeError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(NodeError::Unsupported {
                pod: String::new(),
                reason: NEEDS_ROOT.to_owned(),
            });
        }
        Ok(self.inner.bridge().await?.gateway())
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// Where the pods started from now on reach the API server: the kubelet's
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` in every container.
    pub fn set_api_service(&self, addr: std::net::SocketAddr) {
        if let Ok(mut slot) = self.inner.api_service.lock() {
            *slot = Some(addr);
        }
    }
}

impl Node {
    /// Ends every Pod still running at once (SIGKILL) and removes the bridge, as dropping
    /// the node does: for a harness that must leave nothing behind although tasks it
    /// does not own may still hold the node.
    pub async fn shutdown(&self) {
        self.kill_all();
        self.inner.bridge.lock().await.take();
        if !self.inner.config.keep_dir {
            let _ = std::fs::remove_dir_all(&self.inner.dir);
        }
    }

    fn kill_all(&self) {
        if let Ok(pods) = self.inner.pods.lock() {
            pods.iter()
                .filter_map(Weak::upgrade)
                .for_each(|p| p.kill_now());
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_all();
        if !self.inner.config.keep_dir {
            let _ = std::fs::remove_dir_all(&self.inner.dir);
        }
    }
}

/// Why the node cannot run anything without root.
const NEEDS_ROOT: &str = "the emulated node needs root (network and mount namespaces, a bridge, veths): run the tests as root, as CI does";

fn require_root(pod: &Pod) -> Result<(), NodeError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(NodeError::Unsupported {
        pod: plan::pod_key(pod),
        reason: NEEDS_ROOT.to_owned(),
    })
}

impl Inner {
    async fn bridge(&self) -> Result<Arc<Bridge>, NodeError> {
        let mut bridge = self.bridge.lock().await;
        if let Some(b) = bridge.as_ref() {
            return Ok(b.clone());
        }
        let made = Arc::new(Bridge::create().await?);
        *bridge = Some(made.clone());
        Ok(made)
    }

    async fn start(
        self: Arc<Self>,
        pod: Pod,
        source: Arc<dyn VolumeSource>,
    ) -> Result<Box<dyn RunningPod>, NodeError> {
        // The spec is checked first, so a refused pod is refused the same way with or
        // without root.
        let mut plans = plan::plan_pod(&pod, &self.config.image_entrypoints)?;
        require_root(&pod)?;
        let key = plan::pod_key(&pod);
        let dir = pod::pod_dir(&self.dir, &pod);
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let hostname: String = pod
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(MAX_HOSTNAME)
            .collect();
        let sandbox = Sandbox::create(self.bridge().await?, &hostname).await?;
        let facts = PodFacts {
            pod_ip: sandbox.ip().to_string(),
            host_ip: sandbox.host_ip().to_string(),
            hostname,
            api_service: self.api_service.lock().ok().and_then(|a| *a),
        };
        let mut prepared =
            volumes::prepare(&pod, &dir.join("volumes"), sandbox.pid(), source.as_ref()).await?;
        if let Ok(volumes) = prepared.as_mut() {
            token::mount(
                &pod,
                &dir.join("volumes"),
                source.as_ref(),
                volumes,
                &mut plans,
            )?;
        }
        let mount_failure = prepared.as_ref().err().cloned();
        let mut state = initial_state(&plans, &facts);
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned());
        let initial = status::render(&plans, &mut state, &restart_policy);
        let shared = Arc::new(Shared {
            key,
            pause_pid: sandbox.pid(),
            pod,
            plans,
            restart_policy,
            dir,
            image_binaries: self.config.image_binaries.clone(),
            volumes: prepared.unwrap_or_default(),
            source,
            facts,
            state: Mutex::new(state),
            tx: watch::channel(initial).0,
            sandbox: Mutex::new(Some(sandbox)),
            stopping: AtomicBool::new(false),
            lifecycle: Mutex::new(None),
        });
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|p| p.strong_count() > 0);
            pods.push(Arc::downgrade(&shared));
        }
        launch(&shared, mount_failure);
        Ok(Box::new(PodHandle { shared }))
    }
}

fn initial_state(plans: &[plan::ContainerPlan], facts: &PodFacts) -> State {
    State {
        containers: plans
            .iter()
            .map(|_| Ctr::waiting("PodInitializing"))
            .collect(),
        start_time: Timestamp::now(),
        pod_ip: Some(facts.pod_ip.clone()),
        host_ip: Some(facts.host_ip.clone()),
        initialized: false,
        init_failed: false,
        transitions: BTreeMap::new(),
    }
}

/// Starts the pod's lifecycle, or, when its volumes could not be made, leaves every
/// container waiting in `ContainerCreating` with the reason.
fn launch(shared: &Arc<Shared>, mount_failure: Option<volumes::MountFailure>) {
    if let Some(message) = mount_failure {
        shared.update(|s| {
            for c in &mut s.containers {
                c.phase = Phase::Waiting {
                    reason: "ContainerCreating".to_owned(),
                    message: Some(message.clone()),
                };
            }
        });
        return;
    }
    let task = tokio::spawn(pod::lifecycle(shared.clone()));
    if let Ok(mut slot) = shared.lifecycle.lock() {
        *slot = Some(task);
    }
}

impl PodRunner for Node {
    fn start(
        &self,
        pod: Pod,
        volumes: Arc<dyn VolumeSource>,
    ) -> BoxFuture<'static, Result<Box<dyn RunningPod>, NodeError>> {
        Box::pin(self.inner.clone().start(pod, volumes))
    }

    fn log_file(&self, pod: &Pod, container: &str) -> Option<PathBuf> {
        Some(self.log_path(pod, container))
    }
}
