//! The `kruntimes.io/v1alpha1` kinds. Field names are the contract described in
//! `docs/api.md`; every string, list and map carries a bound so the apiserver rejects
//! oversized objects before any kruntimes code sees them.

mod common;
mod run;
mod runtime;
mod workflow;

pub use common::{Condition, Interpreter, LocalObjectReference};
pub use run::{
    ArtifactPaths, EnvVar, GitSource, Run, RunArtifactResult, RunOutput, RunPhase, RunSpec,
    RunStatus,
};
pub use runtime::{
    ArtifactStore, Runtime, RuntimeArtifacts, RuntimeCapacity, RuntimeGit, RuntimeLimits,
    RuntimeSpec, RuntimeStatus, S3Store, WorkspaceSpec,
};
pub use workflow::{
    Job, JobPhase, JobStatus, Step, StepStatus, Workflow, WorkflowPhase, WorkflowSpec,
    WorkflowStatus,
};

/// Bounds shared by the schemas and the validation rules. Each has a reason in
/// `docs/api.md#limits`.
pub mod limits {
    /// Longest inline script or inline file (bytes). A Run is stored in etcd, whose
    /// objects are capped at about 1.5 MiB; bigger programs belong in git.
    pub const MAX_INLINE_SOURCE_BYTES: usize = 256 * 1024;
    /// Most inline files in one Run.
    pub const MAX_FILES: usize = 64;
    /// Longest relative path (`entrypoint`, `files` keys, `git.path`, artifact globs).
    pub const MAX_PATH_BYTES: usize = 1024;
    /// Longest single path segment: Linux `NAME_MAX`.
    pub const MAX_PATH_SEGMENT_BYTES: usize = 255;
    /// Most `command` and `args` entries each.
    pub const MAX_ARGS: usize = 256;
    /// Longest single argument.
    pub const MAX_ARG_BYTES: usize = 32 * 1024;
    /// Most `env` entries.
    pub const MAX_ENV: usize = 128;
    /// Longest environment variable name.
    pub const MAX_ENV_NAME_BYTES: usize = 256;
    /// Longest environment value.
    pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
    /// Most artifact globs per Run.
    pub const MAX_ARTIFACT_PATHS: usize = 32;
    /// Longest git URL.
    pub const MAX_URL_BYTES: usize = 2048;
    /// Longest git ref.
    pub const MAX_GIT_REF_BYTES: usize = 255;
    /// Longest duration string such as `1h30m`.
    pub const MAX_DURATION_BYTES: usize = 32;
    /// Shortest timeout (Run, Workflow, the Runtime's `limits` and `git.timeout`).
    /// runtimed counts whole milliseconds and reads 0 as "the default", so anything
    /// under 1 ms would silently become the default; whole seconds, like Kubernetes'
    /// own `activeDeadlineSeconds`, keep a limit clear of interpreter start-up jitter.
    pub const MIN_TIMEOUT_SECONDS: u64 = 1;
    /// Longest Run or Workflow timeout. Longer work is not what warm pods are for, and
    /// it bounds how long a slot can be held.
    pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;
    /// Longest `ttlSecondsAfterFinished` of a Run or a Workflow: a year. A finished
    /// object kept longer is better kept outside etcd (its logs and artifacts already
    /// are).
    pub const MAX_TTL_SECONDS_AFTER_FINISHED: i64 = 365 * 24 * 60 * 60;
    /// Most warm pods of one Runtime.
    pub const MAX_REPLICAS: i32 = 1000;
    /// Most Runs executing at once in one pod.
    pub const MAX_CONCURRENCY: i32 = 256;
    /// Most hosts in `git.allowedHosts`.
    pub const MAX_ALLOWED_HOSTS: usize = 64;
    /// Jobs in one Workflow.
    pub const MAX_JOBS: usize = 100;
    /// Steps in one job.
    pub const MAX_STEPS_PER_JOB: usize = 50;
    /// Steps in one Workflow, all jobs together: the status lists each one, and it must
    /// stay far below etcd's object size limit.
    pub const MAX_STEPS_PER_WORKFLOW: usize = 500;
    /// `needs` entries of one job.
    pub const MAX_NEEDS: usize = 100;
    /// Conditions kept in a status.
    pub const MAX_CONDITIONS: usize = 16;
    /// Longest Kubernetes object name (DNS-1123 subdomain).
    pub const MAX_NAME_BYTES: usize = 253;
    /// Longest DNS-1123 label (job, step, container and child Run names).
    pub const MAX_LABEL_BYTES: usize = 63;
}
