//! What the dispatcher knows of each Runtime's pool, kept current from the API: the
//! Runtime's concurrency, its pods (those labelled `kruntimes.io/runtime=<name>`), and
//! the credentials in its Secret. [`pool_spec`] is the pure part; [`feed`] watches and
//! calls [`Dispatcher::set_pool`](crate::dispatch::Dispatcher::set_pool) on every
//! change. While a pool is being replaced or shrunk, it also keeps each busy pod's
//! deletion cost equal to its busy slots ([`drain`]), so pods with running Runs are
//! deleted last.

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kruntimes_api::labels::RUNTIME_LABEL;
use kruntimes_api::v1alpha1::Runtime;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::dispatch::{Credentials, Dispatcher, PodTarget, PoolSpec, RuntimeKey};
use crate::naming;

pub mod drain;

/// runtimed's gRPC port in a Runtime's pods (the injector's `--grpc-bind-address`).
pub use kruntimes_api::labels::RUNTIMED_GRPC_PORT;

/// The pool of `runtime` from its pods and its Secret.
pub fn pool_spec<'a>(
    runtime: &Runtime,
    pods: impl IntoIterator<Item = &'a Pod>,
    secret: Option<&Secret>,
    port: u16,
) -> PoolSpec {
    let namespace = runtime.namespace().unwrap_or_default();
    let name = runtime.name_any();
    let mut targets: Vec<PodTarget> = runtime_pods(runtime, pods).map(pod_target).collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    PoolSpec {
        concurrency: u32::try_from(runtime.spec.concurrency.max(1)).unwrap_or(1),
        pods: targets,
        credentials: secret.and_then(|s| credentials(s, &name, &namespace, port)),
    }
}

/// The pods of `pods` that belong to `runtime`: its namespace and its label.
fn runtime_pods<'a>(
    runtime: &Runtime,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> impl Iterator<Item = &'a Pod> {
    let namespace = runtime.namespace();
    let name = runtime.name_any();
    pods.into_iter()
        .filter(move |p| p.namespace() == namespace)
        .filter(move |p| p.labels().get(RUNTIME_LABEL) == Some(&name))
}

/// A pod as the dispatcher sees it: PodReady, its IP, whether it is being deleted.
pub fn pod_target(pod: &Pod) -> PodTarget {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let phase_running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    PodTarget {
        name: pod.name_any(),
        ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        ready: ready && phase_running,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

fn credentials(secret: &Secret, runtime: &str, namespace: &str, port: u16) -> Option<Credentials> {
    let data = secret.data.as_ref()?;
    let token = String::from_utf8(data.get(naming::TOKEN_KEY)?.0.clone()).ok()?;
    let certificate_pem = data.get(naming::TLS_CERT_KEY)?.0.clone();
    Some(Credentials {
        token: token.trim().to_owned(),
        certificate_pem,
        server_name: naming::server_name(runtime, namespace),
        port,
    })
}

/// The Runtime an object belongs to: a pod by its label, a Secret by its name.
fn owner_key(namespace: Option<String>, name: Option<&str>) -> Option<RuntimeKey> {
    Some(RuntimeKey {
        namespace: namespace?,
        name: name?.to_owned(),
    })
}

/// Watches Runtimes, their pods and their Secrets in `namespace` (all namespaces when
/// `None`) and keeps the dispatcher's pools current. Runs until the watches end.
pub async fn feed(
    client: kube::Client,
    namespace: Option<String>,
    dispatcher: Dispatcher,
    port: u16,
) {
    let api = |client: &kube::Client| match &namespace {
        Some(ns) => (
            Api::<Runtime>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (runtimes_api, pods_api, secrets_api) = api(&client);
    let (runtimes, runtimes_writer) = reflector::store::<Runtime>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (secrets, secrets_writer) = reflector::store::<Secret>();
    let pod_config = watcher::Config::default().labels(RUNTIME_LABEL);
    let secret_config = watcher::Config::default().labels(RUNTIME_LABEL);
    let runtime_events = reflector::reflector(
        runtimes_writer,
        watcher(runtimes_api, watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .map(|r| {
        r.ok()
            .and_then(|o: Runtime| owner_key(o.namespace(), Some(&o.name_any())))
    });
    let pod_events = reflector::reflector(pods_writer, watcher(pods_api, pod_config))
        .default_backoff()
        .touched_objects()
        .map(|r| {
            r.ok().and_then(|o: Pod| {
                owner_key(
                    o.namespace(),
                    o.labels().get(RUNTIME_LABEL).map(String::as_str),
                )
            })
        });
    let secret_events = reflector::reflector(secrets_writer, watcher(secrets_api, secret_config))
        .default_backoff()
        .touched_objects()
        .map(|r| {
            r.ok().and_then(|o: Secret| {
                owner_key(
                    o.namespace(),
                    o.labels().get(RUNTIME_LABEL).map(String::as_str),
                )
            })
        });
    let mut events =
        stream::select(stream::select(runtime_events, pod_events), secret_events).boxed();
    while let Some(key) = events.next().await {
        if let Some(key) = key {
            let changes = update(&dispatcher, &key, &runtimes, &pods, &secrets, port);
            if !changes.is_empty() {
                // Off the event loop: a slow API server must not hold the pool
                // updates. A write that lands late or fails is corrected by the next
                // pod event, which compares with the annotations the pods then carry.
                let (client, namespace) = (client.clone(), key.namespace.clone());
                tokio::spawn(async move { write_costs(&client, &namespace, &changes).await });
            }
        }
    }
}

/// Sets the pool of `key` in the dispatcher; returns the deletion costs its pods need
/// ([`drain::cost_changes`], with the busy slots after this update's dispatches).
fn update(
    dispatcher: &Dispatcher,
    key: &RuntimeKey,
    runtimes: &Store<Runtime>,
    pods: &Store<Pod>,
    secrets: &Store<Secret>,
    port: u16,
) -> Vec<drain::CostChange> {
    let runtime_ref = ObjectRef::<Runtime>::new(&key.name).within(&key.namespace);
    let Some(runtime) = runtimes.get(&runtime_ref) else {
        dispatcher.set_pool(key, PoolSpec::default());
        return Vec::new();
    };
    let secret_ref =
        ObjectRef::<Secret>::new(&naming::secret_name(&key.name)).within(&key.namespace);
    let secret = secrets.get(&secret_ref);
    let all_pods = pods.state();
    let spec = pool_spec(
        &runtime,
        all_pods.iter().map(|p| p.as_ref()),
        secret.as_deref(),
        port,
    );
    dispatcher.set_pool(key, spec);
    let busy = dispatcher.busy_by_pod(key);
    drain::cost_changes(
        &runtime,
        runtime_pods(&runtime, all_pods.iter().map(|p| p.as_ref())),
        &busy,
    )
}

/// Writes each deletion cost of `changes` to its pod in `namespace` (a JSON merge patch
/// of the one annotation); returns how many writes succeeded. A failed write is logged,
/// not retried: the next pod event computes the change again.
pub async fn write_costs(
    client: &kube::Client,
    namespace: &str,
    changes: &[drain::CostChange],
) -> usize {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(naming::FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut written = 0;
    for change in changes {
        let patch = drain::cost_patch(change);
        match api.patch(&change.pod, &params, &Patch::Merge(&patch)).await {
            Ok(_) => written += 1,
            // Gone meanwhile: nothing left to rank.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => tracing::warn!(
                pod = %format!("{namespace}/{}", change.pod),
                %error,
                "cannot write the pod's deletion cost"
            ),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn runtime() -> Runtime {
        serde_json::from_value(json!({
            "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
            "metadata": {"name": "py", "namespace": "ns"},
            "spec": {"concurrency": 3, "template": {"spec": {"containers": [{"name": "main", "image": "python"}]}}},
        }))
        .unwrap()
    }

    fn pod(name: &str, runtime: &str, ready: bool, deleting: bool) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {RUNTIME_LABEL: runtime}},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(pod).unwrap()
    }

    fn secret() -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "py-runtimed", "namespace": "ns"},
            "data": {"token": "dG9rZW4K", "tls.crt": "Y2VydA=="},
        }))
        .unwrap()
    }

    #[test]
    fn the_pool_has_the_runtime_s_pods_their_readiness_and_its_credentials() {
        let pods = [
            pod("py-b", "py", true, false),
            pod("py-a", "py", false, false),
            pod("py-c", "py", true, true),
            pod("other", "go", true, false),
        ];
        let spec = pool_spec(&runtime(), &pods, Some(&secret()), 9440);
        assert_eq!(spec.concurrency, 3);
        let names: Vec<_> = spec
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.ready, p.terminating))
            .collect();
        assert_eq!(
            names,
            [
                ("py-a", false, false),
                ("py-b", true, false),
                ("py-c", true, true)
            ]
        );
        let credentials = spec.credentials.unwrap();
        assert_eq!(credentials.token, "token", "trimmed");
        assert_eq!(credentials.certificate_pem, b"cert");
        assert_eq!(credentials.server_name, "py.ns.runtimed.kruntimes.io");
        assert_eq!(credentials.port, 9440);
    }

    #[test]
    fn without_its_secret_a_pool_takes_no_run() {
        let spec = pool_spec(&runtime(), &[pod("py-a", "py", true, false)], None, 9440);
        assert_eq!(spec.credentials, None);
    }
}
