//! Restricted checks: privilege escalation, capabilities dropped, volume types, running
//! as non-root and as a non-zero uid (upstream's `check_*.go` of the restricted level).

use super::*;

pub(super) fn allow_privilege_escalation_1_8(pod: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<&Container<'_>> = pod
        .containers
        .iter()
        .filter(|c| sc(c).and_then(|s| s.allow_privilege_escalation) != Some(false))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|c| c.name).collect();
    Some(finding(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&names)
        ),
        bad.iter()
            .map(|c| format!("{}.securityContext.allowPrivilegeEscalation", c.path))
            .collect(),
    ))
}

pub(super) fn allow_privilege_escalation_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set the field (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    allow_privilege_escalation_1_8(pod)
}

pub(super) fn capabilities_restricted_1_22(pod: &PodView<'_>) -> Option<Finding> {
    let mut missing_drop_all = Vec::new();
    let mut adding_forbidden = Vec::new();
    let mut forbidden_caps: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    for c in &pod.containers {
        let Some(caps) = sc(c).and_then(|s| s.capabilities.as_ref()) else {
            missing_drop_all.push(c.name);
            fields.push(format!("{}.securityContext.capabilities.drop", c.path));
            continue;
        };
        if !caps.drop.contains(&"ALL") {
            missing_drop_all.push(c.name);
            fields.push(format!("{}.securityContext.capabilities.drop", c.path));
        }
        let mut added_forbidden = false;
        for cap in &caps.add {
            if *cap != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden_caps.insert(cap);
            }
        }
        if added_forbidden {
            adding_forbidden.push(c.name);
            fields.push(format!("{}.securityContext.capabilities.add", c.path));
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding_forbidden.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding_forbidden),
            join_quote(&forbidden_caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    Some(finding(
        "unrestricted capabilities",
        details.join("; "),
        fields,
    ))
}

pub(super) fn capabilities_restricted_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set capabilities (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    capabilities_restricted_1_22(pod)
}

pub(super) fn restricted_volumes_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<_> = pod
        .volumes
        .iter()
        .filter_map(|v| v.restricted_type.map(|t| (v, t)))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|(v, _)| v.name).collect();
    let types: BTreeSet<&str> = bad.iter().map(|(_, t)| *t).collect();
    Some(finding(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
        bad.iter()
            .map(|(v, t)| format!("{}.volumes[{}].{t}", pod.base, v.index))
            .collect(),
    ))
}

pub(super) fn run_as_non_root_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut setters: Vec<String> = Vec::new();
    let mut setter_fields = Vec::new();
    let mut pod_non_root = false;
    match pod_sc(pod).and_then(|s| s.run_as_non_root) {
        Some(false) => {
            setters.push("pod".into());
            setter_fields.push(format!("{}.securityContext.runAsNonRoot", pod.base));
        }
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    let mut implicit_fields = Vec::new();
    for c in &pod.containers {
        let field = || format!("{}.securityContext.runAsNonRoot", c.path);
        match sc(c).and_then(|s| s.run_as_non_root) {
            Some(false) => {
                explicit.push(c.name);
                setter_fields.push(field());
            }
            Some(true) => {}
            None if !pod_non_root => {
                implicit.push(c.name);
                implicit_fields.push(field());
            }
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return Some(finding(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
            setter_fields,
        ));
    }
    if !implicit.is_empty() {
        return Some(finding(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
            implicit_fields,
        ));
    }
    None
}

pub(super) fn run_as_non_root_1_35(pod: &PodView<'_>) -> Option<Finding> {
    // Root in a user namespace is not root on the host (KEP-127): relaxed from v1.35.
    if pod.user_namespaced() {
        return None;
    }
    run_as_non_root_1_0(pod)
}

pub(super) fn run_as_user_1_23(pod: &PodView<'_>) -> Option<Finding> {
    let mut setters: Vec<String> = Vec::new();
    let mut fields = Vec::new();
    if pod_sc(pod).and_then(|s| s.run_as_user) == Some(0) {
        setters.push("pod".into());
        fields.push(format!("{}.securityContext.runAsUser", pod.base));
    }
    let mut bad = Vec::new();
    for c in &pod.containers {
        if sc(c).and_then(|s| s.run_as_user) == Some(0) {
            bad.push(c.name);
            fields.push(format!("{}.securityContext.runAsUser", c.path));
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    Some(finding(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
        fields,
    ))
}

pub(super) fn run_as_user_1_35(pod: &PodView<'_>) -> Option<Finding> {
    if pod.user_namespaced() {
        return None;
    }
    run_as_user_1_23(pod)
}
