//! A container's environment, as the kubelet composes it: the image's `PATH`, `HOSTNAME`
//! and `HOME`, then `env` in order with `$(VAR)` expansion, `valueFrom` read from the
//! Pod (`fieldRef`) and from Secrets and ConfigMaps (through the `VolumeSource`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Pod};

use super::plan::{ContainerPlan, IMAGE_PATH, expand};
use crate::cluster::contract::VolumeSource;

/// What `fieldRef` and the defaults read besides the Pod itself.
#[derive(Clone, Debug)]
pub(super) struct PodFacts {
    pub(super) pod_ip: String,
    pub(super) host_ip: String,
    pub(super) hostname: String,
    /// Where the pod reaches the API server (`KUBERNETES_SERVICE_HOST`/`PORT`), if the
    /// node was told ([`super::Node::set_api_service`]).
    pub(super) api_service: Option<std::net::SocketAddr>,
}

/// The environment of `plan`, or the message of a `CreateContainerConfigError`.
pub(super) fn resolve(
    plan: &ContainerPlan,
    pod: &Pod,
    facts: &PodFacts,
    source: &dyn VolumeSource,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), IMAGE_PATH.to_owned()),
        ("HOSTNAME".to_owned(), facts.hostname.clone()),
        (
            "HOME".to_owned(),
            if plan.uid == 0 { "/root" } else { "/" }.to_owned(),
        ),
    ]);
    // The kubelet sets these in every container, before the container's own `env`;
    // in-cluster clients (kube-rs, client-go) find the API server through them.
    if let Some(api) = facts.api_service {
        env.insert("KUBERNETES_SERVICE_HOST".into(), api.ip().to_string());
        env.insert("KUBERNETES_SERVICE_PORT".into(), api.port().to_string());
        env.insert(
            "KUBERNETES_SERVICE_PORT_HTTPS".into(),
            api.port().to_string(),
        );
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for var in plan.spec.env.iter().flatten() {
        if let Some(value) = value_of(var, pod, namespace, facts, source, &env)? {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

fn value_of(
    var: &EnvVar,
    pod: &Pod,
    namespace: &str,
    facts: &PodFacts,
    source: &dyn VolumeSource,
    env: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or_default(), env)));
    };
    value_from(&var.name, from, pod, namespace, facts, source)
}

fn value_from(
    name: &str,
    from: &EnvVarSource,
    pod: &Pod,
    namespace: &str,
    facts: &PodFacts,
    source: &dyn VolumeSource,
) -> Result<Option<String>, String> {
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path, facts)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "env {name}: fieldRef {:?} is not supported by the emulated node",
                    field.field_path
                )
            });
    }
    if let Some(key) = &from.secret_key_ref {
        let value = source
            .secret(namespace, &key.name)
            .and_then(|data| data.get(&key.key).cloned())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        return missing_or(value, key.optional, || {
            format!(
                "couldn't find key {} in Secret {namespace}/{}",
                key.key, key.name
            )
        });
    }
    if let Some(key) = &from.config_map_key_ref {
        let value = source
            .config_map(namespace, &key.name)
            .and_then(|data| data.get(&key.key).cloned());
        return missing_or(value, key.optional, || {
            format!(
                "couldn't find key {} in ConfigMap {namespace}/{}",
                key.key, key.name
            )
        });
    }
    Err(format!(
        "env {name}: only fieldRef, secretKeyRef and configMapKeyRef are supported by the emulated node"
    ))
}

fn missing_or(
    value: Option<String>,
    optional: Option<bool>,
    message: impl FnOnce() -> String,
) -> Result<Option<String>, String> {
    match value {
        Some(v) => Ok(Some(v)),
        None if optional == Some(true) => Ok(None),
        None => Err(message()),
    }
}

/// The value of a downward-API field path, `None` for a path the node does not know.
fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" => Some(facts.pod_ip.clone()),
        "status.hostIP" => Some(facts.host_ip.clone()),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref())),
    }
}
