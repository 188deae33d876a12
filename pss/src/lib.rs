//! Pod Security Standards engine: evaluates any object holding a pod spec against a
//! Pod Security level and version, with the answer Kubernetes' built-in Pod Security
//! admission would give for a Pod with that spec.
//!
//! The checks mirror upstream `k8s.io/pod-security-admission/policy` (ids, versioned
//! revisions, restricted checks overriding their baseline twins, messages). Pure: no I/O.
//!
//! ```
//! use kruntimes_pss::{Level, Policy, Version, evaluate_object};
//!
//! let pod = serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
//!     "spec": {"containers": [{"name": "app", "securityContext": {"privileged": true}}]}
//! });
//! let eval = evaluate_object(&pod, Policy::new(Level::Baseline, Version::Latest)).unwrap();
//! assert!(!eval.allowed());
//! assert_eq!(eval.violations[0].check, "privileged");
//! assert_eq!(eval.violations[0].field, "spec.containers[0].securityContext.privileged");
//! assert_eq!(
//!     eval.forbidden_detail(),
//!     r#"privileged (container "app" must not set securityContext.privileged=true)"#
//! );
//! ```
//!
//! Malformed input (a field of the wrong JSON type) never panics: see
//! [`DECODE_CHECK_ID`].

mod checks;
mod namespace;
mod object;
mod policy;
mod report;
mod view;

use serde::Serialize;
use serde_json::Value;

pub use checks::{CheckInfo, checks, checks_for, overridden_by};
pub use namespace::{
    AUDIT_LEVEL_LABEL, AUDIT_VERSION_LABEL, ENFORCE_LEVEL_LABEL, ENFORCE_VERSION_LABEL, LabelError,
    NamespacePolicy, WARN_LEVEL_LABEL, WARN_VERSION_LABEL,
};
pub use object::{NoPodSpec, PodSpecRef, locate_pod_spec};
pub use policy::{Level, MAX_VERSION_MINOR, ParseLevelError, ParseVersionError, Policy, Version};
pub use report::{ReportLine, kind_and_name, render_skipped, report};

/// Pseudo check id of the violation reported for fields of the wrong JSON type.
///
/// Upstream decodes the object into typed structs before any check runs, so such an
/// object is rejected ("failed to decode"). Here the fields the checks read are
/// type-checked; each mismatch denies the object with one `decode` violation (listing
/// the fields) and the checks then run treating the mismatched fields as absent.
/// Nothing is reported at `privileged`, which upstream does not even decode.
pub const DECODE_CHECK_ID: &str = "decode";

/// One thing a policy forbids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Upstream check id, e.g. `allowPrivilegeEscalation` (or [`DECODE_CHECK_ID`]).
    pub check: &'static str,
    /// Short reason, upstream's `ForbiddenReason`, e.g. `allowPrivilegeEscalation != false`.
    pub reason: String,
    /// Upstream's `ForbiddenDetail`, naming containers and fields, e.g.
    /// `container "app" must set securityContext.allowPrivilegeEscalation=false`.
    pub detail: String,
    /// The most specific field path (from the object root) common to all offending
    /// fields, e.g. `spec.template.spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// Every offending field path (not serialized).
    #[serde(skip)]
    pub fields: Vec<String>,
}

/// The result of evaluating one pod spec against one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The policy evaluated.
    pub policy: Policy,
    /// Violations in upstream's order (baseline checks by id, then restricted by id).
    pub violations: Vec<Violation>,
}

impl Evaluation {
    /// Whether the policy allows the pod (no violations).
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Reasons joined with `, ` (upstream's aggregate `ForbiddenReason`).
    pub fn forbidden_reason(&self) -> String {
        self.violations
            .iter()
            .map(|v| v.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `reason (detail), reason (detail)` (upstream's aggregate `ForbiddenDetail`).
    pub fn forbidden_detail(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&v.reason);
            if !v.detail.is_empty() {
                out.push_str(" (");
                out.push_str(&v.detail);
                out.push(')');
            }
        }
        out
    }

    /// The denial message upstream admission returns, without the object prefix:
    /// `violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (…)`;
    /// `None` when allowed.
    pub fn denial_message(&self) -> Option<String> {
        (!self.allowed()).then(|| {
            format!(
                "violates PodSecurity \"{}\": {}",
                self.policy,
                self.forbidden_detail()
            )
        })
    }
}

/// Evaluates the pod spec held by `obj` (see [`locate_pod_spec`] for the kinds).
pub fn evaluate_object(obj: &Value, policy: Policy) -> Result<Evaluation, NoPodSpec> {
    let pod = locate_pod_spec(obj)?;
    Ok(evaluate_pod(pod.metadata, pod.spec, pod.spec_path, policy))
}

/// Evaluates one pod spec.
///
/// - `metadata`: the pod's metadata (annotations matter for AppArmor and, before v1.19,
///   seccomp); for a workload this is the template's metadata.
/// - `pod_spec`: the pod spec (a JSON object; anything else is a decode violation).
/// - `base_path`: the path of `pod_spec` from the object root (e.g. `spec`,
///   `spec.template.spec`), used to build violation field paths. The metadata path is
///   derived by replacing its last `spec` with `metadata`.
pub fn evaluate_pod(
    metadata: Option<&Value>,
    pod_spec: &Value,
    base_path: &str,
    policy: Policy,
) -> Evaluation {
    let mut violations = Vec::new();
    if policy.level == Level::Privileged {
        return Evaluation { policy, violations };
    }
    let meta_base = match base_path.strip_suffix("spec") {
        Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => format!("{prefix}metadata"),
        _ => "metadata".to_owned(),
    };
    let Some(spec) = pod_spec.as_object() else {
        violations.push(Violation {
            check: DECODE_CHECK_ID,
            reason: "failed to decode pod spec".to_owned(),
            detail: format!("{base_path}: expected an object"),
            field: base_path.to_owned(),
            fields: vec![base_path.to_owned()],
        });
        return Evaluation { policy, violations };
    };
    let view = view::decode(metadata, spec, base_path, &meta_base);
    if !view.errors.is_empty() {
        const SHOWN: usize = 10;
        let mut detail = view
            .errors
            .iter()
            .take(SHOWN)
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        if view.errors.len() > SHOWN {
            detail.push_str(&format!(" (and {} more)", view.errors.len() - SHOWN));
        }
        let fields: Vec<String> = view.errors.iter().map(|e| e.field.clone()).collect();
        violations.push(Violation {
            check: DECODE_CHECK_ID,
            reason: "failed to decode pod spec".to_owned(),
            detail,
            field: common_path(&fields),
            fields,
        });
    }
    for (check, f) in checks::run(&view, policy) {
        violations.push(Violation {
            check,
            field: common_path(&f.fields),
            reason: f.reason,
            detail: f.detail,
            fields: f.fields,
        });
    }
    Evaluation { policy, violations }
}

/// Splits a field path into segments: `a.b[0].c[k.x]` -> `a`, `.b`, `[0]`, `.c`, `[k.x]`.
fn segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = path.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'[') => {
                if i > start {
                    out.push(&path[start..i]);
                }
                let end = path[i..].find(']').map_or(path.len(), |e| i + e + 1);
                out.push(&path[i..end]);
                start = end;
                i = end;
            }
            Some(b'.') if i > start => {
                out.push(&path[start..i]);
                start = i;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if start < path.len() {
        out.push(&path[start..]);
    }
    out
}

/// The longest common field path of `paths` (whole segments).
fn common_path(paths: &[String]) -> String {
    let Some((first, rest)) = paths.split_first() else {
        return String::new();
    };
    let mut common = segments(first);
    for p in rest {
        let segs = segments(p);
        let n = common.iter().zip(&segs).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    common.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_paths() {
        let p = |v: &[&str]| common_path(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), "");
        assert_eq!(p(&["spec.containers[0].a"]), "spec.containers[0].a");
        assert_eq!(
            p(&["spec.containers[0].a.b", "spec.containers[1].a.b"]),
            "spec.containers"
        );
        assert_eq!(
            p(&["spec.containers[0].a", "spec.initContainers[0].a"]),
            "spec"
        );
        assert_eq!(
            p(&["metadata.annotations[a.b/c]", "metadata.annotations[a.b/d]"]),
            "metadata.annotations"
        );
        assert_eq!(p(&["spec.hostPID", "spec.hostIPC"]), "spec");
        assert_eq!(p(&["spec.x[0]", "spec.x[10]"]), "spec.x");
    }
}
