//! A real S3-compatible server (moto's server mode) on 127.0.0.1 and a random free
//! port, installed by `.ci/install-s3-server` when missing, stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kruntimes_runtimed::artifacts::{CredentialSource, Credentials, build_store};
use kruntimes_runtimed::proto;
use object_store::ObjectStore;

/// How long the server may take to listen (a cold Python start on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The keys the tests sign with (moto accepts any).
const ACCESS_KEY: &str = "test-access-key";
const SECRET_KEY: &str = "test-secret-key";

/// Runs `.ci/install-s3-server` and returns the server's path; fails the test, with the
/// script's output, if it cannot install it.
fn install() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/install-s3-server");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}): the artifact tests need an S3-compatible server (moto[server] from PyPI).\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) struct S3Server {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    pub(crate) fn start() -> Self {
        let server = install();
        // A port found free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
            let mut s = Self { child, port, log };
            if s.wait_listening() {
                return s;
            }
        }
        panic!("moto_server did not start on 127.0.0.1");
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.request("GET", "/").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        panic!("moto_server never answered on port {}:\n{log}", self.port);
    }

    /// A bare HTTP/1.1 request; the status code, if the server answered.
    fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.split(' ').nth(1)?.parse().ok()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_bucket(&self, bucket: &str) {
        assert_eq!(
            self.request("PUT", &format!("/{bucket}")),
            Some(200),
            "create bucket {bucket}"
        );
    }

    pub(crate) fn store(&self, bucket: &str, prefix: &str) -> proto::S3Store {
        proto::S3Store {
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    pub(crate) fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let credentials = Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        };
        Arc::new(build_store(&self.store(bucket, ""), &credentials, false).unwrap())
    }

    /// Every key in the bucket, sorted.
    pub(crate) async fn keys(&self, bucket: &str) -> Vec<String> {
        let client = self.client(bucket);
        let mut keys: Vec<String> = client
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// The credentials as environment variables (the sidecar's other source).
    #[allow(dead_code)] // used by krt's tests (cli/tests/run_local_artifacts.rs)
    pub(crate) fn credentials_env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }

    /// A directory holding the credentials as a mounted Secret would.
    pub(crate) fn credentials_dir(&self) -> (tempfile::TempDir, CredentialSource) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("AWS_ACCESS_KEY_ID"), ACCESS_KEY).unwrap();
        std::fs::write(dir.path().join("AWS_SECRET_ACCESS_KEY"), SECRET_KEY).unwrap();
        let source = CredentialSource::Dir(dir.path().to_owned());
        (dir, source)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
