//! `runtimed`: `agent` (PID 1 of the user container: runs Runs, serves the API on a
//! unix socket), `sidecar` (forwards the API to the agent, fetching git sources on the
//! way) and `install DEST`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kruntimes_runtimed::agent::{Agent, Bounds};
use kruntimes_runtimed::cli::{AgentArgs, Cli, Mode, ProbeArgs, ProbeKind, SidecarArgs};
use kruntimes_runtimed::lifecycle::Config;
use kruntimes_runtimed::{auth, grpc, limits, net};

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
            let parent = args.exit_with_parent.then_some(parent);
            agent(args, parent)
        }
        Mode::Sidecar(args) => sidecar(&args, args.exit_with_parent.then_some(parent)),
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
    match kruntimes_runtimed::spawner::serve(socket) {
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

/// Exit 0 when the API on the socket answers Health (startup) or answers ready
/// (readiness: the agent behind a sidecar is reachable), 1 otherwise. Used as the
/// injected sidecar's exec probes, so no port is opened for them.
fn probe(args: &ProbeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtimed probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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

fn sidecar(args: &SidecarArgs, parent: Option<u32>) -> ExitCode {
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
    // One thread: the sidecar only forwards calls (its blocking work, git fetches and
    // artifact reads, goes to the blocking pool), and a single thread avoids the
    // wake-ups between worker threads that cost about half of its CPU per Run
    // (docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtimed sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let settings = kruntimes_runtimed::artifacts::Settings {
            credentials: match &args.s3_credentials_dir {
                Some(dir) => kruntimes_runtimed::artifacts::CredentialSource::Dir(dir.clone()),
                None => kruntimes_runtimed::artifacts::CredentialSource::Env,
            },
            allow_http: args.s3_allow_http,
            workspace_root: args.workspace.clone(),
        };
        let proxy = match grpc::Proxy::new(&args.agent_socket) {
            Ok(p) => p.with_artifacts(settings),
            Err(e) => {
                eprintln!("runtimed sidecar: {}: {e}", args.agent_socket.display());
                return ExitCode::FAILURE;
            }
        };
        let fetcher = match kruntimes_runtimed::git::Fetcher::new(args.git_ca_file.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("runtimed sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(trust = fetcher.trust(), "git fetches trust");
        let proxy = proxy.with_git(fetcher);
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop = Arc::new(stop);
        let on_signal = stop.clone();
        tokio::spawn(async move {
            wait_for_stop(parent).await;
            let _ = on_signal.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let network = match (args.grpc_bind_address, auth) {
            (Some(addr), Some((auth, token_path))) => {
                let listener = match net::Listener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("runtimed sidecar: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let tls = args
                    .tls_cert_file
                    .clone()
                    .zip(args.tls_private_key_file.clone())
                    .map(|(cert, key)| net::TlsFiles { cert, key });
                if tls.is_none() {
                    tracing::warn!(
                        "network listener without TLS: the token crosses the network in clear text"
                    );
                }
                tokio::spawn(auth.clone().watch(token_path, auth::TOKEN_RELOAD_INTERVAL));
                tracing::info!(address = %bound, tls = tls.is_some(), "runtimed sidecar listening on the network");
                let service = proxy.clone();
                let shutdown = until_stopped(stopped.clone());
                let stop = stop.clone();
                Some(tokio::spawn(async move {
                    let result = listener.serve(service, auth, tls.as_ref(), shutdown).await;
                    // A network listener that cannot serve (unreadable TLS material)
                    // takes the sidecar down rather than leaving it half-working.
                    if result.is_err() {
                        let _ = stop.send(true);
                    }
                    result
                }))
            }
            _ => None,
        };
        tracing::info!(socket = %args.listen.display(), "runtimed sidecar listening");
        let local =
            grpc::serve_service_unix(proxy, &args.listen, until_stopped(stopped.clone())).await;
        let network = match network {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) => Err(kruntimes_runtimed::Error::io(
                    "network listener task",
                    std::io::Error::other(e),
                )),
            },
            None => Ok(()),
        };
        match local.and(network) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runtimed sidecar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn agent(args: AgentArgs, parent: Option<u32>) -> ExitCode {
    // One thread, as the sidecar: the agent's work per Run is short and spread over many
    // small steps (the call, the start, output, exit); on worker threads each step
    // crossed threads, and those wake-ups were a large share of its CPU. Nothing here
    // blocks for long: the spawner's answer is awaited, large removals and walks of
    // the disk go to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
async fn wait_for_stop(parent: Option<u32>) {
    let parent_exited = async {
        match parent {
            Some(parent) => kruntimes_runtimed::parent::exited(parent).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = wait_for_signal() => {}
        () = parent_exited => tracing::info!(parent, "stopping: the parent process ended"),
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
