//! `kruntimes-test-cluster --dir DIR [--install | --install-chart RENDERED.yaml]`: an emulated Kubernetes cluster on
//! loopback for the end-to-end suite (docs/test-cluster.md). Prints `ready` when it is
//! up, takes control commands on stdin (one answer line each on stdout), and on SIGTERM
//! or SIGINT stops everything it started and exits 0.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kruntimes_e2e::cluster::harness::{Install, TestCluster};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "An emulated Kubernetes cluster for kruntimes' end-to-end tests"
)]
struct Args {
    /// Directory for the kubeconfigs, the node's files and the components' logs.
    #[arg(long)]
    dir: PathBuf,
    /// Also install kruntimes: CRDs, webhook configurations, the webhook and the
    /// controller of this build.
    #[arg(long, conflicts_with = "install_chart")]
    install: bool,
    /// Install kruntimes from this rendered Helm chart (`helm template` output, CRDs
    /// included): applied through the API server as `kubectl apply --server-side` does;
    /// its Deployments' pods run on the node with this build's binaries.
    #[arg(long, value_name = "RENDERED.yaml")]
    install_chart: Option<PathBuf>,
    /// The repository holding charts/ and deploy/ (default: this crate's parent).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    repo: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "kruntimes-test-cluster needs root: its node runs Pods as processes in namespaces of their own"
        );
    }
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let install = match (args.install_chart, args.install) {
        (Some(rendered), _) => Install::Chart(rendered),
        (None, true) => Install::Manifests,
        (None, false) => Install::Nothing,
    };
    let mut cluster = TestCluster::start_with(&args.dir, &args.repo, install).await?;
    let mut stdout = tokio::io::stdout();
    let addr = cluster
        .api_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ready = format!(
        "ready server=https://{addr} kubeconfig={}\n",
        cluster.kubeconfig().display()
    );
    stdout.write_all(ready.as_bytes()).await?;
    stdout.flush().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => {
                    let answer = match cluster.control(&line).await {
                        Ok(text) if text.is_empty() => "ok\n".to_owned(),
                        Ok(text) => format!("ok {text}\n"),
                        Err(e) => format!("error {e}\n"),
                    };
                    stdout.write_all(answer.as_bytes()).await?;
                    stdout.flush().await?;
                }
                // stdin closed (or unreadable): keep running until a signal.
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
    tracing::info!("stopping");
    cluster.stop().await;
    tracing::info!("stopped");
    // tokio reads stdin on a blocking thread that a runtime shutdown would wait for, and
    // a parent keeping the pipe open would then hang us: exit now, everything is stopped.
    std::process::exit(0)
}
