use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{
    Condition, LocalObjectReference, any_json_schema, conditions_schema, duration_schema,
    pod_template_schema, quantity_schema,
};

fn default_replicas() -> i32 {
    1
}

fn default_concurrency() -> i32 {
    1
}

/// A pool of warm pods built from the user's own pod template.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kruntimes.io",
    version = "v1alpha1",
    kind = "Runtime",
    namespaced,
    doc = "A Runtime: a pool of warm pods built from your own pod template, ready to execute Runs.",
    status = "RuntimeStatus",
    shortname = "rt",
    category = "kruntimes",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Busy","type":"integer","jsonPath":".status.capacity.busy"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".status.capacity.total"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// Warm pods to keep; 0 is allowed.
    #[serde(default = "default_replicas")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 0 && self <= 1000",
        "message": "must be between 0 and 1000",
    }]))]
    pub replicas: i32,
    /// Runs executing at once in one pod.
    #[serde(default = "default_concurrency")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1 && self <= 256",
        "message": "must be between 1 and 256",
    }]))]
    pub concurrency: i32,
    /// The container of the template that runs Runs; the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
    /// A full PodTemplateSpec: image, resources, service account, scheduling.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
    /// The `/workspace` volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
    /// Timeouts and output bounds for the Runs of this Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RuntimeLimits>,
    /// JSON Schema (2020-12) that every Run's `input` must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub input_schema: Option<Value>,
    /// Git sources; without it, Runs with git sources are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<RuntimeGit>,
    /// Artifact upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<RuntimeArtifacts>,
}

/// The emptyDir mounted at `/workspace` in the user container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Size limit of the emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub size_limit: Option<Quantity>,
}

/// Bounds applied to each Run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.defaultTimeout) || !has(self.maxTimeout) || duration(self.defaultTimeout) <= duration(self.maxTimeout)",
    "message": "defaultTimeout must not exceed maxTimeout",
    "fieldPath": ".defaultTimeout",
}]))]
pub struct RuntimeLimits {
    /// Timeout of Runs that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub default_timeout: Option<String>,
    /// Runs asking for more are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub max_timeout: Option<String>,
    /// Output kept per stream per Run; the rest is dropped and flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub max_output_bytes: Option<Quantity>,
}

/// Git source settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeGit {
    /// Hosts Runs may fetch from.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    pub allowed_hosts: Vec<String>,
    /// Largest fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub max_bytes: Option<Quantity>,
    /// Longest fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
}

/// Artifact upload settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeArtifacts {
    /// Most bytes one Run may upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub max_bytes: Option<Quantity>,
    /// The S3-compatible store.
    pub s3: S3Store,
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Store {
    /// Endpoint URL, such as `https://s3.us-east-1.amazonaws.com`.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix for every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Secret holding `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// The store configuration recorded on a Run.
pub type ArtifactStore = S3Store;

/// Observed state of a Runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods ready to take Runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Run slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<RuntimeCapacity>,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub selector: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}

/// Run slots across ready pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeCapacity {
    /// readyReplicas x concurrency.
    pub total: i32,
    /// Slots running a Run.
    pub busy: i32,
}
