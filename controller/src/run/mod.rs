//! The Run reconciler: validates a Run against its Runtime, writes `Pending` with
//! `queuedAt` once, and hands it to the [`Dispatcher`](crate::dispatch::Dispatcher),
//! which writes the rest; re-attaches a `Running` Run after a restart; cancels.

pub mod finalizer;
mod reconcile;
mod sink;

pub use reconcile::{
    Context, Decision, WAIT_REQUEUE, decide, error_policy, reconcile, runtimes_ready,
};
pub use sink::{KubeSink, apply_status, status_patch};
