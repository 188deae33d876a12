//! The in-process controllers against a fake node: scheduling, the kubelet's status and
//! graceful deletion, the Deployment controller, garbage collection and namespace
//! deletion.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodStatus};
use kruntimes_e2e::cluster::api::ApiConfig;
use kruntimes_e2e::cluster::contract::{NodeError, PodRunner, RunningPod, VolumeSource};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::harness::{Cluster, admin_users};

/// A node whose Pods are Running and Ready at once; it records starts and stops.
#[derive(Default)]
struct FakeNode {
    started: Mutex<Vec<String>>,
    stopped: Arc<Mutex<Vec<(String, Duration)>>>,
    killed: Arc<Mutex<Vec<(String, String)>>>,
    volumes_seen: Mutex<Vec<Option<String>>>,
}

struct FakePod {
    name: String,
    status: watch::Sender<PodStatus>,
    stopped: Arc<Mutex<Vec<(String, Duration)>>>,
    killed: Arc<Mutex<Vec<(String, String)>>>,
}

impl PodRunner for FakeNode {
    fn start(
        &self,
        pod: Pod,
        volumes: Arc<dyn VolumeSource>,
    ) -> BoxFuture<'static, Result<Box<dyn RunningPod>, NodeError>> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.started.lock().unwrap().push(name.clone());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        self.volumes_seen.lock().unwrap().push(
            volumes
                .config_map(&ns, "settings")
                .and_then(|d| d.get("mode").cloned()),
        );
        let (stopped, killed) = (self.stopped.clone(), self.killed.clone());
        Box::pin(async move {
            // A pod named `slow-start-*` takes a second to start.
            if name.starts_with("slow-start") {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if name.starts_with("refused") {
                return Err(NodeError::Unsupported {
                    pod: name,
                    reason: "hostNetwork is not emulated".to_owned(),
                });
            }
            let status: PodStatus =
                serde_json::from_value(json!({"phase": "Running", "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}]}))
                .unwrap();
            let (status, _) = watch::channel(status);
            Ok(Box::new(FakePod {
                name,
                status,
                stopped,
                killed,
            }) as Box<dyn RunningPod>)
        })
    }
}

impl RunningPod for FakePod {
    fn status(&self) -> watch::Receiver<PodStatus> {
        self.status.subscribe()
    }
    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        self.stopped
            .lock()
            .unwrap()
            .push((self.name.clone(), grace));
        // A pod named `slow-stop-*` takes its whole grace period to stop.
        let slow = self.name.starts_with("slow-stop");
        Box::pin(async move {
            if slow {
                tokio::time::sleep(grace).await;
            }
        })
    }
    fn kill_container(&self, container: &str) -> Result<(), NodeError> {
        self.killed
            .lock()
            .unwrap()
            .push((self.name.clone(), container.to_owned()));
        Ok(())
    }
}

async fn with_node() -> (Cluster, Arc<FakeNode>) {
    let node = Arc::new(FakeNode::default());
    let config = ApiConfig {
        users: admin_users(),
        node: Some(node.clone()),
        node_name: "n1".to_owned(),
        ..ApiConfig::default()
    };
    (Cluster::with(config).await, node)
}

/// Polls `check` every 50 ms for up to 10 s; panics with `what` if it never holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn pod(name: &str, grace: i64) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"terminationGracePeriodSeconds": grace, "containers": [{"name": "c", "image": "busybox"}]}})).unwrap()
}

#[tokio::test]
async fn pods_are_scheduled_run_and_stopped_gracefully() {
    let (cluster, node) = with_node().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let settings: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"mode": "fast"}}))
            .unwrap();
    cms.create(&PostParams::default(), &settings).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", 7))
        .await
        .unwrap();
    eventually("the pod runs and is Ready", || async {
        let p = pods.get("web").await.unwrap();
        let status = p.status.unwrap_or_default();
        p.spec.unwrap().node_name.as_deref() == Some("n1")
            && status.phase.as_deref() == Some("Running")
            && status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;
    assert_eq!(node.started.lock().unwrap().clone(), ["web"]);
    cluster
        .server
        .kill_container("default", "web", "c")
        .unwrap();
    assert_eq!(
        node.killed.lock().unwrap().clone(),
        [("web".to_owned(), "c".to_owned())]
    );
    assert!(
        cluster
            .server
            .kill_container("default", "missing", "c")
            .is_err()
    );
    assert_eq!(
        node.volumes_seen.lock().unwrap().clone(),
        [Some("fast".to_owned())],
        "volumes read from the store"
    );

    let deleting = pods
        .delete("web", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("still there while stopping");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    eventually("the pod is removed after the node stopped it", || async {
        pods.get_opt("web").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        node.stopped.lock().unwrap().clone(),
        [("web".to_owned(), Duration::from_secs(7))]
    );

    pods.create(&PostParams::default(), &pod("refused-1", 1))
        .await
        .unwrap();
    eventually("a refused pod is Failed", || async {
        pods.get("refused-1")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Failed")
    })
    .await;
    let message = pods
        .get("refused-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .message
        .unwrap();
    assert!(message.contains("hostNetwork is not emulated"), "{message}");
}

#[tokio::test]
async fn without_a_node_pods_are_bound_but_stay_pending() {
    let cluster = Cluster::start().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("idle", 1))
        .await
        .unwrap();
    eventually("bound", || async {
        pods.get("idle")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        pods.get("idle")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Pending")
    );
    pods.delete("idle", &DeleteParams::default()).await.unwrap();
    assert!(
        pods.get_opt("idle").await.unwrap().is_none(),
        "no node: deleted at once"
    );
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}}}}))
    .unwrap()
}

async fn pod_names(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test]
async fn deployments_scale_roll_and_report_status() {
    let (cluster, _node) = with_node().await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 2, "one"))
        .await
        .unwrap();
    eventually("two ready replicas and Available", || async {
        let d = deployments.get("web").await.unwrap();
        let s = d.status.unwrap_or_default();
        s.ready_replicas == Some(2)
            && s.observed_generation == Some(1)
            && s.conditions.unwrap_or_default().iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
    })
    .await;
    let first = pod_names(&pods, "app=web").await;
    assert_eq!(first.len(), 2);
    let hash =
        pods.get(&first[0]).await.unwrap().metadata.labels.unwrap()["pod-template-hash"].clone();
    assert!(
        first
            .iter()
            .all(|n| n.starts_with(&format!("web-{hash}-"))
                && n.len() == "web-".len() + hash.len() + 6),
        "{first:?}"
    );

    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("three replicas", || async {
        pod_names(&pods, "app=web").await.len() == 3
    })
    .await;

    let new_image = Patch::Strategic(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "two"}]}}}}),
    );
    deployments
        .patch("web", &PatchParams::default(), &new_image)
        .await
        .unwrap();
    eventually("rolled to the new template", || async {
        let d = deployments.get("web").await.unwrap();
        let s = d.status.unwrap_or_default();
        let names = pod_names(&pods, "app=web").await;
        s.updated_replicas == Some(3)
            && s.replicas == Some(3)
            && s.observed_generation == Some(3)
            && names.len() == 3
            && names.iter().all(|n| !first.contains(n))
    })
    .await;
    let images: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.spec.unwrap().containers[0].image.clone().unwrap())
        .collect();
    assert_eq!(images, ["two", "two", "two"]);

    deployments
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the garbage collector removes the Deployment's pods",
        || async {
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;
}

#[tokio::test]
async fn owners_and_namespaces_take_their_dependents_with_them() {
    let cluster = Cluster::start().await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "doomed");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dependent",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}})).unwrap();
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/x"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the dependent is collected", || async {
        cms.get_opt("dependent").await.unwrap().is_none()
    })
    .await;

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let refused = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, kube::Error::Api(s) if s.code == 403));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        namespaces.get_opt("doomed").await.unwrap().is_some(),
        "held by the finalizer of an object in it"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace is gone", || async {
        namespaces.get_opt("doomed").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn kubectl_waits_for_a_deployment_to_be_available() {
    let (cluster, _node) = with_node().await;
    let manifest = serde_json::to_string(&deployment("api", 2, "img"))
        .unwrap()
        .replacen('{', r#"{"apiVersion":"apps/v1","kind":"Deployment","#, 1);
    let (ok, _, err) = cluster
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&manifest))
        .await;
    assert!(ok, "{err}");
    let out = cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=Available",
            "deployment/api",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("deployment.apps/api condition met"), "{out}");
    let status = cluster
        .kubectl_ok(&["rollout", "status", "deployment/api", "--timeout=20s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
}

/// A kube-runtime `Controller` against the server: it copies each labelled ConfigMap
/// into an owned one by server-side apply; the copy follows changes and goes with its
/// owner through the garbage collector.
#[tokio::test]
async fn a_kube_runtime_controller_reconciles_against_the_server() {
    use futures::StreamExt as _;
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::watcher;

    async fn reconcile(
        source: Arc<ConfigMap>,
        client: Arc<kube::Client>,
    ) -> Result<Action, kube::Error> {
        let name = source.metadata.name.clone().unwrap_or_default();
        let owner = kube::Resource::controller_owner_ref(source.as_ref(), &()).unwrap();
        let copy = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{name}-copy"), "ownerReferences": [owner]}, "data": source.data});
        let api: Api<ConfigMap> = Api::namespaced(client.as_ref().clone(), "default");
        api.patch(
            &format!("{name}-copy"),
            &PatchParams::apply("copier").force(),
            &Patch::Apply(&copy),
        )
        .await?;
        Ok(Action::await_change())
    }
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let controller = Controller::new(api.clone(), watcher::Config::default().labels("copy=yes"))
        .owns(api.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(cluster.client.clone()),
        )
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let source: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "src", "labels": {"copy": "yes"}}, "data": {"a": "1"}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &source).await.unwrap();
    let data_of = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .unwrap()
                .and_then(|c| c.data)
                .and_then(|d| d.get("a").cloned())
        }
    };
    eventually("the copy is made", || async {
        data_of("src-copy").await.as_deref() == Some("1")
    })
    .await;
    api.patch(
        "src",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    eventually("the copy follows", || async {
        data_of("src-copy").await.as_deref() == Some("2")
    })
    .await;
    api.delete("src", &DeleteParams::default()).await.unwrap();
    eventually("the copy goes with its owner", || async {
        api.get_opt("src-copy").await.unwrap().is_none()
    })
    .await;
    running.abort();
}

/// Creates Pod `name` (grace period 30 s) and waits until it runs.
async fn create_running(pods: &Api<Pod>, name: &str) {
    pods.create(&PostParams::default(), &pod(name, 30))
        .await
        .unwrap();
    eventually("it runs", || async {
        pods.get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Running")
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_the_pods_the_node_runs() {
    let (cluster, node) = with_node().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    create_running(&pods, "left-running").await;
    let Cluster { server, .. } = cluster;
    server.shutdown().await;
    let grace = kruntimes_e2e::cluster::api::SHUTDOWN_GRACE;
    assert_eq!(
        node.stopped.lock().unwrap().clone(),
        [("left-running".to_owned(), grace)]
    );
}

#[tokio::test]
async fn shutdown_also_stops_a_deleted_pod_still_in_its_grace_period() {
    let (cluster, node) = with_node().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    create_running(&pods, "slow-stop").await;
    pods.delete("slow-stop", &DeleteParams::default())
        .await
        .unwrap();
    let grace = Duration::from_secs(30);
    eventually("the node stops it with its grace", || async {
        node.stopped.lock().unwrap().clone() == [("slow-stop".to_owned(), grace)]
    })
    .await;
    // Shut down while it is still stopping: it is stopped again, not left behind.
    let Cluster { server, .. } = cluster;
    server.shutdown().await;
    let shutdown = kruntimes_e2e::cluster::api::SHUTDOWN_GRACE;
    assert_eq!(
        node.stopped.lock().unwrap().clone(),
        [
            ("slow-stop".to_owned(), grace),
            ("slow-stop".to_owned(), shutdown)
        ]
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_pod_still_starting_and_stops_it() {
    let (cluster, node) = with_node().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("slow-start", 30))
        .await
        .unwrap();
    eventually("its start began", || async {
        node.started
            .lock()
            .unwrap()
            .contains(&"slow-start".to_owned())
    })
    .await;
    // Shut down while the node is still starting it: once the shutdown returned, the
    // late Pod was stopped too (nothing is left running behind the server).
    let Cluster { server, .. } = cluster;
    server.shutdown().await;
    let grace = kruntimes_e2e::cluster::api::SHUTDOWN_GRACE;
    assert_eq!(
        node.stopped.lock().unwrap().clone(),
        [("slow-start".to_owned(), grace)]
    );
}
