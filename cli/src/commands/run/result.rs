//! How `krt run` ended, as data: the exit status and who chose it (the program, or krt
//! itself), the Run's or the Workflow's facts. It is what `--result-file` writes
//! ([`super::result_file`]), so that a script can tell a program that exited 2 or 124
//! from krt's own 2 (bad input) or 124 (timed out). The schema is documented in
//! `docs/cli.md`, "The result file"; its field names are stable within one
//! [`RESULT_API_VERSION`].

use kruntimes_api::v1alpha1::Run;
use kruntimes_runtimed_api::proto;
use serde::Serialize;

use super::signals::Interrupt;
use crate::error::{EXIT_BAD_INPUT, EXIT_PLATFORM_ERROR, EXIT_TIMED_OUT};

/// The result document's `apiVersion`: a new version is made for any change that is not
/// a new optional field.
pub const RESULT_API_VERSION: &str = "krt.kruntimes.io/v1";
/// The result document's `kind`.
pub const RESULT_KIND: &str = "RunResult";

/// Whose exit status krt ended with: the `source` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The program's own: its exit code, or 128 + the signal that killed it (for a
    /// Workflow, the step's the status comes from; 0 when every step's program exited 0).
    Program,
    /// krt's: it timed out, was interrupted, refused the input, or something failed.
    Krt,
}

/// Why krt ended with its exit status: the `reason` field, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The Run succeeded (every step, for a Workflow): status 0.
    Succeeded,
    /// The program exited non-zero or was killed by a signal: its status.
    ProgramFailed,
    /// Created in the cluster without `--wait`: status 0, nothing was followed.
    Created,
    /// The Run, the Workflow or a step timed out: 124.
    TimedOut,
    /// krt got SIGINT, SIGTERM or SIGHUP and cancelled what ran: 130, 143, 129.
    Interrupted,
    /// Cancelled by someone else (`krt cancel`): 130.
    Cancelled,
    /// krt's stdout was closed by its reader: 141.
    StdoutClosed,
    /// The input could not be used (the manifest, a flag): 2, nothing ran.
    InvalidInput,
    /// The Run succeeded but its artifacts did not all reach the store: 1.
    ArtifactsFailed,
    /// The platform failed (runtimed, the API server, a Run that ended `Error`): 1.
    PlatformError,
}

impl Reason {
    /// Whose status a reason's is.
    pub fn source(self) -> Source {
        match self {
            Self::Succeeded | Self::ProgramFailed => Source::Program,
            _ => Source::Krt,
        }
    }
}

/// What is known of one Run (the Run of `krt run`, or a Workflow step's): its terminal
/// phase and how its program ended, with the reason and message of its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFacts {
    /// `Succeeded`, `Failed`, `TimedOut`, `Cancelled` or `Error`; none before one.
    pub phase: Option<String>,
    /// The program's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the program, when one did.
    pub signal: Option<i32>,
    /// The reason of the phase (`NonZeroExit`, `ProgramNotFound`, `DeadlineExceeded`...).
    pub reason: Option<String>,
    /// Its human-readable detail.
    pub message: Option<String>,
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl RunFacts {
    /// The facts of a terminal execution (`krt run --local`).
    pub fn of_execution(execution: &proto::Execution) -> RunFacts {
        let phase = match proto::Phase::try_from(execution.phase) {
            Ok(proto::Phase::Succeeded) => Some("Succeeded"),
            Ok(proto::Phase::Failed) => Some("Failed"),
            Ok(proto::Phase::TimedOut) => Some("TimedOut"),
            Ok(proto::Phase::Cancelled) => Some("Cancelled"),
            Ok(proto::Phase::Error) => Some("Error"),
            _ => None,
        };
        RunFacts {
            phase: phase.map(str::to_owned),
            exit_code: execution.exit_code,
            signal: execution.signal,
            reason: non_empty(&execution.reason),
            message: non_empty(&execution.message),
        }
    }

    /// The facts of a Run as its status in the cluster says.
    pub fn of_run(run: &Run) -> RunFacts {
        let status = run.status.clone().unwrap_or_default();
        RunFacts {
            phase: status.phase.map(|p| format!("{p:?}")),
            exit_code: status.exit_code,
            signal: None,
            reason: status.reason.filter(|r| !r.is_empty()),
            message: status.message.filter(|m| !m.is_empty()),
        }
    }
}

/// One step of a Workflow in the result: `jobs[].steps[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// Its child Run's name (in a cluster; none locally, or before it was created).
    pub run: Option<String>,
    /// How its Run ended, flattened: `phase`, `exitCode`, `signal`, `reason`, `message`.
    #[serde(flatten)]
    pub facts: RunFacts,
}

/// One job of a Workflow in the result: `jobs[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Its phase (`Succeeded`, `Failed`, `Skipped`, `TimedOut`, `Cancelled`; `Pending` or
    /// `Running` when krt stopped before it ended).
    pub phase: String,
    /// Its steps, in order.
    pub steps: Vec<StepResult>,
}

/// A Workflow's facts: its phase, its jobs, and the step its status comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowFacts {
    /// Its terminal phase; none when krt stopped before it ended.
    pub phase: Option<String>,
    /// Every job, in the order of the spec.
    pub jobs: Vec<JobResult>,
    /// `job/step` of the step whose status krt ended with (the first that failed).
    pub step: Option<String>,
}

/// How `krt run` ended: its exit status, why, and what is known of what ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    /// krt's exit status.
    pub status: i32,
    /// Why.
    pub reason: Reason,
    /// The same in words (what krt printed on stderr, or what the program did).
    pub message: String,
    /// The Run's facts; for a Workflow, those of the step the status comes from.
    pub run: Option<RunFacts>,
    /// A Workflow's facts.
    pub workflow: Option<WorkflowFacts>,
}

impl Ending {
    /// An ending krt decided with nothing known of a Run.
    pub fn krt(status: i32, reason: Reason, message: impl Into<String>) -> Ending {
        Ending {
            status,
            reason,
            message: message.into(),
            run: None,
            workflow: None,
        }
    }

    /// Bad input: exit 2.
    pub fn invalid(message: impl Into<String>) -> Ending {
        Ending::krt(EXIT_BAD_INPUT, Reason::InvalidInput, message)
    }

    /// A platform error: exit 1.
    pub fn platform(message: impl Into<String>) -> Ending {
        Ending::krt(EXIT_PLATFORM_ERROR, Reason::PlatformError, message)
    }

    /// krt got `signal`, cancelled what ran and ended with 128 + the signal.
    pub(crate) fn interrupted(signal: Interrupt, what: &str) -> Ending {
        Ending::krt(
            signal.exit_code(),
            Reason::Interrupted,
            format!("krt got {} and cancelled {what}", signal.signal_name()),
        )
    }

    /// krt's stdout was closed by its reader: 141.
    pub fn stdout_closed(what: &str) -> Ending {
        Ending::krt(
            super::follow::EXIT_BROKEN_PIPE,
            Reason::StdoutClosed,
            format!("krt's stdout was closed by its reader; {what}"),
        )
    }

    /// The ending of a terminal Run with these facts: 0, the program's code (128 + the
    /// signal that killed it), 124 timed out, `interrupted`'s status when cancelled (130
    /// when krt did not cancel it), 1 for a platform error. What krt decided is said on
    /// stderr (a line starting with `krt run:`); a program's code is passed through.
    pub(crate) fn of_run(facts: RunFacts, interrupted: Option<Interrupt>) -> Ending {
        let (status, reason, message) = match facts.phase.as_deref() {
            Some("Succeeded") => (0, Reason::Succeeded, "the program exited 0".to_owned()),
            Some("Failed") => match (facts.exit_code, facts.signal) {
                (Some(code), _) => (
                    code.clamp(1, 255),
                    Reason::ProgramFailed,
                    format!("the program exited with {code}"),
                ),
                (None, Some(signal)) => (
                    128 + signal,
                    Reason::ProgramFailed,
                    format!("the program was killed by signal {signal}"),
                ),
                (None, None) => {
                    let message = format!("failed: {}", reason_and_message(&facts));
                    eprintln!("krt run: {message}");
                    (EXIT_PLATFORM_ERROR, Reason::PlatformError, message)
                }
            },
            Some("TimedOut") => {
                eprintln!("krt run: timed out");
                (
                    EXIT_TIMED_OUT,
                    Reason::TimedOut,
                    "the Run timed out".to_owned(),
                )
            }
            Some("Cancelled") => match interrupted {
                Some(signal) => (
                    signal.exit_code(),
                    Reason::Interrupted,
                    format!("krt got {} and cancelled the Run", signal.signal_name()),
                ),
                None => (130, Reason::Cancelled, "the Run was cancelled".to_owned()),
            },
            _ => {
                let message = format!("error: {}", reason_and_message(&facts));
                eprintln!("krt run: {message}");
                (EXIT_PLATFORM_ERROR, Reason::PlatformError, message)
            }
        };
        Ending {
            status,
            reason,
            message,
            run: Some(facts),
            workflow: None,
        }
    }
}

fn reason_and_message(facts: &RunFacts) -> String {
    format!(
        "{}: {}",
        facts.reason.as_deref().unwrap_or_default(),
        facts.message.as_deref().unwrap_or_default()
    )
}

/// The object `krt run` ran or created: the result's `object`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// `Run` or `Workflow`.
    pub kind: String,
    /// Its name (in a cluster, the generated one once created).
    pub name: String,
    /// Its namespace in a cluster; none for `--local`.
    pub namespace: Option<String>,
}

/// The result document, as written.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    api_version: &'static str,
    kind: &'static str,
    krt_exit_status: i32,
    source: Source,
    reason: Reason,
    message: &'a str,
    local: bool,
    object: Option<&'a ObjectRef>,
    phase: Option<&'a str>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a RunFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<&'a [JobResult]>,
}

/// The result document of `ending`, for `object` (when known), as indented JSON with
/// its fields in the documented order, and a final newline.
pub fn render(ending: &Ending, object: Option<&ObjectRef>, local: bool) -> String {
    let workflow = ending.workflow.as_ref();
    let phase = match workflow {
        Some(w) => w.phase.as_deref(),
        None => ending.run.as_ref().and_then(|r| r.phase.as_deref()),
    };
    let document = Document {
        api_version: RESULT_API_VERSION,
        kind: RESULT_KIND,
        krt_exit_status: ending.status,
        source: ending.reason.source(),
        reason: ending.reason,
        message: &ending.message,
        local,
        object,
        phase,
        exit_code: ending.run.as_ref().and_then(|r| r.exit_code),
        signal: ending.run.as_ref().and_then(|r| r.signal),
        run: ending.run.as_ref().filter(|_| workflow.is_none()),
        step: workflow.and_then(|w| w.step.as_deref()),
        jobs: workflow.map(|w| w.jobs.as_slice()),
    };
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_else(|e| {
        // Every field is a string, a number, a boolean or a list of them: this cannot
        // fail, but a result must still be written.
        serde_json::json!({"apiVersion": RESULT_API_VERSION, "kind": RESULT_KIND,
            "krtExitStatus": ending.status, "source": "krt", "reason": "PlatformError",
            "message": format!("the result could not be encoded: {e}")})
        .to_string()
    });
    text.push('\n');
    text
}

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
