//! The emulated node runs a pod the webhook's injector rendered: the install init
//! container, the runtimed native sidecar and the agent as PID 1 of the user container,
//! with the built runtimed binary standing in for the image's. Needs root (as CI runs
//! it): without it the test prints why and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod node_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kruntimes_e2e::cluster::node::{Node, NodeConfig};
use node_support::*;
use serde_json::json;

/// Tests that need root: the default nextest profile leaves them out, `--profile full`
/// runs them (as root, as `.ci/run` does).
mod needs_root {
    use super::*;

    #[tokio::test]
    async fn an_injected_runtimed_pod_becomes_ready_and_answers_health() {
        use kruntimes_api::labels::{
            RUNTIMED_GRPC_PORT, TLS_CERT_SECRET_KEY, TLS_KEY_SECRET_KEY, TOKEN_SECRET_ANNOTATION,
            TOKEN_SECRET_KEY,
        };
        use kruntimes_runtimed_api::client::{TlsTarget, connect_tls, connect_unix};
        use kruntimes_runtimed_api::proto;
        use kruntimes_webhook::inject::{IMAGE_BINARY, InjectConfig, inject_pod};

        kruntimes_testkit::privilege::require_root(
            "the emulated node runs pods in namespaces of their own",
        );
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
            // Non-root, as a Runtime under the restricted Pod Security level runs.
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true},
                "containers": [{"name": "main", "image": "python:3.12", "command": ["sleep", "infinity"]}]
            }
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
        let running = start(&node, pod.clone(), objects).await;
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
        let run = kruntimes_e2e::fixtures::run_bash(
            &mut client,
            &format!("run-{}", std::process::id()),
            "echo host=$(uname -n) uid=$(id -u); echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline)",
        )
        .await;
        let (output, ended) = (String::from_utf8_lossy(&run.stdout), run.ended);
        assert_eq!(ended.exit_code, Some(0), "{ended:?} {output}");
        assert!(output.contains("host=warm-0 uid=1000\n"), "{output}");
        assert!(
            output.contains("pid1=/krt/bin/runtimed agent --socket /krt/run/agent.sock"),
            "{output}"
        );

        // The sidecar's unix socket is in the krt-run emptyDir, a directory of the pod on
        // the node.
        let socket = node.pod_dir(&pod).join("volumes/krt-run/sidecar.sock");
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
}
