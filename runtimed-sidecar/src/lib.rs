//! runtimed: executes Runs inside the user's image. One binary, grouped by the process
//! that runs the code:
//!
//! - [`agent`] (`runtimed agent`, PID 1 of the user container): the executions it
//!   holds, with bounded state; [`agent::lifecycle`], one Run as processes (confined
//!   spawn, bounded output, timeout and cancel, kill of every process of the Run,
//!   workspace removal); the spawner process, the reaper, the look through `/proc`, the
//!   spare workspaces, and the agent's gRPC service;
//! - [`sidecar`] (`runtimed sidecar`): the gRPC proxy to the agent, git sources,
//!   artifact uploads to S3, the network listener and its bearer token;
//! - shared by both: the errors and their one mapping to gRPC statuses ([`Error`]),
//!   the [`limits`], the command line ([`cli`]), the serving of the API on a unix
//!   socket ([`grpc`]) and `--exit-with-parent` ([`parent`]).
//!
//! See `docs/runtimed.md`.

pub mod agent;
pub mod cli;
mod error;
pub mod grpc;
pub mod limits;
pub mod parent;
pub mod sidecar;

pub use error::Error;

/// A mutex's guard, also after a thread panicked while holding it: every state kept
/// behind these locks stays consistent between statements, so a panic elsewhere must
/// not take the agent or sidecar down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub use kruntimes_runtimed_api::Reason;
/// The `runtimed.v1` protocol's generated code (from `kruntimes-runtimed-api`).
pub use kruntimes_runtimed_api::proto;
