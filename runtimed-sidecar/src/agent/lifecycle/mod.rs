//! One Run as processes: workspace, sources, spawn (confined), output capture, timeout
//! and cancel, kill of every process of the Run, workspace removal.
//!
//! - [`spec`]: what to run, checked before anything is created;
//! - [`execution`]: one execution's state, output and cancel handle;
//! - [`supervisor`]: starts Runs (workspace, files, input, spawn);
//! - [`failure`]: how a Run whose program could not be started ends;
//! - `driver`: supervises one running execution to its end (exit, timeout, cancel,
//!   workspace size, the kill of every process of the Run);
//! - `usage`: the workspace size limit shared by the running Runs.

mod driver;
pub mod execution;
pub mod failure;
pub mod spec;
pub mod supervisor;
mod usage;

pub use execution::{Execution, Phase, Snapshot, StopCause, StopRequest, unix_ms};
pub use spec::{ExecSpec, Interpreter, check_run_uid, check_spec};
pub use supervisor::{Config, Created, Supervisor};
pub use usage::over_limit;
