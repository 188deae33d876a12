//! A real S3-compatible server (moto's server mode) on 127.0.0.1 (or a given address,
//! [`S3Server::start_on`]) and a random free port, installed by `.ci/install-s3-server` when missing, stopped on drop. What the
//! tests read back (keys, objects) goes over plain HTTP: moto checks that a request
//! names an access key but does not verify its signature, so no S3 client library is
//! needed to check what was uploaded.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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

fn free_port(host: IpAddr) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {host}: {e}"))
}

/// A running moto server.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    host: IpAddr,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Installs (once) and starts a server on 127.0.0.1; waits until it answers.
    pub fn start() -> Self {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Installs (once) and starts a server listening on `host` only (an address of
    /// this host, such as the bridge address pods of the emulated node reach it at);
    /// waits until it answers.
    pub fn start_on(host: IpAddr) -> Self {
        let server = install();
        // A port found free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port(host);
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(&server)
                .args(["-H", &host.to_string(), "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
            let mut s = Self {
                child,
                host,
                port,
                log,
            };
            if s.wait_listening() {
                return s;
            }
        }
        panic!("moto_server did not start on {host}");
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
        let mut stream = TcpStream::connect(self.address()).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0\r\n\r\n",
            self.address()
        )
        .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&response[..head_end]);
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, response[head_end + 4..].to_vec()))
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// `http://HOST:PORT` (`http://127.0.0.1:PORT` for [`S3Server::start`]).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
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
    use super::*;

    #[test]
    fn listing_keys_are_unescaped() {
        assert_eq!(unescape_xml("a&amp;b&lt;c"), "a&b<c");
    }

    #[test]
    fn a_server_on_a_given_address_listens_there_only() {
        // 127.0.0.2 is a loopback address distinct from the default 127.0.0.1.
        let host: IpAddr = "127.0.0.2".parse().unwrap();
        let server = S3Server::start_on(host);
        assert_eq!(
            server.endpoint(),
            format!("http://127.0.0.2:{}", server.port)
        );
        server.create_bucket("bound");
        assert!(server.keys("bound").is_empty());
        assert!(
            TcpStream::connect(("127.0.0.1", server.port)).is_err(),
            "moto listens on 127.0.0.2 only"
        );
        let default = S3Server::start();
        assert!(default.endpoint().starts_with("http://127.0.0.1:"));
    }
}
