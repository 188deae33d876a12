//! A started API server with an admin identity, a kube-rs client and kubectl, both
//! reading the kubeconfig the server wrote.

use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::process::Command;

use kruntimes_e2e::cluster::api::{ApiConfig, ApiServer, ApiServerHandle};
use kruntimes_e2e::cluster::contract::UserInfo;

pub const ADMIN_TOKEN: &str = "admin-token";

pub struct Cluster {
    pub server: ApiServerHandle,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn admin_users() -> BTreeMap<String, UserInfo> {
    BTreeMap::from([(
        ADMIN_TOKEN.to_owned(),
        UserInfo {
            username: "system:admin".to_owned(),
            groups: vec!["system:masters".to_owned()],
        },
    )])
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::with(ApiConfig {
            users: admin_users(),
            ..ApiConfig::default()
        })
        .await
    }

    pub async fn with(config: ApiConfig) -> Cluster {
        let server = ApiServer::start(config)
            .await
            .expect("start the API server");
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig, ADMIN_TOKEN, "default")
            .expect("write kubeconfig");
        let text = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
        let parsed: kube::config::Kubeconfig =
            serde_json::from_str(&text).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(
            parsed,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config from the kubeconfig");
        let client = kube::Client::try_from(config).expect("kube client");
        Cluster {
            server,
            client,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Runs kubectl with this cluster's kubeconfig; returns (success, stdout, stderr).
    pub async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_stdin(args, None).await
    }

    /// kubectl runs as a child process awaited on the runtime, so that the server
    /// (on the same runtime) keeps answering it.
    pub async fn kubectl_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self._dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
        }
        drop(pipe);
        let out = child.wait_with_output().await.expect("kubectl ends");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }
}

/// The repository's CRD directory.
pub fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kruntimes/crds")
}
