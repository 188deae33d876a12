//! `krt run --wait` of a Workflow: a progress line per step on stderr as its phase
//! changes (`krt run: [job/step] Running (run NAME)`), each step's output followed
//! live with its lines prefixed `[job/step]` (as `krt run --local` shows them), then
//! one line per job with its phase, and the exit status `--local` gives: 0, the first
//! failed step's status, 124 timed out, cancelled.

use std::collections::BTreeMap;

use kruntimes_api::v1alpha1::{JobPhase, RunPhase, Workflow, WorkflowPhase};
use kube::api::Api;

use super::error::Request;
use super::get::phase_text;
use super::wait::{self, STATUS_POLL_INTERVAL};
use super::{Cluster, ClusterError};
use crate::commands::run::result::{Ending, JobResult, Reason, StepResult, WorkflowFacts};
use crate::error::EXIT_TIMED_OUT;

/// Reads Workflow `name`.
pub async fn get_workflow(cluster: &Cluster, name: &str) -> Result<Workflow, ClusterError> {
    let api: Api<Workflow> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.get(name).await.map_err(|e| {
        cluster.error(
            &Request {
                verb: "get",
                resource: "workflows.kruntimes.io",
                kind: "Workflow",
                name: Some(name),
                namespace: Some(&cluster.namespace),
            },
            e,
        )
    })
}

/// A step as last seen: its phase and child Run.
type Seen = BTreeMap<String, (Option<RunPhase>, Option<String>)>;

/// Follows Workflow `name` to its terminal phase; returns how it ended.
pub async fn follow_workflow(cluster: &Cluster, name: &str) -> Result<Ending, ClusterError> {
    let mut seen = Seen::new();
    let mut followers = tokio::task::JoinSet::new();
    let workflow = loop {
        let workflow = get_workflow(cluster, name).await?;
        for (label, phase, run) in steps(&workflow) {
            let before = seen.get(&label).cloned().unwrap_or_default();
            if (phase, run.clone()) == before {
                continue;
            }
            if let Some(run) = run.as_ref().filter(|_| before.1.is_none()) {
                let (cluster, run, label) = (cluster.clone(), run.clone(), label.clone());
                followers.spawn(async move {
                    let prefix = label.clone();
                    let ended = wait::follow_run(&cluster, &run, None, Some(&prefix)).await;
                    (label, ended.map(|e| e.run))
                });
            }
            if phase != before.0 {
                let phase = phase_text(phase);
                let run = run
                    .as_deref()
                    .map(|r| format!(" (run {r})"))
                    .unwrap_or_default();
                eprintln!("krt run: [{label}] {phase}{run}");
            }
            seen.insert(label, (phase, run));
        }
        let phase = workflow.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(is_terminal) {
            break workflow;
        }
        tokio::time::sleep(STATUS_POLL_INTERVAL).await;
    };
    let mut endings = BTreeMap::new();
    while let Some(joined) = followers.join_next().await {
        match joined {
            Ok((label, Ok(run))) => {
                endings.insert(label, wait::ending_of_run(&run));
            }
            Ok((label, Err(e))) => {
                if super::output::is_broken_pipe(&e) {
                    return Err(e);
                }
                eprintln!("krt run: [{label}] {e}");
            }
            Err(e) => eprintln!("krt run: a step's follower failed: {e}"),
        }
    }
    report(&workflow);
    Ok(ending(&workflow, &endings))
}

fn is_terminal(phase: WorkflowPhase) -> bool {
    !matches!(phase, WorkflowPhase::Pending | WorkflowPhase::Running)
}

/// `(job/step, phase, child Run)` of every step in the status, in order.
fn steps(workflow: &Workflow) -> Vec<(String, Option<RunPhase>, Option<String>)> {
    let jobs = workflow.status.as_ref().and_then(|s| s.jobs.as_ref());
    jobs.into_iter()
        .flatten()
        .flat_map(|job| {
            job.steps.iter().map(move |step| {
                (
                    format!("{}/{}", job.name, step.name),
                    step.phase,
                    step.run.clone(),
                )
            })
        })
        .collect()
}

fn report(workflow: &Workflow) {
    let jobs = workflow.status.as_ref().and_then(|s| s.jobs.as_ref());
    for job in jobs.into_iter().flatten() {
        let phase = match job.phase {
            JobPhase::Pending | JobPhase::Running => "Incomplete".to_owned(),
            other => format!("{other:?}"),
        };
        eprintln!("krt run: job {}: {phase}", job.name);
    }
}

/// How a terminal Workflow ends `krt run --wait`: 0, 124 timed out, 130 cancelled, else
/// the first failed step's status (1 when none is known); with its jobs and steps, each
/// step with the facts of its Run as krt followed it.
pub fn ending(workflow: &Workflow, endings: &BTreeMap<String, Ending>) -> Ending {
    let cause = steps(workflow)
        .into_iter()
        .filter(|(_, phase, _)| {
            matches!(
                phase,
                Some(RunPhase::Failed | RunPhase::Error | RunPhase::TimedOut)
            )
        })
        .find_map(|(label, _, _)| endings.get(&label).map(|e| (label, e.clone())));
    let phase = workflow.status.as_ref().and_then(|s| s.phase);
    let mut ending = match (phase, &cause) {
        (Some(WorkflowPhase::Succeeded), _) => {
            Ending::krt(0, Reason::Succeeded, "every job succeeded")
        }
        (Some(WorkflowPhase::TimedOut), _) => {
            eprintln!("krt run: the Workflow timed out");
            Ending::krt(EXIT_TIMED_OUT, Reason::TimedOut, "the Workflow timed out")
        }
        (Some(WorkflowPhase::Cancelled), _) => {
            Ending::krt(130, Reason::Cancelled, "the Workflow was cancelled")
        }
        (_, Some((label, step))) => Ending {
            message: format!("step {label}: {}", step.message),
            ..step.clone()
        },
        (_, None) => {
            Ending::platform("the Workflow failed, and no failed step's Run could be read")
        }
    };
    ending.run = cause.as_ref().and_then(|(_, step)| step.run.clone());
    ending.workflow = Some(WorkflowFacts {
        phase: phase.filter(|p| is_terminal(*p)).map(|p| format!("{p:?}")),
        jobs: job_results(workflow, endings),
        step: cause.map(|(label, _)| label),
    });
    ending
}

fn job_results(workflow: &Workflow, endings: &BTreeMap<String, Ending>) -> Vec<JobResult> {
    let jobs = workflow.status.as_ref().and_then(|s| s.jobs.as_ref());
    jobs.into_iter()
        .flatten()
        .map(|job| JobResult {
            name: job.name.clone(),
            phase: format!("{:?}", job.phase),
            steps: job
                .steps
                .iter()
                .map(|step| {
                    let label = format!("{}/{}", job.name, step.name);
                    let mut facts = endings
                        .get(&label)
                        .and_then(|e| e.run.clone())
                        .unwrap_or_default();
                    // The Workflow's status is the last word on a step krt could not follow.
                    if facts.phase.is_none() {
                        facts.phase = step.phase.map(|p| format!("{p:?}"));
                    }
                    StepResult {
                        name: step.name.clone(),
                        run: step.run.clone(),
                        facts,
                    }
                })
                .collect(),
        })
        .collect()
}
