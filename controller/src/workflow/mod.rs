//! The Workflow reconciler: child Runs along the DAG (the shared planner decides), a
//! halt on `spec.cancel` or `spec.timeout` that cancels the running children, and a
//! status with the phase of every job and step.

mod plan;
mod reconcile;

pub use plan::{PlanError, WorkflowPlan, is_done, plan};
pub use reconcile::{Context, error_policy, reconcile};
