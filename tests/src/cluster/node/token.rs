//! The ServiceAccount token the kubelet mounts in every container of a Pod that does
//! not opt out (`automountServiceAccountToken: false`): `token`, `ca.crt` and
//! `namespace` at `/var/run/secrets/kubernetes.io/serviceaccount`, where in-cluster
//! clients read them. A real API server adds this as a projected volume at admission;
//! the emulated node mounts it itself, so the stored Pod does not show the volume.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::plan::{ContainerPlan, MountPlan};
use super::process::io_error;
use super::volumes::Prepared;
use crate::cluster::contract::{NodeError, VolumeSource};

/// Where in-cluster clients read the token, the CA and the namespace.
pub(super) const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume's name (the API server names its projected volume `kube-api-access-*`).
const VOLUME: &str = "kube-api-access";
/// The files' mode: readable by the container's user, whatever its uid.
const FILE_MODE: u32 = 0o644;

/// Writes the token files under `volumes_dir` and mounts them read-only in every
/// container of `plans`, unless the Pod opts out, a container mounts something there
/// already, or `source` has no token for the Pod's ServiceAccount.
pub(super) fn mount(
    pod: &Pod,
    volumes_dir: &Path,
    source: &dyn VolumeSource,
    volumes: &mut BTreeMap<String, Prepared>,
    plans: &mut [ContainerPlan],
) -> Result<(), NodeError> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.automount_service_account_token == Some(false)
        || volumes.contains_key(VOLUME)
        || plans
            .iter()
            .any(|p| p.mounts.iter().any(|m| m.mount_path == TOKEN_DIR))
    {
        return Ok(());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = spec.service_account_name.as_deref().unwrap_or("default");
    let Some(token) = source.service_account_token(namespace, account) else {
        return Ok(());
    };
    let path = volumes_dir.join(VOLUME);
    std::fs::create_dir_all(&path)
        .map_err(|e| io_error(format!("creating {}", path.display()), e))?;
    for (name, content) in [
        ("token", token.token.as_str()),
        ("ca.crt", token.ca_pem.as_str()),
        ("namespace", namespace),
    ] {
        let file = path.join(name);
        std::fs::write(&file, content)
            .and_then(|()| {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(FILE_MODE))
            })
            .map_err(|e| io_error(format!("writing {}", file.display()), e))?;
    }
    volumes.insert(
        VOLUME.to_owned(),
        Prepared {
            path,
            empty_dir: false,
        },
    );
    let mount_path = mount_path();
    for plan in plans {
        plan.mounts.push(MountPlan {
            volume: VOLUME.to_owned(),
            mount_path: mount_path.clone(),
            sub_path: None,
            read_only: true,
        });
    }
    Ok(())
}

/// [`TOKEN_DIR`] with the host's symlinks resolved (`/var/run` is a link to `/run` on
/// most distributions): the container's root overlays the host's directories, and a
/// mount point made through an absolute link would land outside that root.
fn mount_path() -> String {
    let (base, rest) = TOKEN_DIR.split_at("/var/run".len());
    let base = std::fs::canonicalize(base)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| base.to_owned());
    format!("{base}{rest}")
}
