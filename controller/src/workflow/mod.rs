//! The Workflow reconciler: child Runs along the DAG (the shared planner decides), a
//! halt on `spec.cancel` or `spec.timeout` that cancels the running children, and a
//! status with the phase of every job and step.

mod finish;
mod plan;
mod reconcile;

pub use finish::{
    Expiry, INVALID_REASON, VALID_CONDITION, expiry, invalid, stamp_completion, ttl_of,
};
pub use plan::{PlanError, WorkflowPlan, is_done, plan};
pub use reconcile::{Context, error_policy, reconcile};
