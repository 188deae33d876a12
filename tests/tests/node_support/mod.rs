//! Helpers of the node's tests: a `VolumeSource`, pod fixtures, waiting on a pod's
//! status, its logs, and what is left in /proc and among the network links.
// Each test binary uses some of the helpers only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kruntimes_e2e::cluster::contract::{PodRunner, RunningPod, VolumeSource};
use kruntimes_e2e::cluster::node::{Node, NodeConfig};
use serde_json::{Value, json};

/// Secrets and ConfigMaps of a test, by `namespace/name`.
#[derive(Default)]
pub(crate) struct Objects {
    pub(crate) secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub(crate) config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl VolumeSource for Objects {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(&format!("{namespace}/{name}")).cloned()
    }
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }
}

/// A unique marker for the processes of one test, to find leftovers in /proc.
pub(crate) fn marker(test: &str) -> String {
    format!("krt-node-test-{test}-{}", std::process::id())
}

pub(crate) fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": format!("uid-{name}-{}", std::process::id()),
            "labels": {"app": "demo"},
            "annotations": {"note": "hello"}
        },
        "spec": spec
    }))
    .unwrap()
}

/// Starts `pod` on `node`; fails the test (saying why) when the node cannot run it.
pub(crate) async fn start(node: &Node, pod: Pod, objects: Objects) -> Box<dyn RunningPod> {
    kruntimes_testkit::privilege::require_root(
        "the emulated node runs pods in namespaces of their own",
    );
    let mut pod = pod;
    pod.spec.as_mut().unwrap().node_name = Some(node.name().to_owned());
    node.start(pod, Arc::new(objects))
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

pub(crate) fn node() -> Node {
    Node::new(NodeConfig::new("node-1")).unwrap()
}

pub(crate) async fn wait_for(
    running: &dyn RunningPod,
    within: Duration,
    what: &str,
    done: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let mut rx = running.status();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = rx.borrow_and_update().clone();
        if done(&status) {
            return status;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            panic!("{what}: not within {within:?}; last status {status:#?}");
        }
    }
}

pub(crate) fn phase(s: &PodStatus) -> &str {
    s.phase.as_deref().unwrap_or_default()
}

pub(crate) fn condition(s: &PodStatus, kind: &str) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == kind && c.status == "True")
}

pub(crate) fn container<'a>(
    s: &'a PodStatus,
    name: &str,
) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status of container {name}: {s:#?}"))
}

pub(crate) fn exit_code(s: &PodStatus, name: &str) -> Option<i32> {
    container(s, name)
        .state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Waits until the log of `container` contains `text`; returns the log.
pub(crate) async fn log_containing(node: &Node, pod: &Pod, container: &str, text: &str) -> String {
    let path = node.log_path(pod, container);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {text:?}: {log:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes whose command line holds `marker`.
pub(crate) fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// The bridge and the veth of a pod, named after its IP `10.213.N.M` (`krtnN`, `krtvNpM`).
pub(crate) fn links_of(status: &PodStatus) -> (String, String) {
    let ip = status.pod_ip.clone().unwrap();
    let octets: Vec<&str> = ip.split('.').collect();
    (
        format!("krtn{}", octets[2]),
        format!("krtv{}p{}", octets[2], octets[3]),
    )
}

pub(crate) fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}
