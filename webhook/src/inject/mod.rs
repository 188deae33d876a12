//! The injector: a Pod (or any object holding a pod template) in, the same object with
//! runtimed injected out, as `docs/webhook.md` ("Injection") describes. Pure: no I/O.
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
//! configuration change (new image) re-renders cleanly. The annotation is written by
//! whoever writes the pod, so it is checked against the pod before it is trusted
//! ([`status`]).

use kruntimes_api::labels::{
    ARTIFACT_ALLOW_HTTP_ANNOTATION, ARTIFACT_CREDENTIALS_SECRET_ANNOTATION, CONTAINER_ANNOTATION,
    GROUP, INJECTION_STATUS_ANNOTATION, INSTALL_CONTAINER, SIDECAR_CONTAINER,
    TOKEN_SECRET_ANNOTATION, WORKSPACE_SIZE_ANNOTATION, is_reserved_container, is_reserved_volume,
};
use kruntimes_api::validation::names::check_dns1123_subdomain;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

#[cfg(test)]
mod artifact_tests;
mod render;
mod status;
#[cfg(test)]
mod tests;

use status::strip_template;
pub use status::{InjectionStatus, injection_status};

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
/// Everything the injector mounts lives under this directory; a pod may not mount
/// anything there itself.
pub const KRT_DIR: &str = "/krt";
pub use kruntimes_api::labels::{
    RUNTIMED_GRPC_PORT, TLS_CERT_SECRET_KEY, TLS_KEY_SECRET_KEY, TOKEN_SECRET_KEY,
};
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/krt/token";
/// The token file the sidecar reads.
pub const TOKEN_FILE: &str = "/krt/token/token";
/// The certificate the sidecar's network listener serves.
pub const TLS_CERT_FILE: &str = "/krt/token/tls.crt";
/// Its private key.
pub const TLS_KEY_FILE: &str = "/krt/token/tls.key";
/// Where the artifact store's credentials Secret is mounted in the sidecar: the
/// `--s3-credentials-dir` it reads `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from.
pub const ARTIFACT_CREDENTIALS_DIR: &str = "/krt/s3-credentials";
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
    /// The artifact credentials Secret annotation is not a Secret name.
    #[error(
        "metadata.annotations[{ARTIFACT_CREDENTIALS_SECRET_ANNOTATION}]: Invalid value: {name:?}: not a Secret name: {reason}"
    )]
    CredentialsSecret {
        /// The annotation's value.
        name: String,
        /// Why it is not a name.
        reason: String,
    },
    /// The allow-http annotation is neither `"true"` nor `"false"`.
    #[error(
        "metadata.annotations[{ARTIFACT_ALLOW_HTTP_ANNOTATION}]: Invalid value: {0:?}: must be \"true\" or \"false\""
    )]
    AllowHttp(String),
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
            InjectError::CredentialsSecret { .. } => "credentials_secret",
            InjectError::AllowHttp(_) => "allow_http",
            InjectError::BadStatus(_) => "bad_status",
            InjectError::Malformed(_) => "malformed",
            InjectError::NoPodTemplate(_) => "no_pod_template",
        }
    }
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
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(group, _)| group == GROUP)
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

pub(super) fn array_mut<'a>(
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

pub(super) fn object_mut<'a>(
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
pub(super) fn drop_if_empty(map: &mut Map<String, Value>, key: &str) {
    let empty = match map.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        map.remove(key);
    }
}

pub(super) fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// What a template's annotations (or the configuration's defaults) ask of the injection.
#[derive(Debug)]
struct Settings {
    /// The container to turn into the agent (`None`: the first).
    container: Option<String>,
    /// The workspace emptyDir's `sizeLimit`, as written.
    workspace_limit: String,
    /// The same, in bytes.
    workspace_limit_bytes: u64,
    /// The Secret with the sidecar's bearer token (`None`: no network listener).
    token_secret: Option<String>,
    /// The Secret with the artifact store's credentials (`None`: the sidecar's
    /// environment).
    credentials_secret: Option<String>,
    /// Whether the sidecar may upload artifacts over plain http to any host.
    allow_http: bool,
}

impl Settings {
    fn read(template: &Map<String, Value>, config: &InjectConfig) -> Result<Self, InjectError> {
        let annotation = |key: &str| {
            template
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
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
        let credentials_secret = match annotation(ARTIFACT_CREDENTIALS_SECRET_ANNOTATION) {
            Some(name) => match check_dns1123_subdomain(&name) {
                Ok(()) => Some(name),
                Err(reason) => return Err(InjectError::CredentialsSecret { name, reason }),
            },
            None => None,
        };
        let allow_http = match annotation(ARTIFACT_ALLOW_HTTP_ANNOTATION).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(InjectError::AllowHttp(other.to_owned())),
        };
        Ok(Settings {
            container: annotation(CONTAINER_ANNOTATION),
            workspace_limit,
            workspace_limit_bytes,
            token_secret,
            credentials_secret,
            allow_http,
        })
    }
}

/// Refuses what runtimed cannot run in: Windows pods and pods on the host network.
fn refuse_unsupported(template: &Map<String, Value>, prefix: &str) -> Result<(), InjectError> {
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
    Ok(())
}

/// Refuses a pod spec that already uses a volume or container name the injector owns:
/// the predicates of `kruntimes_api::labels`, which Runtime validation uses too.
fn refuse_reserved_names(spec: &Map<String, Value>, spec_path: &str) -> Result<(), InjectError> {
    type IsReserved = fn(&str) -> bool;
    let lists: [(&str, IsReserved); 3] = [
        ("volumes", is_reserved_volume),
        ("initContainers", is_reserved_container),
        ("containers", is_reserved_container),
    ];
    for (key, reserved) in lists {
        if let Some(items) = spec.get(key).and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                if let Some(name) = name_of(item).filter(|n| reserved(n)) {
                    return Err(InjectError::Reserved {
                        field: format!("{spec_path}{key}[{i}].name"),
                        value: name.to_owned(),
                    });
                }
                refuse_reserved_mounts(item, &format!("{spec_path}{key}[{i}]."))?;
            }
        }
    }
    Ok(())
}

/// Refuses a container mounting a volume the injector adds: the injected volumes
/// (the token, the artifact credentials) belong to the containers the injector mounts
/// them into, and a mount by name would otherwise reach them once they exist.
fn refuse_reserved_mounts(container: &Value, path: &str) -> Result<(), InjectError> {
    let mounts = container.get("volumeMounts").and_then(Value::as_array);
    for (i, mount) in mounts.into_iter().flatten().enumerate() {
        if let Some(name) = name_of(mount).filter(|n| is_reserved_volume(n)) {
            return Err(InjectError::Reserved {
                field: format!("{path}volumeMounts[{i}].name"),
                value: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// What turning the user container into the agent replaced.
#[derive(Debug)]
struct Replaced {
    container: String,
    command: Option<Value>,
    args: Option<Value>,
}

/// Turns the target container into the agent: the injected mounts (its own must stay
/// out of the injector's directories) and the agent's command in place of its own.
fn turn_into_agent(
    spec: &mut Map<String, Value>,
    spec_path: &str,
    settings: &Settings,
) -> Result<Replaced, InjectError> {
    let containers = array_mut(spec, "containers", spec_path)?;
    let index = match &settings.container {
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
    let container = target
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
        if [BIN_DIR, RUN_DIR, WORKSPACE_DIR, KRT_DIR]
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return Err(InjectError::Reserved {
                field: format!("{target_path}.volumeMounts[{i}].mountPath"),
                value: path.to_owned(),
            });
        }
    }
    mounts.extend(render::target_mounts());
    let command = target.remove("command");
    let args = target.remove("args");
    target.insert(
        "command".to_owned(),
        render::agent_command(settings.workspace_limit_bytes),
    );
    Ok(Replaced {
        container,
        command,
        args,
    })
}

/// Adds the install init container and the sidecar (first, so they start before the
/// user's init containers) and the volumes; returns the names of the volumes added.
fn add_runtimed(
    spec: &mut Map<String, Value>,
    spec_path: &str,
    config: &InjectConfig,
    settings: &Settings,
) -> Result<Vec<String>, InjectError> {
    let inits = array_mut(spec, "initContainers", spec_path)?;
    inits.splice(
        0..0,
        [
            render::install_container(config),
            render::sidecar_container(config, settings),
        ],
    );
    let added = render::volumes(settings);
    let names = added
        .iter()
        .filter_map(name_of)
        .map(str::to_owned)
        .collect();
    array_mut(spec, "volumes", spec_path)?.extend(added);
    Ok(names)
}

/// Injects a template (a map holding `metadata` and `spec`); `prefix` is its field path
/// followed by `.` (empty for a Pod). Refusals come first, so an injected pod edited
/// into a refused shape is refused too; then what a previous injection added is
/// stripped, and runtimed rendered again.
fn inject_template(
    template: &mut Map<String, Value>,
    prefix: &str,
    config: &InjectConfig,
) -> Result<(), InjectError> {
    refuse_unsupported(template, prefix)?;
    strip_template(template, prefix)?;
    let settings = Settings::read(template, config)?;
    let spec_path = format!("{prefix}spec.");
    let spec = object_mut(template, "spec", prefix)?;
    refuse_reserved_names(spec, &spec_path)?;
    let replaced = turn_into_agent(spec, &spec_path, &settings)?;
    let volumes = add_runtimed(spec, &spec_path, config, &settings)?;
    let status = InjectionStatus {
        version: STATUS_VERSION,
        config_hash: config.hash(),
        container: replaced.container,
        init_containers: vec![INSTALL_CONTAINER.to_owned(), SIDECAR_CONTAINER.to_owned()],
        volumes,
        volume_mounts: render::TARGET_MOUNTS.map(str::to_owned).to_vec(),
        command: replaced.command,
        args: replaced.args,
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
