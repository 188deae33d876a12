//! Label and annotation keys owned by kruntimes, and the volume and container names the
//! injector adds to pods. Every component reads them from here, so the injector, the
//! validation of Runtime templates and the controller can never disagree on a key or on
//! which names are reserved.

/// The API group of every kruntimes kind.
pub const GROUP: &str = "kruntimes.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kruntimes object.
pub const API_VERSION: &str = "kruntimes.io/v1alpha1";

/// Prefix of every label and annotation kruntimes reserves. Users may not set keys under
/// it in a Runtime template: the controller and the webhook own them, and a user value
/// could redirect injection or scheduling.
pub const RESERVED_PREFIX: &str = "kruntimes.io/";

/// Label the controller puts on a Runtime's pods; selects them for injection.
pub const RUNTIME_LABEL: &str = "kruntimes.io/runtime";
/// Opt-in label for bring-your-own workloads that want runtimed injected.
pub const INJECT_LABEL: &str = "kruntimes.io/inject";
/// Labels on a Workflow's child Runs.
pub const WORKFLOW_LABEL: &str = "kruntimes.io/workflow";
/// Job of a Workflow child Run.
pub const JOB_LABEL: &str = "kruntimes.io/job";
/// Step of a Workflow child Run.
pub const STEP_LABEL: &str = "kruntimes.io/step";
/// Finalizer the controller puts on every Run it will dispatch: deleting a running Run
/// cancels it in runtimed (and forgets it there) before the object goes.
pub const RUN_FINALIZER: &str = "kruntimes.io/run";
/// Annotation an operator sets to `"true"` on a deleted Run whose artifacts cannot be
/// deleted (no credentials Secret, no bucket): the controller then removes the Run's
/// finalizer without deleting them, and says in an Event that they stay in the store.
pub const RELEASE_ARTIFACTS_ANNOTATION: &str = "kruntimes.io/release-artifacts";
/// Annotation recording what the webhook injected, and the config hash.
pub const INJECTION_STATUS_ANNOTATION: &str = "kruntimes.io/injection-status";
/// Annotation naming the container that runs Runs (the controller copies the Runtime's
/// `spec.container` into it); without it the first container is the target.
pub const CONTAINER_ANNOTATION: &str = "kruntimes.io/container";
/// Annotation holding the `sizeLimit` of the `workspace` emptyDir (the controller copies
/// the Runtime's `spec.workspace.sizeLimit` into it).
pub const WORKSPACE_SIZE_ANNOTATION: &str = "kruntimes.io/workspace-size-limit";
/// Annotation naming the Secret with the bearer token the controller uses to call the
/// runtimed sidecar over the network; the controller sets it on the pods it renders.
/// Without it the sidecar serves only its unix socket.
pub const TOKEN_SECRET_ANNOTATION: &str = "kruntimes.io/runtimed-token-secret";
/// Annotation naming the Secret with the credentials of the Runtime's artifact store
/// (`spec.artifacts.s3.credentialsSecretRef`); the controller sets it on the pods it
/// renders. The injector mounts that Secret into the sidecar only and passes
/// `--s3-credentials-dir`. Without it the sidecar reads its environment.
pub const ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: &str = "kruntimes.io/artifact-credentials-secret";
/// Annotation set to `"true"` by the controller when the Runtime's artifact store is an
/// `http://` endpoint: the injector then passes `--s3-allow-http` to the sidecar, which
/// otherwise allows plain http only to loopback hosts. `"false"` or no annotation: not.
pub const ARTIFACT_ALLOW_HTTP_ANNOTATION: &str = "kruntimes.io/artifact-allow-http";
/// Label on the Validating/MutatingWebhookConfigurations whose `caBundle` the webhook's
/// self-managed certificate mode keeps up to date.
pub const CA_BUNDLE_LABEL: &str = "kruntimes.io/ca-bundle";
/// The value of [`CA_BUNDLE_LABEL`] selecting the self-managed configurations.
pub const CA_BUNDLE_SELF_MANAGED: &str = "self-managed";
/// The label selector `kruntimes.io/ca-bundle=self-managed` (a constant, so that it can
/// be a flag's default value).
pub const CA_BUNDLE_SELF_MANAGED_SELECTOR: &str = "kruntimes.io/ca-bundle=self-managed";

/// The in-memory volume holding the runtimed binary copied for the agent.
pub const BIN_VOLUME: &str = "krt-bin";
/// The volume shared by the agent and the sidecar (sockets, small state files).
pub const RUN_VOLUME: &str = "krt-run";
/// The volume holding the sidecar's bearer token (mounted into the sidecar only).
pub const TOKEN_VOLUME: &str = "krt-token";
/// The volume holding the artifact store's credentials (mounted into the sidecar only).
pub const ARTIFACT_CREDENTIALS_VOLUME: &str = "krt-s3-credentials";
/// The Runs' working directory, shared by the agent and the sidecar.
pub const WORKSPACE_VOLUME: &str = "workspace";
/// Volumes (and mounts) the injector adds; a template may not use these names.
pub const RESERVED_VOLUMES: [&str; 5] = [
    BIN_VOLUME,
    RUN_VOLUME,
    TOKEN_VOLUME,
    ARTIFACT_CREDENTIALS_VOLUME,
    WORKSPACE_VOLUME,
];
/// The init container that copies the runtimed binary.
pub const INSTALL_CONTAINER: &str = "krt-install";
/// The native sidecar.
pub const SIDECAR_CONTAINER: &str = "runtimed";
/// Containers the injector adds; a template may not use these names.
pub const RESERVED_CONTAINERS: [&str; 2] = [SIDECAR_CONTAINER, INSTALL_CONTAINER];
/// Any volume or container name starting with this prefix is reserved for injection.
pub const RESERVED_NAME_PREFIX: &str = "krt-";
/// Environment variables set by runtimed for every Run start with this prefix.
pub const RESERVED_ENV_PREFIX: &str = "KRT_";

/// Whether `name` is a volume (or volume mount) name the injector owns: one of
/// [`RESERVED_VOLUMES`] or any name under [`RESERVED_NAME_PREFIX`]. Runtime templates
/// may not use these names, and the injector strips nothing else from a pod.
pub fn is_reserved_volume(name: &str) -> bool {
    RESERVED_VOLUMES.contains(&name) || name.starts_with(RESERVED_NAME_PREFIX)
}

/// Whether `name` is a container name the injector owns: one of
/// [`RESERVED_CONTAINERS`] or any name under [`RESERVED_NAME_PREFIX`].
pub fn is_reserved_container(name: &str) -> bool {
    RESERVED_CONTAINERS.contains(&name) || name.starts_with(RESERVED_NAME_PREFIX)
}

/// Key of the sidecar's bearer token in the Secret named by
/// [`TOKEN_SECRET_ANNOTATION`] (the Runtime's Secret, which the controller writes).
pub const TOKEN_SECRET_KEY: &str = "token";
/// Key of the sidecar's TLS certificate (PEM) in that Secret.
pub const TLS_CERT_SECRET_KEY: &str = "tls.crt";
/// Key of the sidecar's TLS private key (PEM) in that Secret.
pub const TLS_KEY_SECRET_KEY: &str = "tls.key";
/// Key of the access key id in the artifact store's credentials Secret (named by
/// [`ARTIFACT_CREDENTIALS_SECRET_ANNOTATION`]), also the file name the sidecar reads.
pub const ACCESS_KEY_ID_SECRET_KEY: &str = "AWS_ACCESS_KEY_ID";
/// Key of the secret access key in that Secret, also the file name the sidecar reads.
pub const SECRET_ACCESS_KEY_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Port of the sidecar's network listener (gRPC over TLS behind the bearer token), in
/// every Runtime pod: the injector opens it, the controller dials it.
pub const RUNTIMED_GRPC_PORT: u16 = 9440;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_names_are_the_injected_ones_and_the_prefix() {
        for name in RESERVED_VOLUMES {
            assert!(is_reserved_volume(name), "{name}");
        }
        for name in RESERVED_CONTAINERS {
            assert!(is_reserved_container(name), "{name}");
        }
        assert!(is_reserved_volume("krt-cache"));
        assert!(is_reserved_container("krt-helper"));
        for name in ["data", "setup", "krt", "workspaces", "runtimed-2"] {
            assert!(!is_reserved_volume(name), "{name}");
            assert!(!is_reserved_container(name), "{name}");
        }
        // `workspace` is a volume name only; `runtimed` a container name only.
        assert!(!is_reserved_container(WORKSPACE_VOLUME));
        assert!(!is_reserved_volume(SIDECAR_CONTAINER));
        assert!(
            [
                CONTAINER_ANNOTATION,
                WORKSPACE_SIZE_ANNOTATION,
                TOKEN_SECRET_ANNOTATION,
                ARTIFACT_CREDENTIALS_SECRET_ANNOTATION,
                ARTIFACT_ALLOW_HTTP_ANNOTATION,
                CA_BUNDLE_LABEL
            ]
            .iter()
            .all(|k| k.starts_with(RESERVED_PREFIX))
        );
    }
}
