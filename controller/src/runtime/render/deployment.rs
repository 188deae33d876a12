//! The Deployment that keeps a Runtime's warm pods.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kruntimes_api::labels::{
    ARTIFACT_ALLOW_HTTP_ANNOTATION, ARTIFACT_CREDENTIALS_SECRET_ANNOTATION,
};
use kruntimes_api::v1alpha1::{Runtime, S3Store};

use super::{CONTAINER_ANNOTATION, Owner, TOKEN_SECRET_ANNOTATION, WORKSPACE_SIZE_ANNOTATION};
use crate::Error;
use crate::naming;

/// Pods a rollout may remove before their replacements are ready: none, so warm
/// capacity never drops while a template change rolls out.
pub const ROLLOUT_MAX_UNAVAILABLE: i32 = 0;
/// Extra pods a rollout may add: one, so a template change costs one pod's resources
/// at a time (and with no unavailable pod allowed, a rollout needs at least one).
pub const ROLLOUT_MAX_SURGE: i32 = 1;

/// Whether `endpoint` is a plain-http URL (the scheme compared as URL parsing does,
/// case-insensitively), for which the sidecar needs `--s3-allow-http`.
fn is_plain_http(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// The annotations telling the injector how the sidecar reaches the artifact store:
/// the credentials Secret to mount, and whether plain http is what the Runtime asked
/// for. The store itself reaches the sidecar with each Run.
fn artifact_annotations(store: &S3Store) -> impl Iterator<Item = (String, String)> {
    let credentials = store
        .credentials_secret_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .map(|r| {
            (
                ARTIFACT_CREDENTIALS_SECRET_ANNOTATION.to_owned(),
                r.name.clone(),
            )
        });
    let allow_http = is_plain_http(&store.endpoint)
        .then(|| (ARTIFACT_ALLOW_HTTP_ANNOTATION.to_owned(), "true".to_owned()));
    credentials.into_iter().chain(allow_http)
}

/// The Deployment of `runtime`: its pod template with the Runtime label (also the only
/// selector label, since a selector is immutable), the annotations the injector reads,
/// `spec.replicas`, a rolling update that never lowers capacity, and no service
/// account token mounted unless the template asks for it.
pub fn deployment(runtime: &Runtime) -> Result<Deployment, Error> {
    let owner = Owner::of(runtime)?;
    let spec = &runtime.spec;
    let mut template: PodTemplateSpec = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(owner.selector_labels());
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        TOKEN_SECRET_ANNOTATION.to_owned(),
        naming::secret_name(&owner.name),
    );
    if let Some(container) = &spec.container {
        annotations.insert(CONTAINER_ANNOTATION.to_owned(), container.clone());
    }
    if let Some(size) = spec.workspace.as_ref().and_then(|w| w.size_limit.as_ref()) {
        annotations.insert(WORKSPACE_SIZE_ANNOTATION.to_owned(), size.0.clone());
    }
    if let Some(artifacts) = &spec.artifacts {
        annotations.extend(artifact_annotations(&artifacts.s3));
    }
    let pod = template.spec.get_or_insert_with(Default::default);
    // Runs rarely need the Kubernetes API; a template that does says so explicitly.
    pod.automount_service_account_token.get_or_insert(false);
    Ok(Deployment {
        metadata: owner.metadata(naming::deployment_name(&owner.name)),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(owner.selector_labels()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(ROLLOUT_MAX_UNAVAILABLE)),
                    max_surge: Some(IntOrString::Int(ROLLOUT_MAX_SURGE)),
                }),
            }),
            template,
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kruntimes_api::labels::RUNTIME_LABEL;
    use kruntimes_api::v1alpha1::{LocalObjectReference, RuntimeArtifacts, WorkspaceSpec};

    use super::super::fixtures::runtime;
    use super::super::{MANAGED_BY, MANAGED_BY_LABEL};
    use super::*;

    fn template_of(d: &Deployment) -> &PodTemplateSpec {
        &d.spec.template
    }

    fn annotations_of(d: &Deployment) -> std::collections::BTreeMap<String, String> {
        let meta = template_of(d).metadata.as_ref().unwrap();
        meta.annotations.clone().unwrap()
    }

    #[test]
    fn named_labelled_and_owned_by_the_runtime() {
        let rt = runtime();
        let d = deployment(&rt).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("python"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("team-a"));
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RUNTIME_LABEL], "python");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        let owners = d.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
    }

    #[test]
    fn selector_is_only_the_runtime_label_and_the_pods_carry_it() {
        let d = deployment(&runtime()).unwrap();
        let spec = &d.spec;
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(selector.len(), 1);
        assert_eq!(selector[RUNTIME_LABEL], "python");
        assert!(spec.selector.match_expressions.is_none());
        let pod_labels = template_of(&d)
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[RUNTIME_LABEL], "python");
        assert_eq!(
            pod_labels["app"], "py",
            "the template's own labels are kept"
        );
    }

    #[test]
    fn replicas_and_a_rollout_that_keeps_capacity() {
        let d = deployment(&runtime()).unwrap();
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(2));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    }

    #[test]
    fn annotations_for_the_injector() {
        let mut rt = runtime();
        let d = deployment(&rt).unwrap();
        let annotations = annotations_of(&d);
        assert_eq!(annotations[TOKEN_SECRET_ANNOTATION], "python-runtimed");
        assert!(
            !annotations.contains_key(CONTAINER_ANNOTATION),
            "unset: the first container"
        );
        assert!(
            !annotations.contains_key(WORKSPACE_SIZE_ANNOTATION),
            "unset: the injector's default"
        );

        rt.spec.container = Some("main".into());
        rt.spec.workspace = Some(WorkspaceSpec {
            size_limit: Some(Quantity("5Gi".into())),
        });
        let d = deployment(&rt).unwrap();
        let annotations = annotations_of(&d);
        assert_eq!(annotations[CONTAINER_ANNOTATION], "main");
        assert_eq!(annotations[WORKSPACE_SIZE_ANNOTATION], "5Gi");
        assert_eq!(annotations.len(), 3);
    }

    fn with_store(endpoint: &str, credentials: Option<&str>) -> Runtime {
        let mut rt = runtime();
        rt.spec.artifacts = Some(RuntimeArtifacts {
            max_bytes: None,
            s3: S3Store {
                endpoint: endpoint.to_owned(),
                bucket: "results".to_owned(),
                credentials_secret_ref: credentials.map(|name| LocalObjectReference {
                    name: name.to_owned(),
                }),
                ..S3Store::default()
            },
        });
        rt
    }

    #[test]
    fn the_artifact_store_tells_the_injector_its_secret_and_scheme() {
        let without = annotations_of(&deployment(&runtime()).unwrap());
        assert!(!without.contains_key(ARTIFACT_CREDENTIALS_SECRET_ANNOTATION));
        assert!(!without.contains_key(ARTIFACT_ALLOW_HTTP_ANNOTATION));

        let https = with_store("https://s3.example.com", Some("store-keys"));
        let annotations = annotations_of(&deployment(&https).unwrap());
        assert_eq!(
            annotations[ARTIFACT_CREDENTIALS_SECRET_ANNOTATION],
            "store-keys"
        );
        assert!(
            !annotations.contains_key(ARTIFACT_ALLOW_HTTP_ANNOTATION),
            "https needs no plain-http allowance"
        );

        for endpoint in ["http://10.0.0.1:9000", "HTTP://minio.store:9000"] {
            let http = with_store(endpoint, Some("store-keys"));
            let annotations = annotations_of(&deployment(&http).unwrap());
            assert_eq!(
                annotations[ARTIFACT_ALLOW_HTTP_ANNOTATION], "true",
                "{endpoint}"
            );
        }

        // No Secret named: the sidecar's environment, nothing mounted.
        for unnamed in [None, Some("")] {
            let env = with_store("https://s3.example.com", unnamed);
            let annotations = annotations_of(&deployment(&env).unwrap());
            assert!(!annotations.contains_key(ARTIFACT_CREDENTIALS_SECRET_ANNOTATION));
        }
    }

    #[test]
    fn plain_http_is_the_scheme_only() {
        assert!(is_plain_http("http://a"));
        assert!(is_plain_http("Http://a"));
        assert!(!is_plain_http("https://a"));
        assert!(!is_plain_http("http:/a"));
        assert!(!is_plain_http("s3://http://a"));
        assert!(!is_plain_http(""));
    }

    #[test]
    fn the_pod_template_is_the_runtimes_own() {
        let rt = runtime();
        let d = deployment(&rt).unwrap();
        let pod = template_of(&d).spec.as_ref().unwrap();
        let original = rt.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers, original.containers);
    }

    #[test]
    fn service_account_token_is_not_mounted_unless_the_template_asks() {
        let mut rt = runtime();
        let automount = |rt: &Runtime| {
            template_of(&deployment(rt).unwrap())
                .spec
                .as_ref()
                .unwrap()
                .automount_service_account_token
        };
        assert_eq!(automount(&rt), Some(false));
        rt.spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .automount_service_account_token = Some(true);
        assert_eq!(automount(&rt), Some(true));
    }
}
