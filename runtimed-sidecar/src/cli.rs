//! The `runtimed` command line, in the library so that other crates (the injector's
//! contract test) can check the commands they render against it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::limits;

/// runtimed: executes Runs in the user's image.
#[derive(Debug, Parser)]
#[command(name = "runtimed", version, about)]
pub struct Cli {
    /// The mode.
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
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
    /// Ask the API on a unix socket for its health: the injected sidecar's exec probes.
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    pub listen: PathBuf,
    /// The agent's unix socket.
    #[arg(long)]
    pub agent_socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    pub socket: PathBuf,
    /// Directory holding one workspace per Run.
    #[arg(long, default_value = "/workspace")]
    pub workspace: PathBuf,
    /// SIGTERM-to-SIGKILL grace period, in milliseconds.
    #[arg(long, default_value_t = limits::DEFAULT_GRACE.as_millis() as u64)]
    pub grace_ms: u64,
    /// Bytes of output kept per stream (head and tail).
    #[arg(long, default_value_t = limits::DEFAULT_OUTPUT_LIMIT)]
    pub output_limit: usize,
    /// Keep every workspace after its Run ends (until Forget or retention).
    #[arg(long)]
    pub keep_workspaces: bool,
    /// Bytes all workspaces together may take (the workspace emptyDir's sizeLimit):
    /// beyond it the largest running Run fails with reason WorkspaceFull, before the
    /// kubelet would evict the whole pod. Unset: not checked.
    #[arg(long)]
    pub workspace_size_limit: Option<u64>,
    /// The bash binary.
    #[arg(long, default_value = "bash")]
    pub bash: String,
    /// The python binary.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeKind {
    /// The API answers at all (the sidecar is serving; the agent may not be up yet,
    /// since a native sidecar's startup probe gates the containers after it).
    Startup,
    /// The API answers ready (a sidecar's agent is reachable).
    Ready,
}

/// Arguments of `runtimed probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// startup or ready.
    pub kind: ProbeKind,
    /// The unix socket to ask.
    #[arg(long)]
    pub socket: PathBuf,
}
