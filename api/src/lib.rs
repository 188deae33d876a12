//! `kruntimes.io/v1alpha1`: the Runtime, Run and Workflow types, their generated
//! CustomResourceDefinitions, and the pure validation rules that the webhook, the
//! controller and `krt check` share.
//!
//! Nothing in this crate performs I/O: every rule is a function from an object to the
//! list of everything wrong with it, so the three callers can never disagree.

pub mod crd;
pub mod duration;
pub mod labels;
pub mod planner;
pub mod quantity;
pub mod v1alpha1;
pub mod validation;

pub use v1alpha1::{Run, RunSpec, Runtime, RuntimeSpec, Workflow, WorkflowSpec};
