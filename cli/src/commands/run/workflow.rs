//! A Workflow on the local runtimed: the shared planner decides which steps start, each
//! step is one ExecuteAndFollow, at most as many at once as the agent runs (the rest
//! wait in order: the planner's ready set is a queue, not a burst), and the output
//! lines of each step are prefixed with `[job/step]`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use kruntimes_api::planner::{self, Halt, JobPlan, StepOutcome, StepState};
use kruntimes_api::v1alpha1::{JobPhase, Workflow};
use kruntimes_api::validation::names::child_run_name;
use kruntimes_runtimed_api::request::{RequestError, execute_request};
use kruntimes_runtimed_api::{RuntimedClient, proto};
use tonic::transport::Channel;

use super::follow::{FollowError, Output, follow, with_artifacts};
use super::result::{Ending, JobResult, Reason, RunFacts, StepResult, WorkflowFacts};
use super::signals::Interrupts;
use super::{Runtimes, cancel_execution};
use crate::error::EXIT_TIMED_OUT;

/// A Workflow ready for the planner: jobs with resolved needs and their steps' requests.
#[derive(Debug)]
pub(crate) struct WorkflowPlan {
    timeout: Option<Duration>,
    fail_fast: bool,
    jobs: Vec<JobPlan>,
    /// `[job/step]` and the request, per step of each job.
    steps: Vec<Vec<(String, proto::ExecuteRequest)>>,
}

/// The plan of `workflow`, its steps' requests made with the Runtimes of the file.
pub(crate) fn to_plan(
    workflow: &Workflow,
    runtimes: &Runtimes,
    on_error: impl Fn(RequestError) -> String,
) -> Result<WorkflowPlan, String> {
    let name = workflow.metadata.name.as_deref().unwrap_or("workflow");
    let spec = &workflow.spec;
    let timeout = spec
        .timeout
        .as_deref()
        .map(kruntimes_api::duration::parse)
        .transpose()
        .map_err(|e| format!("spec.timeout: {e}"))?;
    let jobs = planner::jobs_of(spec).map_err(|e| e.to_string())?;
    let mut steps = Vec::new();
    for job in &spec.jobs {
        let mut requests = Vec::new();
        for step in &job.steps {
            let Some(run_spec) = &step.run else {
                return Err(format!("job {}: step {}: needs run", job.name, step.name));
            };
            let child = child_run_name(name, &job.name, &step.name);
            let uid = super::local_run_uid(&child, std::process::id());
            let runtime = runtimes.get(&run_spec.runtime_ref.name);
            let request = execute_request(run_spec, uid, runtime).map_err(&on_error)?;
            requests.push((format!("{}/{}", job.name, step.name), request));
        }
        steps.push(requests);
    }
    Ok(WorkflowPlan {
        timeout,
        fail_fast: spec.fail_fast.unwrap_or(true),
        jobs,
        steps,
    })
}

/// What one step task reports.
struct StepEnd {
    job: usize,
    step: usize,
    ending: Ending,
    outcome: StepOutcome,
}

/// Runs a Workflow. Exit status: 128 + the signal when interrupted, 124 when the
/// Workflow (or, first, a step) timed out, else the first failed step's status, else 0.
pub(crate) async fn execute_workflow(
    client: RuntimedClient<Channel>,
    plan: WorkflowPlan,
    capacity: usize,
    interrupts: &mut Interrupts,
) -> Ending {
    let mut state: Vec<Vec<StepState>> = plan
        .jobs
        .iter()
        .map(|j| vec![StepState::NotStarted; j.steps])
        .collect();
    let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
    let mut running: HashMap<(usize, usize), String> = HashMap::new();
    let mut endings: HashMap<(usize, usize), Ending> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = plan.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut halt: Option<Halt> = None;
    let mut interrupted = None;
    let mut broken_pipe = false;
    let mut order = 0u64;
    loop {
        let now = planner::plan(&plan.jobs, plan.fail_fast, halt, &state);
        for (j, s) in now.start {
            state[j][s] = StepState::Running;
            queue.push_back((j, s));
        }
        while running.len() < capacity
            && let Some((job, step)) = queue.pop_front()
        {
            let (label, request) = plan.steps[job][step].clone();
            running.insert((job, step), request.run_uid.clone());
            let client = client.clone();
            tasks.spawn(async move {
                let (ending, outcome) = run_step(client, request, &label).await;
                StepEnd {
                    job,
                    step,
                    ending,
                    outcome,
                }
            });
        }
        if tasks.is_empty() {
            report(
                &plan.jobs,
                &planner::plan(&plan.jobs, plan.fail_fast, halt, &state),
            );
            break;
        }
        let deadline_passed = async {
            match deadline {
                Some(d) if halt.is_none() => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let Ok(end) = joined else {
                    // A step's task panicked: its Run's end is unknown.
                    return Ending::platform("a step's follower failed");
                };
                running.remove(&(end.job, end.step));
                order += 1;
                state[end.job][end.step] = StepState::Ended { outcome: end.outcome, order };
                let closed = end.ending.reason == Reason::StdoutClosed;
                endings.insert((end.job, end.step), end.ending);
                if closed && !broken_pipe {
                    broken_pipe = true;
                    halt = Some(Halt::Cancelled);
                    stop_queued(&mut queue, &mut state, &mut order, StepOutcome::Cancelled);
                    cancel_all(&client, running.values()).await;
                }
            }
            got = interrupts.first(), if interrupted.is_none() => {
                interrupted = Some(got);
                halt = Some(Halt::Cancelled);
                stop_queued(&mut queue, &mut state, &mut order, StepOutcome::Cancelled);
                cancel_all(&client, running.values()).await;
            }
            () = deadline_passed => {
                eprintln!("krt run: the Workflow timed out");
                halt = Some(Halt::TimedOut);
                stop_queued(&mut queue, &mut state, &mut order, StepOutcome::TimedOut);
                cancel_all(&client, running.values()).await;
            }
        }
    }
    let done = planner::plan(&plan.jobs, plan.fail_fast, halt, &state);
    let stopped = match (interrupted, broken_pipe) {
        (Some(signal), _) => Some(Ending::interrupted(signal, "the Workflow's steps")),
        (None, true) => Some(Ending::stdout_closed("the Workflow's steps were cancelled")),
        (None, false) => None,
    };
    workflow_ending(&plan, &done, &endings, stopped, halt)
}

/// How a Workflow ended: `stopped` when krt stopped it (a signal, its stdout closed),
/// else 124 when it timed out, else the first failed step's ending, else 0; with its
/// jobs and steps.
fn workflow_ending(
    plan: &WorkflowPlan,
    done: &planner::Plan,
    endings: &HashMap<(usize, usize), Ending>,
    stopped: Option<Ending>,
    halt: Option<Halt>,
) -> Ending {
    let cause = done
        .cause
        .and_then(|c| endings.get(&c).map(|e| (c, e.clone())));
    let mut ending = if let Some(stopped) = stopped {
        stopped
    } else if halt == Some(Halt::TimedOut) {
        Ending::krt(EXIT_TIMED_OUT, Reason::TimedOut, "the Workflow timed out")
    } else if !done.is_done() {
        Ending::platform("the Workflow stopped before its end")
    } else if let Some(((j, s), step)) = &cause {
        Ending {
            message: format!("step {}: {}", plan.steps[*j][*s].0, step.message),
            ..step.clone()
        }
    } else {
        Ending::krt(0, Reason::Succeeded, "every job succeeded")
    };
    ending.run = cause.as_ref().and_then(|(_, step)| step.run.clone());
    ending.workflow = Some(WorkflowFacts {
        phase: done.is_done().then(|| format!("{:?}", done.phase)),
        jobs: job_results(plan, done, endings),
        step: cause.map(|((j, s), _)| plan.steps[j][s].0.clone()),
    });
    ending
}

/// Every job and step as the result reports them (a step that never ran has no facts).
fn job_results(
    plan: &WorkflowPlan,
    done: &planner::Plan,
    endings: &HashMap<(usize, usize), Ending>,
) -> Vec<JobResult> {
    let jobs = plan.jobs.iter().zip(&done.jobs).zip(&plan.steps);
    jobs.enumerate()
        .map(|(j, ((job, state), steps))| JobResult {
            name: job.name.clone(),
            phase: format!("{:?}", state.phase),
            steps: steps
                .iter()
                .enumerate()
                .map(|(s, (label, _))| StepResult {
                    name: label
                        .split_once('/')
                        .map_or(label.as_str(), |(_, step)| step)
                        .to_owned(),
                    run: None,
                    facts: endings
                        .get(&(j, s))
                        .and_then(|e| e.run.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// Steps waiting for a slot never start once the Workflow halts: they end as `outcome`.
fn stop_queued(
    queue: &mut VecDeque<(usize, usize)>,
    state: &mut [Vec<StepState>],
    order: &mut u64,
    outcome: StepOutcome,
) {
    for (j, s) in queue.drain(..) {
        *order += 1;
        state[j][s] = StepState::Ended {
            outcome,
            order: *order,
        };
    }
}

fn report(jobs: &[JobPlan], plan: &planner::Plan) {
    for (job, state) in jobs.iter().zip(&plan.jobs) {
        let phase = match state.phase {
            JobPhase::Pending | JobPhase::Running => "Incomplete",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
            JobPhase::TimedOut => "TimedOut",
            JobPhase::Cancelled => "Cancelled",
            JobPhase::Skipped => "Skipped",
        };
        eprintln!("krt run: job {}: {phase}", job.name);
    }
}

async fn cancel_all<'a>(client: &RuntimedClient<Channel>, ids: impl Iterator<Item = &'a String>) {
    for id in ids {
        cancel_execution(client, id).await;
    }
}

/// One step: one ExecuteAndFollow, its output with a `[job/step]` prefix; how it
/// ended and its outcome. When krt's stdout is closed, the step is cancelled and
/// followed to its end quietly.
async fn run_step(
    mut client: RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
    label: &str,
) -> (Ending, StepOutcome) {
    let id = request.run_uid.clone();
    let mut events = match client.execute_and_follow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let message = format!("execute: {}", status.message());
            eprintln!("krt run: [{label}] {message}");
            return (Ending::platform(message), StepOutcome::Error);
        }
    };
    let mut output = Output::new(Some(label));
    let mut ended = follow(&mut events, &mut output).await;
    let stdout_closed = matches!(ended, Err(FollowError::BrokenPipe));
    if stdout_closed {
        output.discard();
        cancel_execution(&client, &id).await;
        ended = follow(&mut events, &mut output).await;
    }
    match ended {
        Ok(execution) => {
            let facts = RunFacts::of_execution(&execution);
            if stdout_closed {
                let ending = Ending {
                    run: Some(facts),
                    ..Ending::stdout_closed("the step was cancelled")
                };
                return (ending, StepOutcome::Cancelled);
            }
            let outcome = match proto::Phase::try_from(execution.phase) {
                Ok(proto::Phase::Succeeded) => StepOutcome::Succeeded,
                Ok(proto::Phase::Failed) => StepOutcome::Failed,
                Ok(proto::Phase::TimedOut) => StepOutcome::TimedOut,
                Ok(proto::Phase::Cancelled) => StepOutcome::Cancelled,
                _ => StepOutcome::Error,
            };
            let ending = with_artifacts(Ending::of_run(facts, None), &execution, Some(label));
            let outcome = if ending.status != 0 && outcome == StepOutcome::Succeeded {
                // Its artifacts failed: the step did not do what it was asked.
                StepOutcome::Error
            } else {
                outcome
            };
            (ending, outcome)
        }
        Err(FollowError::BrokenPipe) => (
            Ending::stdout_closed("the step was cancelled"),
            StepOutcome::Cancelled,
        ),
        Err(FollowError::Failed(message)) => {
            eprintln!("krt run: [{label}] {message}");
            (Ending::platform(message), StepOutcome::Error)
        }
    }
}
