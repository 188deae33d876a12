//! Seccomp checks of both levels: the legacy annotations (baseline), the fields
//! (baseline refuses `Unconfined`, restricted requires a profile).

use super::*;

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

pub(super) fn seccomp_profile_baseline_1_0(pod: &PodView<'_>) -> Option<Finding> {
    fn valid(v: &str) -> bool {
        v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/")
    }
    let mut forbidden: BTreeSet<String> = BTreeSet::new();
    let mut fields = Vec::new();
    let mut consider = |key: &str| {
        if let Some(v) = annotation(pod, key)
            && !valid(v)
            && forbidden.insert(format!("{key}={}", go_quote(v)))
        {
            fields.push(format!("{}.annotations[{key}]", pod.meta_base));
        }
    };
    consider(SECCOMP_POD_ANNOTATION);
    for c in &pod.containers {
        consider(&format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", c.name));
    }
    if forbidden.is_empty() {
        return None;
    }
    Some(finding(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            forbidden.into_iter().collect::<Vec<_>>().join(", ")
        ),
        fields,
    ))
}

pub(super) fn valid_seccomp_type(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// Shared by the baseline and restricted field checks: returns the finding for
/// explicitly bad values, else (restricted only) for containers left unset.
pub(super) fn seccomp_fields(pod: &PodView<'_>, require: bool) -> Option<Finding> {
    let mut setters: Vec<String> = Vec::new();
    let mut bad_values: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    let mut pod_set = false;
    if let Some(t) = pod_sc(pod).and_then(|s| s.seccomp_type) {
        if valid_seccomp_type(t) {
            pod_set = true;
        } else {
            setters.push("pod".into());
            bad_values.insert(t);
            fields.push(format!("{}.securityContext.seccompProfile.type", pod.base));
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    let mut implicit_fields = Vec::new();
    for c in &pod.containers {
        match sc(c).and_then(|s| s.seccomp_type) {
            Some(t) if !valid_seccomp_type(t) => {
                explicit.push(c.name);
                bad_values.insert(t);
                fields.push(format!("{}.securityContext.seccompProfile.type", c.path));
            }
            Some(_) => {}
            None if !pod_set => {
                implicit.push(c.name);
                implicit_fields.push(format!("{}.securityContext.seccompProfile.type", c.path));
            }
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return Some(finding(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&bad_values)
            ),
            fields,
        ));
    }
    if require && !implicit.is_empty() {
        return Some(finding(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
            implicit_fields,
        ));
    }
    None
}

pub(super) fn seccomp_profile_baseline_1_19(pod: &PodView<'_>) -> Option<Finding> {
    seccomp_fields(pod, false)
}

pub(super) fn seccomp_profile_restricted_1_19(pod: &PodView<'_>) -> Option<Finding> {
    seccomp_fields(pod, true)
}

pub(super) fn seccomp_profile_restricted_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set seccomp (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    seccomp_fields(pod, true)
}
