//! A Pod's containers as the node runs them: the command line, environment, identity,
//! capabilities, mounts and probes, read from the spec. Everything the node does not
//! emulate is refused here, by field, before anything is started.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe, SecurityContext};

use crate::cluster::contract::NodeError;

/// The `PATH` of every "image": the host's filesystem stands in for images.
pub(super) const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a container is to the Pod's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// An init container run to completion.
    Init,
    /// An init container with `restartPolicy: Always`: started and kept running.
    Sidecar,
    /// A container of `spec.containers`.
    Regular,
}

/// What a probe does.
#[derive(Clone, Debug)]
pub(super) enum ProbeAction {
    /// Runs the command in the container: success is exit 0.
    Exec(Vec<String>),
    /// `GET http://POD_IP:port/path` from the node, as the kubelet does: success is a
    /// status from 200 to 399.
    HttpGet { port: u16, path: String },
}

/// A probe with the kubelet's defaults filled in.
#[derive(Clone, Debug)]
pub(super) struct ProbePlan {
    pub(super) action: ProbeAction,
    pub(super) initial_delay_secs: u64,
    pub(super) period_secs: u64,
    pub(super) timeout_secs: u64,
    pub(super) failure_threshold: u32,
    pub(super) success_threshold: u32,
}

/// One volume mount of a container.
#[derive(Clone, Debug)]
pub(super) struct MountPlan {
    pub(super) volume: String,
    pub(super) mount_path: String,
    pub(super) sub_path: Option<String>,
    pub(super) read_only: bool,
}

/// One container, ready to be started (but for its environment, resolved at start).
#[derive(Clone, Debug)]
pub(super) struct ContainerPlan {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) kind: Kind,
    pub(super) spec: Container,
    pub(super) working_dir: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) groups: Vec<u32>,
    pub(super) no_new_privs: bool,
    /// Capabilities kept in the bounding set (setpriv names: `chown`, `all`, ...).
    pub(super) capabilities: Vec<String>,
    pub(super) read_only_root: bool,
    pub(super) mounts: Vec<MountPlan>,
    pub(super) startup: Option<ProbePlan>,
    pub(super) readiness: Option<ProbePlan>,
}

/// The capabilities a container runtime grants by default (containerd's list).
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "net_bind_service",
    "net_raw",
    "sys_chroot",
    "mknod",
    "audit_write",
    "setfcap",
];

pub(super) fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn unsupported(pod: &Pod, reason: impl Into<String>) -> NodeError {
    NodeError::Unsupported {
        pod: pod_key(pod),
        reason: reason.into(),
    }
}

/// Refuses the pod-level fields the node does not emulate.
fn check_pod_fields(pod: &Pod, spec: &PodSpec) -> Result<(), NodeError> {
    let refused = [
        ("spec.hostNetwork", spec.host_network == Some(true)),
        ("spec.hostPID", spec.host_pid == Some(true)),
        ("spec.hostIPC", spec.host_ipc == Some(true)),
        (
            "spec.shareProcessNamespace",
            spec.share_process_namespace == Some(true),
        ),
        (
            "spec.ephemeralContainers",
            spec.ephemeral_containers
                .as_ref()
                .is_some_and(|e| !e.is_empty()),
        ),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(unsupported(
            pod,
            format!("{field}: not supported by the emulated node"),
        ));
    }
    if spec.containers.is_empty() {
        return Err(unsupported(pod, "spec.containers: Required value"));
    }
    Ok(())
}

/// Image repository (no tag or digest) -> its entrypoint.
pub(super) type Entrypoints = BTreeMap<String, Vec<String>>;

/// The repository of image reference `image`: without its `@digest` and `:tag`.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Reads every container of `pod`: init containers in order, then containers; a
/// container without `command` runs its image's entrypoint from `entrypoints`.
pub(super) fn plan_pod(
    pod: &Pod,
    entrypoints: &Entrypoints,
) -> Result<Vec<ContainerPlan>, NodeError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| unsupported(pod, "spec: Required value"))?;
    check_pod_fields(pod, spec)?;
    for (field, value) in [
        ("metadata.name", &pod.metadata.name),
        ("metadata.uid", &pod.metadata.uid),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            return Err(unsupported(
                pod,
                format!("{field}: Required value: a pod bound to a node has one"),
            ));
        }
    }
    let volume_names: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut plans = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let kind = if c.restart_policy.as_deref() == Some("Always") {
            Kind::Sidecar
        } else {
            Kind::Init
        };
        let field = format!("spec.initContainers[{i}]");
        let c = &with_entrypoint(c, entrypoints);
        plans.push(plan_container(pod, spec, c, kind, &field, &volume_names)?);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let field = format!("spec.containers[{i}]");
        let c = &with_entrypoint(c, entrypoints);
        plans.push(plan_container(
            pod,
            spec,
            c,
            Kind::Regular,
            &field,
            &volume_names,
        )?);
    }
    Ok(plans)
}

/// `c` with its image's entrypoint as `command` when it has none and the image is known.
fn with_entrypoint(c: &Container, entrypoints: &Entrypoints) -> Container {
    let mut c = c.clone();
    if c.command.as_ref().is_none_or(Vec::is_empty)
        && let Some(entrypoint) =
            entrypoints.get(repository(c.image.as_deref().unwrap_or_default()))
    {
        c.command = Some(entrypoint.clone());
    }
    c
}

fn plan_container(
    pod: &Pod,
    spec: &PodSpec,
    c: &Container,
    kind: Kind,
    field: &str,
    volume_names: &[&str],
) -> Result<ContainerPlan, NodeError> {
    check_container_fields(pod, c, field)?;
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let uid = id_field(
        pod,
        sc.run_as_user.or(pod_sc.run_as_user),
        field,
        "runAsUser",
    )?;
    let gid = id_field(
        pod,
        sc.run_as_group.or(pod_sc.run_as_group),
        field,
        "runAsGroup",
    )?;
    if uid == 0 && sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) {
        return Err(unsupported(
            pod,
            format!(
                "{field}.securityContext.runAsNonRoot: container {:?} would run as uid 0 (the host image has no non-root default user)",
                c.name
            ),
        ));
    }
    let mut groups = Vec::new();
    for (i, g) in pod_sc
        .fs_group
        .iter()
        .chain(pod_sc.supplemental_groups.iter().flatten())
        .enumerate()
    {
        let g = id_field(
            pod,
            Some(*g),
            "spec.securityContext",
            &format!("supplementalGroups[{i}]"),
        )?;
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut mounts = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        mounts.push(plan_mount(
            pod,
            m,
            &format!("{field}.volumeMounts[{i}]"),
            volume_names,
        )?);
    }
    Ok(ContainerPlan {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        kind,
        spec: c.clone(),
        working_dir: c.working_dir.clone().unwrap_or_else(|| "/".to_owned()),
        uid,
        gid,
        groups,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        capabilities: capabilities(&sc),
        read_only_root: sc.read_only_root_filesystem == Some(true),
        mounts,
        startup: probe(
            pod,
            c,
            c.startup_probe.as_ref(),
            &format!("{field}.startupProbe"),
        )?,
        readiness: probe(
            pod,
            c,
            c.readiness_probe.as_ref(),
            &format!("{field}.readinessProbe"),
        )?,
    })
}

fn check_container_fields(pod: &Pod, c: &Container, field: &str) -> Result<(), NodeError> {
    if c.command.as_ref().is_none_or(Vec::is_empty) {
        return Err(unsupported(
            pod,
            format!(
                "{field}.command: container {:?} has none, and the emulated node has no image entrypoint to fall back on (the host filesystem stands in for image {:?})",
                c.name,
                c.image.as_deref().unwrap_or_default()
            ),
        ));
    }
    let refused = [
        (
            "envFrom",
            c.env_from.as_ref().is_some_and(|e| !e.is_empty()),
        ),
        ("lifecycle", c.lifecycle.is_some()),
        (
            "securityContext.privileged",
            c.security_context.as_ref().and_then(|s| s.privileged) == Some(true),
        ),
    ];
    if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(unsupported(
            pod,
            format!("{field}.{name}: not supported by the emulated node"),
        ));
    }
    Ok(())
}

fn id_field(pod: &Pod, id: Option<i64>, field: &str, name: &str) -> Result<u32, NodeError> {
    u32::try_from(id.unwrap_or(0))
        .map_err(|_| unsupported(pod, format!("{field}.{name}: Invalid value: not a uid/gid")))
}

fn capabilities(sc: &SecurityContext) -> Vec<String> {
    let name = |c: &String| {
        let lower = c.to_ascii_lowercase();
        lower.strip_prefix("cap_").unwrap_or(&lower).to_owned()
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let dropped: Vec<String> = caps.drop.iter().flatten().map(name).collect();
    let mut kept: Vec<String> = if dropped.iter().any(|d| d == "all") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .filter(|c| !dropped.contains(c))
            .collect()
    };
    for add in caps.add.iter().flatten().map(name) {
        if !kept.contains(&add) {
            kept.push(add);
        }
    }
    kept
}

fn plan_mount(
    pod: &Pod,
    m: &k8s_openapi::api::core::v1::VolumeMount,
    field: &str,
    volume_names: &[&str],
) -> Result<MountPlan, NodeError> {
    if !volume_names.contains(&m.name.as_str()) {
        return Err(unsupported(
            pod,
            format!("{field}.name: Not found: {:?}", m.name),
        ));
    }
    if !m.mount_path.starts_with('/') || m.mount_path.split('/').any(|p| p == "..") {
        return Err(unsupported(
            pod,
            format!(
                "{field}.mountPath: Invalid value: {:?}: must be an absolute path without '..'",
                m.mount_path
            ),
        ));
    }
    if m.sub_path_expr.is_some() {
        return Err(unsupported(
            pod,
            format!("{field}.subPathExpr: not supported by the emulated node"),
        ));
    }
    let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
    if let Some(sub) = &sub_path
        && (sub.starts_with('/') || sub.split('/').any(|p| p == ".."))
    {
        return Err(unsupported(
            pod,
            format!(
                "{field}.subPath: Invalid value: {sub:?}: must be a relative path without '..'"
            ),
        ));
    }
    Ok(MountPlan {
        volume: m.name.clone(),
        mount_path: m.mount_path.clone(),
        sub_path,
        read_only: m.read_only == Some(true),
    })
}

fn probe(
    pod: &Pod,
    c: &Container,
    probe: Option<&Probe>,
    field: &str,
) -> Result<Option<ProbePlan>, NodeError> {
    let Some(probe) = probe else {
        return Ok(None);
    };
    let action = if let Some(http) = &probe.http_get {
        http_get(pod, c, http, field)?
    } else {
        let command = probe
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                unsupported(
                    pod,
                    format!(
                        "{field}: only exec probes with a command and httpGet probes are supported by the emulated node"
                    ),
                )
            })?;
        ProbeAction::Exec(command)
    };
    let positive =
        |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0);
    Ok(Some(ProbePlan {
        action,
        initial_delay_secs: positive(probe.initial_delay_seconds, 0),
        period_secs: positive(probe.period_seconds, 10).max(1),
        timeout_secs: positive(probe.timeout_seconds, 1).max(1),
        failure_threshold: u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
        success_threshold: u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1),
    }))
}

/// An `httpGet` probe: plain HTTP to the pod's IP, its port a number or the name of
/// one of the container's ports.
fn http_get(
    pod: &Pod,
    c: &Container,
    http: &k8s_openapi::api::core::v1::HTTPGetAction,
    field: &str,
) -> Result<ProbeAction, NodeError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    if http.scheme.as_deref().is_some_and(|s| s != "HTTP") || http.host.is_some() {
        return Err(unsupported(
            pod,
            format!(
                "{field}.httpGet: only scheme HTTP to the pod's IP is supported by the emulated node"
            ),
        ));
    }
    let port = match &http.port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
    .filter(|p| *p != 0)
    .ok_or_else(|| {
        unsupported(
            pod,
            format!("{field}.httpGet.port: Invalid value: {:?}: not a port number or the name of a port of the container", http.port),
        )
    })?;
    let path = http.path.clone().unwrap_or_else(|| "/".to_owned());
    Ok(ProbeAction::HttpGet { port, path })
}

/// Kubernetes' `$(VAR)` expansion in command, args and env values: a defined variable is
/// replaced, an undefined reference kept as written, `$$` is a literal `$`.
pub(super) fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[pos..pos + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_repository_is_its_name_without_tag_or_digest() {
        assert_eq!(
            repository("ghcr.io/kruntimes/webhook:0.1.0"),
            "ghcr.io/kruntimes/webhook"
        );
        assert_eq!(
            repository("ghcr.io/kruntimes/webhook@sha256:ab"),
            "ghcr.io/kruntimes/webhook"
        );
        assert_eq!(
            repository("localhost:5000/webhook"),
            "localhost:5000/webhook"
        );
    }

    fn pod_of(container: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"containers": [container]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn a_container_without_command_runs_its_known_images_entrypoint() {
        let entrypoints = Entrypoints::from([(
            "ghcr.io/kruntimes/webhook".to_owned(),
            vec!["/usr/local/bin/kruntimes-webhook".to_owned()],
        )]);
        let pod = pod_of(serde_json::json!({"name": "w",
            "image": "ghcr.io/kruntimes/webhook:0.1.0", "args": ["--x"]}));
        let plans = plan_pod(&pod, &entrypoints).map_err(|e| e.to_string());
        let command = plans.map(|p| p[0].spec.command.clone());
        assert_eq!(
            command,
            Ok(Some(vec!["/usr/local/bin/kruntimes-webhook".to_owned()]))
        );
        let unknown = pod_of(serde_json::json!({"name": "w", "image": "debian:trixie"}));
        let refused = plan_pod(&unknown, &entrypoints).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("spec.containers[0].command")),
            "{:?}",
            refused.map(|_| ())
        );
    }

    #[test]
    fn an_http_probe_goes_to_the_named_port_and_https_is_refused() {
        let probe = |port: serde_json::Value, scheme: &str| {
            let pod = pod_of(serde_json::json!({"name": "c", "command": ["x"],
                "ports": [{"name": "admin", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": port, "scheme": scheme}}}));
            plan_pod(&pod, &Entrypoints::new())
                .map(|p| p[0].readiness.clone().map(|r| r.action))
                .map_err(|e| e.to_string())
        };
        assert!(matches!(
            probe(serde_json::json!("admin"), "HTTP"),
            Ok(Some(ProbeAction::HttpGet { port: 8080, ref path })) if path == "/readyz"
        ));
        assert!(matches!(
            probe(serde_json::json!(9000), "HTTP"),
            Ok(Some(ProbeAction::HttpGet { port: 9000, .. }))
        ));
        let unknown = probe(serde_json::json!("grpc"), "HTTP");
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.contains("readinessProbe.httpGet.port")),
            "{unknown:?}"
        );
        let https = probe(serde_json::json!("admin"), "HTTPS");
        assert!(
            https
                .as_ref()
                .is_err_and(|e| e.contains("only scheme HTTP")),
            "{https:?}"
        );
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &env), "$(A");
    }
}
