//! `krt` against a cluster: access (kubeconfig, context, namespace, in-cluster), the
//! commands' shared pieces and the typed errors they end with.
//!
//! - [`error`]: what failed and what to do, with the exit status;
//! - [`records`]: the runtimed agent's output records in a container log;
//! - [`output`]: a Run's output, live through `pods/log` or from its status tails;
//! - [`wait`]: following a Run to its end, Ctrl-C cancelling it;
//! - [`submit`]: `krt run` in a cluster (a manifest, or a Run from flags);
//! - [`workflow`]: following a Workflow's steps;
//! - [`get`], [`describe`], [`cancel`], [`logs`]: the other commands.

pub mod cancel;
pub mod describe;
pub mod error;
pub mod get;
pub mod logs;
pub mod output;
pub mod records;
pub mod submit;
pub mod wait;
pub mod workflow;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use error::ClusterError;
use error::Request;

/// How long a connection to the API server may take before krt says it is
/// unreachable: a reachable server answers in milliseconds; a black-holed address
/// should not leave the user waiting for the operating system's minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster access flags, as kubectl's.
#[derive(Clone, Debug, Default, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    /// The namespace: `-n`, else the context's.
    pub namespace: String,
    /// The API server's URL, for error messages.
    pub server: String,
    /// Whether the namespace was given with `-n` (a manifest's must then match it).
    pub explicit_namespace: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as `args` say (no request is made yet).
    pub async fn connect(args: &ClusterArgs) -> Result<Cluster, ClusterError> {
        let mut config = config(args).await?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        // A followed log may be silent for as long as the program is: no read timeout.
        config.read_timeout = None;
        let server = config.cluster_url.to_string();
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| ClusterError::BadConfig(error::chain(&e)))?;
        Ok(Cluster {
            client,
            namespace,
            server: server.trim_end_matches('/').to_owned(),
            explicit_namespace: args.namespace.is_some(),
        })
    }

    /// A cluster over an existing client (tests: a mocked API server).
    pub fn with_client(client: kube::Client, namespace: &str) -> Cluster {
        Cluster {
            client,
            namespace: namespace.to_owned(),
            server: "the API server".to_owned(),
            explicit_namespace: false,
        }
    }

    /// The typed error of `request` failing with `error`.
    pub fn error(&self, request: &Request<'_>, error: kube::Error) -> ClusterError {
        request.error(&self.server, error)
    }
}

/// The client configuration: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`,
/// else the in-cluster service account (only when no `--context` is asked for).
async fn config(args: &ClusterArgs) -> Result<kube::Config, ClusterError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = &args.kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|e| ClusterError::NoConfig {
            reason: format!(
                "cannot read --kubeconfig {}: {}",
                path.display(),
                error::chain(&e)
            ),
        })?;
        return kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| {
                ClusterError::BadConfig(format!("{}: {}", path.display(), error::chain(&e)))
            });
    }
    let from_file = match Kubeconfig::read() {
        Ok(file) => {
            return kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| ClusterError::BadConfig(error::chain(&e)));
        }
        Err(e) => error::chain(&e),
    };
    if args.context.is_some() {
        return Err(ClusterError::NoConfig {
            reason: format!("--context needs a kubeconfig, and none could be read ({from_file})"),
        });
    }
    kube::Config::incluster().map_err(|e| ClusterError::NoConfig {
        reason: format!(
            "no kubeconfig ({from_file}), and not in a pod ({})",
            error::chain(&e)
        ),
    })
}

/// Runs a cluster command: an async runtime, the connection, then `command`; an error
/// is printed as `krt NAME: ...` and ends with its exit status.
pub fn block_on<F, Fut>(name: &str, args: &ClusterArgs, command: F) -> i32
where
    F: FnOnce(Cluster) -> Fut,
    Fut: std::future::Future<Output = Result<i32, ClusterError>>,
{
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| ClusterError::Platform(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let cluster = Cluster::connect(args).await?;
                command(cluster).await
            })
        });
    result.unwrap_or_else(|e| {
        eprintln!("krt {name}: {e}");
        e.exit_code()
    })
}
