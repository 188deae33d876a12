//! Renderers, pure: a Runtime (and, for the Secret, its credentials) in, the object to
//! server-side apply out. Every object carries the Runtime's label, the managed-by
//! label and a controller owner reference to the Runtime.

mod deployment;
mod network_policy;
mod secret;

pub use deployment::{ROLLOUT_MAX_SURGE, ROLLOUT_MAX_UNAVAILABLE, deployment};
pub use network_policy::{ControllerSelector, SelectorError, network_policy};
pub use secret::secret;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kruntimes_api::labels::RUNTIME_LABEL;
use kruntimes_api::v1alpha1::Runtime;
use kube::Resource;

use crate::Error;

pub use kruntimes_api::labels::{
    CONTAINER_ANNOTATION, RUNTIMED_GRPC_PORT, TOKEN_SECRET_ANNOTATION, WORKSPACE_SIZE_ANNOTATION,
};

/// The standard label naming what manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value on everything the controller renders.
pub const MANAGED_BY: &str = "kruntimes-controller";

/// What every rendered object needs of its Runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The controller owner reference to the Runtime.
    pub reference: OwnerReference,
}

impl Owner {
    /// Reads name, namespace and uid, which every Runtime read from the API server has.
    pub fn of(runtime: &Runtime) -> Result<Self, Error> {
        let meta = runtime.meta();
        let name = meta
            .name
            .clone()
            .ok_or(Error::MissingField("Runtime", "metadata.name"))?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or(Error::MissingField("Runtime", "metadata.namespace"))?;
        let mut reference = runtime
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("Runtime", "metadata.uid"))?;
        // Foreground deletion of the Runtime waits for its pool to be gone.
        reference.block_owner_deletion = Some(true);
        Ok(Self {
            name,
            namespace,
            reference,
        })
    }

    /// `kruntimes.io/runtime=<name>`: the selector of the Runtime's pods.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(RUNTIME_LABEL.to_owned(), self.name.clone())])
    }

    /// Metadata of a rendered object: its name, the Runtime's namespace, the Runtime
    /// and managed-by labels, the owner reference.
    pub fn metadata(&self, name: String) -> ObjectMeta {
        let mut labels = self.selector_labels();
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The status selector string, `kruntimes.io/runtime=<name>` (the scale subresource's
/// `labelSelectorPath`).
pub fn selector_string(runtime_name: &str) -> String {
    format!("{RUNTIME_LABEL}={runtime_name}")
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kruntimes_api::v1alpha1::{Runtime, RuntimeSpec};

    /// A valid Runtime `python` in `team-a`, 2 replicas, concurrency 4, as read from the
    /// API server (uid, generation).
    pub(crate) fn runtime() -> Runtime {
        let mut rt = Runtime::new(
            "python",
            RuntimeSpec {
                replicas: 2,
                concurrency: 4,
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_owned(), "py".to_owned())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "main".into(),
                            image: Some("python:3.13-slim".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..RuntimeSpec::default()
            },
        );
        rt.metadata.namespace = Some("team-a".into());
        rt.metadata.uid = Some("uid-1".into());
        rt.metadata.generation = Some(3);
        rt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reference_is_a_blocking_controller_reference() {
        let owner = Owner::of(&fixtures::runtime()).unwrap();
        let r = &owner.reference;
        assert_eq!(
            (
                r.api_version.as_str(),
                r.kind.as_str(),
                r.name.as_str(),
                r.uid.as_str()
            ),
            ("kruntimes.io/v1alpha1", "Runtime", "python", "uid-1")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn a_runtime_without_uid_or_namespace_is_an_error_naming_the_field() {
        let mut rt = fixtures::runtime();
        rt.metadata.uid = None;
        let err = Owner::of(&rt).unwrap_err();
        assert_eq!(err.to_string(), "Runtime has no metadata.uid");
        rt.metadata.namespace = None;
        let err = Owner::of(&rt).unwrap_err();
        assert_eq!(err.to_string(), "Runtime has no metadata.namespace");
    }

    #[test]
    fn metadata_carries_both_labels_and_the_owner() {
        let owner = Owner::of(&fixtures::runtime()).unwrap();
        let meta = owner.metadata("x".into());
        let labels = meta.labels.unwrap();
        assert_eq!(labels[RUNTIME_LABEL], "python");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels.len(), 2);
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        assert_eq!(meta.owner_references, Some(vec![owner.reference]));
        assert_eq!(selector_string("python"), "kruntimes.io/runtime=python");
    }
}
