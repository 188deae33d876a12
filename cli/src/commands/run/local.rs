//! The runtimed agent and sidecar `krt run --local` starts as its children, on sockets
//! and a workspace in a private run directory (mode 0700: a Run's input and inline files
//! pass through it, and no other local user may read them).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kruntimes_runtimed_api::client::connect_unix;
use kruntimes_runtimed_api::{RuntimedClient, proto};
use tonic::transport::Channel;

use crate::error::CliError;

/// Environment variable naming the runtimed binary to start.
pub const RUNTIMED_BIN_ENV: &str = "KRT_RUNTIMED_BIN";

/// How long the agent and the sidecar may take to listen.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Mode of the run directory that holds the sockets, the workspace and the input.
pub(crate) const RUN_DIR_MODE: u32 = 0o700;

/// A running agent and sidecar, and the sidecar's client.
#[derive(Debug)]
pub(crate) struct LocalRuntimed {
    dir: Option<tempfile::TempDir>,
    agent: tokio::process::Child,
    sidecar: tokio::process::Child,
    /// The sidecar's client: what Runs are executed through.
    pub(crate) client: RuntimedClient<Channel>,
    /// Executions the agent runs at once (from its Health answer).
    pub(crate) capacity: usize,
}

impl LocalRuntimed {
    /// Starts both and waits until each answers.
    pub(crate) async fn start(
        runtimed: &Path,
        keep: bool,
        git_ca_file: Option<&Path>,
    ) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix("krt-run-")
            .permissions(std::fs::Permissions::from_mode(RUN_DIR_MODE))
            .tempdir()
            .map_err(|e| CliError::Platform(format!("cannot create a run directory: {e}")))?;
        let agent_socket = dir.path().join("agent.sock");
        let sidecar_socket = dir.path().join("sidecar.sock");
        let mut agent_args: Vec<OsString> = vec![
            "agent".into(),
            "--socket".into(),
            agent_socket.clone().into(),
            "--workspace".into(),
            dir.path().join("workspace").into(),
            // Both children stop (the agent cancelling the Run first) if krt is killed
            // without the chance to stop them; krt names itself, so that a krt killed
            // before a child's first look at its parent is seen as gone too.
            "--exit-with-parent".into(),
            "--parent-pid".into(),
            std::process::id().to_string().into(),
            // Its stdout goes nowhere: the output reaches krt through ExecuteAndFollow.
            "--no-output-mirror".into(),
        ];
        if keep {
            agent_args.push("--keep-workspaces".into());
        }
        let mut agent = spawn_runtimed(runtimed, &agent_args)?;
        let mut sidecar_args: Vec<OsString> = vec![
            "sidecar".into(),
            "--listen".into(),
            sidecar_socket.clone().into(),
            "--agent-socket".into(),
            agent_socket.clone().into(),
            "--exit-with-parent".into(),
            "--parent-pid".into(),
            std::process::id().to_string().into(),
        ];
        if let Some(ca) = git_ca_file {
            sidecar_args.push("--git-ca-file".into());
            sidecar_args.push(ca.as_os_str().to_owned());
        }
        let mut sidecar = match spawn_runtimed(runtimed, &sidecar_args) {
            Ok(child) => child,
            Err(e) => {
                stop(&mut agent).await;
                return Err(e);
            }
        };
        // The agent first (the sidecar answers before the agent listens), then the sidecar.
        let connected = match connect(&agent_socket, &mut agent).await {
            Ok(_) => connect(&sidecar_socket, &mut sidecar).await,
            Err(e) => Err(e),
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(e) => {
                stop(&mut sidecar).await;
                stop(&mut agent).await;
                return Err(e);
            }
        };
        let capacity = match client.health(proto::HealthRequest {}).await {
            Ok(health) => health.into_inner().capacity.max(1) as usize,
            Err(status) => {
                stop(&mut sidecar).await;
                stop(&mut agent).await;
                return Err(CliError::Platform(format!(
                    "runtimed health: {}",
                    status.message()
                )));
            }
        };
        Ok(Self {
            dir: Some(dir),
            agent,
            sidecar,
            client,
            capacity,
        })
    }

    /// Stops both; with `keep`, leaves the run directory and prints the workspace.
    pub(crate) async fn stop(mut self, keep: bool) {
        stop(&mut self.sidecar).await;
        stop(&mut self.agent).await;
        if keep && let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!(
                "krt run: workspace kept in {}",
                kept.join("workspace").display()
            );
        }
    }
}

/// `$KRT_RUNTIMED_BIN`, or `runtimed` next to the krt executable (or one directory up,
/// for test binaries in `target/<profile>/deps`).
pub(crate) fn find_runtimed() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os(RUNTIMED_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(CliError::Platform(format!(
                "{RUNTIMED_BIN_ENV}={} is not a file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Platform(format!("cannot find krt's own path: {e}")))?;
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
    Err(CliError::Platform(format!(
        "cannot find the runtimed binary (looked at {}); build it with `cargo build -p kruntimes-runtimed` (or `cargo build --workspace`), or set {RUNTIMED_BIN_ENV}",
        looked.join(", ")
    )))
}

/// Starts `runtimed ARGS` in its own process group, so Ctrl-C reaches krt (which
/// cancels the Run) and not runtimed; killed if krt drops it.
fn spawn_runtimed(runtimed: &Path, args: &[OsString]) -> Result<tokio::process::Child, CliError> {
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
        .map_err(|e| CliError::Platform(format!("cannot start {}: {e}", runtimed.display())))
}

/// Stops a runtimed child (SIGKILL). Normally every Run is terminal by then (krt
/// cancels and waits first, also on SIGINT, SIGTERM and SIGHUP).
async fn stop(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

async fn connect(
    socket: &Path,
    child: &mut tokio::process::Child,
) -> Result<RuntimedClient<Channel>, CliError> {
    let deadline = tokio::time::Instant::now() + AGENT_START_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Platform(format!(
                "runtimed exited before listening on {} ({status})",
                socket.display()
            )));
        }
        if socket.exists()
            && let Ok(client) = connect_unix(socket).await
        {
            return Ok(client);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Platform(format!(
                "runtimed did not listen on {} within {AGENT_START_TIMEOUT:?}",
                socket.display()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}
