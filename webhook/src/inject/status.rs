//! The `kruntimes.io/injection-status` annotation: what an injection added, read back to
//! strip it before the next one.
//!
//! The annotation is part of the object a Pod's author writes, so it is checked against
//! the pod before anything is stripped: it may list only names the injector owns
//! ([`is_reserved_container`], [`is_reserved_volume`]), and its recorded `command` and
//! `args` are restored only into a container that runs exactly the injected agent
//! command. A status that fails either check was not written by this injector and the
//! pod is refused ([`InjectError::BadStatus`]): otherwise a forged status could strip
//! containers or volumes that another admission plugin added, or install a made-up
//! "original" command.

use kruntimes_api::labels::{
    INJECTION_STATUS_ANNOTATION, RESERVED_NAME_PREFIX, SIDECAR_CONTAINER, WORKSPACE_VOLUME,
    is_reserved_container, is_reserved_volume,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::render::is_agent_command;
use super::{InjectError, STATUS_VERSION, array_mut, drop_if_empty, name_of, object_mut};

/// The content of the `kruntimes.io/injection-status` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionStatus {
    /// Format version ([`STATUS_VERSION`]).
    pub version: u32,
    /// [`super::InjectConfig::hash`] of the configuration that rendered the pod.
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

/// Reads the injection status of a pod's metadata, if any. Only the annotation's form
/// is checked here; whether it describes the pod is checked when it is stripped.
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

impl InjectionStatus {
    /// Refuses a status of another format version, or one listing a name the injector
    /// never adds.
    fn check_names(&self) -> Result<(), InjectError> {
        if self.version != STATUS_VERSION {
            return Err(InjectError::BadStatus(format!(
                "version {} (expected {STATUS_VERSION})",
                self.version
            )));
        }
        let containers = self.init_containers.iter().map(|n| ("init container", n));
        let volumes = self.volumes.iter().map(|n| ("volume", n));
        let mounts = self.volume_mounts.iter().map(|n| ("volume mount", n));
        for (what, name) in containers.chain(volumes).chain(mounts) {
            let owned = if what == "init container" {
                is_reserved_container(name)
            } else {
                is_reserved_volume(name)
            };
            if !owned {
                return Err(InjectError::BadStatus(format!(
                    "it lists the {what} {name:?}, which the injector never adds (it adds only {RESERVED_NAME_PREFIX}*, {SIDECAR_CONTAINER} and {WORKSPACE_VOLUME})"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses to restore `command`/`args` into a container that does not run the injected
/// agent command: the recorded values are then not that container's originals.
fn check_target(status: &InjectionStatus, target: &Map<String, Value>) -> Result<(), InjectError> {
    let runs_agent = target.get("command").is_some_and(is_agent_command);
    if runs_agent && !target.contains_key("args") {
        return Ok(());
    }
    Err(InjectError::BadStatus(format!(
        "container {:?} does not run the injected agent command, so the command and args recorded for it are not its own",
        status.container
    )))
}

/// Strips a template (a map holding `metadata` and `spec`) of what its status lists;
/// `prefix` is its field path followed by `.` (empty for a Pod). A template without
/// the annotation is left unchanged.
pub(super) fn strip_template(
    template: &mut Map<String, Value>,
    prefix: &str,
) -> Result<(), InjectError> {
    let Some(status) = template
        .get("metadata")
        .map(injection_status)
        .transpose()?
        .flatten()
    else {
        return Ok(());
    };
    status.check_names()?;
    let spec_path = format!("{prefix}spec.");
    let spec = object_mut(template, "spec", prefix)?;
    // Checked before anything is removed, so a refused status leaves the pod as it was.
    let containers = array_mut(spec, "containers", &spec_path)?;
    if let Some(target) = containers
        .iter()
        .find(|c| name_of(c) == Some(status.container.as_str()))
        .and_then(Value::as_object)
    {
        check_target(&status, target)?;
    }
    for (key, names) in [
        ("initContainers", &status.init_containers),
        ("volumes", &status.volumes),
    ] {
        if spec.contains_key(key) {
            let items = array_mut(spec, key, &spec_path)?;
            items.retain(|item| !name_of(item).is_some_and(|n| names.iter().any(|s| s == n)));
            drop_if_empty(spec, key);
        }
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
