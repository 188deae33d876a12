//! Re-validation of a Runtime that may have reached the API without the webhook: the
//! library's rules and the Pod Security evaluation of its template, as the webhook runs
//! them, at the controller's floor.

use kruntimes_api::v1alpha1::Runtime;
use kruntimes_api::validation::pod_security::check_pod_security;
use kruntimes_api::validation::{Reason, Validate, Violation};
use kruntimes_pss::Policy;

/// Every violation of `runtime`: the name, the spec, the input schema, and every Pod
/// Security check of `spec.template` that fails at `floor`.
///
/// The namespace's own `pod-security.kubernetes.io/enforce` level is not read here (the
/// webhook reads it at admission): the apiserver's Pod Security admission enforces it
/// on the pods themselves, and a pod it refuses shows up as `TemplateRejected`. The
/// floor is what no namespace label enforces, so it is what the controller checks.
pub fn violations(runtime: &Runtime, floor: Policy) -> Vec<Violation> {
    let mut found = runtime.validate();
    match serde_json::to_value(runtime) {
        Ok(tree) => found.extend(check_pod_security(&tree, floor)),
        Err(e) => found.push(Violation::new(
            "spec.template",
            Reason::Invalid,
            format!("cannot be read for the Pod Security check: {e}"),
        )),
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kruntimes_pss::{Level, Version};
    use serde_json::{Value, json};

    use super::*;

    fn runtime(security_context: Value) -> Runtime {
        serde_json::from_value(json!({
            "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
            "metadata": {"name": "python", "namespace": "team-a"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": "python:3.13", "securityContext": security_context}
            ]}}},
        }))
        .unwrap()
    }

    fn floor(level: Level) -> Policy {
        Policy::new(level, Version::Latest)
    }

    #[test]
    fn a_privileged_template_fails_at_the_baseline_floor_with_the_webhooks_message() {
        let privileged = runtime(json!({"privileged": true}));
        let found = violations(&privileged, floor(Level::Baseline));
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "spec.template.spec.containers[0].securityContext.privileged: Forbidden: violates PodSecurity \"baseline:latest\""
            ),
            "{lines:?}"
        );
        // The same evaluation the webhook runs: the library's own message, word for word.
        let tree = serde_json::to_value(&privileged).unwrap();
        assert_eq!(found, check_pod_security(&tree, floor(Level::Baseline)));
        // At the privileged floor nothing is checked.
        assert!(violations(&privileged, floor(Level::Privileged)).is_empty());
    }

    #[test]
    fn the_library_rules_and_pod_security_are_reported_together() {
        let mut both = runtime(json!({"privileged": true}));
        both.spec.concurrency = 0;
        let lines: Vec<String> = violations(&both, floor(Level::Baseline))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("spec.concurrency: Invalid value: 0"),
            "{lines:?}"
        );
        assert!(lines[1].contains("violates PodSecurity"), "{lines:?}");
    }

    #[test]
    fn a_plain_template_passes_baseline_and_fails_restricted() {
        let plain = runtime(json!({}));
        assert!(violations(&plain, floor(Level::Baseline)).is_empty());
        let restricted = violations(&plain, floor(Level::Restricted));
        assert!(!restricted.is_empty());
        assert!(restricted.iter().all(|v| v.reason == Reason::Forbidden));
    }
}
