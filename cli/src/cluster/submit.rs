//! `krt run` against a cluster: the Run or Workflow of `-f FILE` (checked with the
//! webhook's rules first: exit 2 with the violations, nothing created), or a Run made
//! from `--runtime NAME` and `--script FILE` or `-- COMMAND ARGS...`; created, and
//! with `--wait` followed to its end ([`super::wait`], [`super::workflow`]).

use std::path::PathBuf;

use kruntimes_api::v1alpha1::{Run, Workflow};
use kruntimes_api::validation::check_document;
use kruntimes_api::validation::document::TypedObject;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::error::Request;
use super::output::is_broken_pipe;
use super::{Cluster, ClusterArgs, ClusterError, wait, workflow};
use crate::commands::run::read_checked;
use crate::commands::run::result::{Ending, ObjectRef, Reason};
use crate::commands::run::result_file::ResultSink;
use crate::commands::run::signals::Interrupts;

/// The generated name's prefix of a Run made from flags (`krt-` and five characters
/// from the API server).
pub const GENERATED_NAME_PREFIX: &str = "krt-";

/// What `krt run` was asked to do in a cluster.
#[derive(Debug)]
pub struct ClusterRun {
    /// `-f FILE`.
    pub file: Option<PathBuf>,
    /// `--wait`.
    pub wait: bool,
    /// `--timeout D`.
    pub timeout: Option<String>,
    /// `--runtime NAME`.
    pub runtime: Option<String>,
    /// `--script FILE`.
    pub script: Option<PathBuf>,
    /// `--interpreter bash|python`.
    pub interpreter: Option<String>,
    /// `--name NAME`.
    pub name: Option<String>,
    /// `-- COMMAND ARGS...`.
    pub command: Vec<String>,
    /// Cluster access.
    pub cluster: ClusterArgs,
}

/// The object to create, checked.
#[derive(Debug)]
pub enum Submission {
    /// A Run.
    Run(Box<Run>),
    /// A Workflow.
    Workflow(Box<Workflow>),
}

/// Runs `krt run` in a cluster and returns how it ended (its exit status and why).
pub fn run(args: ClusterRun, sink: &ResultSink) -> Ending {
    let result = build(&args).and_then(|submission| {
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| ClusterError::Platform(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(async {
            let cluster = Cluster::connect(&args.cluster).await?;
            submit(&cluster, submission, args.wait, sink).await
        })
    });
    result.unwrap_or_else(|e| {
        eprintln!("krt run: {e}");
        ending_of_error(&e)
    })
}

/// The ending of an error `krt run` stops with in a cluster: bad input (2) or a
/// platform error (1), as [`ClusterError::exit_code`] says.
pub fn ending_of_error(error: &ClusterError) -> Ending {
    let reason = match error.exit_code() {
        crate::error::EXIT_BAD_INPUT => Reason::InvalidInput,
        _ => Reason::PlatformError,
    };
    Ending::krt(error.exit_code(), reason, error.to_string())
}

/// The checked object `args` ask for.
pub fn build(args: &ClusterRun) -> Result<Submission, ClusterError> {
    let mut submission = match (&args.file, &args.runtime) {
        (Some(file), None) => from_file(file)?,
        (None, Some(runtime)) => from_flags(args, runtime)?,
        _ => {
            return Err(ClusterError::BadInput(
                "krt run needs -f FILE (a Run or Workflow manifest) or --runtime NAME with --script FILE or -- COMMAND ARGS... (or --local -f FILE to run here)"
                    .into(),
            ));
        }
    };
    if let Some(timeout) = &args.timeout {
        kruntimes_api::duration::parse(timeout)
            .map_err(|e| ClusterError::BadInput(format!("--timeout {timeout:?}: {e}")))?;
        match &mut submission {
            Submission::Run(run) => run.spec.timeout = Some(timeout.clone()),
            Submission::Workflow(workflow) => workflow.spec.timeout = Some(timeout.clone()),
        }
    }
    Ok(submission)
}

fn from_file(file: &std::path::Path) -> Result<Submission, ClusterError> {
    let checked = read_checked(file).map_err(|e| ClusterError::BadInput(e.to_string()))?;
    if !checked.runtimes.is_empty() {
        eprintln!(
            "krt run: {}: the Runtimes in the file are not created (they serve --local); apply them with kubectl",
            file.display()
        );
    }
    match checked.object {
        TypedObject::Run(run) => Ok(Submission::Run(run)),
        TypedObject::Workflow(workflow) => Ok(Submission::Workflow(workflow)),
        TypedObject::Runtime(_) => Err(ClusterError::BadInput(format!(
            "{}: krt run takes a Run or a Workflow",
            file.display()
        ))),
    }
}

/// A Run of `runtime` from `--script` or the command, checked like a manifest.
fn from_flags(args: &ClusterRun, runtime: &str) -> Result<Submission, ClusterError> {
    let mut spec = json!({"runtimeRef": {"name": runtime}});
    match (&args.script, args.command.as_slice()) {
        (Some(path), []) => {
            let script = std::fs::read_to_string(path)
                .map_err(|e| ClusterError::BadInput(format!("--script {}: {e}", path.display())))?;
            let interpreter = match args.interpreter.as_deref() {
                Some(i @ ("bash" | "python")) => i,
                Some(other) => {
                    return Err(ClusterError::BadInput(format!(
                        "--interpreter {other:?}: expected bash or python"
                    )));
                }
                None if path.extension().is_some_and(|e| e == "py") => "python",
                None => "bash",
            };
            spec["interpreter"] = json!(interpreter);
            spec["script"] = json!(script);
        }
        (None, [command, rest @ ..]) => {
            spec["interpreter"] = json!("exec");
            spec["command"] = json!([command]);
            if !rest.is_empty() {
                spec["args"] = json!(rest);
            }
        }
        (Some(_), [_, ..]) => {
            return Err(ClusterError::BadInput(
                "--script and -- COMMAND are exclusive: give one program".into(),
            ));
        }
        (None, []) => {
            return Err(ClusterError::BadInput(
                "--runtime needs a program: --script FILE or -- COMMAND ARGS...".into(),
            ));
        }
    }
    let metadata = match &args.name {
        Some(name) => json!({"name": name}),
        None => json!({"generateName": GENERATED_NAME_PREFIX}),
    };
    let value = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": metadata, "spec": spec});
    checked_run(&value)
}

fn checked_run(value: &Value) -> Result<Submission, ClusterError> {
    let checked = check_document(value).map_err(|e| ClusterError::BadInput(e.to_string()))?;
    if !checked.violations.is_empty() {
        let lines: Vec<String> = checked
            .violations
            .iter()
            .map(|v| format!("Run/{}: {v}", checked.name))
            .collect();
        return Err(ClusterError::BadInput(lines.join("\n")));
    }
    match checked.object {
        Some(TypedObject::Run(run)) => Ok(Submission::Run(run)),
        _ => Err(ClusterError::Platform(
            "the Run made from the flags did not decode".into(),
        )),
    }
}

/// Creates `submission` and, with `wait`, follows it; returns how it ended. The
/// created object is named in `sink`'s result.
pub async fn submit(
    cluster: &Cluster,
    submission: Submission,
    wait: bool,
    sink: &ResultSink,
) -> Result<Ending, ClusterError> {
    // Before the create: a Ctrl-C from now on is krt's to handle (cancelling the Run
    // once it exists), not one that leaves a Run behind.
    let interrupts = if wait {
        Some(
            Interrupts::install()
                .map_err(|e| ClusterError::Platform(format!("cannot handle signals: {e}")))?
                .with_result(sink.clone()),
        )
    } else {
        None
    };
    let namespace = namespace_of(cluster, &submission)?;
    let cluster = &Cluster {
        namespace,
        ..cluster.clone()
    };
    let (kind, name) = create(cluster, submission).await?;
    sink.set_object(ObjectRef {
        kind: kind.to_owned(),
        name: name.clone(),
        namespace: Some(cluster.namespace.clone()),
    });
    let noun = kind.to_lowercase();
    let Some(interrupts) = interrupts else {
        println!("{noun}/{name} created");
        return Ok(Ending::krt(
            0,
            Reason::Created,
            format!("{noun}/{name} created"),
        ));
    };
    eprintln!(
        "krt run: {noun}/{name} created in namespace {}",
        cluster.namespace
    );
    let watcher = cancel_on_signal(cluster.clone(), kind, name.clone(), interrupts);
    let ended = match kind {
        "Workflow" => workflow::follow_workflow(cluster, &name).await,
        _ => wait::follow_run(cluster, &name, None, None)
            .await
            .map(|ended| wait::ending_of_run(&ended.run)),
    };
    let interrupted = if watcher.is_finished() {
        watcher.await.ok()
    } else {
        watcher.abort();
        None
    };
    match ended {
        // Cancelled: 128 + the signal when krt cancelled it, else 130 as --local.
        Ok(ending) => Ok(match interrupted {
            Some(signal) if ending.reason == Reason::Cancelled => Ending {
                run: ending.run,
                workflow: ending.workflow,
                ..Ending::interrupted(signal, &format!("{noun}/{name}"))
            },
            _ => ending,
        }),
        // The Run goes on: it is the cluster's, not krt's.
        Err(e) if is_broken_pipe(&e) => Ok(Ending::stdout_closed(&format!(
            "{noun}/{name} goes on in the cluster"
        ))),
        Err(e) => Err(e),
    }
}

/// On the first SIGINT, SIGTERM or SIGHUP: `spec.cancel: true` on the object; the
/// follower goes on to its terminal phase. Returns the signal.
fn cancel_on_signal(
    cluster: Cluster,
    kind: &'static str,
    name: String,
    mut interrupts: Interrupts,
) -> tokio::task::JoinHandle<crate::commands::run::signals::Interrupt> {
    tokio::spawn(async move {
        let got = interrupts.first().await;
        if let Err(e) = wait::request_cancel(&cluster, kind, &name).await {
            eprintln!("krt run: cannot cancel {}/{name}: {e}", kind.to_lowercase());
        }
        got
    })
}

/// Creates the object in the cluster's namespace; returns its kind and name.
async fn create(
    cluster: &Cluster,
    submission: Submission,
) -> Result<(&'static str, String), ClusterError> {
    let post = PostParams::default();
    let namespace = cluster.namespace.as_str();
    let (kind, resource, result) = match submission {
        Submission::Run(run) => {
            let api: Api<Run> = Api::namespaced(cluster.client.clone(), namespace);
            let created = api.create(&post, &run).await.map(|r| r.metadata.name);
            ("Run", "runs.kruntimes.io", created)
        }
        Submission::Workflow(workflow) => {
            let api: Api<Workflow> = Api::namespaced(cluster.client.clone(), namespace);
            let created = api.create(&post, &workflow).await.map(|w| w.metadata.name);
            ("Workflow", "workflows.kruntimes.io", created)
        }
    };
    let request = Request {
        verb: "create",
        resource,
        kind,
        name: None,
        namespace: Some(namespace),
    };
    let name = result.map_err(|e| cluster.error(&request, e))?;
    Ok((kind, name.unwrap_or_default()))
}

/// The namespace to create in: the manifest's (which must match `-n` when both are
/// given), else the cluster's.
fn namespace_of(cluster: &Cluster, submission: &Submission) -> Result<String, ClusterError> {
    let manifest = match submission {
        Submission::Run(run) => run.metadata.namespace.as_deref(),
        Submission::Workflow(workflow) => workflow.metadata.namespace.as_deref(),
    };
    match manifest {
        Some(ns) if ns != cluster.namespace && cluster.explicit_namespace => {
            Err(ClusterError::BadInput(format!(
                "the manifest's namespace {ns:?} does not match -n {:?}",
                cluster.namespace
            )))
        }
        Some(ns) => Ok(ns.to_owned()),
        None => Ok(cluster.namespace.clone()),
    }
}
