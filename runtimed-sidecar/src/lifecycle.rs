//! One Run as processes: workspace, sources, spawn (confined), output capture, timeout
//! and cancel, kill of every process of the Run, workspace removal.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::pipe2;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};

use crate::Reason;
use crate::limits;
use crate::output::BoundedOutput;
use crate::procs::{
    RUN_MARKER, holds_only_known_children, is_zombie, run_processes, signal_run,
    signal_run_all_of_proc, walks_subtree,
};
use crate::reaper::{Exit, Reaper};
use crate::spares::Spares;
use crate::spawner::{Launch, Spawner};
use crate::workspace::{WriteError, disk_usage, is_no_space, write_files_into};
use crate::{Error, lock};

/// How a Run's program is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    /// `bash main.sh ARGS` or `bash ENTRYPOINT ARGS`.
    Bash,
    /// `python3 main.py ARGS` or `python3 ENTRYPOINT ARGS`.
    Python,
    /// `COMMAND ARGS`.
    Exec,
}

/// What to run: the agent's view of a Run spec.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// The Run's uid: execution id and workspace directory name.
    pub run_uid: String,
    /// How to start it (`None` is bash).
    pub interpreter: Option<Interpreter>,
    /// Inline program.
    pub script: Option<String>,
    /// More files: relative path and content.
    pub files: Vec<(String, Vec<u8>)>,
    /// Paths among `files` written with mode 0755 (git's executable bit).
    pub executable: std::collections::BTreeSet<String>,
    /// File to run with the interpreter.
    pub entrypoint: Option<String>,
    /// Interpreter `exec`: the argv.
    pub command: Vec<String>,
    /// Arguments for the program.
    pub args: Vec<String>,
    /// Environment added to the scrubbed one.
    pub env: Vec<(String, String)>,
    /// JSON text given on stdin and as `$KRT_INPUT_FILE`.
    pub input: Option<Vec<u8>>,
    /// Time limit; `None` is [`limits::DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Keep the workspace after the Run is terminal.
    pub keep_workspace: bool,
}

/// How the supervisor runs processes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding one workspace per Run (`/workspace` in a pod).
    pub workspace_root: PathBuf,
    /// SIGTERM-to-SIGKILL grace period.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub output_limit: usize,
    /// The bash binary.
    pub bash: String,
    /// The python binary.
    pub python: String,
    /// PATH given to processes.
    pub path: String,
    /// Keep every workspace after its Run is terminal.
    pub keep_workspaces: bool,
    /// Bytes all workspaces together may take (the emptyDir's `sizeLimit`); beyond it
    /// the largest running Run fails with reason `WorkspaceFull`. `None`: unchecked.
    pub workspace_size_limit: Option<u64>,
    /// How often running Runs' workspaces are measured against that limit.
    pub workspace_check_interval: Duration,
    /// The runtimed executable to start as the spawner process (`runtimed spawner`),
    /// which forks the Runs' processes so that this process never forks itself (see
    /// [`crate::spawner`]). `None`: Runs are forked from this process (library use,
    /// where no runtimed executable may exist).
    pub spawner: Option<PathBuf>,
}

impl Config {
    /// Defaults, with workspaces under `workspace_root`.
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            grace: limits::DEFAULT_GRACE,
            output_limit: limits::DEFAULT_OUTPUT_LIMIT,
            bash: "bash".into(),
            python: "python3".into(),
            path: limits::DEFAULT_PATH.into(),
            keep_workspaces: false,
            workspace_size_limit: None,
            workspace_check_interval: limits::WORKSPACE_CHECK_INTERVAL,
            spawner: None,
        }
    }
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The process runs (or is being prepared).
    Running,
    /// Exit 0.
    Succeeded,
    /// Non-zero exit or killed by a signal.
    Failed,
    /// The timeout elapsed.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// The platform failed; see the reason.
    Error,
}

impl Phase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

/// An immutable view of an execution.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The phase.
    pub phase: Phase,
    /// The first process, once started.
    pub pid: Option<u32>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal, when it was killed by one.
    pub signal: Option<i32>,
    /// When the process started.
    pub started: Option<SystemTime>,
    /// When the execution became terminal.
    pub ended: Option<SystemTime>,
    /// Monotonic end, for retention.
    pub ended_at: Option<Instant>,
    /// Why it is in its phase (`None` while running).
    pub reason: Option<Reason>,
    /// Detail.
    pub message: String,
    /// Whether the workspace still exists.
    pub workspace_present: bool,
}

/// One output stream of an execution.
#[derive(Debug)]
pub struct OutputStream {
    buffer: Mutex<BoundedOutput>,
    changed: watch::Sender<u64>,
}

impl OutputStream {
    fn new(limit: usize) -> Self {
        Self {
            buffer: Mutex::new(BoundedOutput::new(limit)),
            changed: watch::Sender::new(0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BoundedOutput) -> T) -> T {
        let mut guard = match self.buffer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn push(&self, data: &[u8]) {
        let total = self.with(|b| {
            b.push(data);
            b.total()
        });
        self.changed.send_replace(total);
    }

    fn close(&self) {
        self.with(BoundedOutput::close);
        self.changed.send_modify(|_| {});
    }

    /// Reads kept bytes at or after `offset` (see [`BoundedOutput::read`]) and whether
    /// the stream has ended.
    pub fn read(&self, offset: u64, max: usize) -> (Option<(u64, Vec<u8>)>, bool) {
        self.with(|b| (b.read(offset, max), b.is_closed()))
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// (total, dropped, truncated).
    pub fn stats(&self) -> (u64, u64, bool) {
        self.with(|b| (b.total(), b.dropped(), b.truncated()))
    }

    /// Every kept byte.
    pub fn kept_bytes(&self) -> Vec<u8> {
        self.with(|b| b.kept_bytes())
    }

    /// Bytes kept in memory.
    pub fn kept(&self) -> usize {
        self.with(|b| b.kept())
    }
}

/// One execution: its state, output and cancel handle.
#[derive(Debug)]
pub struct Execution {
    run_uid: String,
    workspace: PathBuf,
    state: watch::Sender<Snapshot>,
    /// Standard output.
    pub stdout: Arc<OutputStream>,
    /// Standard error.
    pub stderr: Arc<OutputStream>,
    cancel: Mutex<Option<oneshot::Sender<Option<Duration>>>>,
    spares: Arc<Spares>,
    /// False once a process of the Run outlived the kill of all of them: its workspace
    /// is then removed, never kept as a spare.
    reusable: AtomicBool,
}

impl Execution {
    /// The Run's uid (also the execution id).
    pub fn run_uid(&self) -> &str {
        &self.run_uid
    }

    /// The workspace directory.
    pub fn workspace(&self) -> &PathBuf {
        &self.workspace
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// The current phase (no copy of the snapshot).
    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// When the execution became terminal (monotonic), if it is.
    pub fn ended_at(&self) -> Option<Instant> {
        self.state.borrow().ended_at
    }

    /// Waits until the execution is terminal and returns its final state.
    pub async fn wait(&self) -> Snapshot {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| s.phase.is_terminal()).await {
            Ok(s) => s.clone(),
            Err(_) => self.snapshot(),
        }
    }

    /// Asks the execution to stop: SIGTERM, `grace` (or the configured one), SIGKILL.
    /// Returns false when it was already terminal or cancelling.
    pub fn cancel(&self, grace: Option<Duration>) -> bool {
        let sender = lock(&self.cancel).take();
        sender.is_some_and(|tx| tx.send(grace).is_ok())
    }

    /// Deletes the workspace (after the execution is terminal). Only one this execution
    /// made: a directory that was already at its path (the start then failed with
    /// `WorkspaceUnavailable`) is not its to delete. A small workspace (no
    /// subdirectory, at most [`limits::INLINE_REMOVAL_ENTRIES`] entries: what nearly
    /// every Run leaves) is removed on the caller's thread; a larger one on the
    /// blocking pool, so the agent's one thread never walks a large tree.
    pub async fn remove_workspace(self: &Arc<Self>) {
        if let Some(removal) = self.start_removal() {
            let _ = removal.await;
        }
    }

    /// [`Execution::remove_workspace`] without waiting for a large workspace's removal
    /// (retention, under the agent's lock).
    pub fn remove_workspace_in_background(self: &Arc<Self>) {
        drop(self.start_removal());
    }

    /// Removes a small workspace now; returns the removal of a larger one, running.
    fn start_removal(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.state.borrow().workspace_present {
            return None;
        }
        let reusable = self.reusable.load(Ordering::Relaxed);
        if reusable
            && let Some(removed) = self
                .spares
                .retire_small(&self.workspace, limits::INLINE_REMOVAL_ENTRIES)
        {
            self.removed(removed);
            return None;
        }
        let remove = {
            let execution = self.clone();
            move || {
                let removed = if reusable {
                    execution.spares.retire(&execution.workspace)
                } else {
                    fs::remove_dir_all(&execution.workspace)
                };
                execution.removed(removed);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn_blocking(remove)),
            // Outside a runtime, the caller's thread is the only one there is.
            Err(_) => {
                remove();
                None
            }
        }
    }

    fn removed(&self, removed: io::Result<()>) {
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(workspace = %self.workspace.display(), error = %e, "cannot remove workspace");
            }
        }
        self.state.send_modify(|s| s.workspace_present = false);
    }
}

/// Checks that a run uid is a safe single path segment.
pub fn check_run_uid(uid: &str) -> Result<(), Error> {
    let ok = !uid.is_empty()
        && uid.len() <= limits::MAX_RUN_UID_BYTES
        && uid != "."
        && uid != ".."
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "run_uid must be 1 to {} characters among [A-Za-z0-9._-]",
            limits::MAX_RUN_UID_BYTES
        )))
    }
}

/// Checks a spec before anything is created.
pub fn check_spec(spec: &ExecSpec) -> Result<(), Error> {
    use kruntimes_api::validation::paths::{PathKind, check_relative_path};
    check_run_uid(&spec.run_uid)?;
    let bad = |m: String| Err(Error::InvalidArgument(m));
    let interpreter = spec.interpreter.unwrap_or(Interpreter::Bash);
    match interpreter {
        Interpreter::Exec => {
            if spec.command.is_empty() || spec.script.is_some() || spec.entrypoint.is_some() {
                return bad(
                    "interpreter exec needs command, and neither script nor entrypoint".into(),
                );
            }
        }
        Interpreter::Bash | Interpreter::Python => {
            if !spec.command.is_empty() || spec.script.is_some() == spec.entrypoint.is_some() {
                return bad(
                    "bash and python need exactly one of script or entrypoint, and no command"
                        .into(),
                );
            }
        }
    }
    for (path, _) in &spec.files {
        if let Err(reason) = check_relative_path(path, PathKind::Plain) {
            return bad(format!("file {path:?}: {reason}"));
        }
    }
    if let Some(entrypoint) = &spec.entrypoint
        && let Err(reason) = check_relative_path(entrypoint, PathKind::Plain)
    {
        return bad(format!("entrypoint {entrypoint:?}: {reason}"));
    }
    for (name, _) in &spec.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || name.starts_with("KRT_")
        {
            return bad(format!("env {name:?}: not a valid name (KRT_ is reserved)"));
        }
    }
    if spec
        .input
        .as_ref()
        .is_some_and(|i| i.len() > limits::MAX_INPUT_BYTES)
    {
        return bad(format!(
            "input larger than {} bytes",
            limits::MAX_INPUT_BYTES
        ));
    }
    if spec
        .timeout
        .is_some_and(|t| t > limits::MAX_TIMEOUT || t.is_zero())
    {
        return bad("timeout must be positive and at most 24h".into());
    }
    Ok(())
}

/// The last measured workspace size of every running Run (shared by their drivers), so
/// that each can tell whether all workspaces together exceed the limit and whether it
/// is the one to fail.
#[derive(Debug, Default)]
struct WorkspaceUsage {
    sizes: Mutex<HashMap<String, u64>>,
}

impl WorkspaceUsage {
    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.sizes)
    }

    /// Records `uid`'s size; a message when `uid` has to fail (see [`over_limit`]).
    fn record(&self, uid: &str, size: u64, limit: u64) -> Option<String> {
        let mut sizes = self.sizes();
        sizes.insert(uid.to_owned(), size);
        let (offender, total) = over_limit(&sizes, limit)?;
        (offender == uid).then(|| {
            format!(
                "the workspace holds {size} bytes; all running workspaces together {total} bytes, over the workspace size limit of {limit} bytes"
            )
        })
    }

    fn remove(&self, uid: &str) {
        self.sizes().remove(uid);
    }
}

/// When the workspaces together hold more than `limit` bytes: the Run to fail (the
/// largest; ties broken by uid) and the total. At exactly `limit` nothing fails.
pub fn over_limit(sizes: &HashMap<String, u64>, limit: u64) -> Option<(&str, u64)> {
    let total = sizes.values().fold(0u64, |a, b| a.saturating_add(*b));
    if total <= limit {
        return None;
    }
    sizes
        .iter()
        .max_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
        .map(|(uid, _)| (uid.as_str(), total))
}

/// Starts Runs.
#[derive(Debug, Clone)]
pub struct Supervisor {
    config: Arc<Config>,
    reaper: Arc<Reaper>,
    /// The spawner process, when the configuration names one; started again when it
    /// has ended.
    spawner: Option<Arc<Mutex<Arc<Spawner>>>>,
    usage: Arc<WorkspaceUsage>,
    spares: Arc<Spares>,
}

/// An execution made by [`Supervisor::create`], to be started by
/// [`Supervisor::launch`].
#[derive(Debug)]
pub struct Created {
    execution: Arc<Execution>,
    cancel_rx: oneshot::Receiver<Option<Duration>>,
    spec: ExecSpec,
}

impl Created {
    /// The execution, already in phase Running.
    pub fn execution(&self) -> &Arc<Execution> {
        &self.execution
    }
}

struct Prepared {
    launch: Launch,
    /// The input file as stdin; `/dev/null` without one.
    stdin: Option<fs::File>,
}

/// The first process of a Run, as started: its pid, the reading ends of its stdout and
/// stderr, and a receiver of its exit.
struct Started {
    pid: u32,
    stdout: OwnedFd,
    stderr: OwnedFd,
    exit: oneshot::Receiver<Exit>,
    /// The spawner process that started it (none when forked here).
    spawner: Option<Arc<Spawner>>,
}

impl Supervisor {
    /// A supervisor; makes this process a child subreaper and starts its reaper.
    pub fn new(config: Config) -> Result<Self, Error> {
        fs::create_dir_all(&config.workspace_root)
            .map_err(|e| Error::io("creating the workspace root", e))?;
        let reaper = Reaper::global().map_err(|e| Error::io("becoming a child subreaper", e))?;
        let spawner = match &config.spawner {
            Some(program) => Some(Arc::new(Mutex::new(Arc::new(
                Spawner::start(program, &reaper)
                    .map_err(|e| Error::io("starting the spawner process", e))?,
            )))),
            None => None,
        };
        Ok(Self {
            spares: Arc::new(Spares::new(
                &config.workspace_root,
                limits::SPARE_WORKSPACES,
            )),
            config: Arc::new(config),
            reaper,
            spawner,
            usage: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts `spec` (checked with [`check_spec`]) and returns at once; the execution
    /// goes on in a task of the current tokio runtime. A failure after the check (an
    /// escaping path, a failed spawn) gives an execution in phase Error with a reason.
    pub async fn start(&self, spec: ExecSpec) -> Result<Arc<Execution>, Error> {
        Ok(self.launch(self.create(spec)?).await)
    }

    /// The first half of [`Supervisor::start`]: checks `spec` and makes its execution
    /// (phase Running, no process yet) without any I/O, so that a caller can publish it
    /// before the slower [`Supervisor::launch`]. A cancel in between takes effect as
    /// soon as the process has started.
    pub fn create(&self, spec: ExecSpec) -> Result<Created, Error> {
        check_spec(&spec)?;
        let workspace = self.config.workspace_root.join(&spec.run_uid);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let execution = Arc::new(Execution {
            run_uid: spec.run_uid.clone(),
            workspace,
            state: watch::Sender::new(Snapshot {
                phase: Phase::Running,
                pid: None,
                exit_code: None,
                signal: None,
                started: None,
                ended: None,
                ended_at: None,
                reason: None,
                message: String::new(),
                workspace_present: false,
            }),
            stdout: Arc::new(OutputStream::new(self.config.output_limit)),
            stderr: Arc::new(OutputStream::new(self.config.output_limit)),
            cancel: Mutex::new(Some(cancel_tx)),
            spares: self.spares.clone(),
            reusable: AtomicBool::new(true),
        });
        Ok(Created {
            execution,
            cancel_rx,
            spec,
        })
    }

    /// The second half of [`Supervisor::start`]: writes the workspace and starts the
    /// program (returning once it has been exec'd), then supervises it in a task.
    ///
    /// Not cancel-safe (see [`Spawner::spawn`]): a caller whose future can be dropped
    /// midway (a gRPC handler whose client went away) runs it in a task of its own.
    pub async fn launch(&self, created: Created) -> Arc<Execution> {
        let Created {
            execution,
            cancel_rx,
            spec,
        } = created;
        let keep = spec.keep_workspace || self.config.keep_workspaces;
        let timeout = spec.timeout.unwrap_or(limits::DEFAULT_TIMEOUT);
        let input_file = spec
            .input
            .is_some()
            .then(|| input_path(&self.config.workspace_root, &spec.run_uid));
        let prepared = self.prepare(&spec, &execution);
        let spawned = match prepared {
            Ok(p) => self.spawn(p).await.map_err(|e| {
                (
                    Reason::SpawnFailed,
                    format!("cannot start the program: {e}"),
                )
            }),
            Err(e) => Err(e),
        };
        match spawned {
            Ok(started) => {
                let pid = started.pid;
                execution.state.send_modify(|s| {
                    s.pid = Some(pid);
                    s.started = Some(SystemTime::now());
                });
                let driver = Driver {
                    execution: execution.clone(),
                    grace: self.config.grace,
                    leader: pid as i32,
                    keep,
                    workspace_limit: self.config.workspace_size_limit,
                    check_interval: self.config.workspace_check_interval,
                    usage: self.usage.clone(),
                    reaper: self.reaper.clone(),
                    spawner: started.spawner,
                    input: input_file,
                };
                tokio::spawn(driver.drive(
                    started.exit,
                    cancel_rx,
                    timeout,
                    started.stdout,
                    started.stderr,
                ));
            }
            Err((reason, message)) => {
                if let Some(input) = input_file {
                    let _ = fs::remove_file(input);
                }
                if !keep {
                    execution.remove_workspace().await;
                }
                finish(&execution, Phase::Error, None, reason, message);
                execution.stdout.close();
                execution.stderr.close();
            }
        }
        execution
    }

    /// The pid of the spawner process, if Runs are started through one.
    pub fn spawner_pid(&self) -> Option<i32> {
        let slot = self.spawner.as_ref()?;
        let spawner = lock(slot).clone();
        Some(spawner.pid())
    }

    /// The spawner, started again if the previous one has ended (killed): one lost
    /// spawner fails the Runs it was running (`SpawnerLost`), not every later one.
    fn current_spawner(&self) -> io::Result<Option<Arc<Spawner>>> {
        let (Some(slot), Some(program)) = (&self.spawner, &self.config.spawner) else {
            return Ok(None);
        };
        let mut current = lock(slot);
        if current.is_closed() {
            tracing::warn!("the spawner process has ended; starting another");
            *current = Arc::new(Spawner::start(program, &self.reaper)?);
        }
        Ok(Some(current.clone()))
    }

    /// Starts the prepared program: through the spawner process when there is one
    /// (no fork of this process), else forked from here through the reaper.
    async fn spawn(&self, prepared: Prepared) -> io::Result<Started> {
        let (stdout_read, stdout_write) = pipe2(OFlag::O_CLOEXEC)?;
        let (stderr_read, stderr_write) = pipe2(OFlag::O_CLOEXEC)?;
        let spawner = self.current_spawner()?;
        let (pid, exit) = match &spawner {
            Some(spawner) => {
                spawner
                    .spawn(
                        &prepared.launch,
                        prepared.stdin.map(OwnedFd::from),
                        stdout_write,
                        stderr_write,
                    )
                    .await?
            }
            None => {
                let stdin = prepared.stdin.map_or_else(Stdio::null, Stdio::from);
                let mut command = prepared.launch.command(
                    stdin,
                    Stdio::from(stdout_write),
                    Stdio::from(stderr_write),
                );
                let (child, exit) = self.reaper.spawn(&mut command)?;
                // Never waited on: the reaper delivers its exit. Dropping the command
                // closes this process's copies of the writing ends.
                (child.id(), exit)
            }
        };
        Ok(Started {
            pid,
            stdout: stdout_read,
            stderr: stderr_read,
            exit,
            spawner,
        })
    }

    fn prepare(
        &self,
        spec: &ExecSpec,
        execution: &Execution,
    ) -> Result<Prepared, (Reason, String)> {
        let workspace = &execution.workspace;
        let fail = |reason: Reason| move |e: io::Error| (reason, e.to_string());
        // Mode 0755 (a spare has it too): in a Pod the sidecar (another uid) reads it to
        // upload artifacts; who can reach it at all is who mounts the workspace volume
        // (the target container and the sidecar). In `krt run --local` the root is
        // inside a 0700 directory.
        let existing = self.spares.create(workspace).map_err(|e| {
            (
                Reason::WorkspaceUnavailable,
                format!("cannot create workspace {}: {e}", workspace.display()),
            )
        })?;
        execution.state.send_modify(|s| s.workspace_present = true);
        let interpreter = spec.interpreter.unwrap_or(Interpreter::Bash);
        let mut files: Vec<(&str, &[u8], bool)> = Vec::new();
        if let Some(script) = &spec.script {
            let name = if interpreter == Interpreter::Python {
                "main.py"
            } else {
                "main.sh"
            };
            files.push((name, script.as_bytes(), false));
        }
        files.extend(
            spec.files
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_slice(), spec.executable.contains(p))),
        );
        let inline: u64 = files.iter().map(|(_, c, _)| c.len() as u64).sum();
        if let Some(limit) = self.config.workspace_size_limit
            && inline > limit
        {
            return Err((
                Reason::WorkspaceFull,
                format!(
                    "the inline files hold {inline} bytes, over the workspace size limit of {limit} bytes"
                ),
            ));
        }
        write_files_into(workspace, files.iter().copied(), existing).map_err(|e| {
            let reason = match &e {
                WriteError::Io { source, .. } if is_no_space(source) => Reason::WorkspaceFull,
                WriteError::Io { .. } => Reason::WorkspaceWriteFailed,
                WriteError::InvalidPath { .. } | WriteError::Refused { .. } => {
                    Reason::SourceRefused
                }
            };
            (reason, e.to_string())
        })?;

        let (program, mut argv): (String, Vec<String>) = match interpreter {
            Interpreter::Exec => (spec.command[0].clone(), spec.command[1..].to_vec()),
            Interpreter::Bash | Interpreter::Python => {
                let binary = if interpreter == Interpreter::Bash {
                    &self.config.bash
                } else {
                    &self.config.python
                };
                let file = match (&spec.entrypoint, interpreter) {
                    (Some(e), _) => e.clone(),
                    (None, Interpreter::Python) => "main.py".into(),
                    (None, _) => "main.sh".into(),
                };
                (binary.clone(), vec![file])
            }
        };
        argv.extend(spec.args.iter().cloned());

        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), self.config.path.clone().into()),
            ("HOME".into(), workspace.clone().into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        // Later entries win, as with `Command::env`: a Run's PATH, HOME or LANG
        // replaces the default.
        let mut set =
            |name: OsString, value: OsString| match env.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = value,
                None => env.push((name, value)),
            };
        for (name, value) in &spec.env {
            set(name.into(), value.into());
        }
        set(RUN_MARKER.into(), spec.run_uid.clone().into());
        let stdin = match &spec.input {
            Some(input) => {
                // Outside the workspace, next to it, so it cannot collide with a file.
                let path = input_path(&self.config.workspace_root, &spec.run_uid);
                fs::write(&path, input).map_err(|e| {
                    let reason = if is_no_space(&e) {
                        Reason::WorkspaceFull
                    } else {
                        Reason::InputUnavailable
                    };
                    (reason, e.to_string())
                })?;
                let file = fs::File::open(&path).map_err(fail(Reason::InputUnavailable))?;
                set("KRT_INPUT_FILE".into(), path.into());
                Some(file)
            }
            None => None,
        };
        let launch = Launch {
            program: program.into(),
            args: argv.into_iter().map(OsString::from).collect(),
            cwd: workspace.clone(),
            env,
        };
        Ok(Prepared { launch, stdin })
    }
}

/// Where a Run's input is written: next to the workspaces, outside the Run's own, so
/// it cannot collide with one of its files.
fn input_path(workspace_root: &Path, run_uid: &str) -> PathBuf {
    workspace_root.join(format!(".{run_uid}.input.json"))
}

fn finish(
    execution: &Execution,
    phase: Phase,
    exit: Option<Exit>,
    reason: Reason,
    message: String,
) {
    execution.state.send_modify(|s| {
        s.phase = phase;
        match exit {
            Some(Exit::Code(c)) => s.exit_code = Some(c),
            Some(Exit::Signal(sig)) => s.signal = Some(sig),
            None => {}
        }
        s.ended = Some(SystemTime::now());
        s.ended_at = Some(Instant::now());
        s.reason = Some(reason);
        s.message = message;
    });
}

/// Milliseconds since the epoch.
pub fn unix_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

struct Driver {
    execution: Arc<Execution>,
    grace: Duration,
    leader: i32,
    keep: bool,
    workspace_limit: Option<u64>,
    check_interval: Duration,
    usage: Arc<WorkspaceUsage>,
    reaper: Arc<Reaper>,
    spawner: Option<Arc<Spawner>>,
    /// The Run's input file, removed once it is terminal.
    input: Option<PathBuf>,
}

enum Stop {
    Exited(Exit),
    TimedOut,
    Cancelled(Option<Duration>),
    WorkspaceFull(String),
    /// The exit status can no longer come: the spawner process ended (killed) while
    /// the Run was running.
    Lost,
}

impl Driver {
    async fn drive(
        self,
        mut exit_rx: oneshot::Receiver<Exit>,
        cancel_rx: oneshot::Receiver<Option<Duration>>,
        timeout: Duration,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) {
        let out_task = Some(tokio::spawn(pump(stdout, self.execution.stdout.clone())));
        let err_task = Some(tokio::spawn(pump(stderr, self.execution.stderr.clone())));

        let cancel = async {
            match cancel_rx.await {
                Ok(grace) => grace,
                Err(_) => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            exit = &mut exit_rx => match exit {
                Ok(exit) => Stop::Exited(exit),
                Err(_) => Stop::Lost,
            },
            () = tokio::time::sleep(timeout) => Stop::TimedOut,
            grace = cancel => Stop::Cancelled(grace),
            message = self.watch_workspace() => Stop::WorkspaceFull(message),
        };
        self.usage.remove(&self.execution.run_uid);
        // No cancel after this point.
        drop(lock(&self.execution.cancel).take());
        let mut message = String::new();
        let mut remove = !self.keep;
        let (phase, reason, exit) = match stop {
            Stop::Exited(exit) => {
                let phase = if exit == Exit::Code(0) {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                let reason = match exit {
                    Exit::Code(0) => Reason::Completed,
                    Exit::Code(_) => Reason::NonZeroExit,
                    Exit::Signal(_) => Reason::Signaled,
                };
                (phase, reason, Some(exit))
            }
            Stop::TimedOut => {
                let exit = self.terminate(exit_rx, self.grace).await;
                (Phase::TimedOut, Reason::DeadlineExceeded, exit)
            }
            Stop::Cancelled(grace) => {
                let exit = self.terminate(exit_rx, grace.unwrap_or(self.grace)).await;
                (Phase::Cancelled, Reason::Cancelled, exit)
            }
            Stop::WorkspaceFull(full) => {
                let exit = self.terminate(exit_rx, self.grace).await;
                // Removed even when it was to be kept: keeping it would keep the disk full.
                remove = true;
                message = full;
                (Phase::Failed, Reason::WorkspaceFull, exit)
            }
            Stop::Lost => {
                // Its processes (the first one now adopted by this process) are killed
                // below with everything else of the Run.
                message = "the spawner process ended before the Run's exit was known; \
                           every process of the Run was killed"
                    .into();
                (Phase::Error, Reason::SpawnerLost, None)
            }
        };
        // Whatever is left of the Run (background processes, escaped ones) goes now.
        let leftover = self.kill_all().await;
        if leftover > 0 {
            self.execution.reusable.store(false, Ordering::Relaxed);
            message = format!("{leftover} process(es) of the Run could not be killed");
        }
        for task in [out_task, err_task].into_iter().flatten() {
            let abort = task.abort_handle();
            if tokio::time::timeout(limits::PIPE_DRAIN_TIMEOUT, task)
                .await
                .is_err()
            {
                abort.abort();
                message = "output pipe still open after every process was killed".into();
            }
        }
        if let Some(input) = &self.input {
            let _ = fs::remove_file(input);
        }
        if remove {
            self.execution.remove_workspace().await;
        }
        finish(&self.execution, phase, exit, reason, message);
        // Only now, so that a client whose `Logs` follow has ended finds the execution
        // terminal (one Status call, no polling).
        self.execution.stdout.close();
        self.execution.stderr.close();
    }

    /// Measures the workspace every `check_interval` while a size limit is set; returns
    /// a message once this Run has to fail because the workspaces together exceed it.
    async fn watch_workspace(&self) -> String {
        let Some(limit) = self.workspace_limit else {
            return std::future::pending().await;
        };
        // The first look one interval in: at the start the workspace holds only the
        // inline files, already checked against the limit.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.check_interval,
            self.check_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let dir = self.execution.workspace.clone();
            // One byte past the limit is enough to know this workspace alone exceeds it.
            let stop_at = limit.saturating_add(1);
            let size = tokio::task::spawn_blocking(move || disk_usage(&dir, stop_at))
                .await
                .unwrap_or(0);
            if let Some(message) = self.usage.record(&self.execution.run_uid, size, limit) {
                return message;
            }
        }
    }

    /// SIGTERM to every process of the Run, `grace`, then SIGKILL until none is left.
    async fn terminate(
        &self,
        mut exit_rx: oneshot::Receiver<Exit>,
        grace: Duration,
    ) -> Option<Exit> {
        signal_run(self.leader, &self.execution.run_uid, Signal::SIGTERM);
        if let Ok(Ok(exit)) = tokio::time::timeout(grace, &mut exit_rx).await {
            return Some(exit);
        }
        self.kill_all().await;
        exit_rx.await.ok()
    }

    /// SIGKILL rounds until no process of the Run is found; returns how many remain.
    /// Then waits (same bound) until the reaper has collected the ones it killed, so
    /// that when a Run is terminal not even a zombie of it is left in `/proc`.
    async fn kill_all(&self) -> usize {
        let uid = self.execution.run_uid.clone();
        let leader = self.leader;
        // Nothing to look for when it is provable that nothing of the Run is left: its
        // first process was reaped while the spawner had no stray child, and this
        // process holds no orphan at all (`holds_only_known_children`). The usual case
        // (a Run that leaves no background process), and it saves reading every
        // entry of /proc for each Run.
        if let Some(spawner) = &self.spawner
            && spawner.take_clean_exit(leader)
            && holds_only_known_children(&self.reaper)
        {
            return 0;
        }
        // A second look, through all of /proc, when the first finds nothing: the
        // subtree walk races with orphans being re-parented between threads
        // (`signal_run_all_of_proc`), and nothing may be left behind.
        let round = move |uid: &str| {
            let found = signal_run(leader, uid, Signal::SIGKILL);
            if found.is_empty() {
                signal_run_all_of_proc(leader, uid, Signal::SIGKILL)
            } else {
                found
            }
        };
        let mut killed: Vec<i32> = Vec::new();
        let mut rounds = 0;
        let mut cleared = false;
        while rounds < limits::MAX_KILL_ROUNDS {
            rounds += 1;
            // With the subtree walk, a round is a few small reads plus, once per Run,
            // the confirming look through /proc: done here, which saves two thread
            // hand-offs per Run. Without it, every look reads all of /proc, on a
            // blocking thread.
            let found = if walks_subtree() {
                round(&uid)
            } else {
                let uid = uid.clone();
                tokio::task::spawn_blocking(move || round(&uid))
                    .await
                    .unwrap_or_default()
            };
            if found.is_empty() {
                cleared = true;
                break;
            }
            killed.extend(found);
            tokio::time::sleep(limits::KILL_ROUND_PAUSE).await;
        }
        if !cleared {
            let uid = uid.clone();
            return tokio::task::spawn_blocking(move || run_processes(leader, &uid).len())
                .await
                .unwrap_or(0);
        }
        killed.sort_unstable();
        killed.dedup();
        while rounds < limits::MAX_KILL_ROUNDS {
            killed.retain(|pid| is_zombie(*pid));
            if killed.is_empty() {
                break;
            }
            rounds += 1;
            tokio::time::sleep(limits::KILL_ROUND_PAUSE).await;
        }
        0
    }
}

/// The first read buffer of a pipe.
const FIRST_READ_BYTES: usize = 4096;

async fn pump(fd: std::os::fd::OwnedFd, stream: Arc<OutputStream>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    // Small at first (most Runs write little: no 64 KiB to allocate and fault in per
    // stream), doubled while reads fill it, up to READ_CHUNK_BYTES.
    let mut buf = vec![0u8; FIRST_READ_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                stream.push(&buf[..n]);
                if n == buf.len() && buf.len() < limits::READ_CHUNK_BYTES {
                    buf.resize((buf.len() * 2).min(limits::READ_CHUNK_BYTES), 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
