//! `krt run`: in a cluster (the default) it creates the Run or Workflow and, with
//! `--wait`, follows it ([`crate::cluster::submit`]); with `--local -f FILE` it executes a Run or a Workflow on the local machine through the
//! same gRPC API the controller uses. It validates like the webhook, starts `runtimed
//! agent` and `runtimed sidecar` as children on private sockets and a private
//! workspace ([`local`]), executes through the sidecar, streams stdout to stdout and
//! stderr to stderr ([`follow`]), and stops both. A Workflow's steps go through the
//! shared planner ([`workflow`]), their output lines prefixed with `[job/step]`.
//!
//! Exit status: 0 succeeded, the program's exit code when it failed (128 + signal when
//! killed by one; for a Workflow, the first failed step's), 124 timed out, 130, 143 or
//! 129 when krt was interrupted by SIGINT, SIGTERM or SIGHUP (the Run is cancelled
//! first), 141 when krt's stdout was closed, 2 invalid input, 1 platform error. The
//! program's codes and krt's overlap; `--result-file` tells them apart ([`result`]).

pub(crate) mod follow;
mod local;
pub mod result;
pub mod result_file;
pub(crate) mod signals;
mod workflow;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use kruntimes_api::v1alpha1::{Run, RuntimeSpec};
use kruntimes_api::validation::check_document;
use kruntimes_api::validation::document::{TypedObject, describe};
use kruntimes_runtimed_api::request::{MAX_RUN_UID_BYTES, RequestError, execute_request};
use kruntimes_runtimed_api::{RuntimedClient, proto};
use tonic::transport::Channel;

pub use local::RUNTIMED_BIN_ENV;

use crate::cluster::ClusterArgs;
use crate::cluster::submit::ClusterRun;
use crate::error::CliError;
use crate::manifest;
use follow::{FollowError, Output, follow, with_artifacts};
use local::{LocalRuntimed, find_runtimed};
use result::{Ending, ObjectRef, RunFacts};
use result_file::ResultSink;
use signals::Interrupts;
use workflow::{WorkflowPlan, execute_workflow, to_plan};

/// Arguments of `krt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run on the local machine, with a runtimed agent and sidecar started for the purpose
    /// (needs -f). Without it, krt creates the Run or Workflow in the cluster.
    #[arg(long)]
    local: bool,
    /// The manifest holding one Run or one Workflow (and, for --local, its Runtimes).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "runtime"
    )]
    file: Option<PathBuf>,
    /// In a cluster: follow the Run or Workflow to its end (its output live) and exit
    /// with its status. `--local` always does.
    #[arg(long)]
    wait: bool,
    /// The Run's or Workflow's `spec.timeout` (`30s`, `5m`, `1h`), replacing the file's;
    /// past it the Run ends TimedOut (exit 124).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// In a cluster: a Run without a manifest, on this Runtime (with --script FILE or
    /// `-- COMMAND ARGS...`).
    #[arg(long, value_name = "NAME")]
    runtime: Option<String>,
    /// With --runtime: the script to run (python for a `.py` file, else bash, unless
    /// --interpreter says).
    #[arg(long, value_name = "FILE", requires = "runtime")]
    script: Option<PathBuf>,
    /// With --script: `bash` or `python`.
    #[arg(long, value_name = "INTERPRETER", requires = "script")]
    interpreter: Option<String>,
    /// With --runtime: the Run's name (default: generated, `krt-` and a suffix, printed).
    #[arg(long, value_name = "NAME", requires = "runtime")]
    name: Option<String>,
    /// Keep the workspace (and print where it is) after the Run ends (--local).
    #[arg(long, requires = "local")]
    keep_workspace: bool,
    /// PEM certificates the sidecar trusts for git fetches besides the system's roots
    /// (a private git server; tests; --local).
    #[arg(long, value_name = "PEM", requires = "local")]
    git_ca_file: Option<PathBuf>,
    /// Write the result as JSON to this file when krt ends (written whole, by a rename):
    /// its exit status and whether it is the program's or krt's own (docs/cli.md, "The
    /// result file").
    #[arg(long, value_name = "PATH")]
    result_file: Option<PathBuf>,
    /// Cluster access.
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --runtime: the command to run and its arguments (interpreter exec).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs `krt run` and returns its exit status, once everything is cleaned up and the
/// result file, if asked for, is written.
pub fn run(args: RunArgs) -> ExitCode {
    let sink = match &args.result_file {
        Some(path) => match ResultSink::prepare(path, args.local) {
            Ok(sink) => sink,
            Err(e) => {
                eprintln!("krt run: {e}");
                return crate::Status::BadInput.into();
            }
        },
        None => ResultSink::none(args.local),
    };
    let ending = if args.local {
        run_code(&args, &sink).unwrap_or_else(|e| {
            eprintln!("krt run: {e}");
            ending_of_error(&e)
        })
    } else {
        crate::cluster::submit::run(to_cluster_run(args), &sink)
    };
    sink.finish(&ending);
    ExitCode::from(u8::try_from(ending.status).unwrap_or(1))
}

/// The ending of an error krt stops with.
fn ending_of_error(error: &CliError) -> Ending {
    match error {
        CliError::BadInput(message) => Ending::invalid(message.clone()),
        CliError::Platform(message) => Ending::platform(message.clone()),
    }
}

fn to_cluster_run(args: RunArgs) -> ClusterRun {
    ClusterRun {
        file: args.file,
        wait: args.wait,
        timeout: args.timeout,
        runtime: args.runtime,
        script: args.script,
        interpreter: args.interpreter,
        name: args.name,
        command: args.command,
        cluster: args.cluster,
    }
}

fn run_code(args: &RunArgs, sink: &ResultSink) -> Result<Ending, CliError> {
    let Some(file) = &args.file else {
        return Err(CliError::BadInput(
            "--local needs -f FILE (a Run or Workflow manifest)".into(),
        ));
    };
    if args.runtime.is_some() || !args.command.is_empty() {
        return Err(CliError::BadInput(
            "--runtime and a command are for a cluster; --local runs the Run or Workflow of -f FILE"
                .into(),
        ));
    }
    if args.timeout.is_some() {
        return Err(CliError::BadInput(
            "--timeout is for a cluster; with --local set spec.timeout in the file".into(),
        ));
    }
    let work = load(file, sink)?;
    let runtimed = find_runtimed()?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Platform(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_local(
        &runtimed,
        work,
        args.keep_workspace,
        args.git_ca_file.as_deref(),
        sink,
    ))
}

/// What a file asks to run.
#[derive(Debug)]
enum Work {
    Run(Box<proto::ExecuteRequest>),
    Workflow(WorkflowPlan),
}

/// The Runtimes given in the file, by name: what they pass on to their Runs here (the
/// default timeout, the git policy, the artifact store), as the controller would.
pub(crate) type Runtimes = BTreeMap<String, RuntimeSpec>;

/// The environment variables the sidecar signs artifact uploads with (locally: krt's
/// own environment, which its runtimed children inherit; in a cluster: the Runtime's
/// `credentialsSecretRef`).
const ARTIFACT_CREDENTIALS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// The one Run or Workflow of a file, checked with every admission rule, and the
/// Runtimes given beside it.
#[derive(Debug)]
pub(crate) struct Checked {
    /// `Run` or `Workflow`.
    pub(crate) kind: &'static str,
    /// Its name (as `describe` words it).
    pub(crate) name: String,
    /// The object.
    pub(crate) object: TypedObject,
    /// The Runtimes of the file, by name.
    pub(crate) runtimes: Runtimes,
}

/// Reads and validates FILE: exactly one Run or Workflow (and optionally Runtimes),
/// without violations; bad input otherwise, naming the file, the object and the field.
pub(crate) fn read_checked(path: &Path) -> Result<Checked, CliError> {
    let file = path.display().to_string();
    let bad = |message: String| CliError::BadInput(format!("{file}: {message}"));
    let documents = manifest::load(path).map_err(|e| bad(e.to_string()))?;
    let mut runtimes = Runtimes::new();
    let mut works = Vec::new();
    for document in &documents {
        let checked = check_document(&document.value).map_err(|e| {
            let (kind, name) = describe(&document.value);
            bad(format!("{kind}/{name}: {e}"))
        })?;
        if !checked.violations.is_empty() {
            let lines: Vec<String> = checked
                .violations
                .iter()
                .map(|v| format!("{file}: {}/{}: {v}", checked.kind, checked.name))
                .collect();
            return Err(CliError::BadInput(lines.join("\n")));
        }
        match checked.object {
            Some(TypedObject::Runtime(runtime)) => {
                runtimes.insert(checked.name, runtime.spec.clone());
            }
            Some(object) => works.push((checked.kind, checked.name, object)),
            None => {}
        }
    }
    let count = works.len();
    let (Some((kind, name, object)), None) = (works.pop(), works.pop()) else {
        return Err(bad(format!(
            "expected exactly one Run or Workflow (and optionally its Runtimes), found {count}"
        )));
    };
    Ok(Checked {
        kind,
        name,
        object,
        runtimes,
    })
}

/// Reads, validates and converts the Run or Workflow (then named in the result).
fn load(path: &Path, sink: &ResultSink) -> Result<Work, CliError> {
    let file = path.display().to_string();
    let bad = |message: String| CliError::BadInput(format!("{file}: {message}"));
    let Checked {
        kind,
        name,
        object,
        runtimes,
    } = read_checked(path)?;
    sink.set_object(ObjectRef {
        kind: kind.to_owned(),
        name: name.clone(),
        namespace: None,
    });
    match &object {
        TypedObject::Run(run) => to_request(run, &runtimes).map(|r| Work::Run(Box::new(r))),
        TypedObject::Workflow(workflow) => {
            if workflow.spec.cancel == Some(true) {
                return Err(bad(format!(
                    "{kind}/{name}: spec.cancel is true: a cancelled Workflow does not run"
                )));
            }
            to_plan(workflow, &runtimes, local_message).map(Work::Workflow)
        }
        TypedObject::Runtime(_) => Err(format!("{kind}/{name}: krt run takes a Run or a Workflow")),
    }
    .map_err(bad)
}

fn to_request(run: &Run, runtimes: &Runtimes) -> Result<proto::ExecuteRequest, String> {
    if run.spec.cancel == Some(true) {
        return Err("spec.cancel is true: a cancelled Run does not run".into());
    }
    let name = run.metadata.name.as_deref().unwrap_or("run");
    // A uid given in the file is not used: in a cluster the API server assigns it, and
    // locally one made from the name fits runtimed's bounds for any valid name.
    let run_uid = local_run_uid(name, std::process::id());
    let runtime = runtimes.get(&run.spec.runtime_ref.name);
    let request = execute_request(&run.spec, run_uid, runtime).map_err(local_message)?;
    check_credentials(&request, credential_set)?;
    Ok(request)
}

/// The execution id of a local Run: `local-<name>-<pid>`, the name cut so the whole fits
/// runtimed's [`MAX_RUN_UID_BYTES`] (a Run name may have 253 characters). Names are
/// ASCII (DNS subdomains), so cutting by bytes keeps them whole characters; within one
/// krt process the names it runs differ within their first 100 characters (Workflow
/// child names have at most 63).
pub(crate) fn local_run_uid(name: &str, pid: u32) -> String {
    let suffix = format!("-{pid}");
    let room = MAX_RUN_UID_BYTES - "local-".len() - suffix.len();
    let cut = name.get(..room.min(name.len())).unwrap_or(name);
    format!("local-{cut}{suffix}")
}

/// A request error in the words of a local run, where Runtimes come from the same file.
fn local_message(error: RequestError) -> String {
    match error {
        RequestError::RuntimeUnknown {
            field,
            runtime,
            why,
        } => format!("{field} needs Runtime {runtime:?} in the same file ({why})"),
        other => other.to_string(),
    }
}

/// Locally the sidecar signs uploads with krt's own environment: both variables must be
/// set before anything runs.
fn check_credentials(
    request: &proto::ExecuteRequest,
    credential: impl Fn(&str) -> bool,
) -> Result<(), String> {
    if request.artifacts.is_none() {
        return Ok(());
    }
    match ARTIFACT_CREDENTIALS
        .into_iter()
        .find(|name| !credential(name))
    {
        Some(missing) => Err(format!(
            "spec.artifacts: {missing} is not set; locally the upload is signed with {} from krt's environment (the Runtime's credentialsSecretRef is a cluster Secret)",
            ARTIFACT_CREDENTIALS.join(" and ")
        )),
        None => Ok(()),
    }
}

/// Whether the environment variable `name` is set and not empty.
fn credential_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| !value.is_empty())
}

async fn run_local(
    runtimed: &Path,
    work: Work,
    keep: bool,
    git_ca_file: Option<&Path>,
    sink: &ResultSink,
) -> Result<Ending, CliError> {
    // Installed before anything starts, so a signal at any moment is krt's to handle.
    let mut interrupts = Interrupts::install()
        .map_err(|e| CliError::Platform(format!("cannot handle signals: {e}")))?
        .with_result(sink.clone());
    let local = tokio::select! {
        started = LocalRuntimed::start(runtimed, keep, git_ca_file) => started?,
        got = interrupts.first() => return Ok(Ending::interrupted(got, "the start")),
    };
    let ending = match work {
        Work::Run(request) => execute(local.client.clone(), *request, &mut interrupts).await,
        Work::Workflow(plan) => {
            execute_workflow(local.client.clone(), plan, local.capacity, &mut interrupts).await
        }
    };
    local.stop(keep).await;
    Ok(ending)
}

/// Cancels execution `id` at once (no grace: krt's user asked it to stop).
async fn cancel_execution(client: &RuntimedClient<Channel>, id: &str) {
    let _ = client
        .clone()
        .cancel(proto::CancelRequest {
            execution_id: id.to_owned(),
            grace_ms: 0,
        })
        .await;
}

/// Executes one Run and follows it to its end, also when it is cancelled (a signal, or
/// krt's stdout closed): krt ends after the Run, never before.
async fn execute(
    mut client: RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
    interrupts: &mut Interrupts,
) -> Ending {
    let id = request.run_uid.clone();
    let mut events = match client.execute_and_follow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let message = format!("execute: {}", status.message());
            eprintln!("krt run: {message}");
            return if status.code() == tonic::Code::InvalidArgument {
                Ending::invalid(message)
            } else {
                Ending::platform(message)
            };
        }
    };
    let mut interrupted = None;
    let mut stdout_closed = false;
    let mut output = Output::new(None);
    let ended = loop {
        tokio::select! {
            ended = follow(&mut events, &mut output) => match ended {
                // The rest is followed quietly: the Run ends (cancelled) before krt does.
                Err(FollowError::BrokenPipe) if !stdout_closed => {
                    stdout_closed = true;
                    output.discard();
                    cancel_execution(&client, &id).await;
                }
                ended => break ended,
            },
            got = interrupts.first(), if interrupted.is_none() => {
                interrupted = Some(got);
                cancel_execution(&client, &id).await;
            }
        }
    };
    // The follow future is dropped when a signal comes; after the cancel, the rest of
    // the call is followed from where it was (`output` and the stream keep their place).
    match ended {
        Ok(execution) if stdout_closed => Ending {
            run: Some(RunFacts::of_execution(&execution)),
            ..Ending::stdout_closed("the Run was cancelled")
        },
        Ok(execution) => with_artifacts(
            Ending::of_run(RunFacts::of_execution(&execution), interrupted),
            &execution,
            None,
        ),
        Err(FollowError::BrokenPipe) => Ending::stdout_closed("the Run was cancelled"),
        Err(FollowError::Failed(message)) => {
            eprintln!("krt run: {message}");
            Ending::platform(message)
        }
    }
}

#[cfg(test)]
mod tests;
