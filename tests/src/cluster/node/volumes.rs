//! A Pod's volumes as directories under the pod's directory on the node: `emptyDir`
//! (a `medium: Memory` one is a tmpfs mounted in the pod's own mount namespace, so the
//! host's mount table never holds it), `secret` and `configMap` (files written from the
//! [`VolumeSource`] with `defaultMode`/`items`). `fsGroup` gives every volume that
//! group, setgid directories and group access.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::plan::pod_key;
use super::process::{io_error, run};
use crate::cluster::contract::{NodeError, VolumeSource};

/// A volume ready to be mounted.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    /// Its directory (as the pod's mount namespace sees it).
    pub(super) path: PathBuf,
    /// An emptyDir: a missing `subPath` is created in it.
    pub(super) empty_dir: bool,
}

/// Why a volume cannot be set up: the pod waits in `ContainerCreating`, as on a kubelet
/// whose mount fails.
pub(super) type MountFailure = String;

/// `defaultMode` of secret and configMap volumes when the Pod names none.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Creates every volume of `pod` under `dir`; `pause` is the pod's sandbox process,
/// in whose mount namespace memory-backed emptyDirs are mounted.
pub(super) async fn prepare(
    pod: &Pod,
    dir: &Path,
    pause: u32,
    source: &dyn VolumeSource,
) -> Result<Result<BTreeMap<String, Prepared>, MountFailure>, NodeError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut prepared = BTreeMap::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let path = dir.join(&volume.name);
        std::fs::create_dir_all(&path)
            .map_err(|e| io_error(format!("creating {}", path.display()), e))?;
        let empty_dir = volume.empty_dir.is_some();
        let target = Target {
            path: &path,
            pause,
            fs_group,
        };
        let outcome = fill(pod, volume, i, &target, namespace, source).await?;
        if let Err(failure) = outcome {
            return Ok(Err(failure));
        }
        if let Some(group) = fs_group {
            apply_fs_group(&path, group, empty_dir)?;
        }
        prepared.insert(volume.name.clone(), Prepared { path, empty_dir });
    }
    Ok(Ok(prepared))
}

/// Where a volume is made: its directory, the sandbox whose mount namespace holds
/// memory-backed ones, and the Pod's fsGroup.
#[derive(Debug)]
struct Target<'a> {
    path: &'a Path,
    pause: u32,
    fs_group: Option<u32>,
}

async fn fill(
    pod: &Pod,
    volume: &Volume,
    index: usize,
    target: &Target<'_>,
    namespace: &str,
    source: &dyn VolumeSource,
) -> Result<Result<(), MountFailure>, NodeError> {
    let field = format!("spec.volumes[{index}]");
    let path = target.path;
    if let Some(empty) = &volume.empty_dir {
        set_mode(path, 0o777)?;
        if empty.medium.as_deref() == Some("Memory") {
            mount_memory(pod, target, empty.size_limit.as_ref(), &field).await?;
        } else if empty.medium.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(NodeError::Unsupported {
                pod: pod_key(pod),
                reason: format!("{field}.emptyDir.medium: only \"\" and Memory are supported"),
            });
        }
        return Ok(Ok(()));
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = source.secret(namespace, &name);
        let Some(data) = data else {
            return Ok(missing(
                secret.optional,
                format!("secret \"{name}\" not found"),
            ));
        };
        let mode = secret.default_mode.map_or(DEFAULT_FILE_MODE, mode_bits);
        return write_files(path, &data, secret.items.as_deref(), mode, &name);
    }
    if let Some(config_map) = &volume.config_map {
        let name = &config_map.name;
        let Some(data) = source.config_map(namespace, name) else {
            return Ok(missing(
                config_map.optional,
                format!("configmap \"{name}\" not found"),
            ));
        };
        let data: BTreeMap<String, Vec<u8>> =
            data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        let mode = config_map.default_mode.map_or(DEFAULT_FILE_MODE, mode_bits);
        return write_files(path, &data, config_map.items.as_deref(), mode, name);
    }
    Err(NodeError::Unsupported {
        pod: pod_key(pod),
        reason: format!(
            "{field} ({:?}): only emptyDir, secret and configMap volumes are supported by the emulated node",
            volume.name
        ),
    })
}

fn missing(optional: Option<bool>, message: String) -> Result<(), MountFailure> {
    if optional == Some(true) {
        Ok(())
    } else {
        Err(message)
    }
}

fn mode_bits(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(DEFAULT_FILE_MODE) & 0o777
}

async fn mount_memory(
    pod: &Pod,
    target: &Target<'_>,
    size_limit: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    field: &str,
) -> Result<(), NodeError> {
    // The tmpfs hides the directory below it, so fsGroup is given as mount options.
    let mut options = match target.fs_group {
        Some(gid) => format!("mode=2777,gid={gid}"),
        None => "mode=0777".to_owned(),
    };
    if let Some(limit) = size_limit {
        let bytes =
            kruntimes_api::quantity::parse_bytes(&limit.0).map_err(|e| NodeError::Unsupported {
                pod: pod_key(pod),
                reason: format!(
                    "{field}.emptyDir.sizeLimit: Invalid value: {:?}: {e}",
                    limit.0
                ),
            })?;
        options.push_str(&format!(",size={bytes}"));
    }
    let path = target.path.to_string_lossy();
    let pid = target.pause.to_string();
    run(
        "nsenter",
        &[
            "-t",
            &pid,
            "--mount",
            "--",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &options,
            "krt-memory",
            &path,
        ],
    )
    .await
}

/// Writes `data` (or the `items` of it) into `dir` with `mode`.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    object: &str,
) -> Result<Result<(), MountFailure>, NodeError> {
    let files: Vec<(String, &Vec<u8>, u32)> = match items {
        None => data.iter().map(|(k, v)| (k.clone(), v, mode)).collect(),
        Some(items) => {
            let mut files = Vec::new();
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    return Ok(Err(format!("couldn't find key {} in {object}", item.key)));
                };
                if item.path.starts_with('/') || item.path.split('/').any(|p| p == "..") {
                    return Ok(Err(format!(
                        "items path {:?} must be relative without '..'",
                        item.path
                    )));
                }
                files.push((item.path.clone(), value, item.mode.map_or(mode, mode_bits)));
            }
            files
        }
    };
    for (relative, value, file_mode) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| io_error(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, value)
            .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        set_mode(&path, file_mode)?;
    }
    Ok(Ok(()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), NodeError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(format!("chmod {}", path.display()), e))
}

/// The kubelet's ownership change for `fsGroup`: every file gets the group and group
/// access (read and write for an emptyDir, read otherwise), directories the setgid bit
/// so that new files inherit the group.
fn apply_fs_group(path: &Path, group: u32, writable: bool) -> Result<(), NodeError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| io_error(format!("stat {}", path.display()), e))?;
    std::os::unix::fs::lchown(path, None, Some(group))
        .map_err(|e| io_error(format!("chown {}", path.display()), e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mode = meta.permissions().mode() & 0o7777;
    mode |= if writable { 0o060 } else { 0o040 };
    if meta.is_dir() {
        mode |= 0o2010;
        for entry in std::fs::read_dir(path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?
        {
            let entry = entry.map_err(|e| io_error(format!("reading {}", path.display()), e))?;
            apply_fs_group(&entry.path(), group, writable)?;
        }
    }
    set_mode(path, mode)
}
