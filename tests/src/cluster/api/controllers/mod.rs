//! The in-process controllers: a scheduler binding Pods to the one node, a kubelet
//! running them through [`PodRunner`], a Deployment controller (Pods owned directly by
//! the Deployment, no ReplicaSets) and a garbage collector (owner references, namespace
//! deletion). Each is level-triggered: it wakes on any store change or every
//! [`RESYNC`] and reconciles everything, which is cheap at test-cluster sizes.

mod deployment;
mod gc;
mod kubelet;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Server;
use crate::cluster::contract::PodRunner;

pub(crate) use kubelet::Kubelet;

/// How often every controller reconciles even without a change.
pub const RESYNC: Duration = Duration::from_millis(500);

/// Runs `reconcile` on every store change (coalesced) and every [`RESYNC`].
fn spawn_loop<F, Fut>(server: Arc<Server>, mut reconcile: F) -> JoinHandle<()>
where
    F: FnMut(Arc<Server>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut changes = server.store.changes();
        let mut ticker = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                received = changes.recv() => {
                    if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = ticker.tick() => {}
            }
            // Coalesce a burst of changes into one pass.
            while changes.try_recv().is_ok() {}
            reconcile(server.clone()).await;
        }
    })
}

/// The started controllers.
pub(crate) struct Controllers {
    tasks: Vec<JoinHandle<()>>,
    kubelet: Option<Arc<Kubelet>>,
}

impl Controllers {
    /// Starts the scheduler, Deployment controller and garbage collector, and the
    /// kubelet when a node is configured.
    pub(crate) fn start(
        server: &Arc<Server>,
        node: Option<Arc<dyn PodRunner>>,
        node_name: &str,
    ) -> Controllers {
        let name = node_name.to_owned();
        let mut tasks = vec![
            spawn_loop(server.clone(), move |s| {
                let name = name.clone();
                async move { scheduler::reconcile(&s, &name) }
            }),
            spawn_loop(server.clone(), |s| async move {
                deployment::reconcile(&s).await
            }),
            spawn_loop(server.clone(), |s| async move { gc::reconcile(&s).await }),
        ];
        let kubelet = node.map(|node| Arc::new(Kubelet::new(node, node_name)));
        if let Some(kubelet) = &kubelet {
            let k = kubelet.clone();
            tasks.push(spawn_loop(server.clone(), move |s| {
                let k = k.clone();
                async move { k.reconcile(&s) }
            }));
        }
        Controllers { tasks, kubelet }
    }

    /// The kubelet, when a node is configured.
    pub(crate) fn kubelet(&self) -> Option<&Kubelet> {
        self.kubelet.as_deref()
    }

    /// No controller.
    pub(crate) fn none() -> Controllers {
        Controllers {
            tasks: Vec::new(),
            kubelet: None,
        }
    }

    /// Stops the controllers, then every Pod the node still runs (SIGKILL after
    /// `grace`).
    pub(crate) async fn stop(self, grace: Duration) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(kubelet) = self.kubelet {
            kubelet.stop_all(grace).await;
        }
    }
}
