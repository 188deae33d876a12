//! A Workflow's next moves, pure: from the Workflow and the child Runs that exist, the
//! children to create, the running children to cancel, and the status. The decisions
//! are the shared planner's (`kruntimes_api::planner`), so a Workflow behaves the same
//! here as in `krt run --local`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kruntimes_api::labels::{JOB_LABEL, STEP_LABEL, WORKFLOW_LABEL};
use kruntimes_api::planner::{self, Halt, StepOutcome, StepState};
use kruntimes_api::v1alpha1::{
    JobStatus, Run, RunPhase, RunSpec, StepStatus, Workflow, WorkflowPhase, WorkflowStatus,
};
use kruntimes_api::validation::names::child_run_name;
use kube::{Resource, ResourceExt};

/// What a Workflow needs now.
#[derive(Debug, Clone)]
pub struct WorkflowPlan {
    /// Child Runs to create.
    pub create: Vec<Run>,
    /// Names of running child Runs to cancel (a halt).
    pub cancel: Vec<String>,
    /// The status to write.
    pub status: WorkflowStatus,
}

/// Why a Workflow cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `needs` names no job (validation refuses it first).
    #[error(transparent)]
    UnknownNeed(#[from] planner::UnknownNeed),
    /// A step has no `run` (validation refuses it first).
    #[error("spec.jobs[{job}].steps[{step}]: has no run")]
    NoRun {
        /// Job index.
        job: usize,
        /// Step index.
        step: usize,
    },
}

/// How a child Run's phase counts for the planner; `order` ranks endings.
fn step_state(run: &Run) -> StepState {
    let status = run.status.as_ref();
    let outcome = match status.and_then(|s| s.phase) {
        Some(RunPhase::Succeeded) => StepOutcome::Succeeded,
        Some(RunPhase::Failed) => StepOutcome::Failed,
        Some(RunPhase::TimedOut) => StepOutcome::TimedOut,
        Some(RunPhase::Cancelled) => StepOutcome::Cancelled,
        Some(RunPhase::Error) => StepOutcome::Error,
        _ => return StepState::Running,
    };
    let order = status
        .and_then(|s| s.completion_time.as_deref())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map_or(u64::MAX, |t| u64::try_from(t.as_millisecond()).unwrap_or(0));
    StepState::Ended { outcome, order }
}

/// Plans `workflow` given its existing children (by name) and whether its timeout has
/// passed.
pub fn plan(
    workflow: &Workflow,
    children: &BTreeMap<String, Run>,
    timed_out: bool,
) -> Result<WorkflowPlan, PlanError> {
    let name = workflow.name_any();
    let spec = &workflow.spec;
    let jobs = planner::jobs_of(spec)?;
    let child_names: Vec<Vec<String>> = spec
        .jobs
        .iter()
        .map(|j| {
            j.steps
                .iter()
                .map(|s| child_run_name(&name, &j.name, &s.name))
                .collect()
        })
        .collect();
    let states: Vec<Vec<StepState>> = child_names
        .iter()
        .map(|steps| {
            steps
                .iter()
                .map(|c| children.get(c).map_or(StepState::NotStarted, step_state))
                .collect()
        })
        .collect();
    let halt = if spec.cancel == Some(true) {
        Some(Halt::Cancelled)
    } else if timed_out {
        Some(Halt::TimedOut)
    } else {
        None
    };
    let planned = planner::plan(&jobs, spec.fail_fast.unwrap_or(true), halt, &states);
    let mut create = Vec::new();
    for &(j, s) in &planned.start {
        let step = &spec.jobs[j].steps[s];
        let run_spec = step
            .run
            .clone()
            .ok_or(PlanError::NoRun { job: j, step: s })?;
        create.push(child(
            workflow,
            &child_names[j][s],
            &spec.jobs[j].name,
            &step.name,
            run_spec,
        ));
    }
    let cancel = if halt.is_some() {
        states
            .iter()
            .zip(&child_names)
            .flat_map(|(st, names)| st.iter().zip(names))
            .filter(|(state, _)| **state == StepState::Running)
            .filter(|(_, name)| {
                children
                    .get(*name)
                    .is_some_and(|r| r.spec.cancel != Some(true))
            })
            .map(|(_, name)| name.clone())
            .collect()
    } else {
        Vec::new()
    };
    let status = WorkflowStatus {
        observed_generation: workflow.metadata.generation,
        phase: Some(planned.phase),
        jobs: Some(
            spec.jobs
                .iter()
                .zip(&planned.jobs)
                .zip(&child_names)
                .map(|((job, state), names)| JobStatus {
                    name: job.name.clone(),
                    phase: state.phase,
                    steps: job
                        .steps
                        .iter()
                        .zip(names)
                        .map(|(step, child)| StepStatus {
                            name: step.name.clone(),
                            phase: children.get(child).and_then(|r| r.status.as_ref()?.phase),
                            run: children.contains_key(child).then(|| child.clone()),
                        })
                        .collect(),
                })
                .collect(),
        ),
        completion_time: workflow
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone()),
        conditions: workflow.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    Ok(WorkflowPlan {
        create,
        cancel,
        status,
    })
}

/// A child Run of `workflow` for one step: labelled, owned, in the Workflow's namespace.
fn child(workflow: &Workflow, name: &str, job: &str, step: &str, spec: RunSpec) -> Run {
    let mut run = Run::new(name, spec);
    run.metadata.namespace = workflow.namespace();
    run.metadata.labels = Some(BTreeMap::from([
        (WORKFLOW_LABEL.to_owned(), workflow.name_any()),
        (JOB_LABEL.to_owned(), job.to_owned()),
        (STEP_LABEL.to_owned(), step.to_owned()),
    ]));
    run.metadata.owner_references = owner(workflow).map(|o| vec![o]);
    run
}

fn owner(workflow: &Workflow) -> Option<OwnerReference> {
    let mut owner = workflow.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// Whether the Workflow's phase is final.
pub fn is_done(status: Option<&WorkflowStatus>) -> bool {
    status
        .and_then(|s| s.phase)
        .is_some_and(|p| !matches!(p, WorkflowPhase::Pending | WorkflowPhase::Running))
}

#[cfg(test)]
mod tests;
