//! `pods/log` through kube-rs against a fake node whose containers' logs are files of
//! a temporary directory: the whole log, `tailLines`, `limitBytes`, the container
//! required when a Pod has several, `previous` refused, and `follow` streaming what is
//! appended until the container terminates or the Pod is deleted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kruntimes_e2e::cluster::api::ApiConfig;
use kruntimes_e2e::cluster::contract::{NodeError, PodRunner, RunningPod, VolumeSource};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::harness::{Cluster, admin_users};

/// A node whose Pods run at once; container `C` of Pod `P` logs to `<dir>/P_C.log`, and
/// a test ends a container by sending a status.
struct LogNode {
    dir: tempfile::TempDir,
    statuses: Mutex<Vec<(String, watch::Sender<PodStatus>)>>,
}

struct LogPod {
    status: watch::Receiver<PodStatus>,
}

impl PodRunner for LogNode {
    fn start(
        &self,
        pod: Pod,
        _volumes: Arc<dyn VolumeSource>,
    ) -> BoxFuture<'static, Result<Box<dyn RunningPod>, NodeError>> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let running: PodStatus = serde_json::from_value(json!({"phase": "Running",
            "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"running": {}}}]}))
        .unwrap();
        let (tx, rx) = watch::channel(running);
        self.statuses.lock().unwrap().push((name, tx));
        Box::pin(async move { Ok(Box::new(LogPod { status: rx }) as Box<dyn RunningPod>) })
    }

    fn log_file(&self, pod: &Pod, container: &str) -> Option<PathBuf> {
        let name = pod.metadata.name.as_deref()?;
        Some(self.dir.path().join(format!("{name}_{container}.log")))
    }
}

impl RunningPod for LogPod {
    fn status(&self) -> watch::Receiver<PodStatus> {
        self.status.clone()
    }
    fn stop(&self, _grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn kill_container(&self, _container: &str) -> Result<(), NodeError> {
        Ok(())
    }
}

impl LogNode {
    fn append(&self, file: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(file))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn terminate(&self, pod: &str) {
        let statuses = self.statuses.lock().unwrap();
        let (_, tx) = statuses.iter().find(|(n, _)| n == pod).unwrap();
        tx.send_replace(
            serde_json::from_value(json!({"phase": "Succeeded",
                "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": 0}}}]}))
            .unwrap(),
        );
    }
}

async fn with_log_node() -> (Cluster, Arc<LogNode>, Api<Pod>) {
    let node = Arc::new(LogNode {
        dir: tempfile::tempdir().unwrap(),
        statuses: Mutex::new(Vec::new()),
    });
    let config = ApiConfig {
        users: admin_users(),
        node: Some(node.clone()),
        node_name: "n1".to_owned(),
        ..ApiConfig::default()
    };
    let cluster = Cluster::with(config).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    (cluster, node, pods)
}

async fn create_pod(pods: &Api<Pod>, name: &str, containers: &[&str]) {
    let containers: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": containers}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    for _ in 0..200 {
        let phase = pods.get(name).await.unwrap().status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Running") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pod {name} never ran");
}

fn params(container: Option<&str>) -> LogParams {
    LogParams {
        container: container.map(str::to_owned),
        ..LogParams::default()
    }
}

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn a_log_is_served_whole_tailed_and_limited() {
    let (_cluster, node, pods) = with_log_node().await;
    create_pod(&pods, "p", &["main"]).await;
    node.append("p_main.log", "one\ntwo\nthree\n");
    assert_eq!(
        pods.logs("p", &params(None)).await.unwrap(),
        "one\ntwo\nthree\n"
    );
    let tail = LogParams {
        tail_lines: Some(2),
        ..params(Some("main"))
    };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "two\nthree\n");
    let limited = LogParams {
        limit_bytes: Some(5),
        ..params(None)
    };
    assert_eq!(pods.logs("p", &limited).await.unwrap(), "one\nt");
    let previous = LogParams {
        previous: true,
        ..params(None)
    };
    let (code, message) = api_error(pods.logs("p", &previous).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(message.contains("previous"), "{message}");
    let (code, _) = api_error(pods.logs("absent", &params(None)).await.unwrap_err());
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_pod_with_several_containers_needs_the_container_named() {
    let (_cluster, node, pods) = with_log_node().await;
    create_pod(&pods, "two", &["main", "side"]).await;
    node.append("two_side.log", "from the side\n");
    let (code, message) = api_error(pods.logs("two", &params(None)).await.unwrap_err());
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "a container name must be specified for pod two, choose one of: [main side]"
    );
    let (code, message) = api_error(pods.logs("two", &params(Some("other"))).await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (400, "container other is not valid for pod two")
    );
    assert_eq!(
        pods.logs("two", &params(Some("side"))).await.unwrap(),
        "from the side\n"
    );
    // A container whose log file does not exist yet has not started.
    let (code, message) = api_error(pods.logs("two", &params(Some("main"))).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(message.contains("waiting to start"), "{message}");
}

#[tokio::test]
async fn follow_streams_appended_lines_until_the_container_terminates() {
    let (_cluster, node, pods) = with_log_node().await;
    create_pod(&pods, "f", &["main"]).await;
    node.append("f_main.log", "first\n");
    let follow = LogParams {
        follow: true,
        ..params(Some("main"))
    };
    let mut lines = pods.log_stream("f", &follow).await.unwrap().lines();
    assert_eq!(lines.next().await.unwrap().unwrap(), "first");
    node.append("f_main.log", "second\n");
    let second = tokio::time::timeout(Duration::from_secs(5), lines.next()).await;
    assert_eq!(second.unwrap().unwrap().unwrap(), "second");
    node.append("f_main.log", "last\n");
    node.terminate("f");
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next().await {
            rest.push(line.unwrap());
        }
        rest
    })
    .await
    .expect("the stream ends once the container has terminated");
    assert_eq!(rest, ["last"]);
}

#[tokio::test]
async fn follow_ends_when_the_pod_is_deleted() {
    let (_cluster, node, pods) = with_log_node().await;
    create_pod(&pods, "d", &["main"]).await;
    node.append("d_main.log", "only\n");
    let follow = LogParams {
        follow: true,
        ..params(None)
    };
    let mut lines = pods.log_stream("d", &follow).await.unwrap().lines();
    assert_eq!(lines.next().await.unwrap().unwrap(), "only");
    pods.delete("d", &DeleteParams::default()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), lines.next()).await;
    assert!(
        end.expect("the stream ends once the pod is gone").is_none(),
        "no line after the deletion"
    );
}
