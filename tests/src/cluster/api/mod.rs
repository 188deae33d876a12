//! The API server of the emulated cluster: a stateful in-memory Kubernetes API over
//! HTTPS on loopback, for kube-rs clients and kubectl alike.
//!
//! Objects are JSON in one [`store::Store`] with a single monotonic `resourceVersion`
//! counter (as etcd's revision). Writes go through admission and, for custom resources,
//! the CRD schema check ([`crate::cluster::contract`]). Watches replay a bounded history
//! and then follow live changes. docs/test-cluster.md ("API server") lists every known
//! difference from a real apiserver; the main ones: RBAC without aggregation or
//! escalation checks (`rbac.rs`), no aggregated discovery,
//! OpenAPI v3 documents without schemas and no v2, no pagination, Protobuf bodies only
//! for the kinds kubectl's generator commands create, no version conversion beyond the
//! `apiVersion` field.

mod admit;
mod apply;
mod controllers;
pub mod counts;
pub mod error;
pub mod fault;
mod http;
mod internal;
pub mod logs;
pub mod meta;
mod namespaces;
mod openapi;
mod patch;
mod proto;
mod rbac;
mod read;
pub mod resources;
pub mod selector;
pub mod store;
mod table;
mod tls;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::contract::{Admission, PodRunner, SchemaCheck, UserInfo};
use fault::{FaultLength, Faults};
use resources::ResourceType;
use store::{ObjectKey, Store};

pub use controllers::RESYNC;
pub use http::MAX_BODY_BYTES;
pub use tls::TlsError;
pub use watch::{BOOKMARK_INTERVAL, DEFAULT_WATCH_TIMEOUT};
pub use write::DEFAULT_GRACE_SECONDS;

/// What the server is started with.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// Admission control (webhooks); `None` admits everything unchanged.
    pub admission: Option<Arc<dyn Admission>>,
    /// CRD schema check; `None` stores custom resources as sent.
    pub schema: Option<Arc<dyn SchemaCheck>>,
    /// The node that runs Pods; `None`: Pods stay `Pending`, and are deleted at once.
    pub node: Option<Arc<dyn PodRunner>>,
    /// The node's name (`spec.nodeName` of scheduled Pods); empty: `node`.
    pub node_name: String,
    /// Directories whose `*.yaml`/`*.yml`/`*.json` CRDs are installed at start.
    pub crd_dirs: Vec<PathBuf>,
    /// Objects stored at start, after the CRDs (namespaces `default`, `kube-system` and
    /// `kube-public` always exist).
    pub initial_objects: Vec<Value>,
    /// Bearer token -> identity. A request with any other token is answered 401.
    pub users: BTreeMap<String, UserInfo>,
    /// How many change events watches may replay ([`store::DEFAULT_HISTORY`] when 0).
    pub history_limit: usize,
    /// Starts no in-process controller (scheduler, kubelet, Deployment controller,
    /// garbage collector): the server alone, for tests of API semantics.
    pub disable_controllers: bool,
    /// An address of the host that pods reach (the node's bridge): the server listens
    /// there too (a port of its own, [`ApiServerHandle::pod_facing_addr`]) and its
    /// certificate names it, so in-cluster clients (`KUBERNETES_SERVICE_HOST`) verify it.
    pub pod_facing_ip: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("admission", &self.admission.is_some())
            .field("schema", &self.schema.is_some())
            .field("node", &self.node.is_some())
            .field("node_name", &self.node_name)
            .field("crd_dirs", &self.crd_dirs)
            .field("initial_objects", &self.initial_objects.len())
            .field("users", &self.users.values().collect::<Vec<_>>())
            .field("history_limit", &self.history_limit)
            .field("disable_controllers", &self.disable_controllers)
            .field("pod_facing_ip", &self.pod_facing_ip)
            .finish()
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding or reading a file.
    #[error("{context}: {source}")]
    Io {
        /// what was being done
        context: String,
        /// the failure
        #[source]
        source: std::io::Error,
    },
    /// A CRD file or initial object was refused.
    #[error("{context}: {message}")]
    Object {
        /// which file or object
        context: String,
        /// why
        message: String,
    },
}

/// A harness call on a running server was refused.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `fail_requests` with a code it does not inject.
    #[error("fault code {code}: only {allowed:?} are injected")]
    FaultCode {
        /// the code asked for
        code: u16,
        /// the codes injected
        allowed: &'static [u16],
    },
    /// `kill_container` without a node.
    #[error("kill_container: no node is configured (ApiConfig::node)")]
    NoNode,
    /// `kill_container` of a Pod that is not stored.
    #[error("kill_container: pod {0} not found")]
    PodNotFound(String),
    /// The node refused to kill the container.
    #[error("kill_container: pod {pod}: {reason}")]
    Node {
        /// `namespace/name`
        pod: String,
        /// the node's answer
        reason: String,
    },
}

/// State shared by every request.
pub(crate) struct Server {
    pub(crate) store: Store,
    pub(crate) admission: Option<Arc<dyn Admission>>,
    pub(crate) schema: Option<Arc<dyn SchemaCheck>>,
    pub(crate) users: BTreeMap<String, UserInfo>,
    pub(crate) faults: Faults,
    /// Pods are stopped by the node before removal (graceful deletion).
    pub(crate) graceful_pods: bool,
    /// Watches streaming now.
    pub(crate) open_watches: std::sync::atomic::AtomicUsize,
    /// Requests per user.
    pub(crate) requests: counts::RequestLog,
    /// The node, for the containers' logs (`pods/log`).
    pub(crate) node: Option<Arc<dyn PodRunner>>,
    /// ServiceAccount tokens the kubelet was given for Pods (token -> account), besides
    /// the static `users`.
    pub(crate) minted: std::sync::Mutex<BTreeMap<String, UserInfo>>,
    /// PEM of the CA of the serving certificate (a Pod's `ca.crt`).
    pub(crate) ca_pem: String,
}

impl Server {
    /// The identity bearer `token` stands for, if any.
    pub(crate) fn user_of(&self, token: &str) -> Option<UserInfo> {
        if let Some(user) = self.users.get(token) {
            return Some(user.clone());
        }
        self.minted.lock().ok()?.get(token).cloned()
    }

    /// A new token of ServiceAccount `namespace/account`, as the TokenRequest API hands
    /// the kubelet one: the account's username and groups.
    pub(crate) fn mint_token(&self, namespace: &str, account: &str) -> Option<String> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).ok()?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let user = UserInfo {
            username: format!("system:serviceaccount:{namespace}:{account}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        };
        self.minted.lock().ok()?.insert(token.clone(), user);
        Some(token)
    }
}

impl Server {
    /// The types served now: built-in ones and those of every stored CRD.
    /// Read on every request: the CRDs are read in place, never copied (a CRD with its
    /// schemas is large).
    pub(crate) fn types(&self) -> Vec<ResourceType> {
        let mut types = resources::builtin();
        self.store.inspect(|objects| {
            let crds = objects.iter().filter(|(key, _)| {
                key.group == "apiextensions.k8s.io" && key.resource == "customresourcedefinitions"
            });
            types.extend(crds.flat_map(|(_, crd)| resources::from_crd(crd)));
        });
        types
    }
}

/// The running server.
pub struct ApiServerHandle {
    server: Arc<Server>,
    addr: SocketAddr,
    pod_facing_addr: Option<SocketAddr>,
    ca_pem: String,
    handle: axum_server::Handle<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    controllers: controllers::Controllers,
}

impl std::fmt::Debug for ApiServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The API server.
#[derive(Debug)]
pub struct ApiServer;

/// How long the Pods still running at shutdown get between SIGTERM and SIGKILL: short,
/// since the test is over.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

impl ApiServer {
    /// Starts the server on `127.0.0.1` at a free port.
    pub async fn start(config: ApiConfig) -> Result<ApiServerHandle, StartError> {
        let tls = tls::generate(config.pod_facing_ip.as_slice())?;
        let limit = if config.history_limit == 0 {
            store::DEFAULT_HISTORY
        } else {
            config.history_limit
        };
        let server = Arc::new(Server {
            store: Store::new(limit),
            admission: config.admission.clone(),
            schema: config.schema.clone(),
            users: config.users.clone(),
            faults: Faults::default(),
            graceful_pods: config.node.is_some(),
            open_watches: std::sync::atomic::AtomicUsize::new(0),
            requests: counts::RequestLog::default(),
            node: config.node.clone(),
            minted: std::sync::Mutex::default(),
            ca_pem: tls.ca_pem.clone(),
        });
        seed(&server, &config)?;
        let node_name = if config.node_name.is_empty() {
            "node".to_owned()
        } else {
            config.node_name.clone()
        };
        let handle = axum_server::Handle::new();
        let app = axum::Router::new()
            .fallback(http::handle)
            .layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY_BYTES))
            .with_state(server.clone());
        let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls.config);
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let (addr, task) = serve_on(loopback, &app, &rustls, &handle)?;
        let mut tasks = vec![task];
        let mut pod_facing_addr = None;
        if let Some(ip) = config.pod_facing_ip {
            let (addr, task) = serve_on(ip, &app, &rustls, &handle)?;
            pod_facing_addr = Some(addr);
            tasks.push(task);
        }
        let controllers = if config.disable_controllers {
            controllers::Controllers::none()
        } else {
            controllers::Controllers::start(&server, config.node.clone(), &node_name)
        };
        Ok(ApiServerHandle {
            server,
            addr,
            pod_facing_addr,
            ca_pem: tls.ca_pem,
            handle,
            tasks,
            controllers,
        })
    }
}

type ServeTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serves `app` over TLS on a free port of `ip`; every listener shares `handle`, so one
/// shutdown closes them all.
fn serve_on(
    ip: std::net::IpAddr,
    app: &axum::Router,
    rustls: &axum_server::tls_rustls::RustlsConfig,
    handle: &axum_server::Handle<SocketAddr>,
) -> Result<(SocketAddr, ServeTask), StartError> {
    let io = |context: String| move |source| StartError::Io { context, source };
    let listener =
        std::net::TcpListener::bind((ip, 0)).map_err(io(format!("binding {ip} on a free port")))?;
    listener
        .set_nonblocking(true)
        .map_err(io("setting the listener non-blocking".into()))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address".into()))?;
    let serve = axum_server::from_tcp_rustls(listener, rustls.clone())
        .map_err(io("serving on the listener".into()))?
        .handle(handle.clone())
        .serve(app.clone().into_make_service());
    Ok((addr, tokio::spawn(serve)))
}

/// Stores the built-in namespaces, the CRDs of `crd_dirs` and the initial objects.
fn seed(server: &Server, config: &ApiConfig) -> Result<(), StartError> {
    let mut objects: Vec<(String, Value)> = BUILTIN_NAMESPACES
        .iter()
        .map(|ns| {
            (
                format!("namespace {ns}"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
        })
        .collect();
    for dir in &config.crd_dirs {
        objects.extend(read_manifests(dir)?);
    }
    objects.extend(
        config
            .initial_objects
            .iter()
            .map(|o| ("an initial object".to_owned(), o.clone())),
    );
    for (context, object) in objects {
        write::store_initial(server, object).map_err(|e| StartError::Object {
            context,
            message: e.message,
        })?;
    }
    Ok(())
}

/// The manifests in `dir` (sorted by file name), each file one or more YAML documents.
fn read_manifests(dir: &Path) -> Result<Vec<(String, Value)>, StartError> {
    let io = |source| StartError::Io {
        context: format!("reading {}", dir.display()),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let context = file.display().to_string();
        out.extend(
            manifests_in(&file)?
                .into_iter()
                .map(|v| (context.clone(), v)),
        );
    }
    Ok(out)
}

/// The documents of one YAML (or JSON) file, empty documents left out.
pub fn manifests_in(file: &Path) -> Result<Vec<Value>, StartError> {
    let context = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| StartError::Io {
        context: format!("reading {context}"),
        source,
    })?;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value: Value =
            serde::Deserialize::deserialize(doc).map_err(|e| StartError::Object {
                context: context.clone(),
                message: e.to_string(),
            })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

impl ApiServerHandle {
    /// The bound address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where pods reach the server (`ApiConfig::pod_facing_ip` and a port), if asked for.
    pub fn pod_facing_addr(&self) -> Option<SocketAddr> {
        self.pod_facing_addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The kubeconfig (JSON, which is YAML) for the user with bearer `token`, with
    /// `namespace` as the context's default namespace.
    pub fn kubeconfig(&self, token: &str, namespace: &str) -> Value {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test-cluster", "cluster": {"server": self.url(), "certificate-authority-data": ca}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test-cluster", "user": "user", "namespace": namespace}}],
            "current-context": "test",
        })
    }

    /// Writes [`ApiServerHandle::kubeconfig`] to `path`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        token: &str,
        namespace: &str,
    ) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig(token, namespace).to_string())
    }

    /// Direct access to the objects, for the harness (writes through it skip
    /// admission but still stamp `resourceVersion` and notify watches).
    pub fn store(&self) -> &Store {
        &self.server.store
    }

    /// The stored object at `key`.
    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.server.store.get(key)
    }

    /// Answers every non-watch request with `code` (429, 500 or 503) and a `Status`
    /// while the fault lasts. Another code is refused.
    pub fn fail_requests(&self, code: u16, length: FaultLength) -> Result<(), HarnessError> {
        if !fault::FAULT_CODES.contains(&code) {
            return Err(HarnessError::FaultCode {
                code,
                allowed: fault::FAULT_CODES,
            });
        }
        self.server.faults.set(code, length);
        Ok(())
    }

    /// Fault injection: SIGKILL the main process of container `container` of Pod
    /// `namespace/pod` on the node (which does not restart it).
    pub fn kill_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(), HarnessError> {
        let kubelet = self.controllers.kubelet().ok_or(HarnessError::NoNode)?;
        let stored = self
            .server
            .store
            .get(&ObjectKey::new("", "pods", namespace, pod))
            .ok_or_else(|| HarnessError::PodNotFound(format!("{namespace}/{pod}")))?;
        let uid = meta::meta_str(&stored, "uid").unwrap_or("");
        kubelet
            .kill_container(uid, container)
            .map_err(|reason| HarnessError::Node {
                pod: format!("{namespace}/{pod}"),
                reason,
            })
    }

    /// How many watches are streaming now (a harness waits for a client's watch to be
    /// open before making the changes it should see).
    pub fn open_watches(&self) -> usize {
        self.server
            .open_watches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The requests `username` made since the start, by kind.
    pub fn requests_of(&self, username: &str) -> counts::RequestCounts {
        self.server.requests.of(username)
    }

    /// The writes `username` sent since the start, by resource (a plural such as
    /// `runs`, its subresources included).
    pub fn writes_by_resource(&self, username: &str) -> std::collections::BTreeMap<String, u64> {
        self.server.requests.writes_by_resource(username)
    }

    /// How many requests injected faults have answered since the start.
    pub fn faulted_requests(&self) -> u64 {
        self.server.faults.answered()
    }

    /// Ends an injected fault early.
    pub fn clear_faults(&self) {
        self.server.faults.clear();
    }

    /// Stops serving: the controllers stop, every Pod the node still runs is stopped
    /// (SIGKILL after `SHUTDOWN_GRACE`), open connections (watches too) are closed, and
    /// the call returns once the server task has ended.
    pub async fn shutdown(self) {
        self.controllers.stop(SHUTDOWN_GRACE).await;
        self.handle.shutdown();
        // A serve task only ends with an I/O error of its listener or the shutdown.
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
