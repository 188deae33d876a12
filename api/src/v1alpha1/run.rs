use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{
    Condition, Interpreter, LocalObjectReference, any_json_schema, conditions_schema,
    duration_schema, files_schema,
};
use super::runtime::ArtifactStore;

/// One execution of a program in a warm pod of a Runtime.
///
/// Exactly one program source: `script`, or `entrypoint` (with `files` or `git`), or
/// `command` (interpreter `exec` only). `args` always go to the program. The spec is
/// immutable after creation except `cancel`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kruntimes.io",
    version = "v1alpha1",
    kind = "Run",
    namespaced,
    doc = "A Run: one bash or python script, or one command, executed in a warm pod of a Runtime.",
    status = "RunStatus",
    shortname = "krun",
    category = "kruntimes",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtimeRef.name"}"#,
    printcolumn = r#"{"name":"Exit Code","type":"integer","jsonPath":".status.exitCode"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","priority":1,"jsonPath":".status.pod"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.script) ? 1 : 0) + (has(self.entrypoint) ? 1 : 0) + (has(self.command) ? 1 : 0) == 1",
        "message": "exactly one program source must be set: script, entrypoint (with files or git), or command (interpreter exec)",
    },
    {
        "rule": "has(self.command) == (self.interpreter == 'exec')",
        "message": "command goes with interpreter exec, and interpreter exec needs command",
    },
    {
        "rule": "!has(self.git) || !(has(self.script) || has(self.files))",
        "message": "git is used instead of inline sources (script, files), not with them",
    },
    {
        "rule": "!has(self.entrypoint) || has(self.files) || has(self.git)",
        "message": "entrypoint names a file that files or git must provide",
    },
]))]
pub struct RunSpec {
    /// The Runtime whose warm pods run this program.
    pub runtime_ref: LocalObjectReference,
    /// `bash`, `python` or `exec`.
    pub interpreter: Interpreter,
    /// Inline program, written to the workspace as `main.sh` or `main.py`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144))]
    pub script: Option<String>,
    /// More inline files: relative path -> content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "files_schema")]
    pub files: Option<BTreeMap<String, String>>,
    /// A git tree to fetch into the workspace instead of inline sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// File to run with the interpreter, relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub entrypoint: Option<String>,
    /// Interpreter `exec` only: the argv run directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), inner(length(max = 32768)))]
    pub command: Option<Vec<String>>,
    /// Arguments given to the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = 32768)))]
    pub args: Option<Vec<String>>,
    /// Environment variables added to the scrubbed environment of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub env: Option<Vec<EnvVar>>,
    /// Any JSON; given to the process on stdin and as the file `$KRT_INPUT_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub input: Option<Value>,
    /// Time limit, such as `5m`; the Runtime's `defaultTimeout` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
    /// Files to upload to the Runtime's artifact store when the Run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactPaths>,
    /// Seconds after the Run finished (reached a terminal phase) when the controller
    /// deletes it, from its `completionTime`; 0 deletes it as soon as it finished.
    /// Unset: kept until deleted. Not allowed in a Workflow step (the Workflow owns its
    /// step Runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Set to true to cancel the Run. The only field that may change after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
}

/// A git tree to fetch: `https://` only, one ref, shallow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// `https://` URL of the repository, without credentials.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Branch, tag or commit; the remote's default branch when unset.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub git_ref: Option<String>,
    /// Subdirectory of the repository to place in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
}

/// One environment variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvVar {
    /// A C identifier; names starting with `KRT_` are reserved.
    #[schemars(length(min = 1, max = 256))] // limits::MAX_ENV_NAME_BYTES
    pub name: String,
    /// The value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// Artifact globs, relative to the workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactPaths {
    /// Glob patterns such as `out/**`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 1024)))]
    pub paths: Vec<String>,
}

/// Where a Run is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    /// Accepted, waiting for a warm pod.
    #[default]
    Pending,
    /// Assigned to a pod.
    Scheduled,
    /// The process runs.
    Running,
    /// The program exited 0.
    Succeeded,
    /// The program exited non-zero or was killed by a signal.
    Failed,
    /// The timeout elapsed.
    TimedOut,
    /// `cancel` was set.
    Cancelled,
    /// The platform failed (pod lost, agent gone); see `reason`.
    Error,
}

impl RunPhase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::TimedOut | Self::Cancelled | Self::Error
        )
    }
}

/// Observed state of a Run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the Run is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// The pod that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub pod: Option<String>,
    /// runtimed's id for the execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub execution_id: Option<String>,
    /// When the Run was queued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub queued_at: Option<String>,
    /// When the process started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub start_time: Option<String>,
    /// When the Run became terminal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub completion_time: Option<String>,
    /// The program's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// CamelCase reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// Tails of stdout and stderr, kept after the pod is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RunOutput>,
    /// Uploaded artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub artifacts: Option<Vec<RunArtifactResult>>,
    /// Snapshot of the store used, so cleanup never needs the Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<ArtifactStore>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}

/// The last few KiB of each stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunOutput {
    /// End of stdout.
    #[serde(default)]
    #[schemars(length(max = 16384))]
    pub stdout_tail: String,
    /// End of stderr.
    #[serde(default)]
    #[schemars(length(max = 16384))]
    pub stderr_tail: String,
    /// Whether any output was dropped.
    #[serde(default)]
    pub truncated: bool,
}

/// One uploaded artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunArtifactResult {
    /// Path in the workspace.
    #[schemars(length(max = 1024))]
    pub path: String,
    /// Object key in the store.
    #[schemars(length(max = 2048))]
    pub key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the content.
    #[schemars(length(max = 64))]
    pub sha256: String,
}
