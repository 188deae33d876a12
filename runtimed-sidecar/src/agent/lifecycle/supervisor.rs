//! Starting Runs: the workspace (new or a spare), the Run's files and input, the
//! environment and argv, then the spawn (through the spawner process, or forked here).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use tokio::sync::{oneshot, watch};

use super::driver::Driver;
use super::execution::{Execution, Phase, Snapshot, StopRequest, finish};
use super::failure::{SpawnError, StartFailure};
use super::spec::{ExecSpec, Interpreter, check_spec};
use super::usage::WorkspaceUsage;
use crate::Reason;
use crate::agent::cgroup::{RunCgroup, RunCgroups};
use crate::agent::output::{FollowLimits, Mirror, MirrorSink, OutputStream};
use crate::agent::procs::RUN_MARKER;
use crate::agent::reaper::{Exit, Reaper};
use crate::agent::spares::Spares;
use crate::agent::spawner::{Launch, Spawner};
use crate::agent::workspace::{WriteError, is_no_space, write_files_into};
use crate::{Error, limits, lock};

/// How the supervisor runs processes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding one workspace per Run (`/workspace` in a pod).
    pub workspace_root: PathBuf,
    /// SIGTERM-to-SIGKILL grace period.
    pub grace: Duration,
    /// Bytes kept per output stream.
    pub output_limit: usize,
    /// How far the output's followers may lag and how long the program waits for one
    /// that takes nothing (see [`crate::agent::output::OutputStream`]).
    pub follow: FollowLimits,
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
    /// [`crate::agent::spawner`]). `None`: Runs are forked from this process (library use,
    /// where no runtimed executable may exist).
    pub spawner: Option<PathBuf>,
    /// Where each Run's output is mirrored as JSON records (the agent's stdout, so
    /// the container log: see [`crate::agent::output::Mirror`]). `None`: not mirrored.
    pub mirror: Option<MirrorSink>,
    /// Start each Run in a cgroup of its own where this process may make one (see
    /// [`crate::agent::cgroup`]); else, or when false, its processes are found through
    /// `/proc` only.
    pub run_cgroups: bool,
}

impl Config {
    /// Defaults, with workspaces under `workspace_root`.
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            grace: limits::DEFAULT_GRACE,
            output_limit: limits::DEFAULT_OUTPUT_LIMIT,
            follow: FollowLimits {
                buffer: limits::FOLLOW_BUFFER_BYTES,
                stall: limits::FOLLOW_STALL_TIMEOUT,
            },
            bash: "bash".into(),
            python: "python3".into(),
            path: limits::DEFAULT_PATH.into(),
            keep_workspaces: false,
            workspace_size_limit: None,
            workspace_check_interval: limits::WORKSPACE_CHECK_INTERVAL,
            spawner: None,
            run_cgroups: true,
            mirror: None,
        }
    }
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
    /// Where Run cgroups are made, when they can be.
    cgroups: Option<Arc<RunCgroups>>,
}

/// An execution made by [`Supervisor::create`], to be started by
/// [`Supervisor::launch`].
#[derive(Debug)]
pub struct Created {
    execution: Arc<Execution>,
    cancel_rx: oneshot::Receiver<StopRequest>,
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
        let cgroups = config.run_cgroups.then(run_cgroups).flatten();
        Ok(Self {
            spares: Arc::new(Spares::new(
                &config.workspace_root,
                limits::SPARE_WORKSPACES,
            )),
            config: Arc::new(config),
            reaper,
            spawner,
            usage: Arc::default(),
            cgroups,
        })
    }

    /// The mirror of one stream of Run `run_uid`, if the agent mirrors output.
    fn mirror(&self, run_uid: &str, stream: &'static str) -> Option<Mirror> {
        let sink = self.config.mirror.clone()?;
        Some(Mirror::new(sink, run_uid, stream, self.config.output_limit))
    }

    /// Whether each Run gets a cgroup of its own (see [`Config::run_cgroups`]).
    pub fn has_run_cgroups(&self) -> bool {
        self.cgroups.is_some()
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
            stdout: Arc::new(OutputStream::mirrored(
                self.config.output_limit,
                self.config.follow,
                self.mirror(&spec.run_uid, "stdout"),
            )),
            stderr: Arc::new(OutputStream::mirrored(
                self.config.output_limit,
                self.config.follow,
                self.mirror(&spec.run_uid, "stderr"),
            )),
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
        let interpreter = spec.interpreter.unwrap_or(Interpreter::Bash);
        let mut cgroup = None;
        let spawned = match self.prepare(&spec, &execution) {
            Ok(Prepared { mut launch, stdin }) => {
                cgroup = self.run_cgroup();
                launch.cgroup = cgroup.as_ref().map(|c| c.path().to_owned());
                self.spawn(&launch, stdin)
                    .await
                    .map_err(|e| StartFailure::of(e, &launch, interpreter))
            }
            Err((reason, message)) => Err(StartFailure::platform(reason, message)),
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
                    drain_timeout: limits::PIPE_DRAIN_TIMEOUT + self.config.follow.stall,
                    usage: self.usage.clone(),
                    reaper: self.reaper.clone(),
                    spawner: started.spawner,
                    input: input_file,
                    cgroup,
                    cgroups: self.cgroups.clone(),
                };
                tokio::spawn(driver.drive(
                    started.exit,
                    cancel_rx,
                    timeout,
                    started.stdout,
                    started.stderr,
                ));
            }
            Err(failure) => {
                if let (Some(cgroups), Some(cgroup)) = (&self.cgroups, cgroup) {
                    cgroups.release(cgroup);
                }
                if let Some(input) = input_file {
                    let _ = fs::remove_file(input);
                }
                if !keep {
                    execution.remove_workspace().await;
                }
                let StartFailure {
                    phase,
                    reason,
                    exit,
                    message,
                } = failure;
                finish(&execution, phase, exit, reason, message);
                execution.stdout.close();
                execution.stderr.close();
            }
        }
        execution
    }

    /// A cgroup for the next Run, when Runs get one (none, with a warning, when it
    /// cannot be made: the Run's processes are then found through `/proc` only).
    fn run_cgroup(&self) -> Option<RunCgroup> {
        let cgroups = self.cgroups.as_ref()?;
        cgroups
            .create()
            .inspect_err(|e| {
                tracing::warn!(parent = %cgroups.parent().display(), error = %e, "cannot make a Run's cgroup");
            })
            .ok()
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
    async fn spawn(&self, launch: &Launch, stdin: Option<fs::File>) -> Result<Started, SpawnError> {
        let platform = |e: io::Error| SpawnError::Platform(e);
        let (stdout_read, stdout_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| platform(e.into()))?;
        let (stderr_read, stderr_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| platform(e.into()))?;
        let spawner = self.current_spawner().map_err(platform)?;
        let (pid, exit) = match &spawner {
            Some(spawner) => spawner
                .spawn(launch, stdin.map(OwnedFd::from), stdout_write, stderr_write)
                .await
                .map_err(SpawnError::Program)?,
            None => {
                let stdin = stdin.map_or_else(Stdio::null, Stdio::from);
                let mut command =
                    launch.command(stdin, Stdio::from(stdout_write), Stdio::from(stderr_write));
                let (child, exit) = self
                    .reaper
                    .spawn(&mut command)
                    .map_err(SpawnError::Program)?;
                // Moved after its exec: forked here (library use), it cannot be born in
                // its cgroup as through the spawner; a child it forks at once may start
                // outside (`/proc` still finds it, by the rules of `procs`).
                if let Some(cgroup) = &launch.cgroup {
                    let added = fs::write(cgroup.join("cgroup.procs"), child.id().to_string());
                    if let Err(e) = added {
                        tracing::warn!(cgroup = %cgroup.display(), error = %e, "cannot move a Run into its cgroup");
                    }
                }
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

    /// The workspace with the Run's files, its argv and environment, and its stdin.
    fn prepare(
        &self,
        spec: &ExecSpec,
        execution: &Execution,
    ) -> Result<Prepared, (Reason, String)> {
        let workspace = &execution.workspace;
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
        self.write_sources(spec, workspace, existing)?;
        let (program, args) = self.argv(spec);
        let (env, stdin) = self.environment(spec, workspace)?;
        let launch = Launch {
            program: program.into(),
            args: args.into_iter().map(OsString::from).collect(),
            cwd: workspace.clone(),
            env,
            cgroup: None,
        };
        Ok(Prepared { launch, stdin })
    }

    /// Writes the inline script (`main.sh` or `main.py`) and the files into the
    /// workspace, after checking them against the workspace size limit.
    fn write_sources(
        &self,
        spec: &ExecSpec,
        workspace: &Path,
        existing: Option<&str>,
    ) -> Result<(), (Reason, String)> {
        let mut files: Vec<(&str, &[u8], bool)> = Vec::new();
        if let Some(script) = &spec.script {
            files.push((script_name(spec), script.as_bytes(), false));
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
        })
    }

    /// The program and its arguments: the command, or the interpreter with the script
    /// or entrypoint, then the Run's args.
    fn argv(&self, spec: &ExecSpec) -> (String, Vec<String>) {
        let interpreter = spec.interpreter.unwrap_or(Interpreter::Bash);
        let (program, mut argv): (String, Vec<String>) = match interpreter {
            Interpreter::Exec => (spec.command[0].clone(), spec.command[1..].to_vec()),
            Interpreter::Bash | Interpreter::Python => {
                let binary = if interpreter == Interpreter::Bash {
                    &self.config.bash
                } else {
                    &self.config.python
                };
                let file = match &spec.entrypoint {
                    Some(e) => e.clone(),
                    None => script_name(spec).into(),
                };
                (binary.clone(), vec![file])
            }
        };
        argv.extend(spec.args.iter().cloned());
        (program, argv)
    }

    /// The scrubbed environment with the Run's own and its marker, and the input file
    /// (written next to the workspace) to give as stdin.
    fn environment(
        &self,
        spec: &ExecSpec,
        workspace: &Path,
    ) -> Result<(Environment, Option<fs::File>), (Reason, String)> {
        let mut env: Environment = vec![
            ("PATH".into(), self.config.path.clone().into()),
            ("HOME".into(), workspace.into()),
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
        let Some(input) = &spec.input else {
            return Ok((env, None));
        };
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
        let file = fs::File::open(&path).map_err(|e| (Reason::InputUnavailable, e.to_string()))?;
        set("KRT_INPUT_FILE".into(), path.into());
        Ok((env, Some(file)))
    }
}

/// The Run cgroups of this process, when it may make them; logs why not otherwise.
fn run_cgroups() -> Option<Arc<RunCgroups>> {
    match RunCgroups::discover(limits::SPARE_RUN_CGROUPS) {
        Ok(cgroups) => {
            tracing::debug!(parent = %cgroups.parent().display(), "a cgroup per Run");
            Some(Arc::new(cgroups))
        }
        Err(why) => {
            tracing::info!(
                "no cgroup per Run ({why}): a process that leaves its Run's session and clears its environment can outlive the Run"
            );
            None
        }
    }
}

/// A process's whole environment, in order (a later entry of a name wins).
type Environment = Vec<(OsString, OsString)>;

/// The file an inline script is written to.
fn script_name(spec: &ExecSpec) -> &'static str {
    if spec.interpreter == Some(Interpreter::Python) {
        "main.py"
    } else {
        "main.sh"
    }
}

/// Where a Run's input is written: next to the workspaces, outside the Run's own, so
/// it cannot collide with one of its files.
fn input_path(workspace_root: &Path, run_uid: &str) -> PathBuf {
    workspace_root.join(format!(".{run_uid}.input.json"))
}
