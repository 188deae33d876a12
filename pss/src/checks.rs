//! The checks, their versioned revisions, and the registry that picks them for a policy.
//!
//! Mirrors upstream `k8s.io/pod-security-admission/policy`: every check has one or more
//! revisions, each applying from a minimum policy version until the next revision; at
//! `restricted`, a restricted revision may override (replace) baseline checks.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::policy::{Level, Policy};
use crate::view::{Container, PodView, SecurityContext};

/// A failed check, before it is tagged with its check id.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) reason: String,
    pub(crate) detail: String,
    pub(crate) fields: Vec<String>,
}

type CheckFn = fn(&PodView<'_>) -> Option<Finding>;

struct Revision {
    /// First policy minor version (`v1.N`) this revision applies to.
    min: u32,
    check: CheckFn,
    /// Baseline checks this (restricted) revision replaces at `restricted`.
    overrides: &'static [&'static str],
}

struct CheckDef {
    id: &'static str,
    level: Level,
    /// Sorted by `min`, strictly increasing.
    revisions: &'static [Revision],
}

const fn rev(min: u32, check: CheckFn) -> Revision {
    Revision {
        min,
        check,
        overrides: &[],
    }
}

const fn rev_over(min: u32, check: CheckFn, overrides: &'static [&'static str]) -> Revision {
    Revision {
        min,
        check,
        overrides,
    }
}

/// Baseline checks sorted by id, then restricted checks sorted by id: upstream's
/// evaluation (and so message) order.
static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "appArmorProfile",
        level: Level::Baseline,
        revisions: &[rev(0, app_armor_profile_1_0)],
    },
    CheckDef {
        id: "capabilities_baseline",
        level: Level::Baseline,
        revisions: &[rev(0, capabilities_baseline_1_0)],
    },
    CheckDef {
        id: "hostNamespaces",
        level: Level::Baseline,
        revisions: &[rev(0, host_namespaces_1_0)],
    },
    CheckDef {
        id: "hostPathVolumes",
        level: Level::Baseline,
        revisions: &[rev(0, host_path_volumes_1_0)],
    },
    CheckDef {
        id: "hostPorts",
        level: Level::Baseline,
        revisions: &[rev(0, host_ports_1_0)],
    },
    CheckDef {
        id: "hostProbesAndHostLifecycle",
        level: Level::Baseline,
        revisions: &[rev(34, host_probes_and_host_lifecycle_1_34)],
    },
    CheckDef {
        id: "privileged",
        level: Level::Baseline,
        revisions: &[rev(0, privileged_1_0)],
    },
    CheckDef {
        id: "procMount",
        level: Level::Baseline,
        revisions: &[rev(0, proc_mount_1_0), rev(35, proc_mount_1_35_baseline)],
    },
    CheckDef {
        id: "seLinuxOptions",
        level: Level::Baseline,
        revisions: &[rev(0, se_linux_options_1_0), rev(31, se_linux_options_1_31)],
    },
    CheckDef {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        revisions: &[
            rev(0, seccomp_profile_baseline_1_0),
            rev(19, seccomp_profile_baseline_1_19),
        ],
    },
    CheckDef {
        id: "sysctls",
        level: Level::Baseline,
        revisions: &[
            rev(0, sysctls_1_0),
            rev(27, sysctls_1_27),
            rev(29, sysctls_1_29),
            rev(32, sysctls_1_32),
            rev(37, sysctls_1_37),
        ],
    },
    CheckDef {
        id: "windowsHostProcess",
        level: Level::Baseline,
        revisions: &[rev(0, windows_host_process_1_0)],
    },
    CheckDef {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        revisions: &[
            rev(8, allow_privilege_escalation_1_8),
            rev(25, allow_privilege_escalation_1_25),
        ],
    },
    CheckDef {
        id: "capabilities_restricted",
        level: Level::Restricted,
        revisions: &[
            rev_over(22, capabilities_restricted_1_22, &["capabilities_baseline"]),
            rev_over(25, capabilities_restricted_1_25, &["capabilities_baseline"]),
        ],
    },
    CheckDef {
        id: "procMount_restricted",
        level: Level::Restricted,
        revisions: &[rev_over(35, proc_mount_1_0, &["procMount"])],
    },
    CheckDef {
        id: "restrictedVolumes",
        level: Level::Restricted,
        revisions: &[rev_over(0, restricted_volumes_1_0, &["hostPathVolumes"])],
    },
    CheckDef {
        id: "runAsNonRoot",
        level: Level::Restricted,
        revisions: &[rev(0, run_as_non_root_1_0), rev(35, run_as_non_root_1_35)],
    },
    CheckDef {
        id: "runAsUser",
        level: Level::Restricted,
        revisions: &[rev(23, run_as_user_1_23), rev(35, run_as_user_1_35)],
    },
    CheckDef {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        revisions: &[
            rev_over(
                19,
                seccomp_profile_restricted_1_19,
                &["seccompProfile_baseline"],
            ),
            rev_over(
                25,
                seccomp_profile_restricted_1_25,
                &["seccompProfile_baseline"],
            ),
        ],
    },
];

/// Description of one check, for documentation and tooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInfo {
    /// Upstream check id, e.g. `capabilities_restricted`.
    pub id: &'static str,
    /// `Baseline` or `Restricted`.
    pub level: Level,
    /// Minor versions (`v1.N`) at which a revision of the check starts.
    pub revisions: Vec<u32>,
    /// Baseline check ids the newest revision overrides at `restricted`.
    pub overrides: Vec<&'static str>,
}

/// All checks, baseline first, each group sorted by id.
pub fn checks() -> Vec<CheckInfo> {
    CHECKS
        .iter()
        .map(|c| CheckInfo {
            id: c.id,
            level: c.level,
            revisions: c.revisions.iter().map(|r| r.min).collect(),
            overrides: c
                .revisions
                .last()
                .map(|r| r.overrides.to_vec())
                .unwrap_or_default(),
        })
        .collect()
}

/// The revision of `def` in force at `minor`, if the check exists then.
fn revision_at(def: &CheckDef, minor: u32) -> Option<&Revision> {
    def.revisions.iter().rev().find(|r| r.min <= minor)
}

/// The checks evaluated for `policy`, in evaluation order.
fn selected(policy: Policy) -> Vec<(&'static str, &'static Revision)> {
    if policy.level == Level::Privileged {
        return Vec::new();
    }
    let minor = policy.version.effective_minor();
    let restricted = policy.level == Level::Restricted;
    let picked: Vec<(&CheckDef, &Revision)> = CHECKS
        .iter()
        .filter(|c| c.level == Level::Baseline || restricted)
        .filter_map(|c| revision_at(c, minor).map(|r| (c, r)))
        .collect();
    let overridden: BTreeSet<&str> = picked
        .iter()
        .filter(|(c, _)| c.level == Level::Restricted)
        .flat_map(|(_, r)| r.overrides.iter().copied())
        .collect();
    picked
        .into_iter()
        .filter(|(c, _)| c.level == Level::Restricted || !overridden.contains(c.id))
        .map(|(c, r)| (c.id, r))
        .collect()
}

/// Ids of the checks evaluated for `policy`, in evaluation order (empty at `privileged`).
pub fn checks_for(policy: Policy) -> Vec<&'static str> {
    selected(policy).into_iter().map(|(id, _)| id).collect()
}

/// At `restricted` and `policy`'s version, the restricted check that replaces baseline
/// check `baseline_id`, if any (e.g. `capabilities_baseline` -> `capabilities_restricted`
/// from v1.22).
pub fn overridden_by(baseline_id: &str, version: crate::Version) -> Option<&'static str> {
    let minor = version.effective_minor();
    CHECKS
        .iter()
        .filter(|c| c.level == Level::Restricted)
        .find(|c| revision_at(c, minor).is_some_and(|r| r.overrides.contains(&baseline_id)))
        .map(|c| c.id)
}

/// Runs the checks of `policy` on `view`: `(check id, finding)` of each failed check.
pub(crate) fn run(view: &PodView<'_>, policy: Policy) -> Vec<(&'static str, Finding)> {
    selected(policy)
        .into_iter()
        .filter_map(|(id, r)| (r.check)(view).map(|f| (id, f)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers (upstream's pluralize / joinQuote / %q).

fn pluralize<'s>(singular: &'s str, plural: &'s str, n: usize) -> &'s str {
    if n == 1 { singular } else { plural }
}

fn join_quote<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(s.as_ref());
        out.push('"');
    }
    out
}

/// Go's `%q` (strconv.Quote) for the common cases.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn finding(reason: impl Into<String>, detail: impl Into<String>, fields: Vec<String>) -> Finding {
    Finding {
        reason: reason.into(),
        detail: detail.into(),
        fields,
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// The security context of a container, if set.
fn sc<'c, 'a>(c: &'c Container<'a>) -> Option<&'c SecurityContext<'a>> {
    c.sc.as_ref()
}

fn pod_sc<'v, 'a>(pod: &'v PodView<'a>) -> Option<&'v SecurityContext<'a>> {
    pod.sc.as_ref()
}

fn annotation<'a>(pod: &PodView<'a>, key: &str) -> Option<&'a str> {
    pod.annotations
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .and_then(|i| pod.annotations.get(i))
        .map(|(_, v)| *v)
}

// ---------------------------------------------------------------------------------------
// The checks.

fn privileged_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<&Container<'_>> = pod
        .containers
        .iter()
        .filter(|c| sc(c).and_then(|s| s.privileged) == Some(true))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|c| c.name).collect();
    Some(finding(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&names)
        ),
        bad.iter()
            .map(|c| format!("{}.securityContext.privileged", c.path))
            .collect(),
    ))
}

fn allow_privilege_escalation_1_8(pod: &PodView<'_>) -> Option<Finding> {
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

fn allow_privilege_escalation_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set the field (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    allow_privilege_escalation_1_8(pod)
}

fn app_armor_profile_1_0(pod: &PodView<'_>) -> Option<Finding> {
    fn allowed_type(t: &str) -> bool {
        t == "RuntimeDefault" || t == "Localhost"
    }
    fn allowed_annotation(v: &str) -> bool {
        v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")
    }
    let mut setters: Vec<String> = Vec::new();
    let mut bad_values: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    if let Some(t) = pod_sc(pod).and_then(|s| s.app_armor_type)
        && !allowed_type(t)
    {
        setters.push("pod".into());
        bad_values.insert(t);
        fields.push(format!("{}.securityContext.appArmorProfile.type", pod.base));
    }
    let mut bad_containers = Vec::new();
    for c in &pod.containers {
        if let Some(t) = sc(c).and_then(|s| s.app_armor_type)
            && !allowed_type(t)
        {
            bad_containers.push(c.name);
            bad_values.insert(t);
            fields.push(format!("{}.securityContext.appArmorProfile.type", c.path));
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    let mut bad_annotations = Vec::new();
    for (k, v) in &pod.annotations {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && !allowed_annotation(v)
        {
            bad_annotations.push(format!("{k}={}", go_quote(v)));
            fields.push(format!("{}.annotations[{k}]", pod.meta_base));
        }
    }
    let mut values: Vec<String> = bad_values.into_iter().map(str::to_owned).collect();
    if !bad_annotations.is_empty() {
        bad_annotations.sort();
        setters.push(pluralize("annotation", "annotations", bad_annotations.len()).into());
        values.extend(bad_annotations);
    }
    if setters.is_empty() {
        return None;
    }
    Some(finding(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
        fields,
    ))
}

const CAPABILITIES_ALLOWED_1_0: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut bad_containers = Vec::new();
    let mut bad_caps: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    for c in &pod.containers {
        let Some(caps) = sc(c).and_then(|s| s.capabilities.as_ref()) else {
            continue;
        };
        let mut valid = true;
        for cap in &caps.add {
            if !CAPABILITIES_ALLOWED_1_0.contains(cap) {
                valid = false;
                bad_caps.insert(cap);
            }
        }
        if !valid {
            bad_containers.push(c.name);
            fields.push(format!("{}.securityContext.capabilities.add", c.path));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Some(finding(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_containers),
            join_quote(&bad_caps)
        ),
        fields,
    ))
}

fn capabilities_restricted_1_22(pod: &PodView<'_>) -> Option<Finding> {
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

fn capabilities_restricted_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set capabilities (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    capabilities_restricted_1_22(pod)
}

fn host_namespaces_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut set = Vec::new();
    let mut fields = Vec::new();
    for (on, name) in [
        (pod.host_network, "hostNetwork"),
        (pod.host_pid, "hostPID"),
        (pod.host_ipc, "hostIPC"),
    ] {
        if on {
            set.push(format!("{name}=true"));
            fields.push(format!("{}.{name}", pod.base));
        }
    }
    if set.is_empty() {
        return None;
    }
    Some(finding("host namespaces", set.join(", "), fields))
}

fn host_path_volumes_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<_> = pod.volumes.iter().filter(|v| v.host_path).collect();
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|v| v.name).collect();
    Some(finding(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names)
        ),
        bad.iter()
            .map(|v| format!("{}.volumes[{}].hostPath", pod.base, v.index))
            .collect(),
    ))
}

fn host_ports_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut bad_containers = Vec::new();
    let mut ports: BTreeSet<String> = BTreeSet::new();
    let mut fields = Vec::new();
    for c in &pod.containers {
        if c.host_ports.is_empty() {
            continue;
        }
        bad_containers.push(c.name);
        for (i, p) in &c.host_ports {
            ports.insert(p.to_string());
            fields.push(format!("{}.ports[{i}].hostPort", c.path));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Some(finding(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
        fields,
    ))
}

fn host_probes_and_host_lifecycle_1_34(pod: &PodView<'_>) -> Option<Finding> {
    let mut bad_containers: BTreeSet<&str> = BTreeSet::new();
    let mut hosts: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    for c in &pod.containers {
        for (suffix, host) in &c.probe_hosts {
            bad_containers.insert(c.name);
            hosts.insert(host);
            fields.push(format!("{}.{suffix}", c.path));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Some(finding(
        "probe or lifecycle host",
        format!(
            "{} {} {} {} {}",
            pluralize("container", "containers", bad_containers.len()),
            join_quote(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        ),
        fields,
    ))
}

fn proc_mount_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut bad_containers = Vec::new();
    let mut types: BTreeSet<&str> = BTreeSet::new();
    let mut fields = Vec::new();
    for c in &pod.containers {
        if let Some(pm) = sc(c).and_then(|s| s.proc_mount)
            && pm != "Default"
        {
            bad_containers.push(c.name);
            types.insert(pm);
            fields.push(format!("{}.securityContext.procMount", c.path));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Some(finding(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad_containers),
            join_quote(&types)
        ),
        fields,
    ))
}

fn proc_mount_1_35_baseline(pod: &PodView<'_>) -> Option<Finding> {
    // User-namespaced pods may use any procMount at baseline from v1.35.
    if pod.user_namespaced() {
        return None;
    }
    proc_mount_1_0(pod)
}

fn restricted_volumes_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

fn run_as_non_root_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

fn run_as_non_root_1_35(pod: &PodView<'_>) -> Option<Finding> {
    // Root in a user namespace is not root on the host (KEP-127): relaxed from v1.35.
    if pod.user_namespaced() {
        return None;
    }
    run_as_non_root_1_0(pod)
}

fn run_as_user_1_23(pod: &PodView<'_>) -> Option<Finding> {
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

fn run_as_user_1_35(pod: &PodView<'_>) -> Option<Finding> {
    if pod.user_namespaced() {
        return None;
    }
    run_as_user_1_23(pod)
}

const SELINUX_TYPES_1_0: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];
const SELINUX_TYPES_1_31: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn se_linux_options<'a>(pod: &PodView<'a>, allowed_types: &[&str]) -> Option<Finding> {
    let mut bad_types: BTreeSet<&'a str> = BTreeSet::new();
    let mut set_user = false;
    let mut set_role = false;
    let mut valid = |sc: Option<&SecurityContext<'a>>| -> bool {
        let Some(opts) = sc.and_then(|s| s.se_linux.as_ref()) else {
            return true;
        };
        let mut ok = true;
        if !allowed_types.contains(&opts.type_) {
            ok = false;
            bad_types.insert(opts.type_);
        }
        if !opts.user.is_empty() {
            ok = false;
            set_user = true;
        }
        if !opts.role.is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters: Vec<String> = Vec::new();
    let mut fields = Vec::new();
    if !valid(pod_sc(pod)) {
        setters.push("pod".into());
        fields.push(format!("{}.securityContext.seLinuxOptions", pod.base));
    }
    let mut bad_containers = Vec::new();
    for c in &pod.containers {
        if !valid(sc(c)) {
            bad_containers.push(c.name);
            fields.push(format!("{}.securityContext.seLinuxOptions", c.path));
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_owned());
    }
    if set_role {
        data.push("role may not be set".to_owned());
    }
    Some(finding(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
        fields,
    ))
}

fn se_linux_options_1_0(pod: &PodView<'_>) -> Option<Finding> {
    se_linux_options(pod, SELINUX_TYPES_1_0)
}

fn se_linux_options_1_31(pod: &PodView<'_>) -> Option<Finding> {
    se_linux_options(pod, SELINUX_TYPES_1_31)
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

fn seccomp_profile_baseline_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

fn valid_seccomp_type(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// Shared by the baseline and restricted field checks: returns the finding for
/// explicitly bad values, else (restricted only) for containers left unset.
fn seccomp_fields(pod: &PodView<'_>, require: bool) -> Option<Finding> {
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

fn seccomp_profile_baseline_1_19(pod: &PodView<'_>) -> Option<Finding> {
    seccomp_fields(pod, false)
}

fn seccomp_profile_restricted_1_19(pod: &PodView<'_>) -> Option<Finding> {
    seccomp_fields(pod, true)
}

fn seccomp_profile_restricted_1_25(pod: &PodView<'_>) -> Option<Finding> {
    // Windows pods cannot set seccomp (API validation); exempt from v1.25.
    if pod.is_windows() {
        return None;
    }
    seccomp_fields(pod, true)
}

const SYSCTLS_1_0: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];
const SYSCTLS_1_27: &[&str] = &["net.ipv4.ip_local_reserved_ports"];
const SYSCTLS_1_29: &[&str] = &[
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SYSCTLS_1_32: &[&str] = &["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"];
const SYSCTLS_1_37: &[&str] = &[
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

fn sysctls(pod: &PodView<'_>, allowed: &[&[&str]]) -> Option<Finding> {
    let mut bad = Vec::new();
    let mut fields = Vec::new();
    for (i, name) in pod_sc(pod).map(|s| s.sysctls.as_slice()).unwrap_or(&[]) {
        if !allowed.iter().any(|set| set.contains(name)) {
            bad.push(*name);
            fields.push(format!("{}.securityContext.sysctls[{i}].name", pod.base));
        }
    }
    if bad.is_empty() {
        return None;
    }
    Some(finding("forbidden sysctls", bad.join(", "), fields))
}

fn sysctls_1_0(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0])
}

fn sysctls_1_27(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27])
}

fn sysctls_1_29(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29])
}

fn sysctls_1_32(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(
        pod,
        &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29, SYSCTLS_1_32],
    )
}

fn sysctls_1_37(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(
        pod,
        &[
            SYSCTLS_1_0,
            SYSCTLS_1_27,
            SYSCTLS_1_29,
            SYSCTLS_1_32,
            SYSCTLS_1_37,
        ],
    )
}

fn windows_host_process_1_0(pod: &PodView<'_>) -> Option<Finding> {
    let mut setters: Vec<String> = Vec::new();
    let mut fields = Vec::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        if sc(c).and_then(|s| s.host_process) == Some(true) {
            bad.push(c.name);
            fields.push(format!(
                "{}.securityContext.windowsOptions.hostProcess",
                c.path
            ));
        }
    }
    if pod_sc(pod).and_then(|s| s.host_process) == Some(true) {
        setters.push("pod".into());
        fields.insert(
            0,
            format!("{}.securityContext.windowsOptions.hostProcess", pod.base),
        );
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    Some(finding(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
        fields,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_well_formed() {
        let baseline: Vec<&str> = CHECKS
            .iter()
            .filter(|c| c.level == Level::Baseline)
            .map(|c| c.id)
            .collect();
        let restricted: Vec<&str> = CHECKS
            .iter()
            .filter(|c| c.level == Level::Restricted)
            .map(|c| c.id)
            .collect();
        let mut sorted = baseline.clone();
        sorted.sort_unstable();
        assert_eq!(baseline, sorted, "baseline checks sorted by id");
        let mut sorted = restricted.clone();
        sorted.sort_unstable();
        assert_eq!(restricted, sorted, "restricted checks sorted by id");
        assert_eq!(baseline.len() + restricted.len(), CHECKS.len());
        assert_eq!(CHECKS.len(), 19);
        let mut max = 0;
        for c in CHECKS {
            assert!(!c.revisions.is_empty(), "{}", c.id);
            assert!(
                c.revisions.windows(2).all(|w| w[0].min < w[1].min),
                "{} revisions increasing",
                c.id
            );
            for r in c.revisions {
                max = max.max(r.min);
                for o in r.overrides {
                    assert!(baseline.contains(o), "{} overrides unknown {o}", c.id);
                }
            }
        }
        assert_eq!(
            max,
            crate::MAX_VERSION_MINOR,
            "MAX_VERSION_MINOR is the newest revision"
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_quote("\u{1}"), r#""\x01""#);
    }
}
