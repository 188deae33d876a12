//! The injector: a Pod (or any object holding a pod template) in, the same object with
//! runtimed injected out, as `ADMISSION.md` ("Injection") describes. Pure: no I/O.
//!
//! It works on JSON values rather than typed k8s-openapi structs on purpose: a typed
//! round trip drops fields the pinned k8s-openapi does not know (newer Kubernetes
//! fields), and the JSONPatch built from the diff would then remove them from the Pod.
//! [`inject_typed_pod`] is a thin typed wrapper for callers holding a `Pod`.
//!
//! Idempotence: what was injected, the user container's original `command`/`args` and
//! a hash of the configuration are recorded in the annotation
//! `kruntimes.io/injection-status`. Injecting an injected pod first strips exactly what
//! the annotation lists, then renders again, so `inject(inject(p)) == inject(p)` and a
//! configuration change (new image) re-renders cleanly.

use kruntimes_api::labels::{INJECTION_STATUS_ANNOTATION, RESERVED_CONTAINERS, RESERVED_VOLUMES};
use kruntimes_api::validation::names::check_dns1123_subdomain;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Annotation naming the container that runs Runs (the controller copies the Runtime's
/// `spec.container` into it); without it the first container is the target.
pub const CONTAINER_ANNOTATION: &str = "kruntimes.io/container";
/// Annotation holding the `sizeLimit` of the `workspace` emptyDir (the controller copies
/// the Runtime's `spec.workspace.sizeLimit` into it).
pub const WORKSPACE_SIZE_ANNOTATION: &str = "kruntimes.io/workspace-size-limit";
/// `sizeLimit` of the `workspace` emptyDir when the pod names none: large enough for
/// scripts, small git trees and artifacts, small enough that a runaway Run is evicted
/// before it fills the node's disk.
pub const DEFAULT_WORKSPACE_SIZE_LIMIT: &str = "1Gi";
/// `sizeLimit` of the in-memory `krt-bin` emptyDir: it holds one static binary (tens of
/// MiB); memory-backed so the copy counts against the pod's memory, not the node disk.
pub const KRT_BIN_SIZE_LIMIT: &str = "128Mi";
/// `sizeLimit` of the `krt-run` emptyDir: unix sockets and small state files only.
pub const KRT_RUN_SIZE_LIMIT: &str = "16Mi";
/// uid and gid of the injected containers: not root, the conventional "nonroot" id of
/// distroless images, so `runAsNonRoot` can be verified by the kubelet.
pub const RUNTIMED_UID: i64 = 65532;
/// Where the runtimed image holds its binary (contract with the image build).
pub const IMAGE_BINARY: &str = "/usr/local/bin/runtimed";
/// Mount path of `krt-bin` (read-only in the user container).
pub const BIN_DIR: &str = "/krt/bin";
/// The copied binary, as the user container sees it.
pub const AGENT_BINARY: &str = "/krt/bin/runtimed";
/// Mount path of `krt-run` (shared by sidecar and agent).
pub const RUN_DIR: &str = "/krt/run";
/// The agent's unix socket.
pub const AGENT_SOCKET: &str = "/krt/run/agent.sock";
/// The sidecar's API socket, also what its probes ask.
pub const SIDECAR_SOCKET: &str = "/krt/run/sidecar.sock";
/// Mount path of `workspace`.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Name of the init container that copies the binary.
pub const INSTALL_CONTAINER: &str = "krt-install";
/// Name of the native sidecar.
pub const SIDECAR_CONTAINER: &str = "runtimed";
/// Annotation naming the Secret (key [`TOKEN_SECRET_KEY`]) with the bearer token the
/// controller uses to call the sidecar over the network; the controller sets it on the
/// pods it renders. Without it the sidecar serves only its unix socket.
pub const TOKEN_SECRET_ANNOTATION: &str = "kruntimes.io/runtimed-token-secret";
/// Key of the token in that Secret.
pub const TOKEN_SECRET_KEY: &str = "token";
/// Volume holding the token, mounted into the sidecar only.
pub const TOKEN_VOLUME: &str = "krt-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/krt/token";
/// The token file the sidecar reads.
pub const TOKEN_FILE: &str = "/krt/token/token";
/// Port of the sidecar's network listener (gRPC behind the bearer token).
pub const RUNTIMED_GRPC_PORT: u16 = 9440;
/// Mode of the agent's socket. The agent runs as the user's uid and the sidecar as
/// [`RUNTIMED_UID`], so an owner-only socket would lock the sidecar out; who can reach
/// the socket at all is decided by who mounts `krt-run`: the target container and the
/// sidecar, nobody else.
pub const AGENT_SOCKET_MODE: &str = "0666";
/// Version of the injection-status annotation format.
pub const STATUS_VERSION: u32 = 1;

/// Repository of the runtimed image.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/kruntimes/runtimed";

/// The default runtimed image: this release's tag, never `latest`.
pub fn default_image() -> String {
    format!("{DEFAULT_IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// What the injector renders with. Its hash is recorded in every injected pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectConfig {
    image: String,
    default_workspace_size_limit: String,
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The image has no tag or digest, or the tag is `latest`.
    #[error(
        "runtimed image {0:?} must carry a version tag or a digest (never latest): the binary copied into pods must match the webhook"
    )]
    UnpinnedImage(String),
    /// The default workspace size limit is not a positive quantity.
    #[error("default workspace size limit {0:?} is not a positive quantity such as 1Gi")]
    SizeLimit(String),
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            image: default_image(),
            default_workspace_size_limit: DEFAULT_WORKSPACE_SIZE_LIMIT.to_owned(),
        }
    }
}

impl InjectConfig {
    /// A configuration with `image` (which must be pinned) and the default size limit.
    pub fn new(image: impl Into<String>) -> Result<Self, ConfigError> {
        let image = image.into();
        if !image_is_pinned(&image) {
            return Err(ConfigError::UnpinnedImage(image));
        }
        Ok(InjectConfig {
            image,
            ..InjectConfig::default()
        })
    }

    /// Sets the workspace `sizeLimit` used when a pod has no annotation.
    pub fn with_default_workspace_size_limit(
        mut self,
        limit: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let limit = limit.into();
        if !positive_quantity(&limit) {
            return Err(ConfigError::SizeLimit(limit));
        }
        self.default_workspace_size_limit = limit;
        Ok(self)
    }

    /// The runtimed image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// `sha256:<hex>` of the configuration (its JSON form).
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex(&Sha256::digest(bytes)))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `repo:tag` (tag not `latest`) or `repo@sha256:...`.
fn image_is_pinned(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => !tag.is_empty() && tag != "latest",
        None => false,
    }
}

fn positive_quantity(q: &str) -> bool {
    kruntimes_api::quantity::parse_bytes(q).is_ok_and(|b| b > 0)
}

/// Why a pod is refused or cannot be injected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// `spec.os.name: windows`.
    #[error("spec.os.name: Forbidden: Windows pods cannot be injected: runtimed is a Linux binary")]
    Windows,
    /// `spec.hostNetwork: true`.
    #[error(
        "spec.hostNetwork: Forbidden: pods on the host network cannot be injected: the runtimed sidecar would serve its API on the node's network"
    )]
    HostNetwork,
    /// No containers.
    #[error("spec.containers: Required value: the pod has no container to run Runs in")]
    NoContainers,
    /// The annotation names a container that does not exist.
    #[error(
        "metadata.annotations[{CONTAINER_ANNOTATION}]: Not found: {0:?} is not a container of the pod"
    )]
    ContainerNotFound(String),
    /// A name or path the injector owns is already used.
    #[error("{field}: Forbidden: {value:?} is reserved for the injected runtimed")]
    Reserved {
        /// Field path of the conflicting entry.
        field: String,
        /// The conflicting name or path.
        value: String,
    },
    /// The workspace size annotation is not a positive quantity.
    #[error(
        "metadata.annotations[{WORKSPACE_SIZE_ANNOTATION}]: Invalid value: {0:?}: must be a positive quantity such as 1Gi"
    )]
    SizeLimit(String),
    /// The token Secret annotation is not a Secret name.
    #[error(
        "metadata.annotations[{TOKEN_SECRET_ANNOTATION}]: Invalid value: {name:?}: not a Secret name: {reason}"
    )]
    TokenSecret {
        /// The annotation's value.
        name: String,
        /// Why it is not a name.
        reason: String,
    },
    /// The injection-status annotation cannot be read.
    #[error(
        "metadata.annotations[{INJECTION_STATUS_ANNOTATION}]: Invalid value: not written by this injector: {0}"
    )]
    BadStatus(String),
    /// A field of the wrong JSON type.
    #[error("{0}: Invalid value: not the expected JSON type")]
    Malformed(String),
    /// The object holds no pod template ([`inject_object`]).
    #[error("{0}")]
    NoPodTemplate(String),
}

impl InjectError {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            InjectError::Windows => "windows",
            InjectError::HostNetwork => "host_network",
            InjectError::NoContainers => "no_containers",
            InjectError::ContainerNotFound(_) => "container_not_found",
            InjectError::Reserved { .. } => "reserved",
            InjectError::SizeLimit(_) => "size_limit",
            InjectError::TokenSecret { .. } => "token_secret",
            InjectError::BadStatus(_) => "bad_status",
            InjectError::Malformed(_) => "malformed",
            InjectError::NoPodTemplate(_) => "no_pod_template",
        }
    }
}

/// The content of the `kruntimes.io/injection-status` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionStatus {
    /// Format version ([`STATUS_VERSION`]).
    pub version: u32,
    /// [`InjectConfig::hash`] of the configuration that rendered the pod.
    pub config_hash: String,
    /// The user container that was turned into the agent.
    pub container: String,
    /// Names of the init containers added.
    pub init_containers: Vec<String>,
    /// Names of the volumes added.
    pub volumes: Vec<String>,
    /// Names of the volume mounts added to the user container.
    pub volume_mounts: Vec<String>,
    /// The user container's `command` before injection (absent: it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
    /// The user container's `args` before injection (absent: it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// Reads the injection status of a pod's metadata, if any.
pub fn injection_status(metadata: &Value) -> Result<Option<InjectionStatus>, InjectError> {
    match metadata
        .get("annotations")
        .and_then(|a| a.get(INJECTION_STATUS_ANNOTATION))
    {
        None => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| InjectError::BadStatus(e.to_string())),
        Some(_) => Err(InjectError::BadStatus("not a string".to_owned())),
    }
}

fn security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUNTIMED_UID,
        "runAsGroup": RUNTIMED_UID,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

fn install_container(config: &InjectConfig) -> Value {
    json!({
        "name": INSTALL_CONTAINER,
        "image": config.image,
        "command": [IMAGE_BINARY, "install", AGENT_BINARY],
        "volumeMounts": [{"name": "krt-bin", "mountPath": BIN_DIR}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"}
        },
        "securityContext": security_context()
    })
}

fn sidecar_container(config: &InjectConfig, token_secret: Option<&str>) -> Value {
    let mut command = vec![
        json!(IMAGE_BINARY),
        json!("sidecar"),
        json!("--listen"),
        json!(SIDECAR_SOCKET),
        json!("--agent-socket"),
        json!(AGENT_SOCKET),
    ];
    let mut mounts = vec![
        json!({"name": "krt-run", "mountPath": RUN_DIR}),
        json!({"name": "workspace", "mountPath": WORKSPACE_DIR, "readOnly": true}),
    ];
    let mut ports = Vec::new();
    if token_secret.is_some() {
        command.extend([
            json!("--grpc-bind-address"),
            json!(format!("0.0.0.0:{RUNTIMED_GRPC_PORT}")),
            json!("--token-file"),
            json!(TOKEN_FILE),
        ]);
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        ports.push(json!({"name": "runtimed-grpc", "containerPort": RUNTIMED_GRPC_PORT, "protocol": "TCP"}));
    }
    let mut sidecar = json!({
        "name": SIDECAR_CONTAINER,
        "image": config.image,
        "restartPolicy": "Always",
        "command": command,
        "volumeMounts": mounts,
        "startupProbe": {
            "exec": {"command": [IMAGE_BINARY, "probe", "startup", "--socket", SIDECAR_SOCKET]},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 30
        },
        "readinessProbe": {
            "exec": {"command": [IMAGE_BINARY, "probe", "ready", "--socket", SIDECAR_SOCKET]},
            "periodSeconds": 5,
            "timeoutSeconds": 1,
            "failureThreshold": 3
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "256Mi"}
        },
        "securityContext": security_context()
    });
    if !ports.is_empty()
        && let Some(map) = sidecar.as_object_mut()
    {
        map.insert("ports".to_owned(), Value::Array(ports));
    }
    sidecar
}

fn volumes(workspace_limit: &str, token_secret: Option<&str>) -> Vec<Value> {
    let mut volumes = vec![
        json!({"name": "krt-bin", "emptyDir": {"medium": "Memory", "sizeLimit": KRT_BIN_SIZE_LIMIT}}),
        json!({"name": "krt-run", "emptyDir": {"sizeLimit": KRT_RUN_SIZE_LIMIT}}),
        json!({"name": "workspace", "emptyDir": {"sizeLimit": workspace_limit}}),
    ];
    if let Some(secret) = token_secret {
        volumes.push(json!({
            "name": TOKEN_VOLUME,
            "secret": {
                "secretName": secret,
                "items": [{"key": TOKEN_SECRET_KEY, "path": TOKEN_SECRET_KEY}],
                // Readable by the sidecar's uid; only the sidecar mounts it.
                "defaultMode": 0o444
            }
        }));
    }
    volumes
}

fn target_mounts() -> [Value; 3] {
    [
        json!({"name": "krt-bin", "mountPath": BIN_DIR, "readOnly": true}),
        json!({"name": "krt-run", "mountPath": RUN_DIR}),
        json!({"name": "workspace", "mountPath": WORKSPACE_DIR}),
    ]
}

/// The agent's command. `workspace_limit_bytes` is the workspace emptyDir's sizeLimit:
/// the agent fails the Run that fills it (reason WorkspaceFull) before the kubelet
/// would evict the whole pod.
fn agent_command(workspace_limit_bytes: u64) -> Value {
    json!([
        AGENT_BINARY,
        "agent",
        "--socket",
        AGENT_SOCKET,
        "--workspace",
        WORKSPACE_DIR,
        "--socket-mode",
        AGENT_SOCKET_MODE,
        "--workspace-size-limit",
        workspace_limit_bytes.to_string()
    ])
}

/// Injects runtimed into a Pod (a JSON object with `metadata` and `spec`). Returns the
/// mutated pod; the input is not changed.
pub fn inject_pod(pod: &Value, config: &InjectConfig) -> Result<Value, InjectError> {
    let mut out = pod.clone();
    let map = out
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("<root>".to_owned()))?;
    inject_template(map, "", config)?;
    Ok(out)
}

/// Injects runtimed into a typed Pod.
pub fn inject_typed_pod(
    pod: &k8s_openapi::api::core::v1::Pod,
    config: &InjectConfig,
) -> Result<k8s_openapi::api::core::v1::Pod, InjectError> {
    let value = serde_json::to_value(pod).map_err(|e| InjectError::Malformed(e.to_string()))?;
    let injected = inject_pod(&value, config)?;
    serde_json::from_value(injected).map_err(|e| InjectError::Malformed(e.to_string()))
}

/// Injects runtimed into any object holding a pod template: Pod, PodTemplate,
/// ReplicationController, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob.
/// The injection-status annotation goes on the template's metadata.
pub fn inject_object(obj: &Value, config: &InjectConfig) -> Result<Value, InjectError> {
    let located = kruntimes_pss::locate_pod_spec(obj)
        .map_err(|e| InjectError::NoPodTemplate(e.to_string()))?;
    if obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("kruntimes.io/"))
    {
        return Err(InjectError::NoPodTemplate(
            "a Runtime is not injected: the webhook injects the pods the controller creates from it"
                .to_owned(),
        ));
    }
    let template_path = located
        .spec_path
        .strip_suffix("spec")
        .unwrap_or_default()
        .trim_end_matches('.');
    let mut out = obj.clone();
    let mut template = &mut out;
    for key in template_path.split('.').filter(|k| !k.is_empty()) {
        template = template
            .get_mut(key)
            .ok_or_else(|| InjectError::Malformed(template_path.to_owned()))?;
    }
    let map = template
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed(template_path.to_owned()))?;
    let prefix = if template_path.is_empty() {
        String::new()
    } else {
        format!("{template_path}.")
    };
    inject_template(map, &prefix, config)?;
    Ok(out)
}

/// Removes what a previous injection added (per its status annotation); a pod without
/// the annotation is returned unchanged.
pub fn strip_pod(pod: &Value) -> Result<Value, InjectError> {
    let mut out = pod.clone();
    let map = out
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed("<root>".to_owned()))?;
    strip_template(map, "")?;
    Ok(out)
}

/// The JSONPatch turning `original` into `mutated`, with `metadata.managedFields` left
/// out of both (it is the apiserver's, and a patch touching it would be rejected).
/// Takes both trees by value: they are stripped in place, never copied.
pub fn patch(mut original: Value, mut mutated: Value) -> json_patch::Patch {
    for tree in [&mut original, &mut mutated] {
        if let Some(meta) = tree.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    json_patch::diff(&original, &mutated)
}

fn array_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let entry = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if entry.is_null() {
        *entry = Value::Array(Vec::new());
    }
    entry
        .as_array_mut()
        .ok_or_else(|| InjectError::Malformed(format!("{path}{key}")))
}

fn object_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry
        .as_object_mut()
        .ok_or_else(|| InjectError::Malformed(format!("{path}{key}")))
}

/// Drops `key` when it holds an empty array or object.
fn drop_if_empty(map: &mut Map<String, Value>, key: &str) {
    let empty = match map.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        map.remove(key);
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// Strips a template (a map holding `metadata` and `spec`); `prefix` is its field path
/// followed by `.` (empty for a Pod).
fn strip_template(template: &mut Map<String, Value>, prefix: &str) -> Result<(), InjectError> {
    let Some(status) = template
        .get("metadata")
        .map(injection_status)
        .transpose()?
        .flatten()
    else {
        return Ok(());
    };
    if status.version != STATUS_VERSION {
        return Err(InjectError::BadStatus(format!(
            "version {} (expected {STATUS_VERSION})",
            status.version
        )));
    }
    let spec_path = format!("{prefix}spec.");
    let spec = object_mut(template, "spec", prefix)?;
    if spec.contains_key("initContainers") {
        let inits = array_mut(spec, "initContainers", &spec_path)?;
        inits
            .retain(|c| !name_of(c).is_some_and(|n| status.init_containers.iter().any(|s| s == n)));
        drop_if_empty(spec, "initContainers");
    }
    if spec.contains_key("volumes") {
        let vols = array_mut(spec, "volumes", &spec_path)?;
        vols.retain(|v| !name_of(v).is_some_and(|n| status.volumes.iter().any(|s| s == n)));
        drop_if_empty(spec, "volumes");
    }
    let containers = array_mut(spec, "containers", &spec_path)?;
    if let Some(target) = containers
        .iter_mut()
        .find(|c| name_of(c) == Some(status.container.as_str()))
        .and_then(Value::as_object_mut)
    {
        if target.contains_key("volumeMounts") {
            let mounts = array_mut(target, "volumeMounts", &spec_path)?;
            mounts.retain(|m| {
                !name_of(m).is_some_and(|n| status.volume_mounts.iter().any(|s| s == n))
            });
            drop_if_empty(target, "volumeMounts");
        }
        target.remove("command");
        target.remove("args");
        if let Some(command) = status.command {
            target.insert("command".to_owned(), command);
        }
        if let Some(args) = status.args {
            target.insert("args".to_owned(), args);
        }
    }
    let meta = object_mut(template, "metadata", prefix)?;
    let annotations = object_mut(meta, "annotations", &format!("{prefix}metadata."))?;
    annotations.remove(INJECTION_STATUS_ANNOTATION);
    drop_if_empty(meta, "annotations");
    Ok(())
}

fn inject_template(
    template: &mut Map<String, Value>,
    prefix: &str,
    config: &InjectConfig,
) -> Result<(), InjectError> {
    // Refusals come first, so an injected pod edited into a refused shape is refused too.
    {
        let spec = template
            .get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| InjectError::Malformed(format!("{prefix}spec")))?;
        if spec
            .get("os")
            .and_then(|o| o.get("name"))
            .and_then(Value::as_str)
            == Some("windows")
        {
            return Err(InjectError::Windows);
        }
        if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
            return Err(InjectError::HostNetwork);
        }
    }
    strip_template(template, prefix)?;

    let annotation = |key: &str| {
        template
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let wanted_container = annotation(CONTAINER_ANNOTATION);
    let workspace_limit = match annotation(WORKSPACE_SIZE_ANNOTATION) {
        Some(limit) if positive_quantity(&limit) => limit,
        Some(limit) => return Err(InjectError::SizeLimit(limit)),
        None => config.default_workspace_size_limit.clone(),
    };
    let workspace_limit_bytes = kruntimes_api::quantity::parse_bytes(&workspace_limit)
        .map_err(|_| InjectError::SizeLimit(workspace_limit.clone()))?;
    let token_secret = match annotation(TOKEN_SECRET_ANNOTATION) {
        Some(name) => match check_dns1123_subdomain(&name) {
            Ok(()) => Some(name),
            Err(reason) => return Err(InjectError::TokenSecret { name, reason }),
        },
        None => None,
    };

    let spec_path = format!("{prefix}spec.");
    let spec = object_mut(template, "spec", prefix)?;

    // Names the injector owns must be free.
    for (key, reserved) in [
        ("volumes", &RESERVED_VOLUMES[..]),
        ("initContainers", &RESERVED_CONTAINERS[..]),
        ("containers", &RESERVED_CONTAINERS[..]),
    ] {
        if let Some(items) = spec.get(key).and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                if let Some(name) = name_of(item).filter(|n| reserved.contains(n)) {
                    return Err(InjectError::Reserved {
                        field: format!("{spec_path}{key}[{i}].name"),
                        value: name.to_owned(),
                    });
                }
            }
        }
    }

    let containers = array_mut(spec, "containers", &spec_path)?;
    let index = match &wanted_container {
        Some(name) => containers
            .iter()
            .position(|c| name_of(c) == Some(name.as_str()))
            .ok_or_else(|| InjectError::ContainerNotFound(name.clone()))?,
        None if containers.is_empty() => return Err(InjectError::NoContainers),
        None => 0,
    };
    let target_path = format!("{spec_path}containers[{index}]");
    let target = containers
        .get_mut(index)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| InjectError::Malformed(target_path.clone()))?;
    let target_name = target
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| InjectError::Malformed(format!("{target_path}.name")))?
        .to_owned();
    let mounts = array_mut(target, "volumeMounts", &format!("{target_path}."))?;
    for (i, m) in mounts.iter().enumerate() {
        let path = m
            .get("mountPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = path.trim_end_matches('/');
        if [BIN_DIR, RUN_DIR, WORKSPACE_DIR, "/krt"]
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return Err(InjectError::Reserved {
                field: format!("{target_path}.volumeMounts[{i}].mountPath"),
                value: path.to_owned(),
            });
        }
    }
    mounts.extend(target_mounts());
    let command = target.remove("command");
    let args = target.remove("args");
    target.insert("command".to_owned(), agent_command(workspace_limit_bytes));

    let inits = array_mut(spec, "initContainers", &spec_path)?;
    inits.splice(
        0..0,
        [
            install_container(config),
            sidecar_container(config, token_secret.as_deref()),
        ],
    );
    let added = volumes(&workspace_limit, token_secret.as_deref());
    let added_names: Vec<String> = added
        .iter()
        .filter_map(name_of)
        .map(str::to_owned)
        .collect();
    array_mut(spec, "volumes", &spec_path)?.extend(added);

    let status = InjectionStatus {
        version: STATUS_VERSION,
        config_hash: config.hash(),
        container: target_name,
        init_containers: vec![INSTALL_CONTAINER.to_owned(), SIDECAR_CONTAINER.to_owned()],
        volumes: added_names,
        volume_mounts: ["krt-bin", "krt-run", "workspace"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        command,
        args,
    };
    let status =
        serde_json::to_string(&status).map_err(|e| InjectError::BadStatus(e.to_string()))?;
    let meta = object_mut(template, "metadata", prefix)?;
    object_mut(meta, "annotations", &format!("{prefix}metadata."))?.insert(
        INJECTION_STATUS_ANNOTATION.to_owned(),
        Value::String(status),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"kruntimes.io/runtime": "py"}},
            "spec": {
                "containers": [
                    {"name": "main", "image": "python:3.13", "command": ["python"], "args": ["-c", "1"]},
                    {"name": "other", "image": "busybox:1"}
                ]
            }
        })
    }

    #[test]
    fn pinned_images() {
        assert!(image_is_pinned("ghcr.io/kruntimes/runtimed:0.1.0"));
        assert!(image_is_pinned("localhost:5000/runtimed:1"));
        assert!(image_is_pinned("r@sha256:abc"));
        assert!(!image_is_pinned("localhost:5000/runtimed"));
        assert!(!image_is_pinned("runtimed:latest"));
        assert!(!image_is_pinned("runtimed"));
        assert!(InjectConfig::new("runtimed:latest").is_err());
        assert!(!default_image().ends_with(":latest"));
    }

    #[test]
    fn token_secret_annotation_opens_the_network_listener() {
        let plain = inject_pod(&pod(), &InjectConfig::default()).unwrap();
        let sidecar = &plain["spec"]["initContainers"][1];
        assert!(sidecar.get("ports").is_none());
        assert!(
            !sidecar["command"]
                .as_array()
                .unwrap()
                .contains(&json!("--grpc-bind-address"))
        );

        let mut with_token = pod();
        with_token["metadata"]["annotations"] =
            json!({TOKEN_SECRET_ANNOTATION: "py-runtimed-token"});
        let out = inject_pod(&with_token, &InjectConfig::default()).unwrap();
        let sidecar = &out["spec"]["initContainers"][1];
        let command: Vec<&str> = sidecar["command"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(command.ends_with(&[
            "--grpc-bind-address",
            "0.0.0.0:9440",
            "--token-file",
            TOKEN_FILE
        ]));
        assert_eq!(sidecar["ports"][0]["containerPort"], RUNTIMED_GRPC_PORT);
        assert!(
            sidecar["volumeMounts"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}))
        );
        let token_volume = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| name_of(v) == Some(TOKEN_VOLUME))
            .unwrap();
        assert_eq!(token_volume["secret"]["secretName"], "py-runtimed-token");
        // Only the sidecar sees the token.
        let target_mounts = out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap();
        assert!(
            target_mounts
                .iter()
                .all(|m| name_of(m) != Some(TOKEN_VOLUME))
        );
        // Re-injection strips the token volume and adds it once.
        let again = inject_pod(&out, &InjectConfig::default()).unwrap();
        assert_eq!(again, out);
        // Stripping restores the original pod.
        assert_eq!(strip_pod(&out).unwrap(), with_token);
    }

    #[test]
    fn token_secret_annotation_must_name_a_secret() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({TOKEN_SECRET_ANNOTATION: "Not_A_Name"});
        let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
        assert!(matches!(err, InjectError::TokenSecret { .. }));
        assert!(err.to_string().contains(TOKEN_SECRET_ANNOTATION), "{err}");
    }

    #[test]
    fn injects_the_documented_shape() {
        let out = inject_pod(&pod(), &InjectConfig::default()).unwrap();
        let spec = &out["spec"];
        let inits: Vec<&str> = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(name_of)
            .collect();
        assert_eq!(inits, ["krt-install", "runtimed"]);
        assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(spec["containers"][0]["command"][0], AGENT_BINARY);
        // The agent knows the workspace limit (1Gi by default), in bytes.
        let command = spec["containers"][0]["command"].as_array().unwrap();
        assert!(command.ends_with(&[json!("--workspace-size-limit"), json!("1073741824")]));
        assert!(spec["containers"][0].get("args").is_none());
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(spec["containers"][1], pod()["spec"]["containers"][1]);
        assert_eq!(spec["volumes"][0]["emptyDir"]["medium"], "Memory");
        assert_eq!(
            spec["volumes"][2]["emptyDir"]["sizeLimit"],
            DEFAULT_WORKSPACE_SIZE_LIMIT
        );
        for c in spec["initContainers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true);
            assert_ne!(sc["runAsUser"], 0);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["readOnlyRootFilesystem"], true);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
            assert!(sc["capabilities"].get("add").is_none());
        }
        let status = injection_status(&out["metadata"]).unwrap().unwrap();
        assert_eq!(status.container, "main");
        assert_eq!(status.command, Some(json!(["python"])));
        assert_eq!(status.config_hash, InjectConfig::default().hash());
    }

    #[test]
    fn injection_is_idempotent() {
        let config = InjectConfig::default();
        let once = inject_pod(&pod(), &config).unwrap();
        let twice = inject_pod(&once, &config).unwrap();
        assert_eq!(once, twice);
        assert!(patch(once, twice).0.is_empty());
    }

    #[test]
    fn strip_restores_the_original() {
        let once = inject_pod(&pod(), &InjectConfig::default()).unwrap();
        assert_eq!(strip_pod(&once).unwrap(), pod());
    }

    #[test]
    fn a_changed_config_re_renders() {
        let old = InjectConfig::new("example.com/runtimed:0.0.9").unwrap();
        let new = InjectConfig::new("example.com/runtimed:0.1.0")
            .unwrap()
            .with_default_workspace_size_limit("2Gi")
            .unwrap();
        let injected_old = inject_pod(&pod(), &old).unwrap();
        let re = inject_pod(&injected_old, &new).unwrap();
        assert_eq!(re, inject_pod(&pod(), &new).unwrap());
        assert_eq!(re["spec"]["initContainers"].as_array().unwrap().len(), 2);
        assert_eq!(
            re["spec"]["initContainers"][0]["image"],
            "example.com/runtimed:0.1.0"
        );
        assert_eq!(re["spec"]["volumes"][2]["emptyDir"]["sizeLimit"], "2Gi");
        assert_ne!(old.hash(), new.hash());
    }

    #[test]
    fn annotations_choose_container_and_size() {
        let mut p = pod();
        p["metadata"]["annotations"] =
            json!({CONTAINER_ANNOTATION: "other", WORKSPACE_SIZE_ANNOTATION: "5Gi"});
        let out = inject_pod(&p, &InjectConfig::default()).unwrap();
        assert_eq!(out["spec"]["containers"][0], p["spec"]["containers"][0]);
        assert_eq!(out["spec"]["containers"][1]["command"][0], AGENT_BINARY);
        assert_eq!(out["spec"]["volumes"][2]["emptyDir"]["sizeLimit"], "5Gi");
        assert_eq!(strip_pod(&out).unwrap(), p);
    }

    #[test]
    fn refusals() {
        let config = InjectConfig::default();
        let mut p = pod();
        p["spec"]["os"] = json!({"name": "windows"});
        assert_eq!(inject_pod(&p, &config), Err(InjectError::Windows));
        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(inject_pod(&p, &config), Err(InjectError::HostNetwork));
        let mut p = pod();
        p["metadata"]["annotations"] = json!({CONTAINER_ANNOTATION: "nope"});
        assert_eq!(
            inject_pod(&p, &config),
            Err(InjectError::ContainerNotFound("nope".into()))
        );
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "workspace", "emptyDir": {}}]);
        assert!(matches!(
            inject_pod(&p, &config),
            Err(InjectError::Reserved { .. })
        ));
        let mut p = pod();
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "x", "mountPath": "/workspace/"}]);
        assert!(matches!(
            inject_pod(&p, &config),
            Err(InjectError::Reserved { .. })
        ));
        let mut p = pod();
        p["metadata"]["annotations"] = json!({WORKSPACE_SIZE_ANNOTATION: "-1Gi"});
        assert!(matches!(
            inject_pod(&p, &config),
            Err(InjectError::SizeLimit(_))
        ));
        let mut p = pod();
        p["metadata"]["annotations"] = json!({INJECTION_STATUS_ANNOTATION: "{"});
        assert!(matches!(
            inject_pod(&p, &config),
            Err(InjectError::BadStatus(_))
        ));
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        assert_eq!(inject_pod(&p, &config), Err(InjectError::NoContainers));
        let mut p = pod();
        p["spec"]["containers"] = json!("x");
        assert!(matches!(
            inject_pod(&p, &config),
            Err(InjectError::Malformed(_))
        ));
        // an injected pod turned into a refused shape is refused too
        let mut p = inject_pod(&pod(), &config).unwrap();
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(inject_pod(&p, &config), Err(InjectError::HostNetwork));
    }

    #[test]
    fn workloads_get_their_template_injected() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": pod()["spec"].clone()}}
        });
        let out = inject_object(&deploy, &InjectConfig::default()).unwrap();
        let tpl = &out["spec"]["template"];
        assert!(tpl["metadata"]["annotations"][INJECTION_STATUS_ANNOTATION].is_string());
        assert_eq!(tpl["spec"]["initContainers"][1]["name"], "runtimed");
        assert_eq!(inject_object(&out, &InjectConfig::default()).unwrap(), out);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert!(matches!(
            inject_object(&cm, &InjectConfig::default()),
            Err(InjectError::NoPodTemplate(_))
        ));
    }

    #[test]
    fn the_patch_leaves_managed_fields_alone() {
        let mut p = pod();
        p["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
        let out = inject_pod(&p, &InjectConfig::default()).unwrap();
        let patch = patch(p.clone(), out.clone());
        assert!(
            !serde_json::to_string(&patch)
                .unwrap()
                .contains("managedFields")
        );
        let mut applied = p.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied, out);
    }

    #[test]
    fn typed_pods_work() {
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod()).unwrap();
        let out = inject_typed_pod(&typed, &InjectConfig::default()).unwrap();
        assert_eq!(out.spec.unwrap().init_containers.unwrap().len(), 2);
    }
}
