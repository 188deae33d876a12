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

use super::Runtimes;
use super::follow::{EXIT_BROKEN_PIPE, FollowError, Output, exit_code, follow, with_artifacts};
use super::signals::Interrupts;
use crate::error::{EXIT_PLATFORM_ERROR, EXIT_TIMED_OUT};

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
    code: i32,
    outcome: StepOutcome,
}

/// Runs a Workflow. Exit status: 128 + the signal when interrupted, 124 when the
/// Workflow (or, first, a step) timed out, else the first failed step's status, else 0.
pub(crate) async fn execute_workflow(
    client: RuntimedClient<Channel>,
    plan: WorkflowPlan,
    capacity: usize,
    interrupts: &mut Interrupts,
) -> i32 {
    let mut state: Vec<Vec<StepState>> = plan
        .jobs
        .iter()
        .map(|j| vec![StepState::NotStarted; j.steps])
        .collect();
    let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
    let mut running: HashMap<(usize, usize), String> = HashMap::new();
    let mut codes: HashMap<(usize, usize), i32> = HashMap::new();
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
                let (code, outcome) = run_step(client, request, &label).await;
                StepEnd {
                    job,
                    step,
                    code,
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
                    return EXIT_PLATFORM_ERROR;
                };
                running.remove(&(end.job, end.step));
                order += 1;
                state[end.job][end.step] = StepState::Ended { outcome: end.outcome, order };
                codes.insert((end.job, end.step), end.code);
                if end.code == EXIT_BROKEN_PIPE && !broken_pipe {
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
    if let Some(signal) = interrupted {
        signal.exit_code()
    } else if broken_pipe {
        EXIT_BROKEN_PIPE
    } else if halt == Some(Halt::TimedOut) {
        EXIT_TIMED_OUT
    } else if !done.is_done() {
        EXIT_PLATFORM_ERROR
    } else {
        done.cause.and_then(|c| codes.get(&c).copied()).unwrap_or(0)
    }
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
        let _ = client
            .clone()
            .cancel(proto::CancelRequest {
                execution_id: id.clone(),
                grace_ms: 0,
            })
            .await;
    }
}

/// One step: one ExecuteAndFollow, its output with a `[job/step]` prefix; its exit
/// status and outcome.
async fn run_step(
    mut client: RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
    label: &str,
) -> (i32, StepOutcome) {
    let mut events = match client.execute_and_follow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("krt run: [{label}] execute: {}", status.message());
            return (EXIT_PLATFORM_ERROR, StepOutcome::Error);
        }
    };
    match follow(&mut events, &mut Output::new(Some(label))).await {
        Ok(execution) => {
            let outcome = match proto::Phase::try_from(execution.phase) {
                Ok(proto::Phase::Succeeded) => StepOutcome::Succeeded,
                Ok(proto::Phase::Failed) => StepOutcome::Failed,
                Ok(proto::Phase::TimedOut) => StepOutcome::TimedOut,
                Ok(proto::Phase::Cancelled) => StepOutcome::Cancelled,
                _ => StepOutcome::Error,
            };
            let code = with_artifacts(exit_code(&execution, 130), &execution, Some(label));
            let outcome = if code != 0 && outcome == StepOutcome::Succeeded {
                // Its artifacts failed: the step did not do what it was asked.
                StepOutcome::Error
            } else {
                outcome
            };
            (code, outcome)
        }
        Err(FollowError::BrokenPipe) => (EXIT_BROKEN_PIPE, StepOutcome::Cancelled),
        Err(FollowError::Failed(message)) => {
            eprintln!("krt run: [{label}] {message}");
            (EXIT_PLATFORM_ERROR, StepOutcome::Error)
        }
    }
}
