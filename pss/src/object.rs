//! Finding the pod spec (and pod metadata) inside a Kubernetes object.

use serde_json::Value;

/// Why an object has no pod spec to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPodSpec {
    /// The document is not a JSON/YAML mapping.
    #[error("not an object")]
    NotAnObject,
    /// The object has no string `kind`.
    #[error("object has no kind")]
    MissingKind,
    /// The kind (or its API group) is not one that holds a pod template.
    #[error("{kind} ({api_version}) does not hold a pod spec")]
    UnsupportedKind {
        /// `apiVersion` of the object (empty when absent).
        api_version: String,
        /// `kind` of the object.
        kind: String,
    },
    /// A supported kind whose pod spec is absent or not an object.
    #[error("{kind} has no pod spec at {path}")]
    MissingPodSpec {
        /// `kind` of the object.
        kind: String,
        /// Where the pod spec was expected, e.g. `spec.template.spec`.
        path: &'static str,
    },
}

/// The pod spec of an object, with the metadata that applies to the pod.
#[derive(Debug, Clone, Copy)]
pub struct PodSpecRef<'a> {
    /// The pod's metadata (the object's for a Pod, the template's otherwise).
    pub metadata: Option<&'a Value>,
    /// The pod spec (always a JSON object).
    pub spec: &'a Value,
    /// Path of the pod spec from the object root, e.g. `spec.template.spec`.
    pub spec_path: &'static str,
}

/// Keys from the object root to the pod template (`None`: the object is the pod).
struct Shape {
    template: &'static [&'static str],
    spec_path: &'static str,
}

const POD: Shape = Shape {
    template: &[],
    spec_path: "spec",
};
const POD_TEMPLATE: Shape = Shape {
    template: &["template"],
    spec_path: "template.spec",
};
const WORKLOAD: Shape = Shape {
    template: &["spec", "template"],
    spec_path: "spec.template.spec",
};
const CRON_JOB: Shape = Shape {
    template: &["spec", "jobTemplate", "spec", "template"],
    spec_path: "spec.jobTemplate.spec.template.spec",
};

/// The API group of an `apiVersion` (`""` for the core group `v1`).
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn shape(api_version: Option<&str>, kind: &str) -> Option<Shape> {
    let (groups, shape): (&[&str], Shape) = match kind {
        "Pod" => (&[""], POD),
        "PodTemplate" => (&[""], POD_TEMPLATE),
        "ReplicationController" => (&[""], WORKLOAD),
        "Deployment" | "ReplicaSet" | "DaemonSet" => (&["apps", "extensions"], WORKLOAD),
        "StatefulSet" => (&["apps"], WORKLOAD),
        "Job" => (&["batch"], WORKLOAD),
        "CronJob" => (&["batch"], CRON_JOB),
        "Runtime" => (&["kruntimes.io"], WORKLOAD),
        _ => return None,
    };
    // Without an apiVersion the kind alone decides (handy for snippets).
    match api_version {
        Some(v) if !groups.contains(&group(v)) => None,
        _ => Some(shape),
    }
}

/// Finds the pod spec of a Pod, PodTemplate, ReplicationController, Deployment,
/// ReplicaSet, StatefulSet, DaemonSet, Job, CronJob or kruntimes `Runtime`.
///
/// The kind must match its API group (`apps/*`, `batch/*`, `kruntimes.io/*`, core `v1`;
/// `extensions/*` for the legacy Deployment/ReplicaSet/DaemonSet); an object without
/// `apiVersion` is matched on its kind alone.
pub fn locate_pod_spec(obj: &Value) -> Result<PodSpecRef<'_>, NoPodSpec> {
    let map = obj.as_object().ok_or(NoPodSpec::NotAnObject)?;
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(NoPodSpec::MissingKind)?;
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let shape = shape(api_version, kind).ok_or_else(|| NoPodSpec::UnsupportedKind {
        api_version: api_version.unwrap_or_default().to_owned(),
        kind: kind.to_owned(),
    })?;
    let missing = || NoPodSpec::MissingPodSpec {
        kind: kind.to_owned(),
        path: shape.spec_path,
    };
    let mut template = obj;
    for key in shape.template {
        template = template
            .get(key)
            .filter(|v| v.is_object())
            .ok_or_else(missing)?;
    }
    let spec = template
        .get("spec")
        .filter(|v| v.is_object())
        .ok_or_else(missing)?;
    Ok(PodSpecRef {
        metadata: template.get("metadata"),
        spec,
        spec_path: shape.spec_path,
    })
}
