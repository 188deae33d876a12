//! Namespace labels (`pod-security.kubernetes.io/*`) to the policies to evaluate.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::policy::{Level, Policy, Version};

/// `pod-security.kubernetes.io/enforce`: the level whose violations are denied.
pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// `pod-security.kubernetes.io/enforce-version`.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// `pod-security.kubernetes.io/audit`: the level whose violations are audited.
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
/// `pod-security.kubernetes.io/audit-version`.
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
/// `pod-security.kubernetes.io/warn`: the level whose violations are returned as warnings.
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
/// `pod-security.kubernetes.io/warn-version`.
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// The three policies of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct NamespacePolicy {
    /// Violations deny the request.
    pub enforce: Policy,
    /// Violations are recorded in the audit log.
    pub audit: Policy,
    /// Violations are returned as warnings.
    pub warn: Policy,
}

impl From<Policy> for NamespacePolicy {
    /// The same policy for enforce, audit and warn.
    fn from(p: Policy) -> Self {
        NamespacePolicy {
            enforce: p,
            audit: p,
            warn: p,
        }
    }
}

/// An invalid `pod-security.kubernetes.io/*` label value.
///
/// Displays like upstream's `field.Invalid` error, e.g.
/// `metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelError {
    /// The label key.
    pub label: String,
    /// The rejected value.
    pub value: String,
    /// Why it was rejected.
    pub message: String,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "metadata.labels[{}]: Invalid value: {:?}: {}",
            self.label, self.value, self.message
        )
    }
}

impl std::error::Error for LabelError {}

impl NamespacePolicy {
    /// Resolves a namespace's labels, falling back to `default` (for all three modes)
    /// where a label is absent. See [`NamespacePolicy::from_labels_with`].
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        default: Policy,
    ) -> (NamespacePolicy, Vec<LabelError>) {
        Self::from_labels_with(labels, NamespacePolicy::from(default))
    }

    /// Resolves a namespace's labels as upstream's `api.PolicyToEvaluate`: a policy is
    /// always returned, along with an error per invalid label.
    ///
    /// - an invalid `enforce` level becomes `restricted` (fail closed);
    /// - an invalid `audit` or `warn` level becomes `privileged` (fail open: no noise);
    /// - an invalid version (any mode) becomes `latest`;
    /// - absent labels keep the value from `defaults`.
    pub fn from_labels_with(
        labels: &BTreeMap<String, String>,
        defaults: NamespacePolicy,
    ) -> (NamespacePolicy, Vec<LabelError>) {
        let mut p = defaults;
        let mut errs = Vec::new();
        let modes: [(&mut Policy, &str, &str, Level); 3] = [
            (
                &mut p.enforce,
                ENFORCE_LEVEL_LABEL,
                ENFORCE_VERSION_LABEL,
                Level::Restricted,
            ),
            (
                &mut p.audit,
                AUDIT_LEVEL_LABEL,
                AUDIT_VERSION_LABEL,
                Level::Privileged,
            ),
            (
                &mut p.warn,
                WARN_LEVEL_LABEL,
                WARN_VERSION_LABEL,
                Level::Privileged,
            ),
        ];
        for (policy, level_label, version_label, on_invalid) in modes {
            if let Some(value) = labels.get(level_label) {
                policy.level = value.parse::<Level>().unwrap_or_else(|e| {
                    errs.push(LabelError {
                        label: level_label.to_owned(),
                        value: value.clone(),
                        message: e.to_string(),
                    });
                    on_invalid
                });
            }
            if let Some(value) = labels.get(version_label) {
                policy.version = value.parse::<Version>().unwrap_or_else(|e| {
                    errs.push(LabelError {
                        label: version_label.to_owned(),
                        value: value.clone(),
                        message: e.to_string(),
                    });
                    Version::Latest
                });
            }
        }
        (p, errs)
    }
}
