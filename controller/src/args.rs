//! `kruntimes-controller`'s flags, Kubernetes style; each is also an environment
//! variable (`KRUNTIMES_CONTROLLER_*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// kruntimes-controller: turns Runtimes into warm pools, dispatches Runs to them and
/// drives Workflows.
#[derive(Clone, Debug, Parser)]
#[command(name = "kruntimes-controller", version)]
pub struct Args {
    /// Path to a kubeconfig; without it, the in-cluster configuration (or
    /// $KUBECONFIG, ~/.kube/config) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// A namespace to watch (repeat for several); none: every namespace.
    #[arg(
        long = "namespace",
        env = "KRUNTIMES_CONTROLLER_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Only the replica holding the lease reconciles; the others serve probes and wait.
    #[arg(
        long,
        env = "KRUNTIMES_CONTROLLER_LEADER_ELECT",
        default_value_t = false
    )]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KRUNTIMES_CONTROLLER_LEASE_NAME",
        default_value = "kruntimes-controller"
    )]
    pub leader_elect_lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, from
    /// $POD_NAMESPACE, else `default`).
    #[arg(long, env = "KRUNTIMES_CONTROLLER_LEASE_NAMESPACE")]
    pub leader_elect_lease_namespace: Option<String>,
    /// Seconds a lease is held without renewal before another replica may take it.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub leader_elect_lease_duration: u64,
    /// Seconds before the lease's end at which the holder renews it.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_LEASE_GRACE", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_elect_renew_grace: u64,
    /// Where /livez, /readyz and /metrics are served.
    #[arg(
        long,
        env = "KRUNTIMES_CONTROLLER_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_bind_address: SocketAddr,
    /// Log format.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Reconciles of one kind running at once.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_WORKERS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// runtimed's gRPC port in Runtime pods.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_RUNTIMED_PORT", default_value_t = crate::pool::RUNTIMED_GRPC_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub runtimed_port: u16,
    /// Seconds after it finished when a Run without `spec.ttlSecondsAfterFinished` is
    /// deleted (0 to 31536000); unset: such Runs are kept until deleted. Not applied to
    /// a Workflow's step Runs, which go with their Workflow.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_RUN_TTL_SECONDS_AFTER_FINISHED", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub run_ttl_seconds_after_finished: Option<u64>,
    /// Seconds after it finished when a Workflow without
    /// `spec.ttlSecondsAfterFinished` is deleted, with its step Runs (0 to 31536000);
    /// unset: such Workflows are kept until deleted.
    #[arg(long, env = "KRUNTIMES_CONTROLLER_WORKFLOW_TTL_SECONDS_AFTER_FINISHED", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub workflow_ttl_seconds_after_finished: Option<u64>,
    /// Pod Security level every Runtime template is re-validated at (privileged,
    /// baseline or restricted): the webhook's `--pss-floor`, for Runtimes that reached
    /// the API without it. A template that fails it gets nothing applied.
    #[arg(
        long,
        env = "KRUNTIMES_CONTROLLER_PSS_FLOOR",
        default_value = "baseline"
    )]
    pub pss_floor: kruntimes_pss::Level,
}

impl Args {
    /// The Lease's namespace.
    pub fn lease_namespace(&self) -> String {
        self.leader_elect_lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::{CommandFactory, Parser};

    use super::Args;

    #[test]
    fn the_flags_are_consistent_and_have_defaults() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["kruntimes-controller"]).unwrap();
        assert!(args.namespaces.is_empty(), "cluster-wide by default");
        assert!(!args.leader_elect);
        assert_eq!(args.runtimed_port, 9440);
        assert_eq!(
            args.pss_floor,
            kruntimes_pss::Level::Baseline,
            "the webhook's default"
        );
    }

    #[test]
    fn namespaces_repeat_and_bad_values_are_refused() {
        let args = Args::try_parse_from(["c", "--namespace", "a", "--namespace", "b"]).unwrap();
        assert_eq!(args.namespaces, ["a", "b"]);
        assert!(Args::try_parse_from(["c", "--runtimed-port", "0"]).is_err());
        assert!(Args::try_parse_from(["c", "--workers", "0"]).is_err());
        assert!(Args::try_parse_from(["c", "--log-format", "xml"]).is_err());
        let strict = Args::try_parse_from(["c", "--pss-floor", "restricted"]).unwrap();
        assert_eq!(strict.pss_floor, kruntimes_pss::Level::Restricted);
        let unknown = Args::try_parse_from(["c", "--pss-floor", "strict"]).unwrap_err();
        assert!(unknown.to_string().contains("--pss-floor"), "{unknown}");
    }

    /// `--workflow-ttl-seconds-after-finished`: unset by default, 0 and a year accepted,
    /// one second more refused, as the field's own bound.
    #[test]
    fn the_default_workflow_ttl_is_bounded_at_a_year() {
        let flag = "--workflow-ttl-seconds-after-finished";
        let parse = |value: &str| Args::try_parse_from(["c", flag, value]);
        assert_eq!(
            Args::try_parse_from(["c"])
                .unwrap()
                .workflow_ttl_seconds_after_finished,
            None
        );
        assert_eq!(
            parse("0").unwrap().workflow_ttl_seconds_after_finished,
            Some(0)
        );
        assert_eq!(
            parse("31536000")
                .unwrap()
                .workflow_ttl_seconds_after_finished,
            Some(31_536_000)
        );
        let over = parse("31536001").unwrap_err().to_string();
        assert!(over.contains(flag), "{over}");
        assert!(parse("-1").is_err());
    }
}
