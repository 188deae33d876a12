//! `krt run --local -f FILE`: executes a Run or a Workflow on this machine through the
//! same gRPC API the controller uses. It validates like the webhook, starts
//! `runtimed agent` and `runtimed sidecar` as children on temporary sockets and a
//! temporary workspace, executes through the sidecar, streams stdout to stdout and
//! stderr to stderr, and stops both. A Workflow's steps go through the pure
//! [`planner`], their output lines prefixed with `[job/step]`.
//!
//! Exit status: 0 succeeded, the program's exit code when it failed (128 + signal when
//! killed by one; for a Workflow, the first failed step's), 124 timed out, 130
//! cancelled (Ctrl-C), 2 invalid input, 1 platform error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use std::collections::BTreeMap;

use kruntimes_api::v1alpha1::{Interpreter, Run, RunSpec, RuntimeArtifacts, RuntimeGit, Workflow};
use kruntimes_api::validation::check_document;
use kruntimes_api::validation::document::{TypedObject, describe};
use kruntimes_api::validation::names::child_run_name;
use kruntimes_runtimed::grpc::{RuntimedClient, connect_unix};
use kruntimes_runtimed::proto;
use tonic::transport::Channel;

use crate::Status;
use crate::manifest;

/// Environment variable naming the runtimed binary (otherwise: next to krt).
pub const RUNTIMED_BIN_ENV: &str = "KRT_RUNTIMED_BIN";

/// How long to wait for the agent's and the sidecar's sockets.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit statuses of `krt run` beyond the shared ones.
const EXIT_PLATFORM_ERROR: i32 = 1;
const EXIT_BAD_INPUT: i32 = 2;
const EXIT_TIMED_OUT: i32 = 124;
const EXIT_CANCELLED: i32 = 130;

/// Arguments of `krt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run on this machine, with a runtimed agent started for the purpose (the only
    /// mode for now; a cluster mode will create the Run through the API server).
    #[arg(long)]
    local: bool,
    /// The manifest holding one Run or one Workflow.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Keep the workspace (and print where it is) after the Run ends.
    #[arg(long)]
    keep_workspace: bool,
    /// PEM certificates the sidecar trusts for git fetches besides the system's roots
    /// (a private git server; tests).
    #[arg(long, value_name = "PEM")]
    git_ca_file: Option<PathBuf>,
}

/// Runs `krt run`. Statuses other than 0, 1 and 2 (the program's own exit code, 124,
/// 130) end the process here, once everything is cleaned up.
pub fn run(args: RunArgs) -> Status {
    match run_code(&args) {
        0 => Status::Ok,
        // Here 1 is a platform error: the shared status with that number.
        1 => Status::Violations,
        2 => Status::BadInput,
        code => std::process::exit(code),
    }
}

fn run_code(args: &RunArgs) -> i32 {
    if !args.local {
        eprintln!("krt run: only --local is supported for now");
        return EXIT_BAD_INPUT;
    }
    let work = match load(&args.file) {
        Ok(work) => work,
        Err(code) => return code,
    };
    let runtimed = match find_runtimed() {
        Ok(path) => path,
        Err(message) => {
            eprintln!("krt run: {message}");
            return EXIT_PLATFORM_ERROR;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("krt run: cannot start the async runtime: {e}");
            return EXIT_PLATFORM_ERROR;
        }
    };
    runtime.block_on(run_local(
        runtimed,
        work,
        args.keep_workspace,
        args.git_ca_file.as_deref(),
    ))
}

/// What a file asks to run.
#[derive(Debug)]
enum Work {
    Run(Box<proto::ExecuteRequest>),
    Workflow(WorkflowPlan),
}

/// A Workflow ready for the planner: jobs with resolved needs and their steps' requests.
#[derive(Debug)]
struct WorkflowPlan {
    timeout: Option<Duration>,
    fail_fast: bool,
    jobs: Vec<planner::JobPlan>,
    steps: Vec<Vec<(String, proto::ExecuteRequest)>>,
}

/// Reads, validates and converts the Run or Workflow; Err is the exit status.
fn load(path: &Path) -> Result<Work, i32> {
    let file = path.display().to_string();
    let documents = manifest::load(path).map_err(|e| {
        eprintln!("{file}: {e}");
        EXIT_BAD_INPUT
    })?;
    // One Run or Workflow, and optionally the Runtimes it names (their `git` section is
    // what allows a git source, their `artifacts` section where artifacts go, as the
    // controller would pass them on).
    let mut runtimes = Runtimes::new();
    let mut works = Vec::new();
    for document in &documents {
        let checked = check_document(&document.value).map_err(|e| {
            let (kind, name) = describe(&document.value);
            eprintln!("{file}: {kind}/{name}: {e}");
            EXIT_BAD_INPUT
        })?;
        if !checked.violations.is_empty() {
            for v in &checked.violations {
                eprintln!("{file}: {}/{}: {v}", checked.kind, checked.name);
            }
            return Err(EXIT_BAD_INPUT);
        }
        match checked.object {
            Some(TypedObject::Runtime(runtime)) => {
                runtimes.insert(
                    checked.name,
                    RuntimeSources {
                        git: runtime.spec.git.clone(),
                        artifacts: runtime.spec.artifacts.clone(),
                    },
                );
            }
            Some(object) => works.push((checked.kind, checked.name, object)),
            None => {}
        }
    }
    let [(kind, name, object)] = works.as_slice() else {
        eprintln!(
            "{file}: expected exactly one Run or Workflow (and optionally its Runtimes), found {}",
            works.len()
        );
        return Err(EXIT_BAD_INPUT);
    };
    let work = match object {
        TypedObject::Run(run) => to_request(run, &runtimes).map(|r| Work::Run(Box::new(r))),
        TypedObject::Workflow(workflow) => to_plan(workflow, &runtimes).map(Work::Workflow),
        TypedObject::Runtime(_) => Err(format!("{kind}/{name}: krt run takes a Run or a Workflow")),
    };
    work.map_err(|message| {
        eprintln!("{file}: {message}");
        EXIT_BAD_INPUT
    })
}

/// What a Runtime given in the file passes on to its Runs here.
#[derive(Debug, Default)]
struct RuntimeSources {
    /// Allowed git hosts and limits (without it, git sources are refused).
    git: Option<RuntimeGit>,
    /// Where artifacts go, and their limit (without it, artifacts are refused).
    artifacts: Option<RuntimeArtifacts>,
}

/// The Runtimes given in the file, by name.
type Runtimes = BTreeMap<String, RuntimeSources>;

/// The environment variables the sidecar signs artifact uploads with (locally: krt's
/// own environment, which its runtimed children inherit; in a cluster: the Runtime's
/// `credentialsSecretRef`).
const ARTIFACT_CREDENTIALS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

fn to_plan(workflow: &Workflow, runtimes: &Runtimes) -> Result<WorkflowPlan, String> {
    let name = workflow
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "workflow".into());
    let spec = &workflow.spec;
    let timeout = spec
        .timeout
        .as_deref()
        .map(kruntimes_api::duration::parse)
        .transpose()
        .map_err(|e| format!("spec.timeout: {e}"))?;
    let index = |needed: &str| {
        spec.jobs
            .iter()
            .position(|j| j.name == needed)
            .ok_or_else(|| format!("needs names an unknown job {needed:?}"))
    };
    let mut jobs = Vec::new();
    let mut steps = Vec::new();
    for job in &spec.jobs {
        let needs = job
            .needs
            .iter()
            .map(|n| index(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut requests = Vec::new();
        for step in &job.steps {
            let Some(run_spec) = &step.run else {
                return Err(format!("job {}: step {}: needs run", job.name, step.name));
            };
            let child = child_run_name(&name, &job.name, &step.name);
            let uid = format!("local-{child}-{}", std::process::id());
            requests.push((
                format!("{}/{}", job.name, step.name),
                spec_request(run_spec, uid, runtimes)?,
            ));
        }
        jobs.push(planner::JobPlan {
            name: job.name.clone(),
            needs,
            steps: requests.len(),
        });
        steps.push(requests);
    }
    Ok(WorkflowPlan {
        timeout,
        fail_fast: spec.fail_fast.unwrap_or(true),
        jobs,
        steps,
    })
}

fn to_request(run: &Run, runtimes: &Runtimes) -> Result<proto::ExecuteRequest, String> {
    let name = run.metadata.name.clone().unwrap_or_else(|| "run".into());
    let run_uid = run
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("local-{name}-{}", std::process::id()));
    spec_request(&run.spec, run_uid, runtimes)
}

/// A Run's git source with the limits and allowed hosts of its Runtime, which must be
/// in the same file with a `git` section (as the controller would require).
fn git_request(spec: &RunSpec, runtimes: &Runtimes) -> Result<Option<proto::GitSource>, String> {
    let Some(git) = &spec.git else {
        return Ok(None);
    };
    let runtime = &spec.runtime_ref.name;
    let Some(policy) = runtimes.get(runtime) else {
        return Err(format!(
            "spec.git needs Runtime {runtime:?} in the same file (its spec.git.allowedHosts allows the host)"
        ));
    };
    let Some(policy) = &policy.git else {
        return Err(format!(
            "spec.git: Runtime {runtime:?} has no spec.git section, so git sources are refused"
        ));
    };
    let max_bytes = match &policy.max_bytes {
        Some(q) => kruntimes_api::quantity::parse_bytes(&q.0)
            .map_err(|e| format!("Runtime {runtime:?}: spec.git.maxBytes: {e}"))?,
        None => 0,
    };
    let timeout_ms = match &policy.timeout {
        Some(t) => kruntimes_api::duration::parse(t)
            .map_err(|e| format!("Runtime {runtime:?}: spec.git.timeout: {e}"))?
            .as_millis() as u64,
        None => 0,
    };
    Ok(Some(proto::GitSource {
        url: git.url.clone(),
        r#ref: git.git_ref.clone().unwrap_or_default(),
        path: git.path.clone().unwrap_or_default(),
        allowed_hosts: policy.allowed_hosts.clone(),
        max_bytes,
        timeout_ms,
    }))
}

/// A Run's artifacts with the store and limit of its Runtime, which must be in the same
/// file with an `artifacts` section (as the controller would require). The credentials
/// must be in krt's environment: the sidecar reads them from its own, which it inherits.
fn artifact_request(
    spec: &RunSpec,
    runtimes: &Runtimes,
    credential: impl Fn(&str) -> bool,
) -> Result<Option<proto::ArtifactRequest>, String> {
    let Some(artifacts) = &spec.artifacts else {
        return Ok(None);
    };
    let runtime = &spec.runtime_ref.name;
    let Some(sources) = runtimes.get(runtime) else {
        return Err(format!(
            "spec.artifacts needs Runtime {runtime:?} in the same file (its spec.artifacts.s3 says where to upload)"
        ));
    };
    let Some(config) = &sources.artifacts else {
        return Err(format!(
            "spec.artifacts: Runtime {runtime:?} has no spec.artifacts section, so there is nowhere to upload"
        ));
    };
    if let Some(missing) = ARTIFACT_CREDENTIALS
        .into_iter()
        .find(|name| !credential(name))
    {
        return Err(format!(
            "spec.artifacts: {missing} is not set; locally the upload is signed with {} from krt's environment (the Runtime's credentialsSecretRef is a cluster Secret)",
            ARTIFACT_CREDENTIALS.join(" and ")
        ));
    }
    let max_bytes = match &config.max_bytes {
        Some(q) => kruntimes_api::quantity::parse_bytes(&q.0)
            .map_err(|e| format!("Runtime {runtime:?}: spec.artifacts.maxBytes: {e}"))?,
        None => 0,
    };
    Ok(Some(proto::ArtifactRequest {
        paths: artifacts.paths.clone(),
        max_bytes,
        store: Some(proto::S3Store {
            endpoint: config.s3.endpoint.clone(),
            region: config.s3.region.clone().unwrap_or_default(),
            bucket: config.s3.bucket.clone(),
            prefix: config.s3.prefix.clone().unwrap_or_default(),
        }),
    }))
}

/// Whether the environment variable `name` is set and not empty.
fn credential_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| !value.is_empty())
}

fn spec_request(
    spec: &RunSpec,
    run_uid: String,
    runtimes: &Runtimes,
) -> Result<proto::ExecuteRequest, String> {
    let timeout_ms = match &spec.timeout {
        Some(t) => kruntimes_api::duration::parse(t)
            .map_err(|e| format!("spec.timeout: {e}"))?
            .as_millis() as u64,
        None => 0,
    };
    let input = spec
        .input
        .as_ref()
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| format!("spec.input: {e}"))?;
    Ok(proto::ExecuteRequest {
        run_uid,
        interpreter: match spec.interpreter {
            Interpreter::Bash => proto::Interpreter::Bash,
            Interpreter::Python => proto::Interpreter::Python,
            Interpreter::Exec => proto::Interpreter::Exec,
        } as i32,
        script: spec.script.clone(),
        files: spec
            .files
            .iter()
            .flatten()
            .map(|(path, content)| proto::File {
                path: path.clone(),
                content: content.clone().into_bytes(),
                executable: false,
            })
            .collect(),
        entrypoint: spec.entrypoint.clone(),
        command: spec.command.clone().unwrap_or_default(),
        args: spec.args.clone().unwrap_or_default(),
        env: spec
            .env
            .iter()
            .flatten()
            .map(|e| proto::EnvVar {
                name: e.name.clone(),
                value: e.value.clone(),
            })
            .collect(),
        input,
        timeout_ms,
        keep_workspace: false,
        artifacts: artifact_request(spec, runtimes, credential_set)?,
        git: git_request(spec, runtimes)?,
    })
}

/// `$KRT_RUNTIMED_BIN`, or `runtimed` next to the krt executable (or one directory up,
/// for test binaries in `target/<profile>/deps`).
fn find_runtimed() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(RUNTIMED_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{RUNTIMED_BIN_ENV}={} is not a file",
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find krt's own path: {e}"))?;
    let mut looked = Vec::new();
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("runtimed");
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
        dir = d.parent().filter(|_| d.ends_with("deps"));
    }
    Err(format!(
        "cannot find the runtimed binary (looked at {}); build it with `cargo build -p kruntimes-runtimed` (or `cargo build --workspace`), or set {RUNTIMED_BIN_ENV}",
        looked.join(", ")
    ))
}

async fn run_local(runtimed: PathBuf, work: Work, keep: bool, git_ca_file: Option<&Path>) -> i32 {
    let dir = match tempfile::Builder::new().prefix("krt-run-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("krt run: cannot create a temporary directory: {e}");
            return EXIT_PLATFORM_ERROR;
        }
    };
    let agent_socket = dir.path().join("agent.sock");
    let sidecar_socket = dir.path().join("sidecar.sock");
    let workspace = dir.path().join("workspace");
    let mut agent_args = vec![
        "agent".into(),
        "--socket".into(),
        agent_socket.clone().into_os_string(),
        "--workspace".into(),
        workspace.into_os_string(),
        // Both children stop (the agent cancelling the Run first) if krt is killed
        // without the chance to stop them.
        "--exit-with-parent".into(),
    ];
    if keep {
        agent_args.push("--keep-workspaces".into());
    }
    let mut agent = match spawn_runtimed(&runtimed, &agent_args) {
        Ok(child) => child,
        Err(message) => {
            eprintln!("krt run: {message}");
            return EXIT_PLATFORM_ERROR;
        }
    };
    let mut sidecar_args = vec![
        "sidecar".into(),
        "--listen".into(),
        sidecar_socket.clone().into_os_string(),
        "--agent-socket".into(),
        agent_socket.clone().into_os_string(),
        "--exit-with-parent".into(),
    ];
    if let Some(ca) = git_ca_file {
        sidecar_args.push("--git-ca-file".into());
        sidecar_args.push(ca.as_os_str().to_owned());
    }
    let mut sidecar = match spawn_runtimed(&runtimed, &sidecar_args) {
        Ok(child) => child,
        Err(message) => {
            eprintln!("krt run: {message}");
            stop(&mut agent).await;
            return EXIT_PLATFORM_ERROR;
        }
    };
    // The agent first (the sidecar answers before the agent listens), then the sidecar.
    let connected = match connect(&agent_socket, &mut agent).await {
        Ok(_) => connect(&sidecar_socket, &mut sidecar).await,
        Err(message) => Err(message),
    };
    let code = match connected {
        Ok(client) => match work {
            Work::Run(request) => execute(client, *request).await,
            Work::Workflow(plan) => execute_workflow(client, plan).await,
        },
        Err(message) => {
            eprintln!("krt run: {message}");
            EXIT_PLATFORM_ERROR
        }
    };
    stop(&mut sidecar).await;
    stop(&mut agent).await;
    if keep {
        let kept = dir.keep();
        eprintln!(
            "krt run: workspace kept in {}",
            kept.join("workspace").display()
        );
    }
    code
}

/// Starts `runtimed ARGS` in its own process group, so Ctrl-C reaches krt (which
/// cancels the Run) and not runtimed; killed if krt drops it.
fn spawn_runtimed(
    runtimed: &Path,
    args: &[std::ffi::OsString],
) -> Result<tokio::process::Child, String> {
    let mut command = tokio::process::Command::new(runtimed);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("RUNTIMED_LOG").is_none() {
        command.env("RUNTIMED_LOG", "warn");
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", runtimed.display()))
}

/// Stops a runtimed child (SIGKILL). Normally the Run is terminal by then. If not (krt
/// failed midway), the Run's processes outlive the agent: a known gap, unlike krt
/// itself being killed, which the children see (`--exit-with-parent`): the agent then
/// cancels the Run before it exits.
async fn stop(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

async fn connect(
    socket: &Path,
    agent: &mut tokio::process::Child,
) -> Result<RuntimedClient<Channel>, String> {
    let deadline = tokio::time::Instant::now() + AGENT_START_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = agent.try_wait() {
            return Err(format!(
                "runtimed exited before listening on {} ({status})",
                socket.display()
            ));
        }
        if socket.exists()
            && let Ok(client) = connect_unix(socket).await
        {
            return Ok(client);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "runtimed did not listen on {} within {AGENT_START_TIMEOUT:?}",
                socket.display()
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

async fn execute(mut client: RuntimedClient<Channel>, request: proto::ExecuteRequest) -> i32 {
    let id = request.run_uid.clone();
    let mut events = match client.execute_and_follow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("krt run: execute: {}", status.message());
            return if status.code() == tonic::Code::InvalidArgument {
                EXIT_BAD_INPUT
            } else {
                EXIT_PLATFORM_ERROR
            };
        }
    };
    let mut cancel_client = client.clone();
    let cancel = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("krt run: cancelling");
            let _ = cancel_client
                .cancel(proto::CancelRequest {
                    execution_id: id,
                    grace_ms: 0,
                })
                .await;
        }
    });
    let ended = follow(&mut events, None).await;
    cancel.abort();
    match ended {
        Ok(execution) => with_artifacts(exit_code(&execution), &execution, None),
        Err(message) => {
            eprintln!("krt run: {message}");
            EXIT_PLATFORM_ERROR
        }
    }
}

/// Follows an ExecuteAndFollow call to its end: output to stdout and stderr (with a
/// prefix, each line prefixed), then the Run's final state.
async fn follow(
    events: &mut tonic::Streaming<proto::ExecutionEvent>,
    prefix: Option<&str>,
) -> Result<proto::Execution, String> {
    use proto::execution_event::Event;
    let mut output = Output::new(prefix);
    let mut ended = None;
    while let Some(message) = events
        .message()
        .await
        .map_err(|s| format!("following the Run: {}", s.message()))?
    {
        match message.event {
            Some(Event::Output(chunk)) => output.write(chunk)?,
            Some(Event::Ended(execution)) => ended = Some(execution),
            Some(Event::Started(_)) | None => {}
        }
    }
    output.finish()?;
    ended.ok_or_else(|| "the call ended before the Run did".to_owned())
}

/// Output chunks to stdout and stderr, with a note on stderr where bytes were dropped;
/// with a prefix, complete lines only, each prefixed.
struct Output<'a> {
    prefix: Option<&'a str>,
    next: [u64; 3],
    partial: [Vec<u8>; 3],
}

impl<'a> Output<'a> {
    fn new(prefix: Option<&'a str>) -> Self {
        Self {
            prefix,
            next: [0; 3],
            partial: Default::default(),
        }
    }

    fn write(&mut self, chunk: proto::LogChunk) -> Result<(), String> {
        let index = chunk.stream.clamp(0, 2) as usize;
        if chunk.offset > self.next[index] {
            eprintln!(
                "krt run: [{} bytes of output dropped]",
                chunk.offset - self.next[index]
            );
        }
        self.next[index] = chunk.offset + chunk.data.len() as u64;
        let data = match self.prefix {
            None => chunk.data,
            Some(prefix) => {
                let partial = &mut self.partial[index];
                partial.extend_from_slice(&chunk.data);
                let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
                    return Ok(());
                };
                let rest = partial.split_off(end + 1);
                let lines = std::mem::replace(partial, rest);
                prefixed(prefix, &lines)
            }
        };
        write_stream(chunk.stream, &data)
    }

    /// The last line of each stream, when it had no newline.
    fn finish(mut self) -> Result<(), String> {
        if let Some(prefix) = self.prefix {
            for (index, rest) in self.partial.iter_mut().enumerate() {
                if !rest.is_empty() {
                    rest.push(b'\n');
                    write_stream(index as i32, &prefixed(prefix, rest))?;
                }
            }
        }
        Ok(())
    }
}

/// Complete lines, each prefixed with `[prefix] `.
fn prefixed(prefix: &str, lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(format!("[{prefix}] ").as_bytes());
        out.extend_from_slice(line);
    }
    out
}

fn write_stream(stream: i32, data: &[u8]) -> Result<(), String> {
    let written = if stream == proto::Stream::Stderr as i32 {
        let mut err = std::io::stderr().lock();
        err.write_all(data).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data).and_then(|()| out.flush())
    };
    written.map_err(|e| format!("writing output: {e}"))
}

/// Runs a Workflow: the planner decides, each step is one Execute on the same agent,
/// output lines are prefixed with `[job/step]`. Exit status: 130 when cancelled, 124
/// when the Workflow (or a step) timed out, else the first failed step's status, else 0.
async fn execute_workflow(client: RuntimedClient<Channel>, plan: WorkflowPlan) -> i32 {
    use planner::{JobPhase, Planner, StepOutcome};
    let mut planner = Planner::new(plan.jobs.clone(), plan.fail_fast);
    let mut tasks = tokio::task::JoinSet::new();
    let mut running: std::collections::HashMap<(usize, usize), String> = Default::default();
    let deadline = plan.timeout.map(|t| tokio::time::Instant::now() + t);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (mut cancelled, mut timed_out) = (false, false);
    let mut first_failure: Option<i32> = None;
    loop {
        for (job, step) in planner.ready() {
            let (label, request) = plan.steps[job][step].clone();
            running.insert((job, step), request.run_uid.clone());
            let client = client.clone();
            tasks.spawn(async move { (job, step, run_step(client, request, &label).await) });
        }
        if tasks.is_empty() {
            break;
        }
        let deadline_passed = async {
            match deadline {
                Some(d) if !timed_out => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let Ok((job, step, code)) = joined else {
                    return EXIT_PLATFORM_ERROR;
                };
                running.remove(&(job, step));
                let outcome = match code {
                    0 => StepOutcome::Succeeded,
                    EXIT_TIMED_OUT => StepOutcome::TimedOut,
                    EXIT_CANCELLED => StepOutcome::Cancelled,
                    _ => StepOutcome::Failed,
                };
                if code != 0 && first_failure.is_none() {
                    first_failure = Some(code);
                }
                planner.finished(job, step, outcome);
            }
            result = &mut ctrl_c, if !cancelled => {
                if result.is_ok() {
                    eprintln!("krt run: cancelling");
                }
                cancelled = true;
                planner.stop();
                cancel_all(&client, running.values()).await;
            }
            () = deadline_passed => {
                eprintln!("krt run: the Workflow timed out");
                timed_out = true;
                planner.stop();
                cancel_all(&client, running.values()).await;
            }
        }
    }
    for (job, phase) in plan.jobs.iter().zip(planner.phases()) {
        let phase = match phase {
            JobPhase::Pending | JobPhase::Running(_) => "Incomplete",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
            JobPhase::TimedOut => "TimedOut",
            JobPhase::Cancelled => "Cancelled",
            JobPhase::Skipped => "Skipped",
        };
        eprintln!("krt run: job {}: {phase}", job.name);
    }
    if cancelled {
        EXIT_CANCELLED
    } else if timed_out {
        EXIT_TIMED_OUT
    } else if !planner.is_done() {
        EXIT_PLATFORM_ERROR
    } else {
        first_failure.unwrap_or(0)
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

/// One step: one ExecuteAndFollow, its output with a `[job/step]` prefix, its exit
/// status.
async fn run_step(
    mut client: RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
    label: &str,
) -> i32 {
    let mut events = match client.execute_and_follow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("krt run: [{label}] execute: {}", status.message());
            return EXIT_PLATFORM_ERROR;
        }
    };
    match follow(&mut events, Some(label)).await {
        Ok(execution) => with_artifacts(exit_code(&execution), &execution, Some(label)),
        Err(message) => {
            eprintln!("krt run: [{label}] {message}");
            EXIT_PLATFORM_ERROR
        }
    }
}

/// Reports a Run's artifacts on stderr and folds their outcome into its exit status
/// `code`: a Run that succeeded but whose artifacts are not all in the store (the
/// sidecar rolled back what it had uploaded) ends with a platform error (1); a Run that
/// failed keeps its own status.
fn with_artifacts(code: i32, execution: &proto::Execution, label: Option<&str>) -> i32 {
    use proto::ArtifactsState;
    let tag = label.map(|l| format!("[{l}] ")).unwrap_or_default();
    let failure = match execution.artifacts_state() {
        ArtifactsState::Unspecified => return code,
        ArtifactsState::Uploaded => {
            if execution.artifacts.is_empty() {
                eprintln!("krt run: {tag}artifacts: no file matched");
            }
            for artifact in &execution.artifacts {
                eprintln!(
                    "krt run: {tag}artifact {} uploaded as {} ({} bytes, sha256 {})",
                    artifact.path, artifact.key, artifact.size, artifact.sha256
                );
            }
            return code;
        }
        ArtifactsState::Failed => format!(
            "{}: {}",
            execution.artifacts_reason, execution.artifacts_message
        ),
        state @ (ArtifactsState::Pending | ArtifactsState::Uploading) => {
            format!("still {} when the Run ended", state.as_str_name())
        }
    };
    eprintln!("krt run: {tag}artifacts not uploaded: {failure}");
    if code == 0 { EXIT_PLATFORM_ERROR } else { code }
}

fn exit_code(execution: &proto::Execution) -> i32 {
    match proto::Phase::try_from(execution.phase) {
        Ok(proto::Phase::Succeeded) => 0,
        Ok(proto::Phase::Failed) => match (execution.exit_code, execution.signal) {
            (Some(code), _) => code.clamp(1, 255),
            (None, Some(signal)) => 128 + signal,
            (None, None) => EXIT_PLATFORM_ERROR,
        },
        Ok(proto::Phase::TimedOut) => {
            eprintln!("krt run: timed out");
            EXIT_TIMED_OUT
        }
        Ok(proto::Phase::Cancelled) => EXIT_CANCELLED,
        _ => {
            eprintln!(
                "krt run: error: {}: {}",
                execution.reason, execution.message
            );
            EXIT_PLATFORM_ERROR
        }
    }
}

/// The pure Workflow planner: which steps may start, given what has finished. Jobs run
/// in `needs` order, a job's steps in order, independent jobs concurrently. A job whose
/// need did not succeed is Skipped; with fail-fast, a failed job also stops every job not
/// started yet (Skipped), while jobs already running go on (the API's "stop scheduling
/// new ones").
pub mod planner {
    /// Where a job is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum JobPhase {
        /// Waiting for its needs.
        Pending,
        /// This step runs.
        Running(usize),
        /// Every step succeeded.
        Succeeded,
        /// A step failed.
        Failed,
        /// A step timed out.
        TimedOut,
        /// A step was cancelled.
        Cancelled,
        /// Not run: a need did not succeed, or fail-fast stopped scheduling.
        Skipped,
    }

    impl JobPhase {
        fn is_terminal(self) -> bool {
            !matches!(self, Self::Pending | Self::Running(_))
        }
    }

    /// How a step ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum StepOutcome {
        /// Exit 0.
        Succeeded,
        /// Failed or Error.
        Failed,
        /// Timed out.
        TimedOut,
        /// Cancelled.
        Cancelled,
    }

    /// One job as the planner sees it.
    #[derive(Clone, Debug)]
    pub struct JobPlan {
        /// Its name.
        pub name: String,
        /// Indexes of the jobs it needs.
        pub needs: Vec<usize>,
        /// How many steps it has.
        pub steps: usize,
    }

    /// The planner's state.
    #[derive(Clone, Debug)]
    pub struct Planner {
        jobs: Vec<JobPlan>,
        phases: Vec<JobPhase>,
        fail_fast: bool,
        stopped: bool,
        /// Steps handed out and not finished yet.
        started: Vec<bool>,
    }

    impl Planner {
        /// A planner for `jobs` (needs already resolved to indexes, the DAG checked).
        pub fn new(jobs: Vec<JobPlan>, fail_fast: bool) -> Self {
            let n = jobs.len();
            Self {
                jobs,
                phases: vec![JobPhase::Pending; n],
                fail_fast,
                stopped: false,
                started: vec![false; n],
            }
        }

        /// The phase of every job.
        pub fn phases(&self) -> &[JobPhase] {
            &self.phases
        }

        /// The steps that may start now, as (job, step); each is handed out once.
        pub fn ready(&mut self) -> Vec<(usize, usize)> {
            loop {
                let mut changed = false;
                for j in 0..self.jobs.len() {
                    if self.phases[j] != JobPhase::Pending {
                        continue;
                    }
                    let needs = &self.jobs[j].needs;
                    if self.stopped
                        || needs.iter().any(|&n| {
                            self.phases[n].is_terminal() && self.phases[n] != JobPhase::Succeeded
                        })
                    {
                        self.phases[j] = JobPhase::Skipped;
                        changed = true;
                    } else if needs.iter().all(|&n| self.phases[n] == JobPhase::Succeeded) {
                        if self.jobs[j].steps == 0 {
                            self.phases[j] = JobPhase::Succeeded;
                        } else {
                            self.phases[j] = JobPhase::Running(0);
                        }
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            let mut ready = Vec::new();
            for (j, phase) in self.phases.iter().enumerate() {
                if let JobPhase::Running(step) = *phase
                    && !self.started[j]
                {
                    self.started[j] = true;
                    ready.push((j, step));
                }
            }
            ready
        }

        /// Records how step `step` of job `job` ended.
        pub fn finished(&mut self, job: usize, step: usize, outcome: StepOutcome) {
            if self.phases[job] != JobPhase::Running(step) {
                return;
            }
            self.started[job] = false;
            self.phases[job] = match outcome {
                StepOutcome::Succeeded if step + 1 < self.jobs[job].steps => {
                    JobPhase::Running(step + 1)
                }
                StepOutcome::Succeeded => JobPhase::Succeeded,
                StepOutcome::Failed => JobPhase::Failed,
                StepOutcome::TimedOut => JobPhase::TimedOut,
                StepOutcome::Cancelled => JobPhase::Cancelled,
            };
            if self.fail_fast && outcome != StepOutcome::Succeeded {
                self.stopped = true;
            }
        }

        /// Stops scheduling anything new (cancel, workflow timeout).
        pub fn stop(&mut self) {
            self.stopped = true;
        }

        /// Whether every job is terminal (call [`Planner::ready`] first).
        pub fn is_done(&self) -> bool {
            self.phases.iter().all(|p| p.is_terminal())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{JobPhase, JobPlan, Planner, StepOutcome};

        fn job(name: &str, needs: &[usize], steps: usize) -> JobPlan {
            JobPlan {
                name: name.into(),
                needs: needs.to_vec(),
                steps,
            }
        }

        /// fetch -> (test, lint) -> report, as in examples/workflow.yaml.
        fn diamond(fail_fast: bool) -> Planner {
            Planner::new(
                vec![
                    job("fetch", &[], 1),
                    job("test", &[0], 2),
                    job("lint", &[0], 1),
                    job("report", &[1, 2], 1),
                ],
                fail_fast,
            )
        }

        #[test]
        fn jobs_follow_needs_and_independent_jobs_run_together() {
            let mut p = diamond(true);
            assert_eq!(p.ready(), [(0, 0)]);
            assert_eq!(p.ready(), [], "a step is handed out once");
            p.finished(0, 0, StepOutcome::Succeeded);
            assert_eq!(p.ready(), [(1, 0), (2, 0)]);
            p.finished(1, 0, StepOutcome::Succeeded);
            assert_eq!(p.ready(), [(1, 1)], "steps of a job run in order");
            p.finished(2, 0, StepOutcome::Succeeded);
            assert_eq!(p.ready(), []);
            p.finished(1, 1, StepOutcome::Succeeded);
            assert_eq!(p.ready(), [(3, 0)]);
            p.finished(3, 0, StepOutcome::Succeeded);
            assert_eq!(p.ready(), []);
            assert!(p.is_done());
            assert!(p.phases().iter().all(|ph| *ph == JobPhase::Succeeded));
        }

        #[test]
        fn fail_fast_skips_jobs_not_started_and_lets_running_ones_finish() {
            let mut p = diamond(true);
            p.ready();
            p.finished(0, 0, StepOutcome::Succeeded);
            p.ready();
            p.finished(2, 0, StepOutcome::Failed);
            assert_eq!(p.ready(), []);
            assert_eq!(p.phases()[1], JobPhase::Running(0));
            p.finished(1, 0, StepOutcome::Succeeded);
            assert_eq!(p.ready(), [(1, 1)], "a running job goes on");
            p.finished(1, 1, StepOutcome::Succeeded);
            p.ready();
            assert!(p.is_done());
            assert_eq!(
                p.phases(),
                [
                    JobPhase::Succeeded,
                    JobPhase::Succeeded,
                    JobPhase::Failed,
                    JobPhase::Skipped
                ]
            );
        }

        #[test]
        fn without_fail_fast_only_dependents_are_skipped() {
            let mut p = Planner::new(
                vec![job("a", &[], 1), job("b", &[0], 1), job("c", &[], 1)],
                false,
            );
            assert_eq!(p.ready(), [(0, 0), (2, 0)]);
            p.finished(0, 0, StepOutcome::TimedOut);
            assert_eq!(p.ready(), []);
            assert_eq!(p.phases()[1], JobPhase::Skipped);
            assert_eq!(p.phases()[2], JobPhase::Running(0));
            p.finished(2, 0, StepOutcome::Succeeded);
            p.ready();
            assert!(p.is_done());
            assert_eq!(p.phases()[2], JobPhase::Succeeded);
        }

        #[test]
        fn a_job_without_steps_succeeds_at_once() {
            let mut p = Planner::new(vec![job("empty", &[], 0), job("after", &[0], 1)], true);
            assert_eq!(p.ready(), [(1, 0)]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::{RuntimeSources, Runtimes, artifact_request};
    use kruntimes_api::v1alpha1::{RunSpec, RuntimeArtifacts};
    use serde_json::json;

    fn run_spec(artifacts: bool) -> RunSpec {
        let mut spec = json!({
            "runtimeRef": {"name": "bash"},
            "interpreter": "bash",
            "script": "mkdir out; echo hi > out/a.txt",
        });
        if artifacts {
            spec["artifacts"] = json!({"paths": ["out/**"]});
        }
        serde_json::from_value(spec).unwrap()
    }

    fn runtimes(artifacts: Option<serde_json::Value>) -> Runtimes {
        let artifacts: Option<RuntimeArtifacts> =
            artifacts.map(|a| serde_json::from_value(a).unwrap());
        Runtimes::from([(
            "bash".to_owned(),
            RuntimeSources {
                git: None,
                artifacts,
            },
        )])
    }

    fn store() -> serde_json::Value {
        json!({
            "maxBytes": "1Mi",
            "s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "runs", "prefix": "team-a/"},
        })
    }

    #[test]
    fn a_run_without_artifacts_asks_for_none() {
        let request = artifact_request(&run_spec(false), &Runtimes::new(), |_| false).unwrap();
        assert_eq!(request, None);
    }

    #[test]
    fn artifacts_take_the_store_and_limit_of_the_runtime_in_the_file() {
        let request = artifact_request(&run_spec(true), &runtimes(Some(store())), |_| true)
            .unwrap()
            .unwrap();
        assert_eq!(request.paths, ["out/**"]);
        assert_eq!(request.max_bytes, 1 << 20);
        let store = request.store.unwrap();
        assert_eq!(store.endpoint, "http://127.0.0.1:9000");
        assert_eq!(store.bucket, "runs");
        assert_eq!(store.prefix, "team-a/");
        assert_eq!(store.region, "", "empty: the sidecar's default region");
    }

    #[test]
    fn artifacts_without_a_store_are_refused_before_anything_runs() {
        let missing = artifact_request(&run_spec(true), &Runtimes::new(), |_| true).unwrap_err();
        assert!(
            missing.contains("spec.artifacts needs Runtime \"bash\" in the same file"),
            "{missing}"
        );
        let no_section = artifact_request(&run_spec(true), &runtimes(None), |_| true).unwrap_err();
        assert!(
            no_section.contains("Runtime \"bash\" has no spec.artifacts section"),
            "{no_section}"
        );
    }

    #[test]
    fn artifacts_without_credentials_name_the_missing_variable() {
        let error = artifact_request(&run_spec(true), &runtimes(Some(store())), |name| {
            name == "AWS_ACCESS_KEY_ID"
        })
        .unwrap_err();
        assert!(
            error.starts_with("spec.artifacts: AWS_SECRET_ACCESS_KEY is not set"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_limit_on_the_runtime_names_the_field() {
        let mut config = store();
        config["maxBytes"] = json!("lots");
        let error =
            artifact_request(&run_spec(true), &runtimes(Some(config)), |_| true).unwrap_err();
        assert!(
            error.starts_with("Runtime \"bash\": spec.artifacts.maxBytes:"),
            "{error}"
        );
    }
}
