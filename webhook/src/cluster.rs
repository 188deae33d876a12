//! API mode: what the handlers read from the cluster, always from caches, never with an
//! API call per review.
//!
//! - a namespace reflector (metadata only: the Pod Security labels are all that is
//!   needed) behind [`NamespaceLevels`];
//! - a Runtime reflector over all namespaces behind [`Runtimes`].
//!
//! Both keep running (with kube-runtime's default backoff on errors) until
//! [`Cluster::shutdown`]. [`Cluster::is_synced`] turns true once both have finished
//! their first list; `/readyz` waits for it.
//!
//! RBAC: `list` and `watch` on `namespaces` and on `runtimes.kruntimes.io`
//! (`deploy/webhook-rbac.yaml`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kruntimes_api::v1alpha1::Runtime;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};

use crate::admission::{Lookup, NamespaceLevels, Runtimes};

/// Why the Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig file given with `--kubeconfig` cannot be read.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No configuration: not in a cluster, and no kubeconfig found.
    #[error("cannot find a Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client cannot be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig` when given, else kube's inference (`KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClusterError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClusterError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// The two reflectors and their readiness.
#[derive(Debug)]
pub struct Cluster {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    runtimes: Store<Runtime>,
    namespaces_synced: Arc<AtomicBool>,
    runtimes_synced: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Cluster {
    /// Starts both reflectors on `client` (spawned on the current tokio runtime).
    pub fn start(client: Client) -> Cluster {
        let mut tasks = tokio::task::JoinSet::new();
        let namespaces_synced = Arc::new(AtomicBool::new(false));
        let runtimes_synced = Arc::new(AtomicBool::new(false));

        let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        // `Api<PartialObjectMeta<_>>` makes metadata-only requests.
        let stream = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        // Only labels are read: drop what would make the cache big.
        .modify(|ns| {
            ns.metadata.managed_fields = None;
            ns.metadata.annotations = None;
        })
        .default_backoff()
        .reflect(writer);
        tasks.spawn(drive("namespaces", stream));
        tasks.spawn(mark_synced(namespaces.clone(), namespaces_synced.clone()));

        let (runtimes, writer) = reflector::store::<Runtime>();
        let stream = watcher(Api::<Runtime>::all(client), watcher::Config::default())
            .modify(|rt| {
                rt.metadata.managed_fields = None;
                rt.status = None;
            })
            .default_backoff()
            .reflect(writer);
        tasks.spawn(drive("runtimes", stream));
        tasks.spawn(mark_synced(runtimes.clone(), runtimes_synced.clone()));

        Cluster {
            namespaces,
            runtimes,
            namespaces_synced,
            runtimes_synced,
            tasks,
        }
    }

    /// Whether both caches have finished their first list.
    pub fn is_synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire)
            && self.runtimes_synced.load(Ordering::Acquire)
    }

    /// What `/readyz` says while not synced.
    pub fn sync_status(&self) -> String {
        let state = |b: &AtomicBool| {
            if b.load(Ordering::Acquire) {
                "synced"
            } else {
                "not synced"
            }
        };
        format!(
            "namespaces cache {}, runtimes cache {}",
            state(&self.namespaces_synced),
            state(&self.runtimes_synced)
        )
    }

    /// Namespace labels from the namespace cache.
    pub fn namespace_levels(&self) -> Arc<dyn NamespaceLevels> {
        Arc::new(NamespaceCache(self.namespaces.clone()))
    }

    /// Runtime lookups from the Runtime cache.
    pub fn runtimes(&self) -> Arc<dyn Runtimes> {
        Arc::new(RuntimeCache {
            store: self.runtimes.clone(),
            synced: self.runtimes_synced.clone(),
        })
    }

    /// Stops the reflectors.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn drive<S, T>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            // The backoff retries; the cache keeps its last state meanwhile.
            tracing::warn!(cache = what, error = %e, "watch failed; retrying");
        }
    }
}

async fn mark_synced<K>(store: Store<K>, synced: Arc<AtomicBool>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    if store.wait_until_ready().await.is_ok() {
        synced.store(true, Ordering::Release);
        tracing::info!(objects = store.state().len(), "cache synced");
    }
}

/// [`NamespaceLevels`] from the namespace reflector.
#[derive(Clone, Debug)]
pub struct NamespaceCache(pub Store<PartialObjectMeta<Namespace>>);

impl NamespaceLevels for NamespaceCache {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let ns = self.0.get(&ObjectRef::new(namespace))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }
}

/// [`Runtimes`] from the Runtime reflector.
#[derive(Clone, Debug)]
pub struct RuntimeCache {
    /// The reflector's store.
    pub store: Store<Runtime>,
    /// Set once the first list is in.
    pub synced: Arc<AtomicBool>,
}

impl Runtimes for RuntimeCache {
    fn lookup(&self, namespace: &str, name: &str) -> Lookup {
        match self.store.get(&ObjectRef::new(name).within(namespace)) {
            Some(runtime) => Lookup::Found(runtime),
            None if self.synced.load(Ordering::Acquire) => Lookup::NotFound,
            None => Lookup::NotSynced,
        }
    }
}

impl crate::server::ReadinessCheck for Cluster {
    fn not_ready(&self) -> Option<String> {
        (!self.is_synced()).then(|| self.sync_status())
    }
}
