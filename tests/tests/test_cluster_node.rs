//! The emulated cluster's node against real processes: environment, volumes, identity,
//! the pod network, the kubelet's container order, probes, stopping, fault injection,
//! and an injected runtimed pod. Needs root (as CI runs it): without it every test
//! prints why and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kruntimes_e2e::cluster::contract::{NodeError, PodRunner, RunningPod, VolumeSource};
use kruntimes_e2e::cluster::node::{Node, NodeConfig};
use serde_json::{Value, json};

/// Secrets and ConfigMaps of a test, by `namespace/name`.
#[derive(Default)]
struct Objects {
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
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
fn marker(test: &str) -> String {
    format!("krt-node-test-{test}-{}", std::process::id())
}

fn pod(name: &str, spec: Value) -> Pod {
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

/// Starts `pod`; `None` (after printing why) when the node cannot run pods here.
async fn start(node: &Node, pod: Pod, objects: Objects) -> Option<Box<dyn RunningPod>> {
    let mut pod = pod;
    pod.spec.as_mut().unwrap().node_name = Some(node.name().to_owned());
    match node.start(pod, Arc::new(objects)).await {
        Ok(running) => Some(running),
        Err(NodeError::Unsupported { reason, .. }) if reason.contains("needs root") => {
            println!("skipped: {reason}");
            None
        }
        Err(e) => panic!("start: {e}"),
    }
}

fn node() -> Node {
    Node::new(NodeConfig::new("node-1")).unwrap()
}

async fn wait_for(
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

fn phase(s: &PodStatus) -> &str {
    s.phase.as_deref().unwrap_or_default()
}

fn condition(s: &PodStatus, kind: &str) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == kind && c.status == "True")
}

fn container<'a>(s: &'a PodStatus, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status of container {name}: {s:#?}"))
}

fn exit_code(s: &PodStatus, name: &str) -> Option<i32> {
    container(s, name)
        .state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Waits until the log of `container` contains `text`; returns the log.
async fn log_containing(node: &Node, pod: &Pod, container: &str, text: &str) -> String {
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
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

#[tokio::test]
async fn env_secret_volume_shared_empty_dir_and_run_as_user() {
    let node = node();
    let m = marker("env");
    let writer = format!(
        "id -u > /shared/uid; id -G > /shared/groups; echo \"$POD_NAME|$POD_NS|$POD_IP|$NODE|$APP|$NOTE|$FROM_SECRET|$FROM_CM|$PLAIN|$EXPANDED\" > /shared/env; \
         cat /secret/token > /shared/secret; stat -c %a /secret/token > /shared/mode; \
         touch /usr/{m} 2>/dev/null; \
         echo cm=$(cat /etc/app/conf/level.txt)/$(cat /opt/level) shared=$(stat -c '%g %a' /shared) > /shared/cm; \
         echo done > /shared/done; exec sleep 1000 # {m}"
    );
    let spec = json!({
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]},
        "volumes": [
            {"name": "shared", "emptyDir": {}},
            {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o440}},
            {"name": "settings", "configMap": {"name": "settings", "items": [{"key": "level", "path": "conf/level.txt"}]}}
        ],
        "containers": [
            {
                "name": "writer", "image": "busybox:1",
                "command": ["sh", "-c", writer],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
                    {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                    {"name": "PLAIN", "value": "plain"},
                    {"name": "EXPANDED", "value": "$(PLAIN)-x"}
                ],
                "volumeMounts": [
                    {"name": "shared", "mountPath": "/shared"},
                    {"name": "secret", "mountPath": "/secret", "readOnly": true},
                    {"name": "settings", "mountPath": "/etc/app", "readOnly": true},
                    {"name": "settings", "mountPath": "/opt/level", "subPath": "conf/level.txt"}
                ]
            },
            {
                "name": "reader", "image": "busybox:1",
                "securityContext": {"runAsUser": 1001},
                "command": ["sh", "-c", format!("while [ ! -f /shared/done ]; do sleep 0.1; done; echo uid=$(cat /shared/uid) groups=$(cat /shared/groups) me=$(id -u); cat /shared/env; cat /shared/cm; echo secret=$(cat /shared/secret) mode=$(cat /shared/mode); exec sleep 1000 # {m}")],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]
            }
        ]
    });
    let pod = pod("env-demo", spec);
    let mut objects = Objects::default();
    objects.secrets.insert(
        "team-a/creds".into(),
        BTreeMap::from([
            ("user".into(), b"alice".to_vec()),
            ("token".into(), b"s3cret".to_vec()),
        ]),
    );
    objects.config_maps.insert(
        "team-a/settings".into(),
        BTreeMap::from([("level".into(), "debug".into())]),
    );
    let Some(running) = start(&node, pod.clone(), objects).await else {
        return;
    };
    let status = wait_for(running.as_ref(), Duration::from_secs(20), "Running", |s| {
        phase(s) == "Running"
    })
    .await;
    let ip = status.pod_ip.clone().unwrap();
    let log = log_containing(&node, &pod, "reader", "secret=").await;
    assert!(
        log.contains("uid=1000 groups=3000 2000 4000 me=1001"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "env-demo|team-a|{ip}|node-1|demo|hello|alice|debug|plain|plain-x"
        )),
        "{log}"
    );
    assert!(log.contains("secret=s3cret mode=440"), "{log}");
    // configMap items and subPath; the emptyDir has the fsGroup and is setgid.
    assert!(log.contains("cm=debug/debug shared=2000 2777\n"), "{log}");
    assert!(
        !std::path::Path::new(&format!("/usr/{m}")).exists(),
        "a container wrote to the host's /usr"
    );
    running.stop(Duration::from_secs(1)).await;
    assert_eq!(processes_with(&m), Vec::<String>::new());
}

#[tokio::test]
async fn the_pod_ip_is_reachable_from_the_host() {
    let node = node();
    let m = marker("http");
    let spec = json!({
        "containers": [{
            "name": "web", "image": "python:3",
            "command": ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "/srv"],
            "args": [],
            "env": [{"name": "MARK", "value": m}],
            "readinessProbe": {"exec": {"command": ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8080), 1)"]}, "periodSeconds": 1}
        }]
    });
    let pod = pod("web", spec);
    let Some(running) = start(&node, pod, Objects::default()).await else {
        return;
    };
    let status = wait_for(running.as_ref(), Duration::from_secs(30), "Ready", |s| {
        condition(s, "Ready")
    })
    .await;
    let ip = status.pod_ip.clone().unwrap();
    assert!(ip.starts_with("10.213."), "{ip}");
    assert_ne!(status.host_ip, status.pod_ip);
    let mut stream = std::net::TcpStream::connect((ip.as_str(), 8080)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    running.stop(Duration::from_secs(2)).await;
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{ip}:8080").parse().unwrap(),
            Duration::from_millis(500)
        )
        .is_err()
    );
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_containers() {
    let node = node();
    let spec = json!({
        "restartPolicy": "Never",
        "volumes": [{"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        "initContainers": [
            {"name": "first", "image": "x:1", "command": ["sh", "-c", "sleep 0.3; echo one >> /w/order"], "volumeMounts": [{"name": "work", "mountPath": "/w"}]},
            {"name": "second", "image": "x:1", "command": ["sh", "-c", "echo two >> /w/order"], "volumeMounts": [{"name": "work", "mountPath": "/w"}]}
        ],
        "containers": [
            {"name": "main", "image": "x:1", "command": ["sh", "-c"], "args": ["cat /w/order; echo three; df -k /w | tail -1"], "volumeMounts": [{"name": "work", "mountPath": "/w"}]}
        ]
    });
    let pod = pod("ordered", spec);
    let Some(running) = start(&node, pod.clone(), Objects::default()).await else {
        return;
    };
    let status = wait_for(
        running.as_ref(),
        Duration::from_secs(20),
        "Succeeded",
        |s| phase(s) == "Succeeded",
    )
    .await;
    for name in ["first", "second", "main"] {
        assert_eq!(exit_code(&status, name), Some(0), "{name}");
        let terminated = container(&status, name)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    }
    assert!(condition(&status, "Initialized"));
    assert!(!condition(&status, "Ready"), "a Succeeded pod is not Ready");
    let log = log_containing(&node, &pod, "main", "three").await;
    assert!(log.starts_with("one\ntwo\nthree\n"), "{log}");
    // The Memory emptyDir is a tmpfs of its sizeLimit (1Mi = 1024 KiB).
    assert!(
        log.contains("krt-memory") && log.contains(" 1024 "),
        "{log}"
    );
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failing_init_container_fails_a_never_restarting_pod() {
    let node = node();
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [
            {"name": "setup", "image": "x:1", "command": ["sh", "-c", "echo failing; exit 3"]}
        ],
        "containers": [{"name": "main", "image": "x:1", "command": ["sh", "-c", "echo never"]}]
    });
    let pod = pod("init-fails", spec);
    let Some(running) = start(&node, pod.clone(), Objects::default()).await else {
        return;
    };
    let status = wait_for(running.as_ref(), Duration::from_secs(20), "Failed", |s| {
        phase(s) == "Failed"
    })
    .await;
    assert_eq!(exit_code(&status, "setup"), Some(3));
    let terminated = container(&status, "setup")
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    let main = container(&status, "main").state.clone().unwrap();
    assert!(main.waiting.is_some(), "{main:?}");
    assert!(!condition(&status, "Initialized"));
    assert!(
        !node.log_path(&pod, "main").exists(),
        "the container started after a failed init container"
    );
    assert!(
        log_containing(&node, &pod, "setup", "failing")
            .await
            .contains("failing")
    );
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_container_without_command_is_refused_by_name() {
    let node = node();
    let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}]});
    match node
        .start(pod("no-command", spec), Arc::new(Objects::default()))
        .await
    {
        Err(NodeError::Unsupported { reason, .. }) if reason.contains("needs root") => {
            println!("skipped: {reason}");
        }
        Err(NodeError::Unsupported { pod, reason }) => {
            assert_eq!(pod, "team-a/no-command");
            assert!(
                reason.contains("spec.containers[0].command") && reason.contains("\"app\""),
                "{reason}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a container without command was started"),
    }
}

#[tokio::test]
async fn the_readiness_probe_toggles_ready() {
    let node = node();
    let spec = json!({
        "volumes": [{"name": "flag", "emptyDir": {}}],
        "containers": [{
            "name": "main", "image": "x:1",
            "command": ["sleep", "1000"],
            "volumeMounts": [{"name": "flag", "mountPath": "/flag"}],
            "readinessProbe": {"exec": {"command": ["test", "-f", "/flag/ready"]}, "periodSeconds": 1, "failureThreshold": 1}
        }]
    });
    let pod = pod("toggle", spec);
    let Some(running) = start(&node, pod.clone(), Objects::default()).await else {
        return;
    };
    wait_for(running.as_ref(), Duration::from_secs(20), "Running", |s| {
        phase(s) == "Running"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = running.status().borrow().clone();
    assert!(
        !condition(&status, "Ready"),
        "Ready without the flag: {status:#?}"
    );
    assert!(!container(&status, "main").ready);
    // The emptyDir is a directory of the pod on the node: the test flips the flag there.
    let flag = node
        .dir()
        .join("pods")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("volumes/flag/ready");
    std::fs::write(&flag, "").unwrap();
    let status = wait_for(running.as_ref(), Duration::from_secs(10), "Ready", |s| {
        condition(s, "Ready")
    })
    .await;
    assert!(condition(&status, "ContainersReady") && container(&status, "main").ready);
    std::fs::remove_file(&flag).unwrap();
    wait_for(
        running.as_ref(),
        Duration::from_secs(10),
        "not Ready",
        |s| !condition(s, "Ready"),
    )
    .await;
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stop_sigkills_what_ignores_sigterm_after_the_grace_period() {
    let node = node();
    let m = marker("stop");
    let spec = json!({
        "containers": [
            {"name": "polite", "image": "x:1", "command": ["sh", "-c", format!("trap 'exit 0' TERM; while true; do sleep 0.1; done # {m}")]},
            {"name": "stubborn", "image": "x:1", "command": ["sh", "-c", format!("trap '' TERM; sleep 1000 & wait; sleep 1000 # {m}")]}
        ]
    });
    let Some(running) = start(&node, pod("stopper", spec), Objects::default()).await else {
        return;
    };
    let ready = wait_for(running.as_ref(), Duration::from_secs(20), "Ready", |s| {
        condition(s, "Ready")
    })
    .await;
    let (bridge, veth) = links_of(&ready);
    assert!(
        link_exists(&bridge) && link_exists(&veth),
        "{bridge} {veth}"
    );
    assert!(
        !processes_with(&m).is_empty(),
        "the containers' processes are not visible"
    );
    let grace = Duration::from_secs(2);
    let begun = Instant::now();
    running.stop(grace).await;
    let took = begun.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "stop took {took:?}"
    );
    let status = running.status().borrow().clone();
    assert_eq!(exit_code(&status, "polite"), Some(0), "{status:#?}");
    assert_eq!(exit_code(&status, "stubborn"), Some(137), "{status:#?}");
    assert_eq!(processes_with(&m), Vec::<String>::new());
    assert!(!link_exists(&veth), "{veth} outlived the pod");
    let dir = node.dir().to_owned();
    drop(node);
    assert!(!link_exists(&bridge), "{bridge} outlived the node");
    assert!(!dir.exists(), "{} outlived the node", dir.display());
}

/// The bridge and the veth of a pod, named after its IP `10.213.N.M` (`krtnN`, `krtvNpM`).
fn links_of(status: &PodStatus) -> (String, String) {
    let ip = status.pod_ip.clone().unwrap();
    let octets: Vec<&str> = ip.split('.').collect();
    (
        format!("krtn{}", octets[2]),
        format!("krtv{}p{}", octets[2], octets[3]),
    )
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn kill_container_ends_only_that_container_with_137() {
    let node = node();
    let m = marker("kill");
    let spec = json!({
        "containers": [
            {"name": "victim", "image": "x:1", "command": ["sh", "-c", format!("sleep 1000 # {m}")]},
            {"name": "bystander", "image": "x:1", "command": ["sh", "-c", format!("sleep 1000 # {m}")]}
        ]
    });
    let Some(running) = start(&node, pod("killer", spec), Objects::default()).await else {
        return;
    };
    wait_for(running.as_ref(), Duration::from_secs(20), "Ready", |s| {
        condition(s, "Ready")
    })
    .await;
    running.kill_container("victim").unwrap();
    let status = wait_for(
        running.as_ref(),
        Duration::from_secs(10),
        "victim ended",
        |s| exit_code(s, "victim").is_some(),
    )
    .await;
    assert_eq!(exit_code(&status, "victim"), Some(137));
    assert!(
        container(&status, "bystander")
            .state
            .as_ref()
            .unwrap()
            .running
            .is_some()
    );
    assert!(!condition(&status, "Ready"));
    assert_eq!(container(&status, "victim").restart_count, 0);
    assert!(
        running.kill_container("victim").is_err(),
        "a terminated container was killed again"
    );
    assert!(running.kill_container("nobody").is_err());
    running.stop(Duration::from_secs(1)).await;
    assert_eq!(processes_with(&m), Vec::<String>::new());
}

#[tokio::test]
async fn an_injected_runtimed_pod_becomes_ready_and_answers_health() {
    use kruntimes_api::labels::{
        RUNTIMED_GRPC_PORT, TLS_CERT_SECRET_KEY, TLS_KEY_SECRET_KEY, TOKEN_SECRET_ANNOTATION,
        TOKEN_SECRET_KEY,
    };
    use kruntimes_runtimed_api::client::{TlsTarget, connect_tls, connect_unix};
    use kruntimes_runtimed_api::proto;
    use kruntimes_webhook::inject::{IMAGE_BINARY, InjectConfig, inject_pod};

    if !nix_is_root() {
        println!("skipped: the emulated node needs root");
        return;
    }
    let binary = kruntimes_testkit::runtimed::binary();
    let node =
        Node::new(NodeConfig::new("node-1").with_image_binary(IMAGE_BINARY, binary)).unwrap();
    let identity = kruntimes_testkit::runtimed::Identity::new();
    let user_pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "warm-0", "namespace": "team-a", "uid": format!("uid-warm-{}", std::process::id()),
            "annotations": {TOKEN_SECRET_ANNOTATION: "rt-token"}
        },
        "spec": {"containers": [{"name": "main", "image": "python:3.12", "command": ["sleep", "infinity"]}]}
    });
    let injected = inject_pod(&user_pod, &InjectConfig::default()).unwrap();
    let pod: Pod = serde_json::from_value(injected).unwrap();
    let mut objects = Objects::default();
    objects.secrets.insert(
        "team-a/rt-token".into(),
        BTreeMap::from([
            (TOKEN_SECRET_KEY.into(), identity.token.clone().into_bytes()),
            (
                TLS_CERT_SECRET_KEY.into(),
                identity.certificate_pem.clone().into_bytes(),
            ),
            (
                TLS_KEY_SECRET_KEY.into(),
                identity.key_pem.clone().into_bytes(),
            ),
        ]),
    );
    let running = start(&node, pod.clone(), objects).await.unwrap();
    let status = wait_for(running.as_ref(), Duration::from_secs(90), "Ready", |s| {
        condition(s, "Ready") || phase(s) == "Failed"
    })
    .await;
    assert!(condition(&status, "Ready"), "{status:#?}");
    assert_eq!(exit_code(&status, "krt-install"), Some(0));
    assert!(container(&status, "runtimed").started == Some(true));

    let target = TlsTarget {
        authority: format!("{}:{RUNTIMED_GRPC_PORT}", status.pod_ip.clone().unwrap()),
        server_name: identity.server_name.clone(),
        certificate_pem: identity.certificate_pem.clone().into_bytes(),
        token: identity.token.clone(),
    };
    let mut client = connect_tls(&target, Duration::from_secs(5)).await.unwrap();
    let health = client
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.ready && health.workspace_writable, "{health:?}");

    // A Run goes to the agent in the user container (PID 1 there, on the pod's hostname).
    let (output, ended) = run_script(
        &mut client,
        "echo host=$(uname -n); echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline)",
    )
    .await;
    assert_eq!(ended.exit_code, Some(0), "{ended:?} {output}");
    assert!(output.contains("host=warm-0\n"), "{output}");
    assert!(
        output.contains("pid1=/krt/bin/runtimed agent --socket /krt/run/agent.sock"),
        "{output}"
    );

    // The sidecar's unix socket is in the krt-run emptyDir, a directory of the pod on
    // the node.
    let pod_dir = node
        .log_path(&pod, "x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let socket = pod_dir.join("volumes/krt-run/sidecar.sock");
    let mut local = connect_unix(&socket).await.unwrap();
    let health = local
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.ready, "{health:?}");
    running.stop(Duration::from_secs(5)).await;
    let status = running.status().borrow().clone();
    for name in ["main", "runtimed"] {
        assert!(
            exit_code(&status, name).is_some(),
            "{name} still running: {status:#?}"
        );
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_container_is_pid_1_with_its_hostname_dropped_capabilities_and_read_only_root() {
    let node = node();
    let name = format!("{}-long", "n".repeat(65));
    let script = "echo pid=$$$$ host=$(uname -n); grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; \
                  touch /x 2>/dev/null || echo root-read-only; touch /tmp/x && echo tmp-writable; \
                  echo procs=$(ls /proc | grep -c '^[0-9]'); echo end";
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "main", "image": "x:1", "command": ["sh", "-c", script],
            "securityContext": {
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}
            }
        }]
    });
    let pod = pod(&name, spec);
    let Some(running) = start(&node, pod.clone(), Objects::default()).await else {
        return;
    };
    wait_for(
        running.as_ref(),
        Duration::from_secs(20),
        "Succeeded",
        |s| phase(s) == "Succeeded",
    )
    .await;
    let log = log_containing(&node, &pod, "main", "end").await;
    // The hostname is the pod name cut to the kernel's 63 characters, as the kubelet does.
    assert!(
        log.contains(&format!("pid=1 host={}\n", &name[..63])),
        "{log}"
    );
    assert!(
        log.contains("CapBnd:\t0000000000000000") && log.contains("CapEff:\t0000000000000000"),
        "{log}"
    );
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("root-read-only\ntmp-writable\n"), "{log}");
    // Its own PID namespace: the shell and the pipeline it runs (at most 4 processes),
    // nothing of the host.
    let procs: usize = log
        .split("procs=")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=4).contains(&procs), "{log}");
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn missing_secrets_leave_the_containers_waiting_with_the_kubelet_reasons() {
    let node = node();
    let env_spec = json!({
        "containers": [{
            "name": "main", "image": "x:1", "command": ["sleep", "1000"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
        }]
    });
    let Some(running) = start(&node, pod("env-missing", env_spec), Objects::default()).await else {
        return;
    };
    let status = wait_for(running.as_ref(), Duration::from_secs(10), "waiting", |s| {
        container(s, "main")
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("CreateContainerConfigError")
    })
    .await;
    let waiting = container(&status, "main")
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert!(waiting.message.unwrap().contains("Secret team-a/absent"));
    assert_eq!(phase(&status), "Pending");
    running.stop(Duration::from_secs(1)).await;

    let volume_spec = json!({
        "volumes": [{"name": "s", "secret": {"secretName": "absent"}}],
        "containers": [{"name": "main", "image": "x:1", "command": ["sleep", "1000"], "volumeMounts": [{"name": "s", "mountPath": "/s"}]}]
    });
    let running = start(
        &node,
        pod("volume-missing", volume_spec),
        Objects::default(),
    )
    .await
    .unwrap();
    let status = running.status().borrow().clone();
    let waiting = container(&status, "main")
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    assert!(
        waiting
            .message
            .unwrap()
            .contains("secret \"absent\" not found")
    );
    assert_eq!(phase(&status), "Pending");
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn run_as_non_root_without_a_user_is_refused() {
    let node = node();
    let spec = json!({
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "main", "image": "x:1", "command": ["true"]}]
    });
    match node
        .start(pod("nonroot", spec), Arc::new(Objects::default()))
        .await
    {
        Err(NodeError::Unsupported { reason, .. }) if reason.contains("needs root") => {
            println!("skipped: {reason}");
        }
        Err(NodeError::Unsupported { reason, .. }) => {
            assert!(
                reason.contains("spec.containers[0].securityContext.runAsNonRoot"),
                "{reason}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a runAsNonRoot pod was started as uid 0"),
    }
}

/// Runs a bash script through `client`: its stdout and its final state.
async fn run_script(
    client: &mut kruntimes_runtimed_api::client::TlsClient,
    script: &str,
) -> (String, kruntimes_runtimed_api::proto::Execution) {
    use kruntimes_runtimed_api::proto::{self, execution_event::Event};
    let request = proto::ExecuteRequest {
        run_uid: format!("run-{}", std::process::id()),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(script.to_owned()),
        ..Default::default()
    };
    let mut events = client
        .execute_and_follow(request)
        .await
        .unwrap()
        .into_inner();
    let mut output = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        match event.event {
            Some(Event::Output(chunk)) => output.extend(chunk.data),
            Some(Event::Ended(execution)) => {
                return (String::from_utf8_lossy(&output).into_owned(), execution);
            }
            _ => {}
        }
    }
    panic!(
        "the execution never ended; output {:?}",
        String::from_utf8_lossy(&output)
    );
}

#[tokio::test]
async fn a_pod_without_uid_is_refused() {
    let node = node();
    let mut pod = pod(
        "no-uid",
        json!({"containers": [{"name": "main", "image": "x:1", "command": ["true"]}]}),
    );
    pod.metadata.uid = None;
    match node.start(pod, Arc::new(Objects::default())).await {
        Err(NodeError::Unsupported { reason, .. }) => {
            assert!(
                reason.starts_with("metadata.uid: Required value"),
                "{reason}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a pod without uid was started"),
    }
}
