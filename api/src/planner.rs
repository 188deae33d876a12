//! The Workflow planner, pure and level-triggered: from a Workflow's jobs and what is
//! known of each step's Run, which steps start now, where every job is, and the
//! Workflow's phase. `krt run --local` calls it after every step that ends; the
//! controller calls it on every reconcile with the phases of the child Runs it
//! observes. The same state always gives the same plan, so a restart loses nothing.
//!
//! Semantics (docs/api.md, "Workflow"):
//! - a job starts once every job it `needs` succeeded; its steps run in order;
//!   independent jobs run at the same time;
//! - a job whose need did not succeed is `Skipped`;
//! - with `failFast`, once any step did not succeed no job that has not started yet
//!   starts (`Skipped`); jobs already running go on;
//! - a [`Halt`] (cancel, the Workflow's timeout) starts nothing more: jobs not started
//!   are `Skipped`, started jobs end `Cancelled` or `TimedOut` once their running step
//!   ends;
//! - the Workflow's phase is the phase of the first cause: the step that ended first
//!   without succeeding (a child Run in `Error` makes its job and the Workflow `Failed`).

use crate::v1alpha1::{JobPhase, WorkflowPhase, WorkflowSpec};

/// One job as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPlan {
    /// Its name.
    pub name: String,
    /// Indexes of the jobs it needs.
    pub needs: Vec<usize>,
    /// How many steps it has.
    pub steps: usize,
}

/// A `needs` entry that names no job of the Workflow (validation refuses it first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.jobs[{job}].needs: names an unknown job {needed:?}")]
pub struct UnknownNeed {
    /// Index of the job.
    pub job: usize,
    /// The name it needs.
    pub needed: String,
}

/// The jobs of `spec` with their needs resolved to indexes.
pub fn jobs_of(spec: &WorkflowSpec) -> Result<Vec<JobPlan>, UnknownNeed> {
    spec.jobs
        .iter()
        .enumerate()
        .map(|(j, job)| {
            let needs = job
                .needs
                .iter()
                .map(|needed| {
                    spec.jobs
                        .iter()
                        .position(|other| other.name == *needed)
                        .ok_or_else(|| UnknownNeed {
                            job: j,
                            needed: needed.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(JobPlan {
                name: job.name.clone(),
                needs,
                steps: job.steps.len(),
            })
        })
        .collect()
}

/// How a step's Run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// Exit 0.
    Succeeded,
    /// The program exited non-zero.
    Failed,
    /// It timed out.
    TimedOut,
    /// It was cancelled.
    Cancelled,
    /// The platform failed (pod lost, agent gone).
    Error,
}

/// What is known of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Its Run does not exist (has not been handed out).
    #[default]
    NotStarted,
    /// Its Run exists and has not ended (queued or running).
    Running,
    /// Its Run ended; `order` ranks endings in time (earlier is smaller), so the first
    /// cause of a failure can be named. Ties go to the lower job, then step, index.
    Ended {
        /// How it ended.
        outcome: StepOutcome,
        /// When, relative to the other endings.
        order: u64,
    },
}

/// Why a Workflow stops starting steps from outside its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Halt {
    /// `spec.cancel`, or Ctrl-C in `krt run --local`.
    Cancelled,
    /// `spec.timeout` passed.
    TimedOut,
}

/// Where one job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobState {
    /// Its phase.
    pub phase: JobPhase,
    /// The step it is at while `Running` (running, or to start now).
    pub step: Option<usize>,
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Every job, in the order of the spec.
    pub jobs: Vec<JobState>,
    /// Steps to start now, as (job, step): each is `NotStarted` in the state given.
    pub start: Vec<(usize, usize)>,
    /// The Workflow's phase.
    pub phase: WorkflowPhase,
    /// The first step that ended without succeeding, as (job, step).
    pub cause: Option<(usize, usize)>,
}

impl Plan {
    /// Whether the Workflow is in a terminal phase.
    pub fn is_done(&self) -> bool {
        !matches!(self.phase, WorkflowPhase::Pending | WorkflowPhase::Running)
    }
}

/// Plans the next moves of a Workflow of `jobs` whose steps are in `steps`
/// (`steps[j][s]` for step `s` of job `j`; missing entries count as `NotStarted`).
/// `jobs` must form a DAG (validation checks it); a need that is part of a cycle or out
/// of range keeps its dependents `Pending`, it never panics.
pub fn plan(
    jobs: &[JobPlan],
    fail_fast: bool,
    halt: Option<Halt>,
    steps: &[Vec<StepState>],
) -> Plan {
    let state = |j: usize, s: usize| {
        steps
            .get(j)
            .and_then(|job| job.get(s))
            .copied()
            .unwrap_or_default()
    };
    let cause = first_cause(steps);
    let stop_new = halt.is_some() || (fail_fast && cause.is_some());
    let mut states: Vec<Option<JobState>> = vec![None; jobs.len()];
    // Jobs are decided once every job they need is; a fixpoint, so any order of the
    // spec works. At most one pass per job.
    for _ in 0..=jobs.len() {
        let mut changed = false;
        for (j, job) in jobs.iter().enumerate() {
            if states[j].is_some() {
                continue;
            }
            let started = (0..job.steps).any(|s| state(j, s) != StepState::NotStarted);
            let decided = if started {
                Some(started_job(job.steps, |s| state(j, s), halt))
            } else {
                unstarted_job(job, &states, stop_new)
            };
            if decided.is_some() {
                states[j] = decided;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let jobs_out: Vec<JobState> = states
        .into_iter()
        .map(|s| {
            s.unwrap_or(JobState {
                phase: JobPhase::Pending,
                step: None,
            })
        })
        .collect();
    let start = jobs_out
        .iter()
        .enumerate()
        .filter_map(|(j, js)| match (js.phase, js.step) {
            (JobPhase::Running, Some(s)) if state(j, s) == StepState::NotStarted => Some((j, s)),
            _ => None,
        })
        .collect();
    let phase = workflow_phase(&jobs_out, halt, cause.map(|(j, s)| state(j, s)), steps);
    Plan {
        jobs: jobs_out,
        start,
        phase,
        cause,
    }
}

/// The step that ended first without succeeding.
fn first_cause(steps: &[Vec<StepState>]) -> Option<(usize, usize)> {
    let mut best: Option<(u64, usize, usize)> = None;
    for (j, job) in steps.iter().enumerate() {
        for (s, state) in job.iter().enumerate() {
            if let StepState::Ended { outcome, order } = *state
                && outcome != StepOutcome::Succeeded
                && best.is_none_or(|b| (order, j, s) < b)
            {
                best = Some((order, j, s));
            }
        }
    }
    best.map(|(_, j, s)| (j, s))
}

/// A job with at least one step handed out: its steps decide.
fn started_job(steps: usize, state: impl Fn(usize) -> StepState, halt: Option<Halt>) -> JobState {
    for s in 0..steps {
        match state(s) {
            StepState::Ended {
                outcome: StepOutcome::Succeeded,
                ..
            } => {}
            StepState::Ended { outcome, .. } => {
                return JobState {
                    phase: job_phase_of(outcome),
                    step: None,
                };
            }
            StepState::Running => {
                return JobState {
                    phase: JobPhase::Running,
                    step: Some(s),
                };
            }
            StepState::NotStarted => {
                return match halt {
                    Some(h) => JobState {
                        phase: halted_phase(h),
                        step: None,
                    },
                    None => JobState {
                        phase: JobPhase::Running,
                        step: Some(s),
                    },
                };
            }
        }
    }
    JobState {
        phase: JobPhase::Succeeded,
        step: None,
    }
}

/// A job with no step handed out: its needs decide, or `None` while a need is not
/// decided yet.
fn unstarted_job(job: &JobPlan, states: &[Option<JobState>], stop_new: bool) -> Option<JobState> {
    let skipped = JobState {
        phase: JobPhase::Skipped,
        step: None,
    };
    // A job without steps succeeds as soon as its needs do (there is nothing to stop),
    // so it keeps that phase after a later failure or halt.
    if stop_new && job.steps > 0 {
        return Some(skipped);
    }
    let mut all_succeeded = true;
    for &n in &job.needs {
        match states.get(n).copied().flatten() {
            None => return None,
            Some(need) if is_terminal(need.phase) && need.phase != JobPhase::Succeeded => {
                return Some(skipped);
            }
            Some(need) => all_succeeded &= need.phase == JobPhase::Succeeded,
        }
    }
    Some(if !all_succeeded {
        JobState {
            phase: JobPhase::Pending,
            step: None,
        }
    } else if job.steps == 0 {
        JobState {
            phase: JobPhase::Succeeded,
            step: None,
        }
    } else {
        JobState {
            phase: JobPhase::Running,
            step: Some(0),
        }
    })
}

fn workflow_phase(
    jobs: &[JobState],
    halt: Option<Halt>,
    cause: Option<StepState>,
    steps: &[Vec<StepState>],
) -> WorkflowPhase {
    if jobs.iter().any(|j| !is_terminal(j.phase)) {
        let started = steps.iter().flatten().any(|s| *s != StepState::NotStarted);
        return if started {
            WorkflowPhase::Running
        } else {
            WorkflowPhase::Pending
        };
    }
    if jobs.iter().all(|j| j.phase == JobPhase::Succeeded) {
        return WorkflowPhase::Succeeded;
    }
    match (halt, cause) {
        (Some(Halt::Cancelled), _) => WorkflowPhase::Cancelled,
        (Some(Halt::TimedOut), _) => WorkflowPhase::TimedOut,
        (None, Some(StepState::Ended { outcome, .. })) => match outcome {
            StepOutcome::TimedOut => WorkflowPhase::TimedOut,
            StepOutcome::Cancelled => WorkflowPhase::Cancelled,
            StepOutcome::Succeeded | StepOutcome::Failed | StepOutcome::Error => {
                WorkflowPhase::Failed
            }
        },
        // Every job terminal, not all succeeded, and no step failed: only a need
        // outside the DAG can do that; report it as failed rather than succeeded.
        (None, _) => WorkflowPhase::Failed,
    }
}

fn job_phase_of(outcome: StepOutcome) -> JobPhase {
    match outcome {
        StepOutcome::Succeeded => JobPhase::Succeeded,
        StepOutcome::Failed | StepOutcome::Error => JobPhase::Failed,
        StepOutcome::TimedOut => JobPhase::TimedOut,
        StepOutcome::Cancelled => JobPhase::Cancelled,
    }
}

fn halted_phase(halt: Halt) -> JobPhase {
    match halt {
        Halt::Cancelled => JobPhase::Cancelled,
        Halt::TimedOut => JobPhase::TimedOut,
    }
}

/// Whether a job's phase is final.
pub fn is_terminal(phase: JobPhase) -> bool {
    !matches!(phase, JobPhase::Pending | JobPhase::Running)
}

#[cfg(test)]
mod tests;
