//! `runtimed`: `agent` (PID 1 of the user container: runs Runs, serves the API on a
//! unix socket), `sidecar` (forwards the API to the agent, fetching git sources on the
//! way) and `install DEST`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Parser;
use kruntimes_runtimed::agent::lifecycle::Config;
use kruntimes_runtimed::agent::output::MirrorSink;
use kruntimes_runtimed::agent::{Agent, Bounds};
use kruntimes_runtimed::cli::{AgentArgs, Cli, Mode, ProbeArgs, ProbeKind, SidecarArgs};
use kruntimes_runtimed::parent::Parent;
use kruntimes_runtimed::sidecar::{Proxy, artifacts, auth, git, net};
use kruntimes_runtimed::{grpc, limits};
use tokio::sync::watch;

fn main() -> ExitCode {
    // Read first: `--exit-with-parent` watches the process that started this one.
    let parent = std::os::unix::process::parent_id();
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
        Mode::Agent(args) => {
            let parent = args
                .exit_with_parent
                .then(|| Parent::new(args.parent_pid, parent));
            agent(args, parent)
        }
        Mode::Sidecar(args) => {
            let parent = args
                .exit_with_parent
                .then(|| Parent::new(args.parent_pid, parent));
            sidecar(&args, parent)
        }
        Mode::Install { dest } => install(&dest),
        Mode::Probe(args) => probe(&args),
        Mode::Spawner => spawner(),
    }
}

/// `runtimed spawner`: stdin is the unix socket the agent talks on.
fn spawner() -> ExitCode {
    use std::os::fd::AsFd;
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(e) => {
            eprintln!("runtimed spawner: stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    match kruntimes_runtimed::agent::spawner::serve(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtimed spawner: {e}");
            ExitCode::FAILURE
        }
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

/// A tokio runtime on the calling thread only. One thread for every mode: the sidecar
/// only forwards calls and the agent's work per Run is many small steps (the call, the
/// start, output, exit); on worker threads each step crossed threads, and those
/// wake-ups were about half of their CPU per Run (docs/benchmarks.md). Their blocking
/// work (git fetches, artifact reads, large workspace removals, walks of /proc) goes to
/// the blocking pool.
fn current_thread_runtime(mode: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("runtimed {mode}: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Exit 0 when the API on the socket answers Health (startup) or answers ready
/// (readiness: the agent behind a sidecar is reachable), 1 otherwise. Used as the
/// injected sidecar's exec probes, so no port is opened for them.
fn probe(args: &ProbeArgs) -> ExitCode {
    let runtime = match current_thread_runtime("probe") {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let call = async {
            let mut client = grpc::connect_unix(&args.socket)
                .await
                .map_err(|e| e.to_string())?;
            client
                .health(kruntimes_runtimed::proto::HealthRequest::default())
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(limits::PROBE_TIMEOUT, call).await {
            Ok(Ok(health)) if args.kind == ProbeKind::Startup || health.ready => ExitCode::SUCCESS,
            Ok(Ok(_)) => {
                eprintln!("runtimed probe: {}: not ready", args.socket.display());
                ExitCode::FAILURE
            }
            Ok(Err(e)) => {
                eprintln!("runtimed probe: {}: {e}", args.socket.display());
                ExitCode::FAILURE
            }
            Err(_) => {
                eprintln!(
                    "runtimed probe: {}: no answer within {:?}",
                    args.socket.display(),
                    limits::PROBE_TIMEOUT
                );
                ExitCode::FAILURE
            }
        }
    })
}

fn sidecar(args: &SidecarArgs, parent: Option<Parent>) -> ExitCode {
    // Checked before anything listens: a bad token file is a configuration error.
    let auth = match &args.token_file {
        Some(path) => match auth::BearerAuth::from_file(path) {
            Ok(auth) => Some((auth, path.clone())),
            Err(e) => {
                eprintln!("runtimed sidecar: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let runtime = match current_thread_runtime("sidecar") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(serve_sidecar(args, auth, parent));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtimed sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sidecar's proxy to the agent, with its git fetcher and artifact settings.
fn sidecar_proxy(args: &SidecarArgs) -> anyhow::Result<Proxy> {
    let settings = artifacts::Settings {
        credentials: match &args.s3_credentials_dir {
            Some(dir) => artifacts::CredentialSource::Dir(dir.clone()),
            None => artifacts::CredentialSource::Env,
        },
        allow_http: args.s3_allow_http,
        workspace_root: args.workspace.clone(),
    };
    let proxy = Proxy::new(&args.agent_socket)
        .map_err(|e| anyhow!("{}: {e}", args.agent_socket.display()))?
        .with_artifacts(settings);
    let fetcher = git::Fetcher::new(args.git_ca_file.as_deref())?;
    tracing::info!(trust = fetcher.trust(), "git fetches trust");
    Ok(proxy.with_git(fetcher))
}

/// Serves the sidecar on its unix socket and, with a bind address and a token, on the
/// network, until a signal (or the parent's end) stops both.
async fn serve_sidecar(
    args: &SidecarArgs,
    auth: Option<(auth::BearerAuth, PathBuf)>,
    parent: Option<Parent>,
) -> anyhow::Result<()> {
    let proxy = sidecar_proxy(args)?;
    // One signal stops both listeners.
    let (stop, stopped) = watch::channel(false);
    let stop = Arc::new(stop);
    let on_signal = stop.clone();
    tokio::spawn(async move {
        wait_for_stop(parent).await;
        let _ = on_signal.send(true);
    });
    let network = match (args.grpc_bind_address, auth) {
        (Some(addr), Some((auth, token_path))) => {
            let listener = net::Listener::bind(addr).await?;
            let tls = args
                .tls_cert_file
                .clone()
                .zip(args.tls_private_key_file.clone())
                .map(|(cert, key)| net::TlsFiles { cert, key });
            Some(serve_network(
                listener,
                proxy.clone(),
                (auth, token_path),
                tls,
                stop.clone(),
                stopped.clone(),
            ))
        }
        _ => None,
    };
    tracing::info!(socket = %args.listen.display(), "runtimed sidecar listening");
    let local = grpc::serve_service_unix(proxy, &args.listen, until_stopped(stopped)).await;
    let network = match network {
        Some(task) => task
            .await
            .map_err(|e| anyhow!("network listener task: {e}"))?,
        None => Ok(()),
    };
    local.and(network)?;
    Ok(())
}

/// Resolves once `stopped` says so.
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Starts the network listener's task (and its token's reload); a listener that cannot
/// serve (unreadable TLS material) stops the sidecar rather than leaving it
/// half-working.
fn serve_network(
    listener: net::Listener,
    proxy: Proxy,
    (auth, token_path): (auth::BearerAuth, PathBuf),
    tls: Option<net::TlsFiles>,
    stop: Arc<watch::Sender<bool>>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), kruntimes_runtimed::Error>> {
    if tls.is_none() {
        tracing::warn!("network listener without TLS: the token crosses the network in clear text");
    }
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tokio::spawn(auth.clone().watch(token_path, auth::TOKEN_RELOAD_INTERVAL));
    tracing::info!(address = %bound, tls = tls.is_some(), "runtimed sidecar listening on the network");
    tokio::spawn(async move {
        let result = listener
            .serve(proxy, auth, tls.as_ref(), until_stopped(stopped))
            .await;
        if result.is_err() {
            let _ = stop.send(true);
        }
        result
    })
}

fn agent(args: AgentArgs, parent: Option<Parent>) -> ExitCode {
    let runtime = match current_thread_runtime("agent") {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let mut config = Config::new(&args.workspace);
        config.grace = Duration::from_millis(args.grace_ms);
        config.output_limit = args.output_limit;
        config.keep_workspaces = args.keep_workspaces;
        config.mirror = (!args.no_output_mirror).then_some(MirrorSink::Stdout);
        config.workspace_size_limit = args.workspace_size_limit;
        config.bash = args.bash;
        config.python = args.python;
        // The Runs are forked by a small helper process started from this executable,
        // not by this (multi-threaded, larger) process: see the spawner module.
        match std::env::current_exe() {
            Ok(exe) => config.spawner = Some(exe),
            Err(e) => {
                tracing::warn!(error = %e, "no spawner process: Runs are forked from the agent")
            }
        }
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
            wait_for_stop(parent).await;
            tracing::info!("stopping: cancelling running executions");
            shutdown_agent.shutdown().await;
        };
        tracing::info!(socket = %args.socket.display(), "runtimed agent listening");
        match grpc::serve_unix_with_mode(agent, &args.socket, args.socket_mode, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runtimed agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM or SIGINT, or the end of `parent` when given (`--exit-with-parent`).
async fn wait_for_stop(parent: Option<Parent>) {
    let parent_exited = async {
        match parent {
            Some(parent) => parent.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = wait_for_signal() => {}
        () = parent_exited => tracing::info!(
            parent = parent.map(Parent::pid),
            "stopping: the parent process ended"
        ),
    }
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
