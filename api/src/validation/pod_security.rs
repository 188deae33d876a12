//! Pod Security evaluation of a Runtime's pod template, as validation violations.
//!
//! A Runtime is not a pod, so the apiserver's Pod Security admission never sees its
//! template; these rules apply the namespace's enforce level (or the floor, whichever is
//! stricter) to it, so a Runtime whose pods would be refused is refused itself. The
//! webhook, `krt check` and the controller's re-validation all call these, so their
//! messages are the same.

use std::collections::BTreeMap;

use kruntimes_pss::{LabelError, NamespacePolicy, Policy};
use serde_json::Value;

use super::{Reason, Violation};

/// The policy a Runtime template must meet in a namespace labeled `labels`: the
/// namespace's enforce policy, or `floor` when that is stricter or the labels are
/// unknown (`None`). Unreadable `pod-security.kubernetes.io/*` labels are returned as
/// well; they count as the most restrictive value, as upstream Pod Security does.
pub fn enforced_policy(
    labels: Option<&BTreeMap<String, String>>,
    floor: Policy,
) -> (Policy, Vec<LabelError>) {
    let Some(labels) = labels else {
        return (floor, Vec::new());
    };
    let (namespace, errors) = NamespacePolicy::from_labels(labels, floor);
    let policy = if namespace.enforce.level >= floor.level {
        namespace.enforce
    } else {
        floor
    };
    (policy, errors)
}

/// A Runtime's pod template (`spec.template`, in the Runtime as JSON) against `policy`:
/// one [`Reason::Forbidden`] violation per failed check, at the field that fails it.
pub fn check_pod_security(runtime: &Value, policy: Policy) -> Vec<Violation> {
    match kruntimes_pss::evaluate_object(runtime, policy) {
        Ok(evaluation) => evaluation
            .violations
            .into_iter()
            .map(|v| {
                Violation::new(
                    v.field,
                    Reason::Forbidden,
                    format!(
                        "violates PodSecurity \"{policy}\": {} ({})",
                        v.reason, v.detail
                    ),
                )
            })
            .collect(),
        Err(e) => vec![Violation::new(
            "spec.template.spec",
            Reason::Required,
            e.to_string(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use kruntimes_pss::{Level, Version};
    use serde_json::json;

    use super::*;

    fn runtime(security_context: Value) -> Value {
        json!({
            "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
            "metadata": {"name": "py", "namespace": "team"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": "python:3.13", "securityContext": security_context}
            ]}}}
        })
    }

    fn policy(level: Level) -> Policy {
        Policy::new(level, Version::Latest)
    }

    fn enforce(level: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "pod-security.kubernetes.io/enforce".to_owned(),
            level.to_owned(),
        )])
    }

    #[test]
    fn the_floor_is_a_minimum() {
        let floor = policy(Level::Baseline);
        let level =
            |labels: Option<&BTreeMap<String, String>>| enforced_policy(labels, floor).0.level;
        assert_eq!(level(Some(&enforce("restricted"))), Level::Restricted);
        assert_eq!(level(Some(&enforce("privileged"))), Level::Baseline);
        assert_eq!(level(Some(&BTreeMap::new())), Level::Baseline);
        assert_eq!(level(None), Level::Baseline);
        // An unreadable level counts as the strictest, and is reported.
        let (p, errors) = enforced_policy(Some(&enforce("strict")), floor);
        assert_eq!(p.level, Level::Restricted);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].value, "strict");
    }

    #[test]
    fn a_privileged_container_violates_baseline_at_its_field() {
        let violations = check_pod_security(
            &runtime(json!({"privileged": true})),
            policy(Level::Baseline),
        );
        assert_eq!(violations.len(), 1, "{violations:?}");
        let v = &violations[0];
        assert_eq!(
            v.field,
            "spec.template.spec.containers[0].securityContext.privileged"
        );
        assert_eq!(v.reason, Reason::Forbidden);
        assert!(
            v.to_string()
                .contains("violates PodSecurity \"baseline:latest\": privileged ("),
            "{v}"
        );
        assert!(
            check_pod_security(
                &runtime(json!({"privileged": true})),
                policy(Level::Privileged)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_plain_template_meets_baseline_but_not_restricted() {
        assert!(check_pod_security(&runtime(json!({})), policy(Level::Baseline)).is_empty());
        let restricted = check_pod_security(&runtime(json!({})), policy(Level::Restricted));
        assert!(!restricted.is_empty());
        assert!(restricted.iter().all(|v| v.reason == Reason::Forbidden));
    }

    #[test]
    fn a_runtime_without_a_template_is_reported_not_passed() {
        let no_template =
            json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime", "spec": {}});
        let violations = check_pod_security(&no_template, policy(Level::Baseline));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec.template.spec");
        assert_eq!(violations[0].reason, Reason::Required);
    }
}
