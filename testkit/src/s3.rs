//! A real S3-compatible server (moto's server mode) on 127.0.0.1 and a random free
//! port, installed by `.ci/install-s3-server` when missing, stopped on drop. What the
//! tests read back (keys, objects) goes over plain HTTP: moto checks that a request
//! names an access key but does not verify its signature, so no S3 client library is
//! needed to check what was uploaded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to listen (a cold Python start on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The access key the tests sign with (moto accepts any).
pub const ACCESS_KEY: &str = "test-access-key";
/// The secret key the tests sign with.
pub const SECRET_KEY: &str = "test-secret-key";

/// Runs `.ci/install-s3-server` and returns the server's path; fails the test, with the
/// script's output, if it cannot install it.
fn install() -> PathBuf {
    let script = repo_root().join(".ci/install-s3-server");
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

/// The workspace root (this crate's parent folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running moto server.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Installs (once) and starts a server; waits until it answers.
    pub fn start() -> Self {
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

    /// A bare HTTP/1.0 request (so the answer is never chunked): its status code and
    /// body, if the server answered.
    fn request(&self, method: &str, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&response[..head_end]);
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, response[head_end + 4..].to_vec()))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}")).map(|(s, _)| s);
        assert_eq!(status, Some(200), "create bucket {bucket}");
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?list-type=2&max-keys=1000"))
            .expect("moto answers a listing");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "list {bucket}: {body}");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(unescape_xml)
            .collect();
        keys.sort();
        keys
    }

    /// The bytes of `key` in `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}/{key}"))
            .expect("moto answers a GET");
        assert_eq!(
            status,
            200,
            "get {bucket}/{key}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// The credentials as environment variables (the sidecar's other source).
    pub fn credentials_env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }

    /// A directory holding the credentials as a mounted Secret would.
    pub fn credentials_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("AWS_ACCESS_KEY_ID"), ACCESS_KEY).unwrap();
        std::fs::write(dir.path().join("AWS_SECRET_ACCESS_KEY"), SECRET_KEY).unwrap();
        dir
    }
}

/// The five predefined XML entities, as S3 listings escape keys.
fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listing_keys_are_unescaped() {
        assert_eq!(super::unescape_xml("a&amp;b&lt;c"), "a&b<c");
    }
}
