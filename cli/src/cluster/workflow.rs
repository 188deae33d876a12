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
use super::wait::{self, Outcome, STATUS_POLL_INTERVAL};
use super::{Cluster, ClusterError};
use crate::error::{EXIT_PLATFORM_ERROR, EXIT_TIMED_OUT};

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

/// Follows Workflow `name` to its terminal phase; returns its outcome.
pub async fn follow_workflow(cluster: &Cluster, name: &str) -> Result<Outcome, ClusterError> {
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
    let mut codes = BTreeMap::new();
    while let Some(joined) = followers.join_next().await {
        match joined {
            Ok((label, Ok(run))) => {
                codes.insert(label, wait::Outcome::of_run(&run));
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
    Ok(outcome(&workflow, &codes))
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

/// The exit status of a terminal Workflow: 0, 124 timed out, cancelled, else the
/// first failed step's status (1 when none is known).
fn outcome(workflow: &Workflow, codes: &BTreeMap<String, Outcome>) -> Outcome {
    match workflow.status.as_ref().and_then(|s| s.phase) {
        Some(WorkflowPhase::Succeeded) => Outcome::Code(0),
        Some(WorkflowPhase::TimedOut) => {
            eprintln!("krt run: the Workflow timed out");
            Outcome::Code(EXIT_TIMED_OUT)
        }
        Some(WorkflowPhase::Cancelled) => Outcome::Cancelled,
        _ => steps(workflow)
            .into_iter()
            .filter(|(_, phase, _)| {
                matches!(
                    phase,
                    Some(RunPhase::Failed | RunPhase::Error | RunPhase::TimedOut)
                )
            })
            .find_map(|(label, _, _)| codes.get(&label).copied())
            .unwrap_or(Outcome::Code(EXIT_PLATFORM_ERROR)),
    }
}
