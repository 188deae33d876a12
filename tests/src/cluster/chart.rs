//! Installing kruntimes from a rendered Helm chart (`helm template` output), as a user
//! does with `helm template ... | kubectl apply --server-side -f -`: every document is
//! applied through the API server (server-side apply, with admission) as the
//! administrator, then the chart's Deployments run on the node like any other pods.
//! What makes that work in the emulator is here: the kruntimes images mapped to the
//! binaries of this build, and a Service's ready pods as the address admission calls.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::cluster::admission::ServiceRef;
use crate::cluster::api::store::{ObjectKey, Store};
use crate::cluster::harness::HarnessError;

/// How long the chart's Deployments have to become available and the webhook to write
/// its `caBundle`: two replicas of each component start on a loaded two-core machine.
pub const CHART_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The field manager of the apply, as kubectl's.
pub const FIELD_MANAGER: &str = "kubectl";

/// The kruntimes images: repository in values.yaml, the binary of this build, and the
/// image path it has there (images/Containerfile's `ENTRYPOINT`).
pub const IMAGES: [(&str, &str, &str); 3] = [
    (
        "webhook",
        "kruntimes-webhook",
        "/usr/local/bin/kruntimes-webhook",
    ),
    (
        "controller",
        "kruntimes-controller",
        "/usr/local/bin/kruntimes-controller",
    ),
    ("runtimed", "runtimed", "/usr/local/bin/runtimed"),
];

/// `registry/repository` of `component`'s image in the chart's `values.yaml`.
pub fn image_repository(repo: &Path, component: &str) -> Result<String, HarnessError> {
    let path = repo.join("charts/kruntimes/values.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| HarnessError::Start(format!("{}: {e}", path.display())))?;
    let values: Value = serde_norway::from_str(&text)
        .map_err(|e| HarnessError::Start(format!("{}: {e}", path.display())))?;
    let image = &values[component]["image"];
    match (image["registry"].as_str(), image["repository"].as_str()) {
        (Some(registry), Some(repository)) => Ok(format!("{registry}/{repository}")),
        _ => Err(HarnessError::Start(format!(
            "{}: {component}.image.registry and .repository: Required value",
            path.display()
        ))),
    }
}

/// The documents of the rendered chart, empty ones left out.
pub fn documents(rendered: &Path) -> Result<Vec<Value>, HarnessError> {
    crate::cluster::api::manifests_in(rendered).map_err(|e| HarnessError::Start(e.to_string()))
}

/// Applies every document in order, as `kubectl apply --server-side --force-conflicts`
/// does: the type found through discovery, the object sent as an apply patch.
pub async fn apply(client: &kube::Client, documents: &[Value]) -> Result<(), HarnessError> {
    for document in documents {
        let what = describe(document);
        let fail = |e: String| HarnessError::Start(format!("applying {what}: {e}"));
        let (group, version) = match document["apiVersion"].as_str().unwrap_or_default() {
            api_version if api_version.contains('/') => api_version
                .split_once('/')
                .map(|(g, v)| (g.to_owned(), v.to_owned()))
                .unwrap_or_default(),
            api_version => (String::new(), api_version.to_owned()),
        };
        let kind = document["kind"].as_str().unwrap_or_default();
        let gvk = GroupVersionKind::gvk(&group, &version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = document["metadata"]["name"]
            .as_str()
            .ok_or_else(|| fail("metadata.name: Required value".into()))?;
        let api: Api<DynamicObject> = if capabilities.scope == kube::discovery::Scope::Namespaced {
            let namespace = document["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(document),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// `Kind namespace/name`, for messages.
fn describe(document: &Value) -> String {
    let meta = &document["metadata"];
    let name = meta["name"].as_str().unwrap_or("?");
    match meta["namespace"].as_str() {
        Some(namespace) => format!("{} {namespace}/{name}", document["kind"]),
        None => format!("{} {name}", document["kind"]),
    }
}

/// Waits until every Deployment of `documents` is available with all its replicas and
/// every webhook of its webhook configurations has a `caBundle` (written by the
/// webhook in self-managed mode, by cert-manager's injector otherwise).
pub async fn wait_installed(store: &Store, documents: &[Value]) -> Result<(), HarnessError> {
    let deadline = tokio::time::Instant::now() + CHART_READY_TIMEOUT;
    loop {
        let pending: Vec<String> = documents
            .iter()
            .filter(|d| !installed(store, d))
            .map(describe)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(HarnessError::Start(format!(
                "the chart is not installed after {CHART_READY_TIMEOUT:?}: waiting for {} (their pods' states are in the node's logs)",
                pending.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the stored counterpart of `document` is up: a Deployment available with all
/// its replicas, a webhook configuration with every `caBundle`; anything else stored.
fn installed(store: &Store, document: &Value) -> bool {
    let meta = &document["metadata"];
    let (name, namespace) = (
        meta["name"].as_str().unwrap_or_default(),
        meta["namespace"].as_str().unwrap_or_default(),
    );
    match document["kind"].as_str().unwrap_or_default() {
        "Deployment" => store
            .get(&ObjectKey::new("apps", "deployments", namespace, name))
            .is_some_and(|d| {
                let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                d["status"]["availableReplicas"].as_i64().unwrap_or(0) >= want
                    && d["status"]["updatedReplicas"].as_i64().unwrap_or(0) >= want
            }),
        kind @ ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration") => {
            let plural = format!("{}s", kind.to_ascii_lowercase());
            store
                .get(&ObjectKey::new(
                    "admissionregistration.k8s.io",
                    &plural,
                    "",
                    name,
                ))
                .is_some_and(|c| {
                    c["webhooks"].as_array().is_some_and(|hooks| {
                        hooks.iter().all(|h| {
                            h["clientConfig"]["caBundle"]
                                .as_str()
                                .is_some_and(|b| !b.is_empty())
                        })
                    })
                })
        }
        _ => true,
    }
}

/// Where admission reaches `service`: one of the ready pods its selector picks, at the
/// `targetPort` of the Service port (a number, or the name of a container port), in
/// turn, as kube-proxy spreads connections over a Service's endpoints.
#[derive(Debug, Default)]
pub struct Endpoints {
    turn: AtomicUsize,
}

impl Endpoints {
    /// The address of the next ready endpoint of `service`, if it has one.
    pub fn resolve(&self, store: &Store, service: &ServiceRef) -> Option<SocketAddr> {
        let stored = store.get(&ObjectKey::new(
            "",
            "services",
            &service.namespace,
            &service.name,
        ))?;
        let port = stored["spec"]["ports"]
            .as_array()?
            .iter()
            .find(|p| p["port"].as_u64() == Some(u64::from(service.port)))?;
        let selector = stored["spec"]["selector"].as_object()?;
        if selector.is_empty() {
            return None;
        }
        let (pods, _) = store.list("", "pods", Some(&service.namespace));
        let ready: Vec<SocketAddr> = pods
            .iter()
            .filter(|pod| {
                selector
                    .iter()
                    .all(|(k, v)| &pod["metadata"]["labels"][k] == v)
            })
            .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null() && is_ready(pod))
            .filter_map(|pod| {
                let ip = pod["status"]["podIP"].as_str()?.parse().ok()?;
                Some(SocketAddr::new(ip, target_port(pod, port)?))
            })
            .collect();
        if ready.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        ready.get(turn % ready.len()).copied()
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The pod's port a Service port sends to: `targetPort` (default: `port`), a number or
/// the name of one of the pod's container ports.
fn target_port(pod: &Value, port: &Value) -> Option<u16> {
    let target = match &port["targetPort"] {
        Value::Null => &port["port"],
        target => target,
    };
    if let Some(number) = target.as_u64() {
        return u16::try_from(number).ok();
    }
    let name = target.as_str()?;
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_images_entrypoints_are_the_containerfiles() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/Containerfile");
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (_, _, entrypoint) in IMAGES {
            assert!(
                text.contains(&format!("ENTRYPOINT [\"{entrypoint}\"]")),
                "images/Containerfile has no ENTRYPOINT [\"{entrypoint}\"]"
            );
        }
    }

    fn pod(name: &str, ip: &str, ready: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "sys", "labels": labels},
               "spec": {"containers": [{"ports": [{"name": "https", "containerPort": 9443}]}]},
               "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn a_service_resolves_to_its_ready_selected_pods_in_turn() {
        let store = Store::new(16);
        let put = |resource: &str, name: &str, object: Value| {
            store
                .put(&ObjectKey::new("", resource, "sys", name), object, None)
                .map(|_| ())
        };
        let service = json!({"metadata": {"name": "hook", "namespace": "sys"}, "spec": {
            "selector": {"app": "hook"}, "ports": [{"port": 443, "targetPort": "https"}]}});
        put("services", "hook", service).unwrap();
        let selected = json!({"app": "hook"});
        put("pods", "a", pod("a", "10.0.0.1", "True", selected.clone())).unwrap();
        put("pods", "b", pod("b", "10.0.0.2", "True", selected.clone())).unwrap();
        put(
            "pods",
            "unready",
            pod("unready", "10.0.0.3", "False", selected),
        )
        .unwrap();
        put(
            "pods",
            "other",
            pod("other", "10.0.0.4", "True", json!({"app": "x"})),
        )
        .unwrap();
        let endpoints = Endpoints::default();
        let hook = ServiceRef {
            namespace: "sys".into(),
            name: "hook".into(),
            port: 443,
        };
        let mut seen: Vec<String> = (0..4)
            .filter_map(|_| endpoints.resolve(&store, &hook))
            .map(|a| a.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["10.0.0.1:9443", "10.0.0.2:9443"]);
        let wrong_port = ServiceRef {
            port: 8443,
            ..hook.clone()
        };
        assert_eq!(endpoints.resolve(&store, &wrong_port), None);
        let missing = ServiceRef {
            name: "absent".into(),
            ..hook
        };
        assert_eq!(endpoints.resolve(&store, &missing), None);
    }

    #[test]
    fn a_named_target_port_is_the_containers_port_of_that_name() {
        let pod = json!({"spec": {"containers": [
            {"ports": [{"name": "admin", "containerPort": 8080}]},
            {"ports": [{"name": "https", "containerPort": 9443}]},
        ]}});
        assert_eq!(
            target_port(&pod, &json!({"port": 443, "targetPort": "https"})),
            Some(9443)
        );
        assert_eq!(
            target_port(&pod, &json!({"port": 443, "targetPort": 8443})),
            Some(8443)
        );
        assert_eq!(target_port(&pod, &json!({"port": 443})), Some(443));
        assert_eq!(
            target_port(&pod, &json!({"port": 443, "targetPort": "grpc"})),
            None
        );
    }
}
