//! `runtimed`: `agent` (PID 1 of the user container: runs Runs, serves the API on a
//! unix socket), `sidecar` (forwards the API to the agent) and `install DEST`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kruntimes_runtimed::agent::{Agent, Bounds};
use kruntimes_runtimed::lifecycle::Config;
use kruntimes_runtimed::{grpc, limits};

/// runtimed: executes Runs in the user's image.
#[derive(Debug, Parser)]
#[command(name = "runtimed", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run processes and serve the runtimed.v1 API on a unix socket.
    Agent(AgentArgs),
    /// Forward the runtimed.v1 API from a unix socket to the agent (a pass-through for
    /// now; git sources, artifacts and log retention are not implemented yet).
    Sidecar(SidecarArgs),
    /// Copy this executable to DEST with mode 0755 (what the init container runs).
    Install {
        /// Destination path.
        dest: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct SidecarArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    listen: PathBuf,
    /// The agent's unix socket.
    #[arg(long)]
    agent_socket: PathBuf,
}

#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    socket: PathBuf,
    /// Directory holding one workspace per Run.
    #[arg(long, default_value = "/workspace")]
    workspace: PathBuf,
    /// SIGTERM-to-SIGKILL grace period, in milliseconds.
    #[arg(long, default_value_t = limits::DEFAULT_GRACE.as_millis() as u64)]
    grace_ms: u64,
    /// Bytes of output kept per stream (head and tail).
    #[arg(long, default_value_t = limits::DEFAULT_OUTPUT_LIMIT)]
    output_limit: usize,
    /// Keep every workspace after its Run ends (until Forget or retention).
    #[arg(long)]
    keep_workspaces: bool,
    /// The bash binary.
    #[arg(long, default_value = "bash")]
    bash: String,
    /// The python binary.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNTIMED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.mode {
        Mode::Agent(args) => agent(args),
        Mode::Sidecar(args) => sidecar(&args),
        Mode::Install { dest } => install(&dest),
    }
}

fn install(dest: &std::path::Path) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let result = std::fs::copy("/proc/self/exe", dest)
        .and_then(|_| std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtimed install: {}: {e}", dest.display());
            ExitCode::FAILURE
        }
    }
}

fn sidecar(args: &SidecarArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtimed sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let proxy = match grpc::Proxy::new(&args.agent_socket) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("runtimed sidecar: {}: {e}", args.agent_socket.display());
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(socket = %args.listen.display(), "runtimed sidecar listening");
        match grpc::serve_service_unix(proxy, &args.listen, wait_for_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runtimed sidecar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn agent(args: AgentArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtimed agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut config = Config::new(&args.workspace);
        config.grace = Duration::from_millis(args.grace_ms);
        config.output_limit = args.output_limit;
        config.keep_workspaces = args.keep_workspaces;
        config.bash = args.bash;
        config.python = args.python;
        let agent = match Agent::new(config, Bounds::default()) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                eprintln!("runtimed agent: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Retention applies even when no call comes in.
        let sweeper = agent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(limits::SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                sweeper.sweep(std::time::Instant::now());
            }
        });
        let shutdown_agent = agent.clone();
        let shutdown = async move {
            wait_for_signal().await;
            tracing::info!("stopping: cancelling running executions");
            shutdown_agent.shutdown().await;
        };
        tracing::info!(socket = %args.socket.display(), "runtimed agent listening");
        match grpc::serve_unix(agent, &args.socket, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runtimed agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM (what a container runtime sends to PID 1) or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
