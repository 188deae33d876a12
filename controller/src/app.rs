//! The controller process: the admin server, leader election, and the controllers
//! started once this replica leads. SIGTERM (or SIGINT) stops taking work, releases
//! the lease and exits; a status write in flight finishes first, and every Run the
//! process was following stays in runtimed, where the next leader re-attaches to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kruntimes_api::v1alpha1::{Run, Runtime};
use kruntimes_api::validation::against_runtime::SchemaCache;
use kube::api::Api;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use prometheus_client::registry::Registry;

use crate::args::{Args, LogFormat};
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::run::{self, KubeSink};

/// What the admin server reports.
#[derive(Debug, Default)]
struct Health {
    /// Caches synced and leading, or standing by (not elected).
    ready: AtomicBool,
    registry: std::sync::Mutex<Registry>,
}

/// Initialises logging as `format` says (`RUST_LOG` filters, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    metrics.register(&mut lock(&health.registry));
    let listener = tokio::net::TcpListener::bind(args.metrics_bind_address)
        .await
        .with_context(|| format!("binding {}", args.metrics_bind_address))?;
    let admin = axum::serve(listener, admin_router(health.clone()));
    tokio::spawn(async move {
        if let Err(e) = admin.await {
            tracing::error!(error = %e, "the admin server stopped");
        }
    });
    let lease = if args.leader_elect {
        Some(elect(&client, &args, &health, &metrics).await?)
    } else {
        None
    };
    let work = reconcile_all(client, args, metrics.clone(), health.clone());
    tokio::select! {
        () = work => tracing::warn!("the controllers stopped"),
        () = shutdown_signal() => tracing::info!("stopping: no new work is taken"),
        () = lost(&lease) => anyhow::bail!("leadership lost; exiting so a leader starts clean"),
    }
    health.ready.store(false, Ordering::Relaxed);
    if let Some((receiver, handle)) = lease {
        // Dropping the receiver makes the lease manager release the lease.
        drop(receiver);
        if let Ok(Err(e)) = handle.await {
            tracing::warn!(error = %e, "releasing the lease failed");
        }
    }
    Ok(())
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no cluster configuration: not in a pod, and no kubeconfig (--kubeconfig or $KUBECONFIG)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

type Lease = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
);

/// Waits until this replica holds the lease (standing by, and ready, meanwhile).
async fn elect(
    client: &kube::Client,
    args: &Args,
    health: &Health,
    metrics: &Metrics,
) -> anyhow::Result<Lease> {
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("kruntimes-controller-{}", std::process::id()));
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.leader_elect_lease_name)
            .with_namespace(args.lease_namespace())
            .with_identity(identity)
            .with_duration(args.leader_elect_lease_duration)
            .with_grace(args.leader_elect_renew_grace)
            .with_field_manager(crate::naming::FIELD_MANAGER)
            .build()
            .await
            .context("setting up leader election")?;
    let (mut leading, handle) = manager.watch().await;
    // A standby replica is ready: it serves probes and takes over when the leader goes.
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %args.leader_elect_lease_name, "standing by for the lease");
    while !*leading.borrow_and_update() {
        leading
            .changed()
            .await
            .context("the lease manager stopped")?;
    }
    metrics.leader.set(1);
    // Not ready again until this leader's caches are filled.
    health.ready.store(false, Ordering::Relaxed);
    tracing::info!("leading");
    Ok((leading, handle))
}

/// Resolves when a held lease is lost; never without one.
async fn lost(lease: &Option<Lease>) {
    match lease {
        Some((receiver, _)) => {
            let mut receiver = receiver.clone();
            while *receiver.borrow_and_update() {
                if receiver.changed().await.is_err() {
                    return;
                }
            }
        }
        None => std::future::pending().await,
    }
}

/// Every controller, in every namespace watched.
async fn reconcile_all(
    client: kube::Client,
    args: Args,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let dispatcher =
        Dispatcher::with_metrics(Arc::new(KubeSink::new(client.clone())), metrics.clone());
    let namespaces: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = tokio::task::JoinSet::new();
    let busy = dispatcher.clone();
    tasks.spawn(crate::runtime::capacity::keep_busy_current(
        client.clone(),
        move || busy.busy_by_runtime(),
    ));
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let expected = namespaces.len();
    for namespace in namespaces {
        tasks.spawn(crate::pool::feed(
            client.clone(),
            namespace.clone(),
            dispatcher.clone(),
            args.runtimed_port,
        ));
        let on_synced = {
            let (synced, health) = (synced.clone(), health.clone());
            move || {
                // Ready once every namespace's caches are filled.
                if synced.fetch_add(1, Ordering::Relaxed) + 1 == expected {
                    health.ready.store(true, Ordering::Relaxed);
                }
            }
        };
        tasks.spawn(runtime_controller(
            client.clone(),
            namespace.clone(),
            dispatcher.clone(),
            metrics.clone(),
            args.workers,
            kruntimes_pss::Policy::new(args.pss_floor, kruntimes_pss::Version::Latest),
        ));
        tasks.spawn(workflow_controller(
            client.clone(),
            namespace.clone(),
            metrics.clone(),
            args.workers,
            args.workflow_ttl_seconds_after_finished,
        ));
        tasks.spawn(run_controller(
            client.clone(),
            namespace,
            dispatcher.clone(),
            metrics.clone(),
            args.workers,
            args.run_ttl_seconds_after_finished,
            on_synced,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_controller(
    client: kube::Client,
    namespace: Option<String>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    workers: u16,
    default_ttl: Option<u64>,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let (runs, runtimes_api): (Api<Run>, Api<Runtime>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (runtimes, writer) = reflector::store::<Runtime>();
    let runtime_watch =
        reflector::reflector(writer, watcher(runtimes_api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| std::future::ready(()));
    tokio::spawn(runtime_watch);
    let runtimes_ready = run::runtimes_ready(runtimes.clone());
    let mut ready = runtimes_ready.clone();
    tokio::spawn(async move {
        if ready.wait_for(|ready| *ready).await.is_ok() {
            on_synced();
        }
    });
    let ctx = Arc::new(run::Context {
        client,
        dispatcher,
        runtimes,
        runtimes_ready,
        schemas: SchemaCache::new(),
        default_ttl_seconds_after_finished: default_ttl,
    });
    Controller::new(runs, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(workers))
        .run(run::reconcile, run::error_policy, ctx)
        .for_each(|result| {
            if let Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) = &result {
                metrics.reconcile_failed("run", e);
            }
            std::future::ready(())
        })
        .await;
}

/// The controller's own pods, admitted to runtimed's port by each Runtime's
/// NetworkPolicy: `app.kubernetes.io/name=kruntimes-controller` in the namespace
/// `$POD_NAMESPACE` (the chart sets it), else in the Runtime's own namespace.
fn controller_selector() -> Result<crate::runtime::ControllerSelector, crate::runtime::SelectorError>
{
    let pods = std::collections::BTreeMap::from([(
        "app.kubernetes.io/name".to_owned(),
        "kruntimes-controller".to_owned(),
    )]);
    let namespace = std::env::var("POD_NAMESPACE").ok().map(|ns| {
        std::collections::BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns)])
    });
    crate::runtime::ControllerSelector::new(pods, namespace)
}

async fn runtime_controller(
    client: kube::Client,
    namespace: Option<String>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    workers: u16,
    pod_security_floor: kruntimes_pss::Policy,
) {
    let selector = match controller_selector() {
        Ok(selector) => selector,
        Err(e) => {
            tracing::error!(error = %e, "no NetworkPolicy selector for the controller; Runtimes are not reconciled");
            return;
        }
    };
    let reporter = kube::runtime::events::Reporter {
        controller: crate::naming::FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let busy = move |ns: &str, name: &str| {
        dispatcher.busy(&crate::dispatch::RuntimeKey {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    };
    let ctx = Arc::new(crate::runtime::Context {
        client: client.clone(),
        controller_selector: selector,
        events: Arc::new(kube::runtime::events::Recorder::new(
            client.clone(),
            reporter,
        )),
        busy: Arc::new(busy),
        pod_security_floor,
    });
    crate::runtime::builder(&client, namespace.as_deref())
        .with_config(kube::runtime::controller::Config::default().concurrency(workers))
        .run(crate::runtime::reconcile, crate::runtime::error_policy, ctx)
        .for_each(|result| {
            if let Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) = &result {
                metrics.reconcile_failed("runtime", e);
            }
            std::future::ready(())
        })
        .await;
}

async fn workflow_controller(
    client: kube::Client,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
    workers: u16,
    default_ttl: Option<u64>,
) {
    use kruntimes_api::v1alpha1::Workflow;
    let (workflows, runs): (Api<Workflow>, Api<Run>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let children = watcher::Config::default().labels(kruntimes_api::labels::WORKFLOW_LABEL);
    let ctx = Arc::new(crate::workflow::Context {
        client,
        default_ttl_seconds_after_finished: default_ttl,
    });
    Controller::new(workflows, watcher::Config::default())
        .owns(runs, children)
        .with_config(kube::runtime::controller::Config::default().concurrency(workers))
        .run(
            crate::workflow::reconcile,
            crate::workflow::error_policy,
            ctx,
        )
        .for_each(|result| {
            if let Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) = &result {
                metrics.reconcile_failed("workflow", e);
            }
            std::future::ready(())
        })
        .await;
}

fn admin_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &lock(&health.registry)) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::from("encoding the metrics failed"),
        ),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
