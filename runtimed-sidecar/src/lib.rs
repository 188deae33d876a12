//! runtimed: executes Runs inside the user's image.
//!
//! - [`lifecycle`]: one Run as processes (confined spawn, bounded output, timeout and
//!   cancel, kill of every process of the Run, workspace removal);
//! - [`agent`]: the executions a `runtimed agent` holds, with bounded state;
//! - [`grpc`]: the `runtimed.v1` API over tonic, and a unix-socket client;
//! - [`spares`]: emptied workspace directories kept for the next Runs;
//! - [`artifacts`]: the sidecar's upload of a terminal Run's files to S3.
//! - [`git`]: git sources, fetched by the sidecar and handed to the agent as files.
//!
//! See `docs/runtimed.md`.

pub mod agent;
pub mod artifacts;
pub mod auth;
pub mod cli;
mod error;
pub mod git;
pub mod grpc;
pub mod lifecycle;
pub mod limits;
pub mod net;
pub mod output;
pub mod parent;
pub mod procs;
pub mod reaper;
mod sandbox;
pub mod spares;
pub mod spawner;
pub mod workspace;

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
