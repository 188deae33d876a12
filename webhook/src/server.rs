//! The HTTPS server: `POST /validate` and `POST /mutate` over TLS (HTTP/1.1 and h2), each
//! review decided under a deadline below the apiserver's `?timeout=`, a plain-HTTP
//! admin port with `/livez`, `/readyz`, `/metrics`, certificate files reloaded on
//! change, SIGTERM graceful shutdown. API mode (the default) reads namespaces and
//! Runtimes from the caches of [`crate::cluster`]; `--standalone` uses no API.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use kruntimes_pss::Level;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use tracing::Instrument;

use crate::admission::{
    AnswerJson, DeadlinePolicy, Endpoint, Handlers, MAX_REVIEW_BYTES, ReviewError,
    deadline_exceeded_answer, parse_review,
};
use crate::inject::InjectConfig;

/// How often the certificate files are checked for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// How long in-flight reviews get to finish after SIGTERM: below the kubelet's default
/// 30 s termination grace period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The apiserver's timeout when the request carries no usable `?timeout=`: the default
/// `timeoutSeconds` of admissionregistration.k8s.io/v1.
pub const DEFAULT_APISERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `?timeout=` honoured: the largest `timeoutSeconds` the apiserver accepts.
/// A bigger value is not from an apiserver and is clamped.
pub const MAX_APISERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of the apiserver's timeout the webhook spends deciding, in percent. The other
/// 20% (2 s of the default 10 s, 200 ms of a 1 s timeout) is left for encoding the
/// answer, writing it, and the network back to the apiserver, so that an answer that is
/// late is still the webhook's explicit decision and not the apiserver's timeout error.
pub const DEADLINE_PERCENT: u32 = 80;

/// The decision deadline for a request with `query` (the raw query string): 80% of its
/// `timeout` parameter (a Go duration such as `10s`, `9.5s` or `800ms`: the apiserver
/// sends the lesser of `timeoutSeconds` and what is left of its own request deadline).
/// A missing, unreadable or zero `timeout` gives 80% of [`DEFAULT_APISERVER_TIMEOUT`]
/// rather than an error: the parameter is advisory, and refusing the review would turn
/// a cosmetic problem into a failed write under `failurePolicy: Fail`.
pub fn decision_deadline(query: Option<&str>) -> Duration {
    let timeout = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|value| match kruntimes_api::duration::parse(value) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                tracing::debug!(timeout = value, "unusable ?timeout=; using the default");
                None
            }
        })
        .unwrap_or(DEFAULT_APISERVER_TIMEOUT)
        .min(MAX_APISERVER_TIMEOUT);
    timeout * DEADLINE_PERCENT / 100
}

/// Readiness beyond TLS: API mode's caches.
pub trait ReadinessCheck: Send + Sync {
    /// `None` when ready, else what is missing.
    fn not_ready(&self) -> Option<String>;
}

/// What the server runs with (the binary fills it from flags and env vars).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// Pod Security floor.
    pub pss_floor: Level,
    /// Injection configuration.
    pub inject: InjectConfig,
    /// How often the certificate files are polled.
    pub reload_interval: Duration,
    /// The answer when a decision misses its deadline.
    pub deadline_exceeded_policy: DeadlinePolicy,
}

/// `reviews_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    kind: &'static str,
    operation: &'static str,
    decision: &'static str,
}

/// `deadline_exceeded_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadlineLabels {
    endpoint: &'static str,
    action: &'static str,
}

/// `tls_reloads_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug)]
struct Metrics {
    reviews: Family<ReviewLabels, Counter>,
    latency: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
    tls_reloads: Family<ReloadLabels, Counter>,
    cert_expiry: Gauge<i64, AtomicI64>,
    deadline_exceeded: Family<DeadlineLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        let cert_expiry = Gauge::<i64, AtomicI64>::default();
        let deadline_exceeded = Family::<DeadlineLabels, Counter>::default();
        let mut registry = Registry::with_prefix("kruntimes_webhook");
        registry.register(
            "reviews",
            "Admission reviews answered, by endpoint, kind, operation and decision",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one review (parse, decide, encode)",
            latency.clone(),
        );
        registry.register(
            "reviews_in_flight",
            "Reviews being answered now",
            in_flight.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate reloads from disk, by result",
            tls_reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until the served leaf certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        registry.register(
            "deadline_exceeded",
            "Reviews not decided within the deadline, by endpoint and the action taken (deny or allow)",
            deadline_exceeded.clone(),
        );
        Metrics {
            deadline_exceeded,
            reviews,
            latency,
            in_flight,
            tls_reloads,
            cert_expiry,
            registry,
        }
    }
}

/// The serving certificate, swapped atomically on reload so a handshake never waits.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl CertResolver {
    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Reads and checks a certificate/key pair (the key must match the leaf).
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("cannot read the certificate PEM")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the certificate file");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("cannot read the private key PEM")?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .context("the private key does not match the certificate")
}

struct AppState {
    handlers: Handlers,
    metrics: Metrics,
    resolver: Arc<CertResolver>,
    readiness: Option<Arc<dyn ReadinessCheck>>,
    deadline_exceeded_policy: DeadlinePolicy,
    gates: Vec<ReadinessGate>,
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

/// Starts the HTTPS and admin servers in standalone mode on the given listeners (bind
/// port 0 in tests and read the addresses back from [`Running`]).
pub async fn start(
    config: ServeConfig,
    https: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<Running> {
    start_gated(config, https, admin, Vec::new()).await
}

/// [`start`], with `/readyz` also waiting for every gate.
pub async fn start_gated(
    config: ServeConfig,
    https: TcpListener,
    admin: TcpListener,
    gates: Vec<ReadinessGate>,
) -> anyhow::Result<Running> {
    let handlers = Handlers::standalone(config.inject.clone(), config.pss_floor);
    start_full(config, handlers, None, gates, https, admin).await
}

/// Starts the servers with `handlers` (API mode: reading the cluster caches), ready
/// once a certificate is loaded and `readiness` (the caches) says so.
pub async fn start_with(
    config: ServeConfig,
    handlers: Handlers,
    readiness: Option<Arc<dyn ReadinessCheck>>,
    https: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<Running> {
    start_full(config, handlers, readiness, Vec::new(), https, admin).await
}

/// [`start_with`], with `/readyz` also waiting for every gate.
pub async fn start_full(
    config: ServeConfig,
    handlers: Handlers,
    readiness: Option<Arc<dyn ReadinessCheck>>,
    gates: Vec<ReadinessGate>,
    https: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<Running> {
    let resolver = Arc::new(CertResolver::default());
    let metrics = Metrics::new();
    let state = Arc::new(AppState {
        handlers,
        metrics,
        resolver: resolver.clone(),
        readiness,
        deadline_exceeded_policy: config.deadline_exceeded_policy,
        gates,
    });
    let mut tasks = tokio::task::JoinSet::new();
    // First load now (readiness waits for it), then poll.
    let mut watcher = Watcher {
        config: config.clone(),
        last: None,
        not_after: None,
    };
    watcher.poll(&state);
    let watcher = tasks.spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(config.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                watcher.poll(&state);
            }
        }
    });
    let watcher_task = watcher;

    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    https.set_nonblocking(true)?;
    admin.set_nonblocking(true)?;
    let addr = https.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let handle = Handle::new();
    let admin_handle = Handle::new();

    let app = review_routes(state.clone());
    let server = axum_server::from_tcp_rustls(https, RustlsConfig::from_config(Arc::new(tls)))?
        .handle(handle.clone());
    tasks.spawn(async move {
        server
            .serve(app.into_make_service())
            .await
            .context("HTTPS server")
    });

    let admin_app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
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
        watcher: watcher_task,
        tasks,
    })
}

fn review_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

/// The `/validate` and `/mutate` routes alone, on `handlers`, without TLS or metrics
/// export, denying reviews that miss their deadline: for in-process tests
/// (`Router::oneshot`).
pub fn review_router(handlers: Handlers) -> Router {
    review_routes(Arc::new(AppState {
        handlers,
        metrics: Metrics::new(),
        resolver: Arc::new(CertResolver::default()),
        readiness: None,
        deadline_exceeded_policy: DeadlinePolicy::Deny,
        gates: Vec::new(),
    }))
}

struct Watcher {
    config: ServeConfig,
    /// The file contents last tried, so a bad pair is counted once, not every poll.
    last: Option<(Vec<u8>, Vec<u8>)>,
    /// `notAfter` of the served leaf, in Unix seconds.
    not_after: Option<i64>,
}

impl Watcher {
    fn poll(&mut self, state: &AppState) {
        self.reload(state);
        if let Some(not_after) = self.not_after {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            state.metrics.cert_expiry.set(not_after.saturating_sub(now));
        }
    }

    fn reload(&mut self, state: &AppState) {
        let read = std::fs::read(&self.config.cert_file)
            .and_then(|c| std::fs::read(&self.config.key_file).map(|k| (c, k)));
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the certificate files; keeping the current pair");
                return;
            }
        };
        if self.last.as_ref() == Some(&(cert.clone(), key.clone())) {
            return;
        }
        match load_pair(&cert, &key) {
            Ok(pair) => {
                self.not_after = pair.cert.first().and_then(|c| not_after(c.as_ref()));
                state.resolver.current.store(Some(Arc::new(pair)));
                state
                    .metrics
                    .tls_reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
                tracing::info!("serving certificate loaded");
            }
            Err(e) => {
                state
                    .metrics
                    .tls_reloads
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
                tracing::warn!(error = %format!("{e:#}"), "new certificate pair rejected; keeping the current one");
            }
        }
        self.last = Some((cert, key));
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut missing = Vec::new();
    if !state.resolver.is_loaded() {
        missing.push("no serving certificate loaded".to_owned());
    }
    if let Some(why) = state.readiness.as_ref().and_then(|r| r.not_ready()) {
        missing.push(why);
    }
    for gate in state.gates.iter().filter(|g| !*g.ready.borrow()) {
        missing.push(format!("waiting for {}", gate.name));
    }
    if missing.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", missing.join("; ")),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn validate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(state, Endpoint::Validate, query, body).await
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(state, Endpoint::Mutate, query, body).await
}

fn json_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({"code": status.as_u16(), "error": message});
    (status, axum::Json(body)).into_response()
}

/// A metric label for a kind: bounded to the kinds the webhook is registered for.
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "Runtime" => "Runtime",
        "Run" => "Run",
        "Workflow" => "Workflow",
        "Pod" => "Pod",
        _ => "other",
    }
}

/// Decrements `reviews_in_flight` however the request ends (the client may hang up and
/// drop the future).
struct InFlight<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Largest review body decided on the async worker that received it rather than on the
/// blocking pool (64 KiB): the decision is then a bounded pure function (decoding, the
/// rules, injection) of well under a millisecond, cheaper than the hand-off; larger
/// objects, up to the 7 MiB body limit, take the blocking pool and its deadline.
pub const INLINE_DECISION_MAX_BYTES: usize = 64 * 1024;

async fn answer(
    state: Arc<AppState>,
    endpoint: Endpoint,
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let deadline = decision_deadline(query.as_deref());
    state.metrics.in_flight.inc();
    let _in_flight = InFlight(&state.metrics.in_flight);
    let mut labels = ReviewLabels {
        endpoint: endpoint.as_str(),
        kind: "unknown",
        operation: "unknown",
        decision: "error",
    };
    let response = decide(&state, endpoint, started, deadline, body, &mut labels).await;
    state.metrics.reviews.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn decide(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    started: Instant,
    deadline: Duration,
    body: Result<Bytes, BytesRejection>,
    labels: &mut ReviewLabels,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return json_error(e.status(), e.body_text()),
    };
    let review = match parse_review(&body) {
        Ok(r) => r,
        Err(e) => return bad_review(&e),
    };
    let body_len = body.len();
    drop(body);
    let uid = review
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .unwrap_or_default();
    if let Some(req) = &review.request {
        labels.kind = kind_label(&req.kind.kind);
        labels.operation = match req.operation {
            kube::core::admission::Operation::Create => "CREATE",
            kube::core::admission::Operation::Update => "UPDATE",
            kube::core::admission::Operation::Delete => "DELETE",
            kube::core::admission::Operation::Connect => "CONNECT",
        };
    }
    let span = tracing::info_span!(
        "review",
        uid = uid.as_str(),
        endpoint = endpoint.as_str(),
        kind = labels.kind,
        operation = labels.operation,
    );
    // A decision that reads the Runtime cache (and may compile or evaluate an input
    // schema), or that is about a large object, runs on a blocking thread so that the
    // deadline can fire whatever it does; one that comes too late is dropped. The
    // others (Pods, Runtimes, and everything in standalone mode, under
    // INLINE_DECISION_MAX_BYTES) are pure functions of a bounded input, decided right
    // here: the two thread hand-offs of the blocking pool cost more than they do.
    let inline = body_len <= INLINE_DECISION_MAX_BYTES && !state.handlers.may_block(&review);
    let outcome = if inline {
        Ok(Ok(span.in_scope(|| state.handlers.review(endpoint, review))))
    } else {
        let decision = tokio::task::spawn_blocking({
            let state = state.clone();
            let span = span.clone();
            move || span.in_scope(|| state.handlers.review(endpoint, review))
        });
        tokio::time::timeout_at((started + deadline).into(), decision)
            .instrument(span.clone())
            .await
    };
    let _enter = span.enter();
    let out = match outcome {
        Ok(Ok(Ok(out))) => out,
        Ok(Ok(Err(e))) => return bad_review(&e),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the decision task failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the webhook failed to decide".to_owned(),
            );
        }
        Err(_) => {
            let policy = state.deadline_exceeded_policy;
            state
                .metrics
                .deadline_exceeded
                .get_or_create(&DeadlineLabels {
                    endpoint: endpoint.as_str(),
                    action: policy.as_str(),
                })
                .inc();
            tracing::warn!(
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                action = policy.as_str(),
                "no decision within the deadline"
            );
            deadline_exceeded_answer(&uid, endpoint, policy, deadline)
        }
    };
    let allowed = out.response.as_ref().is_some_and(|r| r.allowed);
    labels.decision = if allowed { "allowed" } else { "denied" };
    tracing::info!(allowed, "answered");
    axum::Json(AnswerJson(&out)).into_response()
}

fn bad_review(e: &ReviewError) -> Response {
    tracing::info!(error = e.metric_label(), "bad review");
    json_error(StatusCode::BAD_REQUEST, e.to_string())
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `kruntimes-webhook`: the kruntimes admission webhook. API mode (the default) watches
/// namespaces and Runtimes; `--standalone` needs no Kubernetes API access.
#[derive(Debug, clap::Parser)]
#[command(name = "kruntimes-webhook", version)]
pub struct Args {
    /// PEM certificate chain served on the HTTPS port (reloaded when it changes).
    #[arg(long, env = "KRUNTIMES_WEBHOOK_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the certificate (reloaded when it changes).
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_TLS_PRIVATE_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_private_key_file: PathBuf,
    /// HTTPS address for POST /validate and POST /mutate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_BIND_ADDRESS",
        default_value = "0.0.0.0:9443"
    )]
    pub bind_address: SocketAddr,
    /// Plain-HTTP admin address for /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_ADMIN_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_bind_address: SocketAddr,
    /// Pod Security level every Runtime template must meet: privileged, baseline or
    /// restricted.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_PSS_FLOOR", default_value = "baseline")]
    pub pss_floor: Level,
    /// Run with no Kubernetes API access: namespaces are treated as unlabeled (the
    /// floor applies) and Runtime lookups are skipped with a warning. Without it (API
    /// mode), namespaces and Runtimes are watched and cached.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_STANDALONE",
        conflicts_with = "kubeconfig"
    )]
    pub standalone: bool,
    /// Kubeconfig for API mode; without it: KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// What to answer when a review cannot be decided within its deadline (80% of the
    /// apiserver's ?timeout=): deny or allow.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_DEADLINE_EXCEEDED_POLICY",
        value_enum,
        default_value_t = DeadlinePolicy::Deny
    )]
    pub deadline_exceeded_policy: DeadlinePolicy,
    /// The runtimed image injected into Pods: a version tag or a digest, never latest.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_RUNTIMED_IMAGE", default_value_t = crate::inject::default_image())]
    pub runtimed_image: String,
    /// Seconds between checks of the certificate files for changes.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_CERT_RELOAD_INTERVAL_SECONDS",
        default_value_t = 5
    )]
    pub cert_reload_interval_seconds: u64,
    /// Log format.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Certificate mode flags.
    #[command(flatten)]
    pub certs: crate::certs::CertArgs,
}

/// Runs the server until SIGTERM. The rustls crypto provider must be installed first.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.cert_reload_interval_seconds > 0,
        "--cert-reload-interval-seconds must be at least 1"
    );
    let inject = InjectConfig::new(args.runtimed_image.clone())?;
    let config = ServeConfig {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_private_key_file.clone(),
        pss_floor: args.pss_floor,
        inject,
        reload_interval: Duration::from_secs(args.cert_reload_interval_seconds),
        deadline_exceeded_policy: args.deadline_exceeded_policy,
    };
    let handlers = Handlers::standalone(config.inject.clone(), config.pss_floor);
    let client = if args.standalone {
        None
    } else {
        Some(crate::cluster::client(args.kubeconfig.as_deref()).await?)
    };
    let cluster = client
        .clone()
        .map(|client| Arc::new(crate::cluster::Cluster::start(client)));
    let (handlers, readiness) = match &cluster {
        None => (handlers, None),
        Some(c) => (
            handlers
                .with_namespaces(c.namespace_levels())
                .with_runtimes(c.runtimes()),
            Some(c.clone() as Arc<dyn ReadinessCheck>),
        ),
    };
    let https = TcpListener::bind(args.bind_address)
        .with_context(|| format!("cannot bind {}", args.bind_address))?;
    let admin = TcpListener::bind(args.admin_bind_address)
        .with_context(|| format!("cannot bind {}", args.admin_bind_address))?;
    let self_managed = match args.certs.cert_mode {
        crate::certs::CertMode::Files => None,
        crate::certs::CertMode::SelfManaged => {
            let client = match &client {
                Some(c) => c.clone(),
                None => crate::cluster::client(args.kubeconfig.as_deref()).await?,
            };
            Some(
                crate::certs::start_self_managed(
                    client,
                    &args.certs,
                    &args.tls_cert_file,
                    &args.tls_private_key_file,
                )
                .await?,
            )
        }
    };
    let gates = self_managed
        .iter()
        .map(|s| ReadinessGate {
            name: "the self-managed certificate and caBundles",
            ready: s.ready.clone(),
        })
        .collect();
    let running = start_full(config, handlers, readiness, gates, https, admin).await?;
    let mode = if args.standalone { "standalone" } else { "api" };
    tracing::info!(addr = %running.addr, admin_addr = %running.admin_addr, mode, "serving");
    let result = running.run_until_signal().await;
    if let Some(s) = self_managed {
        s.task.abort();
    }
    result
}

/// One DER TLV: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `notAfter` of an X.509 certificate (DER), in Unix seconds; `None` when unreadable.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (0x30, validity, _) = tlv(tbs)? else {
        return None;
    };
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, rest) = match tag {
        // UTCTime: YYMMDDHHMMSS, years 1950-2049
        0x17 if text.len() == 12 => {
            let yy = digits(text.get(..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        // GeneralizedTime: YYYYMMDDHHMMSS
        0x18 if text.len() == 14 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day, h, m, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[tokio::test]
    async fn api_mode_is_the_default_and_needs_a_readable_kubeconfig() {
        use clap::Parser;
        let args = Args::try_parse_from([
            "kruntimes-webhook",
            "--tls-cert-file=a",
            "--tls-private-key-file=b",
            "--kubeconfig=/nonexistent/kubeconfig",
        ])
        .unwrap();
        assert!(!args.standalone);
        assert_eq!(args.deadline_exceeded_policy, DeadlinePolicy::Deny);
        let error = format!("{:#}", run(args).await.unwrap_err());
        assert!(
            error.contains("cannot read kubeconfig /nonexistent/kubeconfig"),
            "{error}"
        );
        assert!(
            Args::try_parse_from([
                "kruntimes-webhook",
                "--tls-cert-file=a",
                "--tls-private-key-file=b",
                "--standalone",
                "--kubeconfig=k",
            ])
            .is_err()
        );
    }

    #[test]
    fn the_deadline_is_80_percent_of_the_apiserver_timeout() {
        let d = |q: Option<&str>| decision_deadline(q);
        assert_eq!(d(Some("timeout=10s")), Duration::from_secs(8));
        assert_eq!(d(Some("timeout=1s")), Duration::from_millis(800));
        assert_eq!(d(Some("a=b&timeout=9.5s")), Duration::from_millis(7600));
        assert_eq!(d(Some("timeout=500ms")), Duration::from_millis(400));
        // Absent, unreadable or zero: the default 10 s.
        for q in [
            None,
            Some(""),
            Some("timeout=soon"),
            Some("timeout=0s"),
            Some("timeout=-1s"),
        ] {
            assert_eq!(d(q), Duration::from_secs(8), "{q:?}");
        }
        // At the largest timeoutSeconds, and one over: clamped.
        assert_eq!(d(Some("timeout=30s")), Duration::from_secs(24));
        assert_eq!(d(Some("timeout=31s")), Duration::from_secs(24));
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2030, 1, 1) * 86_400, 1_893_456_000);
    }

    #[test]
    fn not_after_reads_utc_and_generalized_times() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(1_893_456_000));
        params.not_after = rcgen::date_time_ymd(2051, 6, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            not_after(cert.der()),
            Some(days_from_civil(2051, 6, 2) * 86_400)
        );
        assert_eq!(not_after(b"\x30\x03abc"), None);
        assert_eq!(not_after(&[]), None);
    }
}
