//! Git sources, fetched by the sidecar: https only, a host allow-list, one ref, shallow
//! (depth 1), no submodules, no hooks, no LFS smudge, a byte limit and a time limit on
//! the whole fetch, errors bounded in length. The tree is handed to the agent as plain
//! files (path, content, executable bit), which it writes with the same checks as
//! inline files. gix is pure Rust, so no image needs git.
//!
//! See the "Git sources" section of `docs/runtimed.md`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kruntimes_api::validation::git::{check_allowed_host, check_git_ref, check_git_url};
use kruntimes_api::validation::paths::{PathKind, check_relative_path};

use crate::Reason;
use crate::proto;

mod fetch;
mod prepare;

pub use prepare::{Prepared, prepare_execute};

/// Largest fetch when the request gives no `max_bytes`: the API's example Runtime limit
/// (50 MiB). Holds ordinary tool repositories; the whole tree is kept in the sidecar's
/// memory until the agent has written it, so this also bounds that memory.
pub const DEFAULT_GIT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Largest `max_bytes` a request may ask for. The tree travels to the agent in one
/// gRPC message and sits in the sidecar's memory meanwhile; a request above it is
/// refused (`GitSourceInvalid`) rather than silently clamped.
pub const MAX_GIT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Time for the whole fetch (connect, negotiation, pack, tree) when the request gives
/// none: enough for tens of MiB on a slow link, short enough that a stalled server
/// fails the Run within a minute (the Runtime's `git.timeout` example).
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `timeout_ms` a request may ask for; a fetch is a preamble, not the Run.
pub const MAX_GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Most files delivered from one tree: each is one no-follow open in the agent and a
/// few bytes of framing in the message on top of its path and content.
pub const MAX_GIT_FILES: usize = 20_000;

/// Longest error message returned for a failed fetch: server and library messages can
/// be long (and attacker-chosen); they end up in the Run's status.
pub const MAX_GIT_ERROR_BYTES: usize = 1024;

/// Gitlinks (submodules) reported in the response metadata at most; the count is
/// always given.
pub const MAX_REPORTED_SUBMODULES: usize = 16;

/// Largest ExecuteRequest the agent accepts and the sidecar sends: the largest git tree
/// ([`MAX_GIT_MAX_BYTES`] of paths and contents) plus room for the framing of
/// [`MAX_GIT_FILES`] files and for the inline parts of a request (a Run object is at
/// most about 1.5 MiB in etcd; input at most 1 MiB).
pub const MAX_EXECUTE_REQUEST_BYTES: usize = MAX_GIT_MAX_BYTES as usize + 16 * 1024 * 1024;

/// gRPC metadata key carrying a failed fetch's reason (also the message's prefix).
pub use kruntimes_runtimed_api::REASON_METADATA;
/// Response metadata: the commit id delivered.
pub const COMMIT_METADATA: &str = "krt-git-commit";
/// Response metadata: gitlinks skipped (`COUNT: path, path...`).
pub const SUBMODULES_METADATA: &str = "krt-git-skipped-submodules";

/// Why a git source could not be delivered. Each variant is one Run failure reason.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The request's git fields break the rules (URL not https, bad ref or path, limits
    /// above the sidecar's ceilings, git combined with inline sources).
    #[error("GitSourceInvalid: {0}")]
    SourceInvalid(String),
    /// The URL's host (and port) is not in the Runtime's allow-list. No connection made.
    #[error("GitHostNotAllowed: {0}")]
    HostNotAllowed(String),
    /// The remote has no such branch, tag or commit.
    #[error("GitRefNotFound: {0}")]
    RefNotFound(String),
    /// `path` is not a directory of the fetched tree.
    #[error("GitPathNotFound: {0}")]
    PathNotFound(String),
    /// The pack, the delivered tree or its file count is over the limit.
    #[error("GitTooLarge: {0}")]
    TooLarge(String),
    /// The tree holds something that cannot be delivered (a symlink, a name that is
    /// not UTF-8 or breaks the workspace path rules).
    #[error("GitTreeRefused: {0}")]
    TreeRefused(String),
    /// The whole fetch took longer than its time limit.
    #[error("GitTimeout: {0}")]
    Timeout(String),
    /// Network, TLS, server or repository failure.
    #[error("GitFetchFailed: {0}")]
    FetchFailed(String),
    /// The sidecar's `--git-ca-file` cannot be used (at start-up, never per Run).
    #[error("--git-ca-file {0}")]
    CaFile(String),
}

impl GitError {
    /// The CamelCase reason for the Run's status.
    pub fn reason(&self) -> Reason {
        match self {
            Self::SourceInvalid(_) => Reason::GitSourceInvalid,
            Self::HostNotAllowed(_) => Reason::GitHostNotAllowed,
            Self::RefNotFound(_) => Reason::GitRefNotFound,
            Self::PathNotFound(_) => Reason::GitPathNotFound,
            Self::TooLarge(_) => Reason::GitTooLarge,
            Self::TreeRefused(_) => Reason::GitTreeRefused,
            Self::Timeout(_) => Reason::GitTimeout,
            Self::FetchFailed(_) | Self::CaFile(_) => Reason::GitFetchFailed,
        }
    }
}

/// `text` cut to [`MAX_GIT_ERROR_BYTES`] at a character boundary.
pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= MAX_GIT_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_GIT_ERROR_BYTES - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// One delivered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Repository-relative path.
    pub path: String,
    /// Content, as stored (LFS pointers stay pointers).
    pub content: Vec<u8>,
    /// Git mode 100755.
    pub executable: bool,
}

/// A fetched tree.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The commit delivered (hex).
    pub commit: String,
    /// Files under the requested path.
    pub files: Vec<TreeFile>,
    /// Gitlinks (submodules) skipped, repository-relative.
    pub skipped_submodules: Vec<String>,
    /// Pack bytes received.
    pub pack_bytes: u64,
}

/// A checked git source.
#[derive(Debug, Clone)]
pub struct Source {
    /// https URL.
    pub url: String,
    /// Ref; `None` is the remote's default branch.
    pub git_ref: Option<String>,
    /// Subdirectory; `None` is the whole tree.
    pub path: Option<String>,
    /// Limit on pack bytes received and on delivered bytes (paths and contents).
    pub max_bytes: u64,
    /// Limit on the whole fetch.
    pub timeout: Duration,
    /// Most files delivered ([`MAX_GIT_FILES`] from [`check`]).
    pub max_files: usize,
}

/// Checks the request's git fields, including the host against `allowed_hosts`;
/// nothing is contacted.
pub fn check(git: &proto::GitSource) -> Result<Source, GitError> {
    let invalid =
        |field: &str, reason: String| GitError::SourceInvalid(format!("{field}: {reason}"));
    check_git_url(&git.url).map_err(|r| invalid("git.url", r))?;
    let git_ref = (!git.r#ref.is_empty()).then(|| git.r#ref.clone());
    if let Some(r) = &git_ref {
        check_git_ref(r).map_err(|e| invalid("git.ref", e))?;
    }
    let path = match git.path.trim_end_matches('/') {
        "" | "." => None,
        p => {
            check_relative_path(p, PathKind::Plain).map_err(|e| invalid("git.path", e))?;
            Some(p.to_owned())
        }
    };
    let max_bytes = match git.max_bytes {
        0 => DEFAULT_GIT_MAX_BYTES,
        n if n > MAX_GIT_MAX_BYTES => {
            return Err(invalid(
                "git.max_bytes",
                format!("{n} is above the sidecar's ceiling of {MAX_GIT_MAX_BYTES} bytes"),
            ));
        }
        n => n,
    };
    let timeout = match git.timeout_ms {
        0 => DEFAULT_GIT_TIMEOUT,
        ms if Duration::from_millis(ms) > MAX_GIT_TIMEOUT => {
            return Err(invalid(
                "git.timeout_ms",
                format!("{ms} is above the sidecar's ceiling of {MAX_GIT_TIMEOUT:?}"),
            ));
        }
        ms => Duration::from_millis(ms),
    };
    check_host(&git.url, &git.allowed_hosts)?;
    Ok(Source {
        url: git.url.clone(),
        git_ref,
        path,
        max_bytes,
        timeout,
        max_files: MAX_GIT_FILES,
    })
}

/// The allow-list rule: an entry `host` allows the URL's host on the https port (443,
/// written or not); `host:port` allows exactly that port. Host names compare
/// case-insensitively (URLs are lowercased by the parser; entries must be lowercase).
fn check_host(url: &str, allowed: &[String]) -> Result<(), GitError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| GitError::SourceInvalid(format!("git.url: is not a valid URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let shown = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let allowed_entry = |entry: &String| {
        if check_allowed_host(entry).is_err() {
            return false;
        }
        match entry.rsplit_once(':') {
            Some((name, p)) => name == host && p.parse::<u16>().ok() == Some(port),
            None => *entry == host && port == 443,
        }
    };
    if allowed.iter().any(allowed_entry) {
        return Ok(());
    }
    if allowed.is_empty() {
        return Err(GitError::HostNotAllowed(format!(
            "{shown}: the Runtime allows no git host (spec.git.allowedHosts)"
        )));
    }
    let list = allowed
        .iter()
        .take(8)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    Err(GitError::HostNotAllowed(format!(
        "{shown} is not in the Runtime's spec.git.allowedHosts [{list}{}]",
        if allowed.len() > 8 { ", ..." } else { "" }
    )))
}

/// Fetches git sources: holds the TLS trust (system roots plus `--git-ca-file`).
#[derive(Debug, Clone)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    /// Where the trusted roots come from, for the log.
    roots_note: Arc<str>,
}

impl Fetcher {
    /// Trusts the system's roots, plus the PEM certificates in `extra_ca_file`.
    pub fn new(extra_ca_file: Option<&Path>) -> Result<Self, GitError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        let mut note = format!("{added} system roots");
        if let Some(path) = extra_ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| GitError::CaFile(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(GitError::CaFile(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| GitError::CaFile(format!("{}: {e}", path.display())))?;
            }
            note.push_str(&format!(" and {}", path.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| GitError::FetchFailed(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            roots_note: note.into(),
        })
    }

    /// Where the trusted roots come from (for the sidecar's start-up log).
    pub fn trust(&self) -> &str {
        &self.roots_note
    }

    /// Fetches `source` into a temporary bare repository and returns its tree, within
    /// `source.timeout` (the blocking work runs on tokio's blocking pool and is told to
    /// stop when the time is up).
    pub async fn fetch(&self, source: &Source) -> Result<Fetched, GitError> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let too_large = Arc::new(AtomicBool::new(false));
        let job = {
            let source = source.clone();
            let tls = self.tls.clone();
            let interrupt = interrupt.clone();
            let too_large = too_large.clone();
            tokio::task::spawn_blocking(move || {
                fetch::fetch_blocking(&source, tls, &interrupt, &too_large)
            })
        };
        match tokio::time::timeout(source.timeout, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::FetchFailed(format!(
                "the fetch task failed: {join}"
            ))),
            Err(_) => {
                // The task stops at its next read; the HTTP client's own timeout (the
                // same limit) ends a read that never returns.
                interrupt.store(true, Ordering::SeqCst);
                Err(GitError::Timeout(format!(
                    "fetching {} took longer than {:?}",
                    source.url, source.timeout
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, hosts: &[&str]) -> proto::GitSource {
        proto::GitSource {
            url: url.into(),
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_allow_list() {
        let ok = |url, hosts: &[&str]| check(&source(url, hosts)).map(|_| ());
        assert!(ok("https://github.com/o/r", &["github.com"]).is_ok());
        assert!(ok("https://GitHub.com/o/r", &["github.com"]).is_ok());
        assert!(ok("https://github.com:443/o/r", &["github.com"]).is_ok());
        assert!(ok("https://git.example:8443/o/r", &["git.example:8443"]).is_ok());
        for (url, hosts) in [
            ("https://github.com/o/r", &["gitlab.com"][..]),
            ("https://github.com/o/r", &[][..]),
            ("https://github.com:8443/o/r", &["github.com"][..]),
            ("https://git.example/o/r", &["git.example:8443"][..]),
            ("https://evilgithub.com/o/r", &["github.com"][..]),
            ("https://github.com.evil/o/r", &["github.com"][..]),
        ] {
            let e = ok(url, hosts).unwrap_err();
            assert_eq!(
                e.reason(),
                Reason::GitHostNotAllowed,
                "{url} {hosts:?}: {e}"
            );
        }
    }

    #[test]
    fn source_rules() {
        let reason = |g: proto::GitSource| check(&g).unwrap_err().reason();
        assert_eq!(
            reason(source("http://h/r", &["h"])),
            Reason::GitSourceInvalid
        );
        assert_eq!(
            reason(source("file:///etc", &["h"])),
            Reason::GitSourceInvalid
        );
        let mut g = source("https://h/r", &["h"]);
        g.r#ref = "--upload-pack=x".into();
        assert_eq!(reason(g), Reason::GitSourceInvalid);
        let mut g = source("https://h/r", &["h"]);
        g.path = "../x".into();
        assert_eq!(reason(g), Reason::GitSourceInvalid);
        let mut g = source("https://h/r", &["h"]);
        g.max_bytes = MAX_GIT_MAX_BYTES;
        assert_eq!(check(&g).unwrap().max_bytes, MAX_GIT_MAX_BYTES);
        g.max_bytes = MAX_GIT_MAX_BYTES + 1;
        assert_eq!(reason(g), Reason::GitSourceInvalid);
        let mut g = source("https://h/r", &["h"]);
        g.timeout_ms = MAX_GIT_TIMEOUT.as_millis() as u64;
        assert_eq!(check(&g).unwrap().timeout, MAX_GIT_TIMEOUT);
        g.timeout_ms += 1;
        assert_eq!(reason(g), Reason::GitSourceInvalid);
        let d = check(&source("https://h/r", &["h"])).unwrap();
        assert_eq!(
            (d.max_bytes, d.timeout),
            (DEFAULT_GIT_MAX_BYTES, DEFAULT_GIT_TIMEOUT)
        );
    }
}
