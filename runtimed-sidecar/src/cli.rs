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
    /// Serve the runtimed.v1 API on a unix socket (and, with a token, on the network),
    /// forward it to the agent, fetch git sources on the way, and upload the artifacts
    /// of terminal Runs to S3.
    Sidecar(SidecarArgs),
    /// Copy this executable to DEST with mode 0755 (what the init container runs).
    Install {
        /// Destination path.
        dest: PathBuf,
    },
    /// Ask the API on a unix socket for its health: the injected sidecar's exec probes.
    Probe(ProbeArgs),
    /// The agent's helper that forks the Runs' processes, serving requests on its
    /// stdin (a unix socket the agent passes). Started by the agent only.
    #[command(hide = true)]
    Spawner,
}

#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    pub listen: PathBuf,
    /// The agent's unix socket.
    #[arg(long)]
    pub agent_socket: PathBuf,
    /// Also serve the API on this TCP address (for the controller). Needs
    /// `--token-file`: runtimed never serves the network unauthenticated.
    #[arg(long, env = "RUNTIMED_GRPC_BIND_ADDRESS", requires = "token_file")]
    pub grpc_bind_address: Option<std::net::SocketAddr>,
    /// File holding the bearer token every network call must carry
    /// (`authorization: Bearer <token>`); re-read when it changes.
    #[arg(long, env = "RUNTIMED_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on the network listener.
    #[arg(
        long,
        env = "RUNTIMED_TLS_CERT_FILE",
        requires = "tls_private_key_file",
        requires = "grpc_bind_address"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS on the network listener.
    #[arg(
        long,
        env = "RUNTIMED_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_private_key_file: Option<PathBuf>,
    /// Directory holding the files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the
    /// artifact store's Secret mounted as a volume); read before each upload. Without
    /// it, the environment variables of the same names.
    #[arg(long)]
    pub s3_credentials_dir: Option<PathBuf>,
    /// Allow plain http to artifact stores that are not on a loopback address.
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Stop, as on SIGTERM, when the process that started this one ends: for a parent
    /// that cannot stop it when it dies itself (`krt run --local` killed with SIGKILL).
    #[arg(long)]
    pub exit_with_parent: bool,
    /// With `--exit-with-parent`: the pid of the parent to watch, which then counts as
    /// ended as soon as this process is not its child (also when it ended before this
    /// process started). Without it, the parent this process has when it starts.
    #[arg(long, requires = "exit_with_parent")]
    pub parent_pid: Option<u32>,
    /// The agent's workspace root as mounted in the sidecar; without it, the path the
    /// agent reports (both containers mount the volume at the same path).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// PEM certificates trusted for git fetches in addition to the system's roots
    /// (private git servers, tests).
    #[arg(long)]
    pub git_ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(long)]
    pub socket: PathBuf,
    /// Mode of the socket, in octal. 0600 by default; the injector passes 0666 because
    /// the sidecar runs as another uid, and only the sidecar and this container mount
    /// the socket's volume.
    #[arg(long, default_value = "0600", value_parser = parse_socket_mode)]
    pub socket_mode: u32,
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
    /// Do not mirror the Runs' output to stdout as JSON records (by default it is, so
    /// that the container log and `pods/log` serve it: docs/runtimed.md, "Output
    /// mirror"). `krt run --local` passes it: nobody reads its agent's stdout.
    #[arg(long)]
    pub no_output_mirror: bool,
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
    /// Stop, as on SIGTERM, when the process that started this one ends: for a parent
    /// that cannot stop it when it dies itself (`krt run --local` killed with SIGKILL).
    #[arg(long)]
    pub exit_with_parent: bool,
    /// With `--exit-with-parent`: the pid of the parent to watch, which then counts as
    /// ended as soon as this process is not its child (also when it ended before this
    /// process started). Without it, the parent this process has when it starts.
    #[arg(long, requires = "exit_with_parent")]
    pub parent_pid: Option<u32>,
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

/// An octal file mode for a socket: read and write bits only (no execute, setuid, sticky).
fn parse_socket_mode(value: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(value, 8)
        .map_err(|_| format!("{value:?} is not an octal mode such as 0600"))?;
    if mode & !0o666 != 0 {
        return Err(format!(
            "{value:?}: only read and write bits (at most 0666) make sense on a socket"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{value:?}: the owner (the agent) needs read and write"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_socket_mode("0666").unwrap(), 0o666);
        assert_eq!(parse_socket_mode("660").unwrap(), 0o660);
        assert!(
            parse_socket_mode("0777")
                .unwrap_err()
                .contains("at most 0666")
        );
        assert!(parse_socket_mode("4600").is_err());
        assert!(parse_socket_mode("0066").unwrap_err().contains("owner"));
        assert!(parse_socket_mode("rw").unwrap_err().contains("octal"));
        assert!(parse_socket_mode("0608").is_err());
    }
}
