//! The seams between the parts of the emulated cluster: the API server calls admission
//! and schema checks through [`Admission`] and [`SchemaCheck`], and its kubelet runs the
//! Pods bound to the node through [`PodRunner`]. Each part is tested alone against
//! these traits and joined in `kruntimes-test-cluster`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::Value;

/// An admission operation, as AdmissionReview names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `CREATE`
    Create,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
}

impl Operation {
    /// The name AdmissionReview and webhook rules use (`CREATE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:admin`, `system:serviceaccount:NS:NAME`, ...
    pub username: String,
    /// `system:masters`, `system:authenticated`, ...
    pub groups: Vec<String>,
}

/// One request that passes through admission.
#[derive(Clone, Debug)]
pub struct AdmissionInput {
    /// The operation.
    pub operation: Operation,
    /// API group (`""` for core).
    pub group: String,
    /// API version (`v1`, `v1alpha1`).
    pub version: String,
    /// The resource's plural name (`pods`, `runs`).
    pub resource: String,
    /// `status`, `scale`, or `None` for the main resource.
    pub subresource: Option<String>,
    /// The object's kind (`Pod`).
    pub kind: String,
    /// The namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object's name (for a create with `generateName`, the generated one).
    pub name: String,
    /// The object as it will be stored (`None` on delete).
    pub object: Option<Value>,
    /// The stored object before the request (`None` on create).
    pub old_object: Option<Value>,
    /// Who asked.
    pub user: UserInfo,
    /// `dryRun=All` was requested.
    pub dry_run: bool,
    /// The labels of the object's namespace (for `namespaceSelector`; for a Namespace,
    /// its own labels).
    pub namespace_labels: BTreeMap<String, String>,
    /// Every stored `MutatingWebhookConfiguration`, in name order.
    pub mutating: Vec<Value>,
    /// Every stored `ValidatingWebhookConfiguration`, in name order.
    pub validating: Vec<Value>,
}

/// A refusal, sent to the client as a `Status` with this code.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    /// HTTP status: 403 for an admission denial, 422 for an invalid object, 500 when a
    /// webhook with `failurePolicy: Fail` could not be called.
    pub code: u16,
    /// `Status.reason` (`Forbidden`, `Invalid`, `InternalError`).
    pub reason: String,
    /// `Status.message`, as the apiserver words it (e.g. `admission webhook
    /// "validate.kruntimes.io" denied the request: ...`).
    pub message: String,
    /// `Status.details.causes`: `{"field": ..., "message": ..., "reason": ...}`.
    pub causes: Vec<Value>,
}

/// Admission control: mutating webhooks, then (after the schema check) validating ones.
pub trait Admission: Send + Sync + 'static {
    /// Runs the matching mutating webhooks in order (with reinvocation where asked) and
    /// returns the object after their patches, or `None` when none changed it.
    fn mutate<'a>(
        &'a self,
        input: &'a AdmissionInput,
    ) -> BoxFuture<'a, Result<Option<Value>, Denial>>;
    /// Runs the matching validating webhooks.
    fn validate<'a>(&'a self, input: &'a AdmissionInput) -> BoxFuture<'a, Result<(), Denial>>;
}

/// The schema check of a custom resource against its CRD: pruning of unknown fields,
/// defaults, the OpenAPI schema and the CEL rules (`x-kubernetes-validations`, with
/// `oldSelf` on updates).
pub trait SchemaCheck: Send + Sync + 'static {
    /// Prunes and defaults `object` in place, then validates it against version `version`
    /// of `crd` (a `CustomResourceDefinition` as JSON). A failure is a 422 `Invalid`
    /// whose causes name each field.
    fn check(
        &self,
        crd: &Value,
        version: &str,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Denial>;
}

/// Where a Pod's Secret and ConfigMap volumes and `valueFrom` references are read from.
pub trait VolumeSource: Send + Sync + 'static {
    /// The data of Secret `name` in `namespace` (decoded), if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// The data of ConfigMap `name` in `namespace`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    /// A token of ServiceAccount `account` in `namespace` for a Pod, as the kubelet gets
    /// one through the TokenRequest API, if the account exists and the source hands out
    /// tokens; `None`: the Pod runs without one.
    fn service_account_token(&self, namespace: &str, account: &str) -> Option<AccountToken> {
        let _ = (namespace, account);
        None
    }
}

/// What the kubelet mounts at `/var/run/secrets/kubernetes.io/serviceaccount`.
#[derive(Clone, Debug)]
pub struct AccountToken {
    /// The bearer token (`token`).
    pub token: String,
    /// PEM of the CA the API server's certificate chains to (`ca.crt`).
    pub ca_pem: String,
}

/// Why a Pod could not be run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Pod asks for something the node does not emulate, or is malformed.
    #[error("pod {pod}: {reason}")]
    Unsupported {
        /// `namespace/name`
        pod: String,
        /// what and why
        reason: String,
    },
    /// A system call or helper program failed.
    #[error("{context}: {source}")]
    Io {
        /// what was being done
        context: String,
        /// the failure
        #[source]
        source: std::io::Error,
    },
}

/// The node: runs the Pods bound to it.
pub trait PodRunner: Send + Sync + 'static {
    /// Starts `pod` (bound to this node: `spec.nodeName` and `metadata.uid` set): its
    /// init containers in order, native sidecars kept running, then its containers.
    fn start(
        &self,
        pod: Pod,
        volumes: Arc<dyn VolumeSource>,
    ) -> BoxFuture<'static, Result<Box<dyn RunningPod>, NodeError>>;

    /// The file holding the log (stdout and stderr) of `container` of `pod`, which
    /// `pods/log` serves; it outlives the Pod's processes. `None`: the node keeps no
    /// logs.
    fn log_file(&self, pod: &Pod, container: &str) -> Option<std::path::PathBuf> {
        let _ = (pod, container);
        None
    }
}

/// A Pod the node runs.
pub trait RunningPod: Send + Sync + 'static {
    /// The Pod's status as the kubelet reports it (phase, `podIP`, conditions with
    /// `Ready`, container statuses with exit codes), updated as it changes.
    fn status(&self) -> tokio::sync::watch::Receiver<PodStatus>;
    /// Stops the Pod as the kubelet does on deletion: SIGTERM to every container, then
    /// SIGKILL after `grace`. Returns once none of its processes is left.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()>;
    /// Fault injection: SIGKILL the main process of container `container` (an init
    /// container or a container). The node does not restart it.
    fn kill_container(&self, container: &str) -> Result<(), NodeError>;
}
