//! Label and annotation keys owned by kruntimes.

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
/// Annotation recording what the webhook injected, and the config hash.
pub const INJECTION_STATUS_ANNOTATION: &str = "kruntimes.io/injection-status";

/// Volumes (and mounts) the injector adds; a template may not use these names.
pub const RESERVED_VOLUMES: [&str; 4] = ["krt-bin", "krt-run", "krt-token", "workspace"];
/// Any volume or container name starting with this prefix is reserved for injection.
pub const RESERVED_NAME_PREFIX: &str = "krt-";
/// Containers the injector adds; a template may not use these names.
pub const RESERVED_CONTAINERS: [&str; 2] = ["runtimed", "krt-install"];
/// Environment variables set by runtimed for every Run start with this prefix.
pub const RESERVED_ENV_PREFIX: &str = "KRT_";
