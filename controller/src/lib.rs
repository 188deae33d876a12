//! The kruntimes controller: Runtimes become warm pools (a Deployment, a Secret with the
//! sidecar's token and certificate, a NetworkPolicy), Runs are dispatched to a warm
//! pod's runtimed in milliseconds, Workflows become child Runs along their DAG.
//!
//! Decisions are pure functions of state ([`scheduler`], [`naming`], the renderers);
//! the reconcilers drive them against the API server.

pub mod app;
pub mod args;
pub mod artifacts;
pub mod dispatch;
pub mod error;
pub mod metrics;
pub mod naming;
pub mod pool;
pub mod reasons;
pub mod run;
pub mod run_status;
pub mod runtime;
pub mod scheduler;
pub mod workflow;

pub use error::Error;
