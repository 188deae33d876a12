//! Through Debian's kubectl (an independent client): discovery, apply --server-side,
//! get (table and -o jsonpath), patch, wait, get -w, delete, and CRDs from the chart.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::harness::{Cluster, crd_dir};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: demo}
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  replicas: 2
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
      - name: main
        image: busybox
"#;

#[tokio::test]
async fn discovery_and_version() {
    let cluster = Cluster::start().await;
    let resources = cluster.kubectl_ok(&["api-resources", "-o", "name"]).await;
    for expected in [
        "pods",
        "deployments.apps",
        "leases.coordination.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
        "events.events.k8s.io",
    ] {
        assert!(
            resources.lines().any(|l| l == expected),
            "{expected} missing from:\n{resources}"
        );
    }
    let version = cluster.kubectl_ok(&["version", "-o", "json"]).await;
    assert!(
        version.contains("v1.33.0-kruntimes-test-cluster"),
        "{version}"
    );
}

#[tokio::test]
async fn apply_server_side_reapply_and_conflicts() {
    let cluster = Cluster::start().await;
    let (ok, out, err) = cluster
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(MANIFEST))
        .await;
    assert!(ok, "apply failed: {err}\n{out}");
    assert!(
        out.contains("configmap/settings serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("deployment.apps/demo serverside-applied"),
        "{out}"
    );
    let mode = cluster
        .kubectl_ok(&[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .await;
    assert_eq!(mode, "fast");
    let managers = cluster
        .kubectl_ok(&[
            "get",
            "configmap",
            "settings",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert_eq!(managers, "kubectl");

    // A second apply with a changed field and one removed: the removed one goes.
    let changed = MANIFEST.replace("  mode: fast", "  speed: slow");
    let (ok, out, err) = cluster
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&changed))
        .await;
    assert!(ok, "re-apply failed: {err}\n{out}");
    let data = cluster
        .kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"])
        .await;
    assert_eq!(data, r#"{"speed":"slow"}"#);

    // Another manager's apply of the same field conflicts unless forced.
    let (ok, _, err) = cluster
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&changed.replace("slow", "quick")),
        )
        .await;
    assert!(
        !ok && err.contains("conflict"),
        "expected a conflict: {err}"
    );
    let (ok, _, err) = cluster
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&changed.replace("slow", "quick")),
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.speed}"])
            .await,
        "quick"
    );
}

#[tokio::test]
async fn patch_scale_get_and_delete() {
    let cluster = Cluster::start().await;
    let (ok, out, err) = cluster
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(MANIFEST))
        .await;
    assert!(ok, "apply failed: {err}\n{out}");
    cluster
        .kubectl_ok(&[
            "patch",
            "deployment",
            "demo",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"alpine"}]}}}}"#,
        ])
        .await;
    cluster
        .kubectl_ok(&[
            "patch",
            "deployment",
            "demo",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ])
        .await;
    cluster
        .kubectl_ok(&[
            "patch",
            "deployment",
            "demo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels","value":{"patched":"yes"}}]"#,
        ])
        .await;
    let got = cluster.kubectl_ok(&["get", "deploy", "demo", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image} {.metadata.labels.patched} {.metadata.generation}"]).await;
    assert_eq!(got, "3 alpine yes 3");
    cluster
        .kubectl_ok(&["scale", "deployment", "demo", "--replicas=5"])
        .await;
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "deploy", "demo", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "5"
    );

    let table = cluster.kubectl_ok(&["get", "configmaps"]).await;
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("NAME")),
        "{table}"
    );
    assert!(table.contains("settings"), "{table}");

    let deleted = cluster
        .kubectl_ok(&["delete", "configmap", "settings"])
        .await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let (ok, _, err) = cluster.kubectl(&["get", "configmap", "settings"]).await;
    assert!(
        !ok && err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn wait_for_a_condition_set_later() {
    let cluster = Cluster::start().await;
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let (ok, _, err) = cluster
        .kubectl_stdin(&["create", "-f", "-"], Some(pod))
        .await;
    assert!(ok, "{err}");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let setter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status("p", &PatchParams::default(), &Patch::Merge(status))
            .await
            .map(|_| ())
    });
    let waited = tokio::process::Command::new("kubectl")
        .args(["wait", "--for=condition=Ready", "pod/p", "--timeout=20s"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .await
        .unwrap();
    setter.await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&waited.stdout);
    assert!(
        waited.status.success(),
        "wait failed: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(out.contains("pod/p condition met"), "{out}");
}

#[tokio::test]
async fn get_watch_prints_later_changes() {
    use tokio::io::AsyncBufReadExt as _;
    let cluster = Cluster::start().await;
    let mut watcher = tokio::process::Command::new("kubectl")
        .args([
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The changes are made once kubectl's watch is open, so that it sees each of them.
    for _ in 0..200 {
        if cluster.server.open_watches() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.server.open_watches(), 1, "kubectl's watch is open");
    let late =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"},"data":{"a":"b"}}"#;
    let (ok, _, err) = cluster
        .kubectl_stdin(&["create", "-f", "-"], Some(late))
        .await;
    assert!(ok, "{err}");
    cluster
        .kubectl_ok(&["label", "configmap", "late", "x=y"])
        .await;
    cluster.kubectl_ok(&["delete", "configmap", "late"]).await;
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        events.push(line.expect("kubectl prints an event per change"));
    }
    watcher.kill().await.unwrap();
    assert_eq!(events, ["ADDED late", "MODIFIED late", "DELETED late"]);
}

#[tokio::test]
async fn crds_applied_with_kubectl_serve_runs() {
    let cluster = Cluster::start().await;
    let dir = crd_dir();
    let dir = dir.to_str().unwrap();
    let out = cluster
        .kubectl_ok(&["apply", "--server-side", "-f", dir])
        .await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/runs.kruntimes.io serverside-applied"
        ),
        "{out}"
    );
    let established = cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/runs.kruntimes.io",
            "--timeout=10s",
        ])
        .await;
    assert!(established.contains("condition met"), "{established}");
    let run = r#"{"apiVersion":"kruntimes.io/v1alpha1","kind":"Run","metadata":{"name":"hello"},"spec":{"runtimeRef":{"name":"rt"},"command":["echo","hi"]}}"#;
    let (ok, out, err) = cluster
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(run))
        .await;
    assert!(ok, "{err}\n{out}");
    let name = cluster
        .kubectl_ok(&["get", "runs", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    assert_eq!(name, "hello");
    cluster
        .kubectl_ok(&[
            "patch",
            "run",
            "hello",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ])
        .await;
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "run", "hello", "-o", "jsonpath={.status.phase}"])
            .await,
        "Succeeded"
    );
    let (ok, _, err) = cluster
        .kubectl(&[
            "patch",
            "run",
            "hello",
            "-p",
            r#"{"metadata":{"labels":{"a":"b"}}}"#,
        ])
        .await;
    assert!(
        !ok && err.contains("415")
            || err.contains("UnsupportedMediaType")
            || err.contains("unknown format"),
        "strategic merge on a custom resource: {err}"
    );
    cluster
        .kubectl_ok(&["delete", "crd", "runs.kruntimes.io"])
        .await;
    let store = cluster.server.store();
    for _ in 0..100 {
        if store.list("kruntimes.io", "runs", None).0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.list("kruntimes.io", "runs", None).0.is_empty(),
        "the CRD's objects go with it"
    );
}

#[tokio::test]
async fn client_side_apply_describe_and_get_all() {
    let cluster = Cluster::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: csa\ndata:\n  a: b\n";
    let (ok, out, err) = cluster.kubectl_stdin(&["apply", "-f", "-"], Some(cm)).await;
    assert!(ok && out.contains("configmap/csa created"), "{err}\n{out}");
    let changed = cm.replace("a: b", "a: c");
    let (ok, out, err) = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(&changed))
        .await;
    assert!(
        ok && out.contains("configmap/csa configured"),
        "{err}\n{out}"
    );
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "cm", "csa", "-o", "jsonpath={.data.a}"])
            .await,
        "c"
    );
    let described = cluster.kubectl_ok(&["describe", "configmap", "csa"]).await;
    assert!(described.contains("Name:         csa"), "{described}");
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"listed"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let (ok, _, err) = cluster
        .kubectl_stdin(&["create", "-f", "-"], Some(pod))
        .await;
    assert!(ok, "{err}");
    let all = cluster.kubectl_ok(&["get", "all", "-o", "name"]).await;
    assert!(all.lines().any(|l| l == "pod/listed"), "{all}");
    let described = cluster.kubectl_ok(&["describe", "pod", "listed"]).await;
    assert!(
        described.contains("Node:") && described.contains("node"),
        "{described}"
    );
}

#[tokio::test]
async fn generator_commands_send_protobuf_that_is_decoded() {
    let cluster = Cluster::start().await;
    cluster.kubectl_ok(&["create", "namespace", "gen"]).await;
    cluster
        .kubectl_ok(&[
            "create",
            "configmap",
            "cm",
            "-n",
            "gen",
            "--from-literal=a=b",
            "--from-literal=c=d",
        ])
        .await;
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "gen",
            "--from-literal=token=s3cr3t",
        ])
        .await;
    cluster
        .kubectl_ok(&["create", "serviceaccount", "robot", "-n", "gen"])
        .await;
    let data = cluster
        .kubectl_ok(&["get", "cm", "cm", "-n", "gen", "-o", "jsonpath={.data}"])
        .await;
    assert_eq!(data, r#"{"a":"b","c":"d"}"#);
    let token = cluster
        .kubectl_ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "gen",
            "-o",
            "jsonpath={.type} {.data.token}",
        ])
        .await;
    assert_eq!(token, "Opaque czNjcjN0");
    let names = cluster
        .kubectl_ok(&["get", "sa", "-n", "gen", "-o", "name"])
        .await;
    assert_eq!(names.trim(), "serviceaccount/robot");
    let (ok, _, err) = cluster
        .kubectl(&["create", "deployment", "d", "--image=busybox"])
        .await;
    assert!(
        !ok && err.contains("not decoded by this server"),
        "a kind without a decoder is refused clearly: {err}"
    );
}

#[tokio::test]
async fn server_side_tables_print_kubectls_columns() {
    let config = kruntimes_e2e::cluster::api::ApiConfig {
        users: crate::harness::admin_users(),
        crd_dirs: vec![crd_dir()],
        ..Default::default()
    };
    let cluster = Cluster::with(config).await;
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let run = r#"{"apiVersion":"kruntimes.io/v1alpha1","kind":"Run","metadata":{"name":"hello"},"spec":{"runtimeRef":{"name":"rt"},"command":["echo","hi"]}}"#;
    for manifest in [pod, run] {
        let (ok, _, err) = cluster
            .kubectl_stdin(&["create", "-f", "-"], Some(manifest))
            .await;
        assert!(ok, "{err}");
    }
    let header = |out: &str| {
        out.lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let pods = cluster.kubectl_ok(&["get", "pods"]).await;
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    let row: Vec<&str> = pods
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["p", "0/1", "Pending", "0"], "{pods}");
    let wide = cluster
        .kubectl_ok(&["get", "pods", "-o", "wide", "-A"])
        .await;
    assert_eq!(
        header(&wide),
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE"
        ],
        "{wide}"
    );
    let namespaces = cluster.kubectl_ok(&["get", "ns", "default"]).await;
    assert_eq!(header(&namespaces), ["NAME", "STATUS", "AGE"]);
    assert!(namespaces.contains("Active"), "{namespaces}");
    let runs = cluster.kubectl_ok(&["get", "runs"]).await;
    let crd: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(crd_dir().join("runs.kruntimes.io.yaml")).unwrap(),
    )
    .unwrap();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("the Run CRD declares printer columns");
    let mut expected: Vec<String> = vec!["NAME".to_owned()];
    expected.extend(
        columns
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_uppercase()),
    );
    if !expected.iter().any(|c| c == "AGE") {
        expected.push("AGE".to_owned());
    }
    let header_line = runs
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(header_line, expected.join(" "), "{runs}");
    assert!(
        runs.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("hello") && l.contains("rt")),
        "{runs}"
    );
}
