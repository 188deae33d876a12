//! The emulated cluster's node against real processes: environment, volumes, identity,
//! the pod network, the kubelet's container order, probes, stopping and fault
//! injection. Needs root (as CI runs it): without it every test prints why and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod node_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kruntimes_e2e::cluster::contract::{NodeError, PodRunner};
use node_support::*;
use serde_json::json;

#[tokio::test]
async fn a_container_without_command_is_refused_by_name() {
    let node = node();
    let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}]});
    match node
        .start(pod("no-command", spec), Arc::new(Objects::default()))
        .await
    {
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

/// Tests that need root: the default nextest profile leaves them out, `--profile full`
/// runs them (as root, as `.ci/run` does).
mod needs_root {
    use super::*;

    #[tokio::test]
    async fn env_secret_volume_shared_empty_dir_and_run_as_user() {
        let node = node();
        let m = marker("env");
        let writer = format!(
            "id -u > /shared/uid; id -G > /shared/groups; echo \"$POD_NAME|$POD_NS|$POD_IP|$NODE|$APP|$NOTE|$FROM_SECRET|$FROM_CM|$PLAIN|$EXPANDED\" > /shared/env; \
             cat /secret/token > /shared/secret; stat -c %a /secret/token > /shared/mode; \
             touch /usr/{m} 2>/dev/null; \
             echo cm=$(cat /etc/app/conf/level.txt)/$(cat /opt/level) shared=$(stat -c '%g %a' /shared) cm-mode=$(stat -c %a /etc/app/conf/level.txt) > /shared/cm; \
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
        let running = start(&node, pod.clone(), objects).await;
        let status = wait_for(running.as_ref(), Duration::from_secs(20), "Running", |s| {
            phase(s) == "Running"
        })
        .await;
        let ip = status.pod_ip.clone().unwrap();
        assert!(status.start_time.is_some(), "{status:#?}");
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
        // configMap items and subPath; the emptyDir has the fsGroup and is setgid; a
        // configMap without defaultMode gets 0644 (fsGroup adds group read, already set).
        assert!(
            log.contains("cm=debug/debug shared=2000 2777 cm-mode=644\n"),
            "{log}"
        );
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
        let running = start(&node, pod, Objects::default()).await;
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
        let running = start(&node, pod.clone(), Objects::default()).await;
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
        let running = start(&node, pod.clone(), Objects::default()).await;
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
        let running = start(&node, pod.clone(), Objects::default()).await;
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
        let flag = node.pod_dir(&pod).join("volumes/flag/ready");
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
        let running = start(&node, pod("stopper", spec), Objects::default()).await;
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
        let running = start(&node, pod("killer", spec), Objects::default()).await;
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
    async fn a_container_is_pid_1_with_its_hostname_dropped_capabilities_and_read_only_root() {
        let node = node();
        let name = format!("{}-long", "n".repeat(65));
        let script = "echo pid=$$$$ host=$(uname -n); grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; \
                      touch /x 2>/dev/null || echo root-read-only; touch /usr/x 2>/dev/null || echo usr-read-only; touch /tmp/x && echo tmp-writable; \
                      echo procs=$(ls /proc | grep -c '^[0-9]'); echo wd=$(pwd); echo end";
        let spec = json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "x:1", "command": ["sh", "-c", script],
                "workingDir": "/var/krt-work",
                "securityContext": {
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        });
        let pod = pod(&name, spec);
        let running = start(&node, pod.clone(), Objects::default()).await;
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
        assert!(
            log.contains("root-read-only\nusr-read-only\ntmp-writable\n"),
            "{log}"
        );
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
        // The working directory the host lacks is created in the container's own layer.
        assert!(log.contains("wd=/var/krt-work\n"), "{log}");
        assert!(!std::path::Path::new("/var/krt-work").exists());
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
        let running = start(&node, pod("env-missing", env_spec), Objects::default()).await;
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
        .await;
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
    async fn a_native_sidecar_is_up_before_the_containers_and_stopped_after_them() {
        let node = node();
        let side = "trap 'if [ -f /s/main-ended ]; then echo after-main; else echo before-main; fi; exit 0' TERM; \
                    sleep 1; touch /s/side-up; while true; do sleep 0.1; done";
        let main = "[ -f /s/side-up ] && echo sidecar-was-up; \
                    trap 'sleep 0.5; touch /s/main-ended; exit 0' TERM; while true; do sleep 0.1; done";
        let spec = json!({
            "volumes": [{"name": "s", "emptyDir": {}}],
            "initContainers": [{
                "name": "side", "image": "x:1", "restartPolicy": "Always",
                "command": ["sh", "-c", side],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                "startupProbe": {"exec": {"command": ["test", "-f", "/s/side-up"]}, "periodSeconds": 1, "failureThreshold": 10}
            }],
            "containers": [{
                "name": "main", "image": "x:1", "command": ["sh", "-c", main],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}]
            }]
        });
        let pod = pod("with-sidecar", spec);
        let running = start(&node, pod.clone(), Objects::default()).await;
        let status = wait_for(running.as_ref(), Duration::from_secs(20), "Ready", |s| {
            condition(s, "Ready")
        })
        .await;
        let side_status = container(&status, "side");
        assert!(
            side_status.started == Some(true) && side_status.ready,
            "{side_status:?}"
        );
        assert!(
            status
                .init_container_statuses
                .iter()
                .flatten()
                .any(|c| c.name == "side")
        );
        log_containing(&node, &pod, "main", "sidecar-was-up").await;
        let begun = Instant::now();
        running.stop(Duration::from_secs(10)).await;
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "stop took {:?}",
            begun.elapsed()
        );
        let log = log_containing(&node, &pod, "side", "-main").await;
        assert!(
            log.contains("after-main"),
            "the sidecar was stopped before the container: {log}"
        );
        let status = running.status().borrow().clone();
        assert_eq!(
            (exit_code(&status, "main"), exit_code(&status, "side")),
            (Some(0), Some(0))
        );
    }

    #[tokio::test]
    async fn dropping_the_node_ends_its_pods_and_removes_its_links_and_files() {
        let node = node();
        let m = marker("drop");
        let spec = json!({
            "containers": [{"name": "main", "image": "x:1", "command": ["sh", "-c", format!("trap '' TERM; sleep 1000 # {m}")]}]
        });
        let running = start(&node, pod("dropped", spec), Objects::default()).await;
        let status = wait_for(running.as_ref(), Duration::from_secs(20), "Ready", |s| {
            condition(s, "Ready")
        })
        .await;
        let (bridge, veth) = links_of(&status);
        let dir = node.dir().to_owned();
        assert!(!processes_with(&m).is_empty());
        // The node first, while the pod's handle is still held (as an API server shutting
        // down might): the node ends the pod itself.
        drop(node);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_with(&m).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(processes_with(&m), Vec::<String>::new());
        assert!(!link_exists(&veth), "{veth} outlived the node");
        assert!(!dir.exists(), "{} outlived the node", dir.display());
        assert!(!link_exists(&bridge), "{bridge} outlived the node");
        let status = wait_for(running.as_ref(), Duration::from_secs(5), "ended", |s| {
            exit_code(s, "main").is_some()
        })
        .await;
        assert_eq!(exit_code(&status, "main"), Some(137));
    }

    #[tokio::test]
    async fn a_pod_reaches_a_host_server_on_the_node_address() {
        let node = node();
        kruntimes_testkit::privilege::require_root(
            "the node's bridge is made in the host's network",
        );
        let host_ip = node.host_ip().await.unwrap();
        let listener = tokio::net::TcpListener::bind((host_ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (mut stream, peer) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"hello pod\n")
                .await
                .unwrap();
            peer
        });
        let client = format!(
            "import socket; print(socket.create_connection(('{host_ip}', {port}), 5).recv(64).decode().strip())"
        );
        let spec = json!({
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x:1", "command": ["python3", "-c", client]}]
        });
        let pod = pod("caller", spec);
        let running = start(&node, pod.clone(), Objects::default()).await;
        let status = wait_for(
            running.as_ref(),
            Duration::from_secs(20),
            "Succeeded",
            |s| phase(s) == "Succeeded" || phase(s) == "Failed",
        )
        .await;
        assert_eq!(
            status.host_ip.as_deref(),
            Some(host_ip.to_string().as_str())
        );
        let log = log_containing(&node, &pod, "main", "\n").await;
        assert_eq!(log, "hello pod\n", "{status:#?}");
        let peer = served.await.unwrap();
        assert_eq!(
            peer.ip().to_string(),
            status.pod_ip.unwrap(),
            "the call came from the pod IP"
        );
        running.stop(Duration::from_secs(1)).await;
    }
}
