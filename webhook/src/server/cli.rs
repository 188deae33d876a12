//! The command line of `kruntimes-webhook` and [`run`]: flags (and their env vars) to
//! one [`ServeConfig`], then [`serve`] until SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kruntimes_pss::Level;

use super::{ReadinessGate, ServeConfig, serve};
use crate::admission::{DeadlinePolicy, Handlers};
use crate::certs::{CertArgs, CertMode};
use crate::inject::InjectConfig;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `kruntimes-webhook`: the kruntimes admission webhook. API mode (the default) watches
/// namespaces and Runtimes; `--standalone` needs no Kubernetes API access.
#[derive(Debug, clap::Parser)]
#[command(name = "kruntimes-webhook", version)]
pub struct Args {
    /// PEM certificate chain served on the HTTPS port (reloaded when it changes).
    #[arg(long, env = "KRUNTIMES_WEBHOOK_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the certificate (reloaded when it changes).
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_TLS_PRIVATE_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_private_key_file: PathBuf,
    /// HTTPS address for POST /validate and POST /mutate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_BIND_ADDRESS",
        default_value = "0.0.0.0:9443"
    )]
    pub bind_address: SocketAddr,
    /// Plain-HTTP admin address for /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_ADMIN_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_bind_address: SocketAddr,
    /// Pod Security level every Runtime template must meet: privileged, baseline or
    /// restricted.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_PSS_FLOOR", default_value = "baseline")]
    pub pss_floor: Level,
    /// Run with no Kubernetes API access: namespaces are treated as unlabeled (the
    /// floor applies) and Runtime lookups are skipped with a warning. Without it (API
    /// mode), namespaces and Runtimes are watched and cached.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_STANDALONE",
        conflicts_with = "kubeconfig"
    )]
    pub standalone: bool,
    /// Kubeconfig for API mode; without it: KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// What to answer when a review cannot be decided within its deadline (80% of the
    /// apiserver's ?timeout=): deny or allow.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_DEADLINE_EXCEEDED_POLICY",
        value_enum,
        default_value_t = DeadlinePolicy::Deny
    )]
    pub deadline_exceeded_policy: DeadlinePolicy,
    /// The runtimed image injected into Pods: a version tag or a digest, never latest.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_RUNTIMED_IMAGE", default_value_t = crate::inject::default_image())]
    pub runtimed_image: String,
    /// Seconds between checks of the certificate files for changes.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_CERT_RELOAD_INTERVAL_SECONDS",
        default_value_t = 5
    )]
    pub cert_reload_interval_seconds: u64,
    /// Log format.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Certificate mode flags.
    #[command(flatten)]
    pub certs: CertArgs,
}

/// Runs the server until SIGTERM. The rustls crypto provider must be installed first.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.cert_reload_interval_seconds > 0,
        "--cert-reload-interval-seconds must be at least 1"
    );
    let inject = InjectConfig::new(args.runtimed_image.clone())?;
    let handlers = Handlers::standalone(inject, args.pss_floor);
    let client = if args.standalone {
        None
    } else {
        Some(crate::cluster::client(args.kubeconfig.as_deref()).await?)
    };
    let mut config = ServeConfig::new(&args.tls_cert_file, &args.tls_private_key_file, handlers)
        .with_reload_interval(Duration::from_secs(args.cert_reload_interval_seconds))
        .with_deadline_exceeded_policy(args.deadline_exceeded_policy);
    if let Some(client) = &client {
        let cluster = Arc::new(crate::cluster::Cluster::start(client.clone()));
        config.handlers = config
            .handlers
            .with_namespaces(cluster.namespace_levels())
            .with_runtimes(cluster.runtimes());
        config = config.with_readiness(cluster);
    }
    let https = TcpListener::bind(args.bind_address)
        .with_context(|| format!("cannot bind {}", args.bind_address))?;
    let admin = TcpListener::bind(args.admin_bind_address)
        .with_context(|| format!("cannot bind {}", args.admin_bind_address))?;
    let self_managed = match args.certs.cert_mode {
        CertMode::Files => None,
        CertMode::SelfManaged => {
            let client = match &client {
                Some(c) => c.clone(),
                None => crate::cluster::client(args.kubeconfig.as_deref()).await?,
            };
            Some(
                crate::certs::start_self_managed(
                    client,
                    &args.certs,
                    &args.tls_cert_file,
                    &args.tls_private_key_file,
                )
                .await?,
            )
        }
    };
    if let Some(s) = &self_managed {
        config = config.with_gate(ReadinessGate {
            name: "the self-managed certificate and caBundles",
            ready: s.ready.clone(),
        });
    }
    let running = serve(config, https, admin).await?;
    let mode = if args.standalone { "standalone" } else { "api" };
    tracing::info!(addr = %running.addr, admin_addr = %running.admin_addr, mode, "serving");
    let result = running.run_until_signal().await;
    if let Some(s) = self_managed {
        s.task.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[tokio::test]
    async fn api_mode_is_the_default_and_needs_a_readable_kubeconfig() {
        use clap::Parser;
        let args = Args::try_parse_from([
            "kruntimes-webhook",
            "--tls-cert-file=a",
            "--tls-private-key-file=b",
            "--kubeconfig=/nonexistent/kubeconfig",
        ])
        .unwrap();
        assert!(!args.standalone);
        assert_eq!(args.deadline_exceeded_policy, DeadlinePolicy::Deny);
        let error = format!("{:#}", run(args).await.unwrap_err());
        assert!(
            error.contains("cannot read kubeconfig /nonexistent/kubeconfig"),
            "{error}"
        );
        assert!(
            Args::try_parse_from([
                "kruntimes-webhook",
                "--tls-cert-file=a",
                "--tls-private-key-file=b",
                "--standalone",
                "--kubeconfig=k",
            ])
            .is_err()
        );
    }
}
