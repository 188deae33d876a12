//! Following a Run to its end: its output live (pods/log, [`super::output`]), then its
//! terminal phase; the exit status that phase means is computed as `krt run --local`
//! computes it ([`crate::commands::run::result::Ending::of_run`]).

use std::time::Duration;

use kruntimes_api::v1alpha1::{Run, RunPhase};
use kube::api::{Api, Patch, PatchParams};

use super::error::Request;
use super::output::{self, Followed, LogSource};
use super::records::{Stream, Tracker};
use super::{Cluster, ClusterError};
use crate::commands::run::follow::Output;
use crate::commands::run::result::{Ending, RunFacts};

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

/// How a terminal Run ends `krt run --wait`, as `krt run --local` computes it for the
/// same phase: 0, the program's code, 124 timed out, 130 cancelled, 1 for a platform
/// error (its reason printed).
pub fn ending_of_run(run: &Run) -> Ending {
    Ending::of_run(RunFacts::of_run(run), None)
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

#[cfg(test)]
mod tests {
    use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus};

    use super::ending_of_run;
    use crate::commands::run::result::Reason;

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
        let cases = [
            (RunPhase::Succeeded, Some(0), 0, Reason::Succeeded),
            (RunPhase::Failed, Some(3), 3, Reason::ProgramFailed),
            (RunPhase::Failed, Some(300), 255, Reason::ProgramFailed),
            (RunPhase::Failed, Some(124), 124, Reason::ProgramFailed),
            (RunPhase::Failed, None, 1, Reason::PlatformError),
            (RunPhase::TimedOut, None, 124, Reason::TimedOut),
            (RunPhase::Cancelled, None, 130, Reason::Cancelled),
            (RunPhase::Error, None, 1, Reason::PlatformError),
        ];
        for (phase, code, status, reason) in cases {
            let ending = ending_of_run(&run(phase, code));
            assert_eq!(
                (ending.status, ending.reason),
                (status, reason),
                "{phase:?} {code:?}"
            );
            let facts = ending.run.unwrap();
            assert_eq!(facts.phase.as_deref(), Some(format!("{phase:?}").as_str()));
            assert_eq!(facts.exit_code, code);
        }
    }
}
