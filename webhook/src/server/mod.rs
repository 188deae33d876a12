//! The HTTPS server: `POST /validate` and `POST /mutate` over TLS (HTTP/1.1 and h2), each
//! review decided under a deadline below the apiserver's `?timeout=`, a plain-HTTP
//! admin port with `/livez`, `/readyz`, `/metrics`, certificate files reloaded on
//! change, SIGTERM graceful shutdown. API mode (the default) reads namespaces and
//! Runtimes from the caches of [`crate::cluster`]; `--standalone` uses no API.
//!
//! The shape is flags -> configuration -> server: [`cli::Args`] are the flags,
//! [`cli::run`] turns them into one [`ServeConfig`] and calls [`serve`], which tests,
//! benchmarks and the binary all use.
//!
//! - [`routes`]: the review and admin routes, the decision deadline;
//! - [`tls`]: the certificate resolver, reading pairs, the file watcher;
//! - `metrics`: the Prometheus metrics;
//! - [`cli`]: the command line and `run`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::admission::{DeadlinePolicy, Handlers};

pub mod cli;
mod metrics;
pub mod routes;
pub mod tls;

pub use cli::{Args, LogFormat, run};
pub use routes::{INLINE_DECISION_MAX_BYTES, decision_deadline, review_router};
pub use tls::{CertResolver, DEFAULT_RELOAD_INTERVAL, load_pair, not_after};

/// How long in-flight reviews get to finish after SIGTERM: below the kubelet's default
/// 30 s termination grace period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Readiness beyond TLS: API mode's caches.
pub trait ReadinessCheck: Send + Sync {
    /// `None` when ready, else what is missing.
    fn not_ready(&self) -> Option<String>;
}

/// A readiness condition besides a loaded certificate (e.g. the self-managed certificate
/// written and the caBundles patched): `/readyz` answers 503 naming it until it is true.
#[derive(Clone, Debug)]
pub struct ReadinessGate {
    /// What is awaited, as `/readyz` shows it.
    pub name: &'static str,
    /// True once ready.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

/// Everything the server runs with: the binary fills it from flags and env vars
/// ([`cli::run`]), tests and benchmarks build it with [`ServeConfig::new`] and the
/// `with_*` methods.
#[derive(Clone)]
pub struct ServeConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the certificate files are polled.
    pub reload_interval: Duration,
    /// The admission handlers (standalone, or reading API mode's caches).
    pub handlers: Handlers,
    /// The answer when a decision misses its deadline.
    pub deadline_exceeded_policy: DeadlinePolicy,
    /// Readiness beyond a loaded certificate (API mode: the caches synced).
    pub readiness: Option<Arc<dyn ReadinessCheck>>,
    /// Further conditions `/readyz` waits for.
    pub gates: Vec<ReadinessGate>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("reload_interval", &self.reload_interval)
            .field("handlers", &self.handlers)
            .field("deadline_exceeded_policy", &self.deadline_exceeded_policy)
            .field("readiness", &self.readiness.is_some())
            .field("gates", &self.gates)
            .finish()
    }
}

impl ServeConfig {
    /// Serving `cert_file`/`key_file` with `handlers`: the files polled every
    /// [`DEFAULT_RELOAD_INTERVAL`], late decisions denied, ready once a certificate is
    /// loaded.
    pub fn new(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        handlers: Handlers,
    ) -> Self {
        ServeConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handlers,
            deadline_exceeded_policy: DeadlinePolicy::Deny,
            readiness: None,
            gates: Vec::new(),
        }
    }

    /// Polls the certificate files every `interval`.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Answers late decisions with `policy`.
    pub fn with_deadline_exceeded_policy(mut self, policy: DeadlinePolicy) -> Self {
        self.deadline_exceeded_policy = policy;
        self
    }

    /// `/readyz` also asks `readiness`.
    pub fn with_readiness(mut self, readiness: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// `/readyz` also waits for `gate`.
    pub fn with_gate(mut self, gate: ReadinessGate) -> Self {
        self.gates.push(gate);
        self
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Address of the HTTPS listener.
    pub addr: SocketAddr,
    /// Address of the admin listener.
    pub admin_addr: SocketAddr,
    handle: Handle<SocketAddr>,
    admin_handle: Handle<SocketAddr>,
    watcher: tokio::task::AbortHandle,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight reviews finish (up to `grace`), then returns.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.admin_handle.graceful_shutdown(Some(grace));
        self.watcher.abort();
        self.wait().await
    }

    /// Waits for the servers to stop.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(r) => r?,
                Err(e) if e.is_cancelled() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Graceful shutdown on SIGTERM or Ctrl-C.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let signal = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {},
                r = tokio::signal::ctrl_c() => r?,
            }
            anyhow::Ok(())
        };
        tokio::select! {
            r = signal => {
                r?;
                tracing::info!("signal received: draining");
                self.shutdown(SHUTDOWN_GRACE).await
            }
            r = self.wait() => r,
        }
    }
}

/// Starts the HTTPS and admin servers of `config` on the given listeners (bind port 0
/// in tests and read the addresses back from [`Running`]). The certificate files are
/// read once before it returns (`/readyz` waits for a loaded pair), then polled.
pub async fn serve(
    config: ServeConfig,
    https: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<Running> {
    let resolver = Arc::new(CertResolver::default());
    let state = Arc::new(routes::AppState {
        handlers: config.handlers,
        metrics: metrics::Metrics::new(),
        resolver: resolver.clone(),
        readiness: config.readiness,
        deadline_exceeded_policy: config.deadline_exceeded_policy,
        gates: config.gates,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut watcher = tls::Watcher::new(config.cert_file, config.key_file);
    watcher.poll(&state.resolver, &state.metrics);
    let reload_interval = config.reload_interval;
    let watcher = tasks.spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                watcher.poll(&state.resolver, &state.metrics);
            }
        }
    });
    let tls = tls::server_config(resolver)?;

    https.set_nonblocking(true)?;
    admin.set_nonblocking(true)?;
    let addr = https.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let handle = Handle::new();
    let admin_handle = Handle::new();

    let app = routes::review_routes(state.clone());
    let server = axum_server::from_tcp_rustls(https, RustlsConfig::from_config(Arc::new(tls)))?
        .handle(handle.clone());
    tasks.spawn(async move {
        server
            .serve(app.into_make_service())
            .await
            .context("HTTPS server")
    });
    let admin_app = routes::admin_routes(state);
    let admin_server = axum_server::from_tcp(admin)?.handle(admin_handle.clone());
    tasks.spawn(async move {
        admin_server
            .serve(admin_app.into_make_service())
            .await
            .context("admin server")
    });
    Ok(Running {
        addr,
        admin_addr,
        handle,
        admin_handle,
        watcher,
        tasks,
    })
}
