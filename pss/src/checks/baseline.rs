//! Baseline checks: privileged, host namespaces, ports, paths, probes and lifecycle
//! hooks, capabilities beyond the default set, AppArmor, SELinux, `/proc` mount and
//! sysctls (upstream's `check_*.go` of the baseline level).

use super::*;

pub(super) fn privileged_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn app_armor_profile_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn capabilities_baseline_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn host_namespaces_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn host_path_volumes_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn host_ports_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn host_probes_and_host_lifecycle_1_34(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn proc_mount_1_0(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn proc_mount_1_35_baseline(pod: &PodView<'_>) -> Option<Finding> {
    // User-namespaced pods may use any procMount at baseline from v1.35.
    if pod.user_namespaced() {
        return None;
    }
    proc_mount_1_0(pod)
}

const SELINUX_TYPES_1_0: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];
const SELINUX_TYPES_1_31: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

pub(super) fn se_linux_options<'a>(pod: &PodView<'a>, allowed_types: &[&str]) -> Option<Finding> {
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

pub(super) fn se_linux_options_1_0(pod: &PodView<'_>) -> Option<Finding> {
    se_linux_options(pod, SELINUX_TYPES_1_0)
}

pub(super) fn se_linux_options_1_31(pod: &PodView<'_>) -> Option<Finding> {
    se_linux_options(pod, SELINUX_TYPES_1_31)
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

pub(super) fn sysctls(pod: &PodView<'_>, allowed: &[&[&str]]) -> Option<Finding> {
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

pub(super) fn sysctls_1_0(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0])
}

pub(super) fn sysctls_1_27(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27])
}

pub(super) fn sysctls_1_29(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29])
}

pub(super) fn sysctls_1_32(pod: &PodView<'_>) -> Option<Finding> {
    sysctls(
        pod,
        &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29, SYSCTLS_1_32],
    )
}

pub(super) fn sysctls_1_37(pod: &PodView<'_>) -> Option<Finding> {
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

pub(super) fn windows_host_process_1_0(pod: &PodView<'_>) -> Option<Finding> {
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
