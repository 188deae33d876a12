use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, conditions_schema, duration_schema};
use super::run::RunSpec;

/// A DAG of jobs whose steps become Runs.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kruntimes.io",
    version = "v1alpha1",
    kind = "Workflow",
    namespaced,
    doc = "A Workflow: a DAG of jobs whose steps become Runs.",
    status = "WorkflowStatus",
    shortname = "wf",
    category = "kruntimes",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    /// Time limit of the whole Workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
    /// On a failed job, stop scheduling new ones (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
    /// Set to true to cancel the Workflow: no new step starts and running step Runs
    /// are cancelled. A step's own Run may not set `cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// Seconds after the Workflow finished (reached a terminal phase) when the
    /// controller deletes it, from its `status.completionTime`; its step Runs go with it
    /// (owner references). 0 deletes it as soon as it finished. Unset: the controller's
    /// default, else kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))] // limits::MAX_TTL_SECONDS_AFTER_FINISHED
    pub ttl_seconds_after_finished: Option<i64>,
    /// The jobs; `needs` order them.
    #[schemars(length(min = 1, max = 100))]
    pub jobs: Vec<Job>,
}

/// A job: steps run in order, after every job it `needs` succeeded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    /// DNS-1123 label, unique in the Workflow.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Jobs that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 63)))]
    pub needs: Vec<String>,
    /// The steps, run in order.
    #[schemars(length(min = 1, max = 50))]
    pub steps: Vec<Step>,
}

/// A step: exactly one execution method. Only `run` is implemented.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.uses)", "message": "steps[].uses is not implemented; use run"},
    {"rule": "has(self.run)", "message": "a step needs an execution method: run"},
]))]
pub struct Step {
    /// DNS-1123 label, unique in the job.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Run to create for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSpec>,
    /// Reserved for reusable actions; not implemented, refused at admission. It is in
    /// the schema so that the apiserver does not prune it silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub uses: Option<String>,
}

/// Where a Workflow is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkflowPhase {
    /// Accepted, nothing started.
    #[default]
    Pending,
    /// Some jobs run.
    Running,
    /// Every job succeeded.
    Succeeded,
    /// A job failed.
    Failed,
    /// The timeout elapsed.
    TimedOut,
    /// Cancelled.
    Cancelled,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobPhase {
    /// Waiting for its needs.
    #[default]
    Pending,
    /// A step runs.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed.
    Failed,
    /// A job it needs did not succeed, or fail-fast stopped it.
    Skipped,
    /// A step timed out.
    TimedOut,
    /// Cancelled.
    Cancelled,
}

/// Observed state of a Workflow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the Workflow is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkflowPhase>,
    /// Per-job state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub jobs: Option<Vec<JobStatus>>,
    /// When the Workflow became terminal (RFC 3339); `ttlSecondsAfterFinished` counts
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub completion_time: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}

/// State of one job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobStatus {
    /// Job name.
    #[schemars(length(max = 63))]
    pub name: String,
    /// Where the job is.
    pub phase: JobPhase,
    /// Per-step state.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub steps: Vec<StepStatus>,
}

/// State of one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepStatus {
    /// Step name.
    #[schemars(length(max = 63))]
    pub name: String,
    /// Phase of its Run, when created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<super::run::RunPhase>,
    /// Name of the child Run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub run: Option<String>,
}
