//! Real runtimed processes for tests of other crates (krt, the controller, the
//! end-to-end suite): the binary of this build, and an agent with a sidecar whose
//! network listener speaks TLS with a bearer token, as in a Runtime's pod.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runtimed binary of this build: next to the test executable's `deps/` folder;
/// built with cargo when this test run did not build it (`cargo nextest run -p X`).
pub fn binary() -> &'static PathBuf {
    static RUNTIMED: OnceLock<PathBuf> = OnceLock::new();
    RUNTIMED.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let path = profile_dir.join("runtimed");
        if !path.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = profile_dir.parent().unwrap();
            let status = Command::new(cargo)
                .args(["build", "-p", "kruntimes-runtimed", "--bin", "runtimed"])
                .env("CARGO_TARGET_DIR", target_dir)
                .status()
                .unwrap();
            assert!(status.success(), "building runtimed failed");
        }
        assert!(path.is_file(), "no runtimed at {}", path.display());
        path
    })
}

/// A self-signed certificate for `name`: (certificate PEM, private key PEM).
pub fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// What a Runtime's pods share: the sidecar's certificate and key, and the token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The name the certificate is issued for.
    pub server_name: String,
    /// Certificate PEM.
    pub certificate_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// The bearer token.
    pub token: String,
}

impl Identity {
    /// A fresh self-signed certificate for `runtimed.test` and a token.
    pub fn new() -> Self {
        let server_name = "runtimed.test".to_owned();
        let (certificate_pem, key_pem) = self_signed(&server_name);
        Self {
            server_name,
            certificate_pem,
            key_pem,
            token: "test-token-".repeat(4),
        }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// An agent and a sidecar on loopback, the sidecar listening on TCP with TLS and a
/// bearer token; both killed on drop.
#[derive(Debug)]
pub struct Pod {
    dir: tempfile::TempDir,
    agent: std::process::Child,
    sidecar: std::process::Child,
    /// Where the sidecar's network listener is.
    pub addr: SocketAddr,
    /// The listener's certificate PEM.
    pub certificate_pem: String,
    /// The name the certificate is issued for.
    pub server_name: String,
    /// The bearer token.
    pub token: String,
}

impl Pod {
    /// Starts both and waits until the listener accepts connections. `agent_args` are
    /// added to the agent's command line (e.g. `--max-running 2`).
    pub fn start(agent_args: &[&str]) -> Self {
        Self::start_with(agent_args, &Identity::new())
    }

    /// As [`Pod::start`], with the certificate and token of `identity` (pods of one
    /// Runtime share them).
    pub fn start_with(agent_args: &[&str], identity: &Identity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server_name = identity.server_name.clone();
        let (cert, key) = (identity.certificate_pem.clone(), identity.key_pem.clone());
        let token = identity.token.clone();
        let agent_socket = dir.path().join("agent.sock");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        let agent = Command::new(binary())
            .args(["agent", "--socket"])
            .arg(&agent_socket)
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .args(agent_args)
            .env("RUNTIMED_LOG", "error")
            .spawn()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The port is given to the sidecar, which binds it itself: a race with another
        // process is retried by the caller's wait below failing loudly, not hidden.
        drop(listener);
        let sidecar = Command::new(binary())
            .args(["sidecar", "--listen"])
            .arg(dir.path().join("sidecar.sock"))
            .arg("--agent-socket")
            .arg(&agent_socket)
            .arg("--grpc-bind-address")
            .arg(addr.to_string())
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .arg("--tls-cert-file")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-private-key-file")
            .arg(dir.path().join("tls.key"))
            .env("RUNTIMED_LOG", "error")
            .spawn()
            .unwrap();
        let pod = Self {
            dir,
            agent,
            sidecar,
            addr,
            certificate_pem: cert,
            server_name,
            token,
        };
        pod.wait_listening(Duration::from_secs(30));
        pod
    }

    fn wait_listening(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut delay = Duration::from_millis(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.addr).is_ok()
                && self.dir.path().join("agent.sock").exists()
            {
                return;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
        panic!("runtimed never listened on {}", self.addr);
    }

    /// The agent's process id (to kill it in a fault test).
    pub fn agent_pid(&self) -> u32 {
        self.agent.id()
    }

    /// The sidecar's process id.
    pub fn sidecar_pid(&self) -> u32 {
        self.sidecar.id()
    }
}

impl Drop for Pod {
    /// As a kubelet deletes a pod: SIGTERM (the agent ends its Runs, `AgentStopping`), a grace period,
    /// then SIGKILL; so no Run of a test outlives it.
    fn drop(&mut self) {
        for child in [&self.sidecar, &self.agent] {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in [&mut self.sidecar, &mut self.agent] {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
