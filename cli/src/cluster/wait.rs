//! Following a Run to its end: its output live (pods/log, [`super::output`]), then its
//! terminal phase, then the exit status that phase means, computed as `krt run
//! --local` computes it ([`crate::commands::run::follow::exit_code`]).

use std::time::Duration;

use kruntimes_api::v1alpha1::{Run, RunPhase};
use kruntimes_runtimed_api::proto;
use kube::api::{Api, Patch, PatchParams};

use super::error::Request;
use super::output::{self, Followed, LogSource};
use super::records::{Stream, Tracker};
use super::{Cluster, ClusterError};
use crate::commands::run::follow::{Output, exit_code};

/// How often a Run's status is read while krt waits for it to start or to end: a
/// status is written a few times per Run, so this bounds how late krt sees a change
/// without loading the API server (one GET per period per waiting krt).
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long krt keeps reading a log after the Run turned terminal without both of its
/// streams' ends in it (an agent that does not mirror, a log rotated away): then it
/// falls back to the status tails instead of waiting for the container to end.
pub const TERMINAL_LOG_GRACE: Duration = Duration::from_secs(3);

/// What following produced.
#[derive(Debug)]
pub struct Ended {
    /// The Run, terminal.
    pub run: Run,
    /// Whether its output came complete through the log (else the tails were shown, or
    /// nothing).
    pub complete: bool,
}

/// How a followed Run or Workflow ended, for its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this status.
    Code(i32),
    /// It was cancelled: 128 + the signal when krt cancelled it, else 130.
    Cancelled,
}

impl Outcome {
    /// The outcome of a terminal Run.
    pub fn of_run(run: &Run) -> Outcome {
        match phase_of(run) {
            Some(RunPhase::Cancelled) => Outcome::Cancelled,
            _ => Outcome::Code(run_exit_code(run, 130)),
        }
    }
}

/// Reads Run `name`.
pub async fn get_run(cluster: &Cluster, name: &str) -> Result<Run, ClusterError> {
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    runs.get(name).await.map_err(|e| {
        cluster.error(
            &Request {
                verb: "get",
                resource: "runs.kruntimes.io",
                kind: "Run",
                name: Some(name),
                namespace: Some(&cluster.namespace),
            },
            e,
        )
    })
}

fn phase_of(run: &Run) -> Option<RunPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn is_terminal(run: &Run) -> bool {
    phase_of(run).is_some_and(RunPhase::is_terminal)
}

/// Follows Run `name` to its terminal phase, writing its output (only `only`'s stream
/// when given; each line prefixed with `[prefix]` when given) as it comes.
pub async fn follow_run(
    cluster: &Cluster,
    name: &str,
    only: Option<Stream>,
    prefix: Option<&str>,
) -> Result<Ended, ClusterError> {
    let mut output = Output::new(prefix);
    let mut tracker: Option<Tracker> = None;
    loop {
        let run = get_run(cluster, name).await?;
        let terminal = is_terminal(&run);
        let Some(source) = output::source(cluster, &run).await? else {
            if terminal {
                let received = tracker.as_ref().is_some_and(|t| t.received() != [0, 0]);
                if !received {
                    output::write_tails(&run, only, "the Run's pod is gone")?;
                }
                output.finish().map_err(output::write_error)?;
                return Ok(Ended {
                    run,
                    complete: false,
                });
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
            continue;
        };
        let tracker = tracker.get_or_insert_with(|| Tracker::new(&source.execution));
        let followed =
            read_until_terminal(cluster, name, &source, tracker, &mut output, only, terminal)
                .await?;
        if followed == Followed::Complete || terminal {
            let run = wait_terminal(cluster, name).await?;
            if followed != Followed::Complete && tracker.received() == [0, 0] {
                output::write_tails(&run, only, "the Run's output is not in its pod's log")?;
            } else if followed != Followed::Complete {
                eprintln!(
                    "krt: the log of pod {} ended before the Run's output did; `krt logs {name}` shows the tails kept in its status",
                    source.pod
                );
            }
            output.finish().map_err(output::write_error)?;
            return Ok(Ended {
                run,
                complete: followed == Followed::Complete,
            });
        }
        // The log ended while the Run runs (a dropped connection): read it again; what
        // was already written is dropped by its offsets.
        tokio::time::sleep(STATUS_POLL_INTERVAL).await;
    }
}

/// Follows the log while the Run runs; once it is terminal, for at most
/// [`TERMINAL_LOG_GRACE`] more. A Run already terminal is read without following.
async fn read_until_terminal(
    cluster: &Cluster,
    name: &str,
    source: &LogSource,
    tracker: &mut Tracker,
    output: &mut Output<'_>,
    only: Option<Stream>,
    terminal: bool,
) -> Result<Followed, ClusterError> {
    if terminal {
        return output::follow_log(cluster, source, tracker, output, false, only).await;
    }
    let ended_and_grace = async {
        loop {
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
            if get_run(cluster, name).await.is_ok_and(|r| is_terminal(&r)) {
                tokio::time::sleep(TERMINAL_LOG_GRACE).await;
                return;
            }
        }
    };
    tokio::select! {
        followed = output::follow_log(cluster, source, tracker, output, true, only) => followed,
        () = ended_and_grace => Ok(Followed::LogEnded),
    }
}

/// Waits until Run `name` is terminal and returns it.
pub async fn wait_terminal(cluster: &Cluster, name: &str) -> Result<Run, ClusterError> {
    loop {
        let run = get_run(cluster, name).await?;
        if is_terminal(&run) {
            return Ok(run);
        }
        tokio::time::sleep(STATUS_POLL_INTERVAL).await;
    }
}

/// Sets `spec.cancel: true` on Run or Workflow `name` (`resource`: `runs` or
/// `workflows`).
pub async fn request_cancel(cluster: &Cluster, kind: &str, name: &str) -> Result<(), ClusterError> {
    let patch = Patch::Merge(serde_json::json!({"spec": {"cancel": true}}));
    let params = PatchParams::default();
    let (resource, result) = match kind {
        "Workflow" => {
            let api: Api<kruntimes_api::v1alpha1::Workflow> =
                Api::namespaced(cluster.client.clone(), &cluster.namespace);
            (
                "workflows.kruntimes.io",
                api.patch(name, &params, &patch).await.map(|_| ()),
            )
        }
        _ => {
            let api: Api<Run> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
            (
                "runs.kruntimes.io",
                api.patch(name, &params, &patch).await.map(|_| ()),
            )
        }
    };
    result.map_err(|e| {
        cluster.error(
            &Request {
                verb: "patch",
                resource,
                kind,
                name: Some(name),
                namespace: Some(&cluster.namespace),
            },
            e,
        )
    })
}

/// The exit status a terminal Run means, as `krt run --local` computes it for the
/// same phase: 0, the program's code, 124 timed out, `cancelled` when cancelled, 1 for
/// a platform error (its reason printed).
pub fn run_exit_code(run: &Run, cancelled: i32) -> i32 {
    let status = run.status.clone().unwrap_or_default();
    let phase = match status.phase {
        Some(RunPhase::Succeeded) => proto::Phase::Succeeded,
        Some(RunPhase::Failed) => proto::Phase::Failed,
        Some(RunPhase::TimedOut) => proto::Phase::TimedOut,
        Some(RunPhase::Cancelled) => proto::Phase::Cancelled,
        Some(RunPhase::Error) => proto::Phase::Error,
        _ => proto::Phase::Unspecified,
    };
    let execution = proto::Execution {
        phase: phase as i32,
        exit_code: status.exit_code,
        reason: status.reason.unwrap_or_default(),
        message: status.message.unwrap_or_default(),
        ..proto::Execution::default()
    };
    exit_code(&execution, cancelled)
}

#[cfg(test)]
mod tests {
    use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus};

    use super::run_exit_code;

    fn run(phase: RunPhase, exit_code: Option<i32>) -> Run {
        let mut run = Run::new("r", Default::default());
        run.status = Some(RunStatus {
            phase: Some(phase),
            exit_code,
            ..RunStatus::default()
        });
        run
    }

    #[test]
    fn phases_map_to_the_exit_statuses_of_run_local() {
        assert_eq!(run_exit_code(&run(RunPhase::Succeeded, Some(0)), 130), 0);
        assert_eq!(run_exit_code(&run(RunPhase::Failed, Some(3)), 130), 3);
        assert_eq!(run_exit_code(&run(RunPhase::Failed, Some(300)), 130), 255);
        assert_eq!(run_exit_code(&run(RunPhase::Failed, None), 130), 1);
        assert_eq!(run_exit_code(&run(RunPhase::TimedOut, None), 130), 124);
        assert_eq!(run_exit_code(&run(RunPhase::Cancelled, None), 130), 130);
        assert_eq!(run_exit_code(&run(RunPhase::Cancelled, None), 143), 143);
        assert_eq!(run_exit_code(&run(RunPhase::Error, None), 130), 1);
    }
}
