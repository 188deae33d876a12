//! `kruntimes-test-cluster` put together: the API server, admission, the schema check
//! and the node, and with `--install` what installing kruntimes does (CRDs, the
//! webhook's Service and configurations, the components' namespace and accounts) and
//! `kruntimes-webhook` and `kruntimes-controller` from the same build, each a process
//! with an identity of its own; with `--install-chart` the rendered Helm chart applied
//! through the API server, its Deployments run on the node ([`crate::cluster::chart`]).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::cluster::admission::{ServiceRef, WebhookAdmission};
use crate::cluster::api::counts::RequestCounts;
use crate::cluster::api::fault::FaultLength;
use crate::cluster::api::store::Store;
use crate::cluster::api::{ApiConfig, ApiServer, ApiServerHandle, manifests_in};
use crate::cluster::chart;
use crate::cluster::contract::UserInfo;
use crate::cluster::node::{Node, NodeConfig};
use crate::cluster::schema::CrdSchemaCheck;

/// The namespace the components are installed in, as the manifests in `deploy/` say.
pub const SYSTEM_NAMESPACE: &str = "kruntimes-system";
/// The node's name.
pub const NODE_NAME: &str = "node-1";
/// How long a component has to become ready before the harness gives up.
pub const COMPONENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a component has to exit after SIGTERM before it is killed.
pub const COMPONENT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A step of the start failed.
    #[error("{0}")]
    Start(String),
    /// A control command was wrong.
    #[error("{0}")]
    Control(String),
}

/// The controller's ServiceAccount name.
const CONTROLLER_ACCOUNT: &str = "kruntimes-controller";

/// The identities the harness hands out: admin, webhook, controller, and `jane`, a
/// user with no bindings (tests bind her to what they need).
struct Identity {
    file: &'static str,
    token: String,
    user: UserInfo,
}

fn identities() -> Vec<Identity> {
    let token = || {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).unwrap_or_default();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let account = |name: &str| UserInfo {
        username: format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{SYSTEM_NAMESPACE}"),
            "system:authenticated".into(),
        ],
    };
    vec![
        Identity {
            file: "kubeconfig",
            token: token(),
            user: UserInfo {
                username: "kubernetes-admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        },
        Identity {
            file: "webhook.kubeconfig",
            token: token(),
            user: account("kruntimes-webhook"),
        },
        Identity {
            file: "controller.kubeconfig",
            token: token(),
            user: account(CONTROLLER_ACCOUNT),
        },
        Identity {
            file: "viewer.kubeconfig",
            token: token(),
            user: UserInfo {
                username: "jane".into(),
                groups: vec!["system:authenticated".into()],
            },
        },
    ]
}

/// Where the binaries of this build are: beside this executable (`target/<profile>/`).
fn binary(name: &str) -> Result<PathBuf, HarnessError> {
    let exe =
        std::env::current_exe().map_err(|e| HarnessError::Start(format!("current_exe: {e}")))?;
    let mut dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Start(format!(
            "{} does not exist: build it first (cargo build --bins)",
            path.display()
        )))
    }
}

fn free_port() -> Result<SocketAddr, HarnessError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| HarnessError::Start(format!("finding a free port: {e}")))
}

/// The manifests of `file` (YAML documents), repository-relative.
fn manifests(repo: &Path, file: &str) -> Result<Vec<Value>, HarnessError> {
    manifests_in(&repo.join(file)).map_err(|e| HarnessError::Start(e.to_string()))
}

/// What `--install` stores before the components start: their namespace, accounts and
/// RBAC (the components are authorized by it, as on a cluster), the webhook's Service
/// and configurations.
fn install_objects(repo: &Path) -> Result<Vec<Value>, HarnessError> {
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": SYSTEM_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    })];
    for file in [
        "deploy/webhook-rbac.yaml",
        "deploy/controller-rbac.yaml",
        "deploy/webhook-certificates-rbac.yaml",
    ] {
        for object in manifests(repo, file)? {
            // Several files name the same account (each says what it needs).
            if !objects
                .iter()
                .any(|o| o["kind"] == object["kind"] && o["metadata"] == object["metadata"])
            {
                objects.push(object);
            }
        }
    }
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kruntimes-webhook", "namespace": SYSTEM_NAMESPACE},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}],
                 "selector": {"app.kubernetes.io/name": "kruntimes-webhook"}},
    }));
    objects.extend(manifests(repo, "deploy/webhook-configurations.yaml")?);
    Ok(objects)
}

/// What the cluster installs at its start.
#[derive(Clone, Debug)]
pub enum Install {
    /// Nothing: the API server and the node alone.
    Nothing,
    /// `deploy/`'s manifests stored, webhook and controller as host processes.
    Manifests,
    /// The rendered chart (`helm template` output) at this path, applied through the API
    /// server; its Deployments' pods run on the node.
    Chart(PathBuf),
}

/// A component process.
#[derive(Debug)]
struct Component {
    name: &'static str,
    child: Child,
}

impl Component {
    /// Starts `command` with text logs appended to `DIR/<log>.log`, a clean environment
    /// (`PATH`, and `RUST_LOG` as the harness has it) and its admin port, given by
    /// `admin_flag`, on a free loopback port; returns once its `/readyz` answers.
    async fn start(
        dir: &Path,
        name: &'static str,
        log: &str,
        mut command: Command,
        admin_flag: &str,
    ) -> Result<Component, HarnessError> {
        let admin = free_port()?;
        let log = log_file(dir, log)?;
        let log_copy = log
            .try_clone()
            .map_err(|e| HarnessError::Start(format!("log: {e}")))?;
        let child = command
            .arg(format!("{admin_flag}={admin}"))
            .args(["--log-format", "text"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_copy)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("starting {name}: {e}")))?;
        let mut component = Component { name, child };
        wait_ready(&mut component, admin).await?;
        Ok(component)
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(COMPONENT_STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                component = self.name,
                "did not exit after SIGTERM; killing it"
            );
            let _ = self.child.kill().await;
        }
    }
}

/// Waits until `http://admin/readyz` answers 200, or the process ends.
async fn wait_ready(component: &mut Component, admin: SocketAddr) -> Result<(), HarnessError> {
    let deadline = tokio::time::Instant::now() + COMPONENT_READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = component.child.try_wait() {
            return Err(HarnessError::Start(format!(
                "{} exited before it was ready: {status}",
                component.name
            )));
        }
        if readyz(admin).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(HarnessError::Start(format!(
                "{} not ready after {COMPONENT_READY_TIMEOUT:?}",
                component.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One plain-HTTP GET of `/readyz`: whether it answered 200.
async fn readyz(admin: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(admin).await else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Where each Service port `(namespace, name, port)` is served: the components listen
/// on loopback ports, not behind a Service.
type ServiceTable = BTreeMap<(String, String, u16), SocketAddr>;

/// The running test cluster.
#[derive(Debug)]
pub struct TestCluster {
    api: Option<ApiServerHandle>,
    /// Held so that the node (its bridge and files) outlives the API server, whose
    /// kubelet stops the Pods on shutdown.
    node: Arc<Node>,
    dir: PathBuf,
    webhook: Option<Component>,
    controller: Option<Component>,
    /// Installed from a chart: the components are its Deployments' pods, not processes
    /// of the harness.
    from_chart: bool,
}

impl TestCluster {
    /// Starts the cluster in `dir`; with `install`, kruntimes too (`deploy/`'s manifests).
    pub async fn start(
        dir: &Path,
        repo: &Path,
        install: bool,
    ) -> Result<TestCluster, HarnessError> {
        let install = if install {
            Install::Manifests
        } else {
            Install::Nothing
        };
        Self::start_with(dir, repo, install).await
    }

    /// Starts the cluster in `dir` and installs what `install` says.
    pub async fn start_with(
        dir: &Path,
        repo: &Path,
        install: Install,
    ) -> Result<TestCluster, HarnessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::Start(format!("{}: {e}", dir.display())))?;
        let chart = match &install {
            Install::Chart(rendered) => Some(chart::documents(rendered)?),
            _ => None,
        };
        let node = Arc::new(node_for(dir, repo, chart.is_some())?);
        let pod_facing_ip = match chart {
            Some(_) => Some(
                node.host_ip()
                    .await
                    .map_err(|e| HarnessError::Start(format!("the node: {e}")))?
                    .into(),
            ),
            None => None,
        };
        let services: Arc<Mutex<ServiceTable>> = Arc::default();
        let store: Arc<std::sync::OnceLock<Store>> = Arc::default();
        let resolver = {
            let (services, store) = (services.clone(), store.clone());
            let endpoints = chart::Endpoints::default();
            Arc::new(move |service: &ServiceRef| {
                let key = (
                    service.namespace.clone(),
                    service.name.clone(),
                    service.port,
                );
                let listed = services.lock().ok()?.get(&key).copied();
                listed.or_else(|| endpoints.resolve(store.get()?, service))
            })
        };
        let identities = identities();
        let mut config = ApiConfig {
            admission: Some(Arc::new(WebhookAdmission::new(resolver))),
            schema: Some(Arc::new(CrdSchemaCheck::new())),
            node: Some(node.clone() as Arc<dyn crate::cluster::contract::PodRunner>),
            node_name: NODE_NAME.into(),
            users: identities
                .iter()
                .map(|i| (i.token.clone(), i.user.clone()))
                .collect(),
            pod_facing_ip,
            ..ApiConfig::default()
        };
        if matches!(install, Install::Manifests) {
            config.crd_dirs.push(repo.join("charts/kruntimes/crds"));
            config.initial_objects = install_objects(repo)?;
        }
        let api = ApiServer::start(config)
            .await
            .map_err(|e| HarnessError::Start(format!("the API server: {e}")))?;
        let _ = store.set(api.store().clone());
        if let Some(addr) = api.pod_facing_addr() {
            node.set_api_service(addr);
        }
        for identity in &identities {
            api.write_kubeconfig(&dir.join(identity.file), &identity.token, "default")
                .map_err(|e| HarnessError::Start(format!("writing {}: {e}", identity.file)))?;
        }
        let mut cluster = TestCluster {
            api: Some(api),
            node,
            dir: dir.to_owned(),
            webhook: None,
            controller: None,
            from_chart: chart.is_some(),
        };
        if let Some(documents) = chart {
            let client = admin_client(&cluster.kubeconfig()).await?;
            chart::apply(&client, &documents).await?;
            chart::wait_installed(api_store(&cluster)?, &documents).await?;
        }
        if matches!(install, Install::Manifests) {
            let webhook_addr = free_port()?;
            services
                .lock()
                .map_err(|_| HarnessError::Start("service table poisoned".into()))?
                .insert(
                    (SYSTEM_NAMESPACE.into(), "kruntimes-webhook".into(), 443),
                    webhook_addr,
                );
            cluster.webhook = Some(cluster.start_webhook(webhook_addr).await?);
            cluster.controller = Some(cluster.start_controller().await?);
        }
        Ok(cluster)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's address.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(ApiServerHandle::addr)
    }

    /// The requests the controller's identity made since the start (any controller
    /// process the harness started), by kind.
    pub fn controller_requests(&self) -> RequestCounts {
        self.api
            .as_ref()
            .map(|api| {
                api.requests_of(&format!(
                    "system:serviceaccount:{SYSTEM_NAMESPACE}:{CONTROLLER_ACCOUNT}"
                ))
            })
            .unwrap_or_default()
    }

    /// The writes the controller's identity sent since the start, by resource (a
    /// plural such as `runs`, subresources included).
    pub fn controller_writes_by_resource(&self) -> std::collections::BTreeMap<String, u64> {
        self.api
            .as_ref()
            .map(|api| {
                api.writes_by_resource(&format!(
                    "system:serviceaccount:{SYSTEM_NAMESPACE}:{CONTROLLER_ACCOUNT}"
                ))
            })
            .unwrap_or_default()
    }

    /// The process ids of the webhook and controller processes the harness started
    /// (none for a cluster installed from a chart), by name: the benchmark reads their
    /// CPU time.
    pub fn component_pids(&self) -> Vec<(&'static str, u32)> {
        [&self.webhook, &self.controller]
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.name, c.child.id()?)))
            .collect()
    }

    async fn start_webhook(&self, bind: SocketAddr) -> Result<Component, HarnessError> {
        let certs = self.dir.join("webhook-certs");
        std::fs::create_dir_all(&certs)
            .map_err(|e| HarnessError::Start(format!("{}: {e}", certs.display())))?;
        let mut command = Command::new(binary("kruntimes-webhook")?);
        command
            .arg("--tls-cert-file")
            .arg(certs.join("tls.crt"))
            .arg("--tls-private-key-file")
            .arg(certs.join("tls.key"))
            .arg(format!("--bind-address={bind}"))
            .arg("--kubeconfig")
            .arg(self.dir.join("webhook.kubeconfig"))
            .args(["--cert-mode", "self-managed"])
            .arg(format!(
                "--self-managed-secret={SYSTEM_NAMESPACE}/kruntimes-webhook-certs"
            ))
            .arg(format!(
                "--self-managed-service={SYSTEM_NAMESPACE}/kruntimes-webhook"
            ));
        Component::start(
            &self.dir,
            "kruntimes-webhook",
            "webhook",
            command,
            "--admin-bind-address",
        )
        .await
    }

    async fn start_controller(&self) -> Result<Component, HarnessError> {
        let mut command = Command::new(binary("kruntimes-controller")?);
        command
            .arg("--kubeconfig")
            .arg(self.dir.join("controller.kubeconfig"));
        Component::start(
            &self.dir,
            "kruntimes-controller",
            "controller",
            command,
            "--metrics-bind-address",
        )
        .await
    }

    /// Runs one control command (see docs/test-cluster.md, "Control commands") and
    /// returns its answer.
    pub async fn control(&mut self, line: &str) -> Result<String, HarnessError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let api = self
            .api
            .as_ref()
            .ok_or_else(|| HarnessError::Control("stopped".into()))?;
        let component_command = matches!(
            words.as_slice(),
            ["restart-controller" | "kill-controller" | "start-controller" | "stop-webhook"]
        );
        if component_command && self.from_chart {
            return Err(HarnessError::Control(format!(
                "{line}: installed from the chart, the components are the pods of its Deployments in {SYSTEM_NAMESPACE}: delete or kill-container those instead"
            )));
        }
        match words.as_slice() {
            ["fail-api", code, seconds] => {
                let code: u16 = code
                    .parse()
                    .map_err(|_| HarnessError::Control(format!("code {code:?}")))?;
                let seconds: u64 = seconds
                    .parse()
                    .map_err(|_| HarnessError::Control(format!("seconds {seconds:?}")))?;
                api.fail_requests(code, FaultLength::For(Duration::from_secs(seconds)))
                    .map_err(|e| HarnessError::Control(e.to_string()))?;
                Ok(String::new())
            }
            ["kill-container", namespace, pod, container] => {
                api.kill_container(namespace, pod, container)
                    .map_err(|e| HarnessError::Control(e.to_string()))?;
                Ok(String::new())
            }
            ["restart-controller"] => {
                if let Some(mut controller) = self.controller.take() {
                    controller.stop().await;
                }
                self.controller = Some(
                    self.start_controller()
                        .await
                        .map_err(|e| HarnessError::Control(e.to_string()))?,
                );
                Ok(String::new())
            }
            ["kill-controller"] => {
                let controller = self
                    .controller
                    .as_mut()
                    .ok_or_else(|| HarnessError::Control("no controller".into()))?;
                controller
                    .child
                    .kill()
                    .await
                    .map_err(|e| HarnessError::Control(e.to_string()))?;
                self.controller = None;
                Ok(String::new())
            }
            ["start-controller"] => {
                self.controller = Some(
                    self.start_controller()
                        .await
                        .map_err(|e| HarnessError::Control(e.to_string()))?,
                );
                Ok(String::new())
            }
            ["stop-webhook"] => {
                if let Some(mut webhook) = self.webhook.take() {
                    webhook.stop().await;
                }
                Ok(String::new())
            }
            _ => Err(HarnessError::Control(format!(
                "unknown command {line:?}: fail-api CODE SECONDS | kill-container NAMESPACE POD CONTAINER | restart-controller | kill-controller | start-controller | stop-webhook"
            ))),
        }
    }

    /// Stops the components, then the API server (whose kubelet stops every Pod with
    /// its grace period); dropping the node then removes its bridge and files.
    pub async fn stop(mut self) {
        for component in [self.controller.take(), self.webhook.take()]
            .into_iter()
            .flatten()
        {
            let mut component = component;
            component.stop().await;
        }
        if let Some(api) = self.api.take() {
            api.shutdown().await;
        }
        // Whatever the kubelet had not stopped yet (Pods of a namespace being deleted).
        self.node.shutdown().await;
    }
}

/// The node; for a chart install with the kruntimes images mapped to this build's
/// binaries (their entrypoints as images/Containerfile has them), so the chart's pods
/// run this build.
fn node_for(dir: &Path, repo: &Path, chart: bool) -> Result<Node, HarnessError> {
    let mut config = NodeConfig::new(NODE_NAME)
        .with_dir(dir.join("node"))
        .with_image_binary(kruntimes_webhook::inject::IMAGE_BINARY, binary("runtimed")?);
    if chart {
        for (component, binary_name, entrypoint) in chart::IMAGES {
            config = config
                .with_image_binary(entrypoint, binary(binary_name)?)
                .with_image_entrypoint(chart::image_repository(repo, component)?, entrypoint);
        }
    }
    Node::new(config).map_err(|e| HarnessError::Start(format!("the node: {e}")))
}

fn api_store(cluster: &TestCluster) -> Result<&Store, HarnessError> {
    cluster
        .api
        .as_ref()
        .map(ApiServerHandle::store)
        .ok_or_else(|| HarnessError::Start("the API server stopped".into()))
}

/// A client with the administrator's kubeconfig.
async fn admin_client(kubeconfig: &Path) -> Result<kube::Client, HarnessError> {
    let fail = |e: String| HarnessError::Start(format!("{}: {e}", kubeconfig.display()));
    let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File, HarnessError> {
    let path = dir.join(format!("{name}.log"));
    // Appended to: a restarted component's log follows its predecessor's.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| HarnessError::Start(format!("{}: {e}", path.display())))
}
