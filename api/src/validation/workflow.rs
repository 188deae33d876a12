//! Rules for a Workflow: the job graph, each step's execution method, and the names of
//! the Runs its steps become.

use std::collections::HashMap;

use super::dag::check_jobs;
use super::names::child_run_name;
use super::run::{RunSpecContext, check_run_spec, check_ttl_seconds_after_finished};
use super::{FieldPath, Reason, Violation, check_timeout};
use crate::v1alpha1::WorkflowSpec;

/// Checks a WorkflowSpec at `path` (normally `spec`); `name` is the Workflow's name,
/// needed to predict its child Run names.
pub fn check_workflow_spec(name: &str, spec: &WorkflowSpec, path: &FieldPath) -> Vec<Violation> {
    let jobs_path = path.child("jobs");
    let mut v = check_jobs(&spec.jobs, &jobs_path);
    if let Some(timeout) = &spec.timeout {
        v.extend(check_timeout(timeout, &path.child("timeout")));
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        v.extend(check_ttl_seconds_after_finished(
            ttl,
            &path.child("ttlSecondsAfterFinished"),
        ));
    }
    let mut child_names: HashMap<String, (usize, usize)> = HashMap::new();
    for (j, job) in spec.jobs.iter().enumerate() {
        for (s, step) in job.steps.iter().enumerate() {
            let step_path = jobs_path.index(j).child("steps").index(s);
            if let Some(uses) = &step.uses {
                v.push(Violation::with_value(
                    step_path.child("uses"),
                    Reason::Unsupported,
                    uses,
                    "steps[].uses is not implemented; use run",
                ));
            }
            match &step.run {
                Some(run) => v.extend(check_run_spec(
                    run,
                    &step_path.child("run"),
                    RunSpecContext::WorkflowStep,
                )),
                None if step.uses.is_none() => v.push(Violation::new(
                    step_path.child("run"),
                    Reason::Required,
                    "a step needs an execution method; supported: run",
                )),
                None => {}
            }
            // Different (job, step) pairs can join to the same name: "a-b"/"c" and
            // "a"/"b-c". Two steps must never share a child Run.
            let child = child_run_name(name, &job.name, &step.name);
            if let Some((other_job, other_step)) = child_names.get(&child) {
                if (*other_job, *other_step) != (j, s) && job.name != spec.jobs[*other_job].name {
                    v.push(Violation::with_value(
                        step_path.child("name"),
                        Reason::Duplicate,
                        &step.name,
                        format!(
                            "its Run would be named {child:?}, like the Run of jobs[{other_job}].steps[{other_step}]; rename the job or step"
                        ),
                    ));
                }
            } else {
                child_names.insert(child, (j, s));
            }
        }
    }
    v
}
