//! Artifacts: files of a terminal Run's workspace uploaded to an S3-compatible store by
//! the sidecar (which alone holds the credentials).
//!
//! Order of work, so that a refusal never leaves anything behind:
//! 1. the request is checked at Execute (globs, store, limit) and refused there;
//! 2. once the Run is terminal, the workspace is walked: only regular files match;
//!    symlinks are **skipped** (never followed, never uploaded, whether they point inside
//!    or outside the workspace), so a symlink cannot make the sidecar read elsewhere;
//! 3. the count and the total size are checked *before any upload*;
//! 4. files are read with no-follow opens (a file swapped for a symlink after the walk
//!    is refused), hashed (sha256) and put as `<prefix><run-uid>/<path>`, a few at once;
//! 5. on any failure every object whose upload started is deleted (rollback), so the
//!    store holds all the Run's artifacts or none;
//! 6. the workspace is deleted only after the upload ended (uploaded or rolled back).
//!
//! See `docs/runtimed.md`, section "Artifacts".

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kruntimes_api::validation::paths::{PathKind, check_relative_path};
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::Reason;
use crate::grpc::RuntimedClient;
use crate::{lock, proto};

/// Bytes one Run may upload when its request gives no limit: the API's example
/// Runtime default, enough for reports and small datasets.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Largest `max_bytes` accepted. A file is held in memory while it uploads (one PUT per
/// file), so this bounds the sidecar's memory for a single huge file.
pub const MAX_BYTES_CEILING: u64 = 1024 * 1024 * 1024;

/// Files uploaded per Run at most. Each one is a PUT and an entry in the Run's status,
/// which lives in etcd (1.5 MiB per object): 256 entries of at most ~2.6 KiB (path,
/// key, size, hash) stay well below it.
pub const MAX_FILES: usize = 256;

/// Directory entries looked at while matching, at most: bounds the walk of a workspace
/// holding millions of files (a Run exceeding it fails with `ArtifactsTooMany`).
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// Globs per request: the API's `MAX_ARTIFACT_PATHS`.
pub const MAX_PATTERNS: usize = kruntimes_api::v1alpha1::limits::MAX_ARTIFACT_PATHS;

/// Longest key prefix: the API's schema bound on `s3.prefix`.
pub const MAX_PREFIX_BYTES: usize = 512;

/// Uploads running at once for one Run: enough to hide per-request latency, few enough
/// not to flood a small store or the pod's network.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// File bytes held in memory by the uploads of one Run at once (a single file larger
/// than this waits for every other upload and is then held alone).
pub const MAX_IN_FLIGHT_BYTES: u64 = 64 * 1024 * 1024;

/// Time for one object's PUT, retries included: a stuck store fails the Run's
/// artifacts (and rolls back) instead of holding the workspace forever.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Time for one DELETE during rollback.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of one request on a transient error (connection refused, 5xx): few, since
/// the whole upload is rolled back and reported anyway.
pub const MAX_RETRIES: usize = 2;

/// Runs whose artifact state the sidecar tracks: the agent's retained plus running
/// executions, so every execution the agent still holds can carry its artifact state.
pub const MAX_TRACKED_RUNS: usize =
    crate::limits::DEFAULT_MAX_RETAINED + crate::limits::DEFAULT_MAX_RUNNING;

/// Pause between Status calls while waiting for a Run to become terminal (after its
/// output ended, or when the agent is unreachable).
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why artifacts were refused or not uploaded. [`ArtifactError::reason`] is the
/// CamelCase reason reported in `Execution.artifacts_reason`.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A glob breaks the path rules or does not parse.
    #[error("artifacts.paths[{index}] {pattern:?}: {reason}")]
    PatternInvalid {
        /// Position in the request.
        index: usize,
        /// The glob.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// The request has no store, or a field of it is unusable.
    #[error("artifacts.{field}: {reason}")]
    StoreInvalid {
        /// `store`, `store.endpoint`, `max_bytes`...
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The sidecar has no credentials for the store.
    #[error("no artifact store credentials: {0}")]
    NoCredentials(String),
    /// More bytes matched than the limit; nothing was uploaded.
    #[error("artifacts total {total} bytes, above the limit of {max} bytes; nothing was uploaded")]
    TooLarge {
        /// Bytes matched.
        total: u64,
        /// The limit.
        max: u64,
    },
    /// More files (or directory entries walked) than the limits; nothing was uploaded.
    #[error("{0}; nothing was uploaded")]
    TooMany(String),
    /// The workspace is gone or a matched file cannot be read safely.
    #[error("{path}: {reason}")]
    ReadFailed {
        /// Relative path, or the workspace.
        path: String,
        /// Why.
        reason: String,
    },
    /// An upload failed; every object already uploaded was deleted (or is named).
    #[error("uploading {key}: {reason}; {rollback}")]
    UploadFailed {
        /// The object that failed.
        key: String,
        /// Why.
        reason: String,
        /// What the rollback did.
        rollback: String,
    },
}

impl ArtifactError {
    /// CamelCase reason for status.
    pub fn reason(&self) -> Reason {
        match self {
            Self::PatternInvalid { .. } => Reason::ArtifactPatternInvalid,
            Self::StoreInvalid { .. } => Reason::ArtifactStoreInvalid,
            Self::NoCredentials(_) => Reason::NoArtifactCredentials,
            Self::TooLarge { .. } => Reason::ArtifactsTooLarge,
            Self::TooMany(_) => Reason::ArtifactsTooMany,
            Self::ReadFailed { .. } => Reason::ArtifactReadFailed,
            Self::UploadFailed { .. } => Reason::ArtifactUploadFailed,
        }
    }
}

/// S3 credentials; never logged (Debug redacts them).
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Where the sidecar reads its credentials, again before each Run's upload (so a
/// rotated Secret is picked up without a restart).
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// A directory holding the files `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`:
    /// the Runtime's `credentialsSecretRef` Secret mounted as a volume.
    Dir(PathBuf),
    /// The sidecar's environment variables of the same names.
    Env,
}

const ACCESS_KEY_NAME: &str = "AWS_ACCESS_KEY_ID";
const SECRET_KEY_NAME: &str = "AWS_SECRET_ACCESS_KEY";

impl CredentialSource {
    /// Reads the credentials now.
    pub fn load(&self) -> Result<Credentials, ArtifactError> {
        let (access_key_id, secret_access_key) = match self {
            Self::Dir(dir) => {
                let read = |name: &str| {
                    std::fs::read_to_string(dir.join(name))
                        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                        .map_err(|e| {
                            ArtifactError::NoCredentials(format!(
                                "{}: {e}",
                                dir.join(name).display()
                            ))
                        })
                };
                (read(ACCESS_KEY_NAME)?, read(SECRET_KEY_NAME)?)
            }
            Self::Env => {
                let read = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        ArtifactError::NoCredentials(format!(
                            "{name} is not set in the sidecar's environment and no --s3-credentials-dir was given"
                        ))
                    })
                };
                (read(ACCESS_KEY_NAME)?, read(SECRET_KEY_NAME)?)
            }
        };
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err(ArtifactError::NoCredentials(
                "the access key id or the secret access key is empty".into(),
            ));
        }
        Ok(Credentials {
            access_key_id,
            secret_access_key,
        })
    }
}

/// Whether plain http is acceptable for `endpoint`: https always; http only to a
/// loopback host, or anywhere when the operator said so.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), ArtifactError> {
    let bad = |reason: String| ArtifactError::StoreInvalid {
        field: "store.endpoint",
        reason,
    };
    let url =
        url_parts(endpoint).ok_or_else(|| bad(format!("{endpoint:?} is not an http(s) URL")))?;
    match url {
        ("https", _) => Ok(()),
        ("http", host) if allow_http || is_loopback(host) => Ok(()),
        ("http", _) => Err(bad(
            "plain http is allowed only to a loopback address (or with the sidecar's --s3-allow-http)"
                .into(),
        )),
        _ => Err(bad(format!("{endpoint:?} is not an http(s) URL"))),
    }
}

/// (scheme, host) of an absolute http(s) URL without credentials.
fn url_parts(endpoint: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some((scheme, host))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a request before the Run starts: nothing is created when this fails.
pub fn check_request(
    request: &proto::ArtifactRequest,
    allow_http: bool,
) -> Result<GlobSet, ArtifactError> {
    let store = request.store.as_ref().ok_or(ArtifactError::StoreInvalid {
        field: "store",
        reason: "is required (no artifact store configured for this Run)".into(),
    })?;
    check_endpoint(&store.endpoint, allow_http)?;
    if store.bucket.len() < 3 || store.bucket.len() > 63 {
        return Err(ArtifactError::StoreInvalid {
            field: "store.bucket",
            reason: "must be 3 to 63 characters".into(),
        });
    }
    if store.prefix.len() > MAX_PREFIX_BYTES
        || store.prefix.starts_with('/')
        || store.prefix.contains("//")
    {
        return Err(ArtifactError::StoreInvalid {
            field: "store.prefix",
            reason: format!(
                "must be at most {MAX_PREFIX_BYTES} bytes, without a leading '/' or '//'"
            ),
        });
    }
    if request.max_bytes > MAX_BYTES_CEILING {
        return Err(ArtifactError::StoreInvalid {
            field: "max_bytes",
            reason: format!("must be at most {MAX_BYTES_CEILING} bytes"),
        });
    }
    globs(&request.paths)
}

/// Compiles the globs: relative, no `..`, `*` within one directory, `**` across.
pub fn globs(patterns: &[String]) -> Result<GlobSet, ArtifactError> {
    let invalid = |index: usize, reason: String| ArtifactError::PatternInvalid {
        index,
        pattern: patterns.get(index).cloned().unwrap_or_default(),
        reason,
    };
    if patterns.is_empty() {
        return Err(invalid(0, "at least one glob is required".into()));
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(invalid(
            MAX_PATTERNS,
            format!("at most {MAX_PATTERNS} globs are allowed"),
        ));
    }
    let mut set = GlobSetBuilder::new();
    for (index, pattern) in patterns.iter().enumerate() {
        check_relative_path(pattern, PathKind::Glob).map_err(|r| invalid(index, r))?;
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| invalid(index, e.kind().to_string()))?;
        set.add(glob);
    }
    set.build().map_err(|e| invalid(0, e.to_string()))
}

/// A matched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// Bytes, at the walk.
    pub size: u64,
}

/// Walks `workspace` (never following symlinks) and returns the regular files matching
/// `globs`, sorted by path, after checking their count and total size against the
/// limits. Non-UTF-8 names are skipped (they cannot be keys).
pub fn collect(
    workspace: &Path,
    globs: &GlobSet,
    max_bytes: u64,
) -> Result<Vec<Matched>, ArtifactError> {
    let read_failed = |path: &Path, e: std::io::Error| ArtifactError::ReadFailed {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut matched = Vec::new();
    let mut walked = 0usize;
    let mut pending: Vec<(PathBuf, String)> = vec![(workspace.to_owned(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| read_failed(&dir, e))? {
            let entry = entry.map_err(|e| read_failed(&dir, e))?;
            walked += 1;
            if walked > MAX_WALK_ENTRIES {
                return Err(ArtifactError::TooMany(format!(
                    "more than {MAX_WALK_ENTRIES} entries in the workspace"
                )));
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // file_type() does not follow symlinks: a symlink is neither a dir nor a file.
            let kind = entry
                .file_type()
                .map_err(|e| read_failed(&entry.path(), e))?;
            if kind.is_dir() {
                pending.push((entry.path(), path));
            } else if kind.is_file() && globs.is_match(&path) {
                let size = entry
                    .metadata()
                    .map_err(|e| read_failed(&entry.path(), e))?
                    .len();
                matched.push(Matched { path, size });
            }
        }
    }
    if matched.len() > MAX_FILES {
        return Err(ArtifactError::TooMany(format!(
            "{} files matched, above the limit of {MAX_FILES}",
            matched.len()
        )));
    }
    let total = matched.iter().map(|m| m.size).sum::<u64>();
    if total > max_bytes {
        return Err(ArtifactError::TooLarge {
            total,
            max: max_bytes,
        });
    }
    matched.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(matched)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Reads `rel` under `workspace` with no-follow opens at every segment, and checks it
/// is still a regular file of the walked size.
fn read_file(workspace: &Path, matched: &Matched) -> Result<Vec<u8>, ArtifactError> {
    let failed = |reason: String| ArtifactError::ReadFailed {
        path: matched.path.clone(),
        reason,
    };
    let refused = |e: nix::errno::Errno| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            failed("became a symlink or left the workspace after matching; refused".into())
        }
        e => failed(e.to_string()),
    };
    let mut dir: OwnedFd = open(workspace, DIR_FLAGS, Mode::empty()).map_err(refused)?;
    let mut segments: Vec<&str> = matched.path.split('/').collect();
    let name = segments.pop().unwrap_or_default();
    for segment in segments {
        dir = openat(&dir, segment, DIR_FLAGS, Mode::empty()).map_err(refused)?;
    }
    let fd = openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(refused)?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| failed(e.to_string()))?;
    if !meta.is_file() || meta.len() != matched.size {
        return Err(failed("changed after matching (type or size)".into()));
    }
    let mut content = Vec::with_capacity(matched.size as usize);
    // One byte more than expected reveals a file that grew while being read.
    file.by_ref()
        .take(matched.size + 1)
        .read_to_end(&mut content)
        .map_err(|e| failed(e.to_string()))?;
    if content.len() as u64 != matched.size {
        return Err(failed("changed while being read".into()));
    }
    Ok(content)
}

/// Installs ring as rustls's process-wide provider (object_store's reqwest is built
/// without one, so the workspace has a single crypto stack). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An S3 client for `store`: path-style requests to the given endpoint.
pub fn build_store(
    store: &proto::S3Store,
    credentials: &Credentials,
    allow_http: bool,
) -> Result<AmazonS3, ArtifactError> {
    install_crypto_provider();
    check_endpoint(&store.endpoint, allow_http)?;
    let region = if store.region.is_empty() {
        "us-east-1"
    } else {
        &store.region
    };
    AmazonS3Builder::new()
        .with_endpoint(&store.endpoint)
        .with_region(region)
        .with_bucket_name(&store.bucket)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(&credentials.secret_access_key)
        .with_virtual_hosted_style_request(false)
        // allow_http is one of the client options: set both at once (a later
        // with_client_options would reset it).
        .with_client_options(
            ClientOptions::new()
                .with_timeout(UPLOAD_TIMEOUT)
                .with_allow_http(store.endpoint.starts_with("http://")),
        )
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| ArtifactError::StoreInvalid {
            field: "store",
            reason: e.to_string(),
        })
}

/// The object key of `path` for `run_uid`.
pub fn object_key(prefix: &str, run_uid: &str, path: &str) -> String {
    format!("{prefix}{run_uid}/{path}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Uploads `files` (from [`collect`]) and returns their results in path order; on any
/// failure deletes every object whose upload started and returns the error.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    workspace: &Path,
    run_uid: &str,
    prefix: &str,
    files: Vec<Matched>,
) -> Result<Vec<proto::ArtifactResult>, ArtifactError> {
    let started: Arc<Mutex<Vec<ObjectPath>>> = Arc::default();
    // Permits are KiB, so one u32 covers MAX_IN_FLIGHT_BYTES.
    let budget_kib = (MAX_IN_FLIGHT_BYTES / 1024) as u32;
    let budget = Arc::new(Semaphore::new(budget_kib as usize));
    let uploads = files.into_iter().map(|matched| {
        let store = store.clone();
        let started = started.clone();
        let budget = budget.clone();
        let workspace = workspace.to_owned();
        let key = object_key(prefix, run_uid, &matched.path);
        async move {
            let fail = |reason: String| (key.clone(), reason);
            let kib = (matched.size.div_ceil(1024)).min(u64::from(budget_kib)) as u32;
            let _permit = budget
                .acquire_many(kib.max(1))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let read = matched.clone();
            let content = tokio::task::spawn_blocking(move || read_file(&workspace, &read))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
            let sha256 = hex(&Sha256::digest(&content));
            let location = ObjectPath::parse(&key).map_err(|e| fail(e.to_string()))?;
            lock(&started).push(location.clone());
            match tokio::time::timeout(
                UPLOAD_TIMEOUT,
                store.put(&location, PutPayload::from(content)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(proto::ArtifactResult {
                    path: matched.path,
                    key,
                    size: matched.size,
                    sha256,
                }),
                Ok(Err(e)) => Err(fail(error_chain(&e))),
                Err(_) => Err(fail(format!("no answer within {UPLOAD_TIMEOUT:?}"))),
            }
        }
    });
    let mut stream = futures::stream::iter(uploads).buffer_unordered(UPLOAD_CONCURRENCY);
    let mut results = Vec::new();
    let mut failure = None;
    while let Some(result) = stream.next().await {
        match result {
            Ok(r) => results.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Dropping the stream cancels the uploads still running; their keys are in `started`.
    drop(stream);
    if let Some((key, reason)) = failure {
        let keys = std::mem::take(&mut *lock(&started));
        let rollback = rollback(store.as_ref(), keys).await;
        return Err(ArtifactError::UploadFailed {
            key,
            reason,
            rollback,
        });
    }
    results.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(results)
}

/// Deletes `keys`; says what happened.
async fn rollback(store: &dyn ObjectStore, keys: Vec<ObjectPath>) -> String {
    let mut left = Vec::new();
    for key in &keys {
        match tokio::time::timeout(DELETE_TIMEOUT, store.delete(key)).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => {
                tracing::warn!(%key, error = error_chain(&e), "artifact rollback: delete failed");
                left.push(key.to_string());
            }
            Err(_) => left.push(key.to_string()),
        }
    }
    if left.is_empty() {
        format!("rolled back: {} uploaded object(s) deleted", keys.len())
    } else {
        format!("rollback incomplete: could not delete {}", left.join(", "))
    }
}

/// An error and its causes, `: `-separated (object_store's own message hides the
/// cause, such as "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Everything in one call: match, check, upload (or roll back).
pub async fn upload_workspace(
    workspace: &Path,
    run_uid: &str,
    request: &proto::ArtifactRequest,
    credentials: &CredentialSource,
    allow_http: bool,
) -> Result<Vec<proto::ArtifactResult>, ArtifactError> {
    let globs = check_request(request, allow_http)?;
    let store = request.store.clone().unwrap_or_default();
    let max_bytes = if request.max_bytes == 0 {
        DEFAULT_MAX_BYTES
    } else {
        request.max_bytes
    };
    let root = workspace.to_owned();
    let files = tokio::task::spawn_blocking(move || collect(&root, &globs, max_bytes))
        .await
        .map_err(|e| ArtifactError::ReadFailed {
            path: workspace.display().to_string(),
            reason: e.to_string(),
        })??;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let client = build_store(&store, &credentials.load()?, allow_http)?;
    upload(Arc::new(client), workspace, run_uid, &store.prefix, files).await
}

/// The sidecar's settings for artifacts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the credentials come from.
    pub credentials: CredentialSource,
    /// Allow plain http to non-loopback endpoints.
    pub allow_http: bool,
    /// The workspace root as mounted in the sidecar; `None`: the path the agent reports.
    pub workspace_root: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            credentials: CredentialSource::Env,
            allow_http: false,
            workspace_root: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    order: u64,
    state: proto::ArtifactsState,
    reason: Option<Reason>,
    message: String,
    results: Vec<proto::ArtifactResult>,
    store: proto::S3Store,
}

/// The sidecar's artifact uploads: one per Run asking for artifacts, keyed by run uid.
#[derive(Debug, Default)]
pub struct Uploads {
    settings: Settings,
    runs: Mutex<(u64, HashMap<String, Tracked>)>,
    /// Woken whenever a tracked Run's state changes (see [`Uploads::settled`]).
    changed: tokio::sync::Notify,
}

impl Uploads {
    /// Uploads with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            runs: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// At Execute: checks the request's artifacts and, when there are some, takes them
    /// off the request (the agent does not upload) and makes the agent keep the
    /// workspace. Returns what [`Uploads::track`] needs.
    pub fn prepare(
        &self,
        request: &mut proto::ExecuteRequest,
    ) -> Result<Option<proto::ArtifactRequest>, tonic::Status> {
        let Some(artifacts) = request.artifacts.take() else {
            return Ok(None);
        };
        check_request(&artifacts, self.settings.allow_http)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let runs = lock(&self.runs);
        if !runs.1.contains_key(&request.run_uid) && runs.1.len() >= MAX_TRACKED_RUNS {
            let finished = runs.1.values().filter(|t| is_final(t.state)).count();
            if finished == 0 {
                return Err(tonic::Status::resource_exhausted(format!(
                    "{MAX_TRACKED_RUNS} Runs with artifacts are in progress"
                )));
            }
        }
        request.keep_workspace = true;
        Ok(Some(artifacts))
    }

    /// After the agent accepted the Run: watches it and uploads when it is terminal.
    /// Idempotent on the run uid: a Run already tracked is not watched twice. `created`
    /// is the agent's answer; an untracked Run the agent already had (this sidecar
    /// restarted) is watched too, so its upload still happens if its workspace is there.
    pub fn track(
        self: &Arc<Self>,
        agent: RuntimedClient<Channel>,
        run_uid: String,
        request: proto::ArtifactRequest,
        created: bool,
    ) {
        {
            let mut runs = lock(&self.runs);
            if runs.1.contains_key(&run_uid) {
                return;
            }
            if runs.1.len() >= MAX_TRACKED_RUNS {
                // Forget the oldest finished entry (prepare made sure there is one).
                let oldest = runs
                    .1
                    .iter()
                    .filter(|(_, t)| is_final(t.state))
                    .min_by_key(|(_, t)| t.order)
                    .map(|(uid, _)| uid.clone());
                if let Some(uid) = oldest {
                    runs.1.remove(&uid);
                }
            }
            runs.0 += 1;
            let order = runs.0;
            runs.1.insert(
                run_uid.clone(),
                Tracked {
                    order,
                    state: proto::ArtifactsState::Pending,
                    reason: None,
                    message: String::new(),
                    results: Vec::new(),
                    store: request.store.clone().unwrap_or_default(),
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(agent, run_uid, request, created).await });
    }

    fn set(&self, run_uid: &str, f: impl FnOnce(&mut Tracked)) {
        if let Some(t) = lock(&self.runs).1.get_mut(run_uid) {
            f(t);
        }
        self.changed.notify_waiters();
    }

    /// Returns once the Run's artifacts are uploaded or have failed and its workspace
    /// released (at once for a Run not tracked): what ExecuteAndFollow waits for before
    /// its last message. True when the Run is tracked.
    pub async fn settled(&self, run_uid: &str) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look, so a change right after it is not missed.
            changed.as_mut().enable();
            match lock(&self.runs).1.get(run_uid) {
                Some(t) if !is_final(t.state) => {}
                tracked => return tracked.is_some(),
            }
            changed.await;
        }
    }

    async fn run(
        &self,
        mut agent: RuntimedClient<Channel>,
        run_uid: String,
        request: proto::ArtifactRequest,
        created: bool,
    ) {
        let Some(execution) = wait_terminal(&mut agent, &run_uid).await else {
            self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Failed;
                t.reason = Some(Reason::ExecutionGone);
                t.message = "the agent no longer knows the execution; nothing was uploaded".into();
            });
            return;
        };
        self.set(&run_uid, |t| t.state = proto::ArtifactsState::Uploading);
        let workspace = match &self.settings.workspace_root {
            Some(root) => root.join(&run_uid),
            None => PathBuf::from(&execution.workspace),
        };
        let outcome = if execution.workspace.is_empty() && !created {
            // Released by an earlier sidecar process, whose result was lost with it.
            self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Failed;
                t.reason = Some(Reason::ArtifactStateLost);
                t.message = "the workspace was already released by an earlier sidecar; \
                    whether its upload succeeded is unknown here"
                    .into();
            });
            return;
        } else if execution.workspace.is_empty() {
            Err(ArtifactError::ReadFailed {
                path: workspace.display().to_string(),
                reason: "the workspace no longer exists (never created, or already deleted)".into(),
            })
        } else {
            upload_workspace(
                &workspace,
                &run_uid,
                &request,
                &self.settings.credentials,
                self.settings.allow_http,
            )
            .await
        };
        // Upload first, then delete: the workspace goes only now, and the state is
        // final only once it has gone (ExecuteAndFollow's last message waits for it).
        let release = proto::ReleaseWorkspaceRequest {
            execution_id: run_uid.clone(),
        };
        if let Err(status) = agent.release_workspace(release).await {
            tracing::warn!(run_uid, %status, "cannot release the workspace");
        }
        match outcome {
            Ok(results) => self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Uploaded;
                t.reason = Some(Reason::Uploaded);
                t.message = format!("{} file(s) uploaded", results.len());
                t.results = results;
            }),
            Err(e) => {
                tracing::warn!(run_uid, error = %e, "artifacts not uploaded");
                self.set(&run_uid, |t| {
                    t.state = proto::ArtifactsState::Failed;
                    t.reason = Some(e.reason());
                    t.message = e.to_string();
                });
            }
        }
    }

    /// Adds the artifact state of a tracked Run to its snapshot.
    pub fn annotate(&self, execution: &mut proto::Execution) {
        if let Some(t) = lock(&self.runs).1.get(&execution.run_uid) {
            execution.artifacts = t.results.clone();
            execution.artifacts_state = t.state as i32;
            execution.artifacts_reason =
                t.reason.map(Reason::as_str).unwrap_or_default().to_owned();
            execution.artifacts_message = t.message.clone();
            execution.artifact_store = Some(t.store.clone());
        }
    }

    /// Before Forget: refused while the Run's artifacts are uploading (upload first).
    pub fn check_forget(&self, run_uid: &str) -> Result<(), tonic::Status> {
        match lock(&self.runs).1.get(run_uid) {
            Some(t) if t.state == proto::ArtifactsState::Uploading => {
                Err(tonic::Status::failed_precondition(format!(
                    "the artifacts of {run_uid:?} are still uploading"
                )))
            }
            _ => Ok(()),
        }
    }

    /// After Forget: drops the Run's entry.
    pub fn forget(&self, run_uid: &str) {
        lock(&self.runs).1.remove(run_uid);
    }
}

fn is_final(state: proto::ArtifactsState) -> bool {
    matches!(
        state,
        proto::ArtifactsState::Uploaded | proto::ArtifactsState::Failed
    )
}

/// Waits until the execution is terminal; `None` when the agent no longer knows it.
async fn wait_terminal(
    agent: &mut RuntimedClient<Channel>,
    run_uid: &str,
) -> Option<proto::Execution> {
    loop {
        // Sleeps until the output ends (offsets past the end: no data is sent).
        let follow = proto::LogsRequest {
            execution_id: run_uid.to_owned(),
            stream: proto::Stream::Unspecified as i32,
            stdout_offset: u64::MAX,
            stderr_offset: u64::MAX,
            follow: true,
        };
        if let Ok(stream) = agent.logs(follow).await {
            let mut stream = stream.into_inner();
            while let Ok(Some(_)) = stream.message().await {}
        }
        let status = proto::StatusRequest {
            execution_id: run_uid.to_owned(),
        };
        match agent.status(status).await {
            Ok(e) if e.get_ref().phase != proto::Phase::Running as i32 => {
                return Some(e.into_inner());
            }
            Err(s) if s.code() == tonic::Code::NotFound => return None,
            _ => tokio::time::sleep(STATUS_POLL_INTERVAL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn loopback_detection() {
        assert_eq!(
            url_parts("http://127.0.0.1:9000"),
            Some(("http", "127.0.0.1"))
        );
        assert_eq!(url_parts("http://[::1]:9000/x"), Some(("http", "::1")));
        assert_eq!(
            url_parts("https://s3.example"),
            Some(("https", "s3.example"))
        );
        assert_eq!(url_parts("http://user:pw@host"), None);
        assert!(check_endpoint("http://127.0.0.1:9000", false).is_ok());
        assert!(check_endpoint("http://localhost:9000", false).is_ok());
        assert!(check_endpoint("http://[::1]:9000", false).is_ok());
        assert!(check_endpoint("https://s3.example", false).is_ok());
        assert!(check_endpoint("http://s3.example", false).is_err());
        assert!(check_endpoint("http://s3.example", true).is_ok());
        assert!(check_endpoint("ftp://s3.example", true).is_err());
        assert!(check_endpoint("s3.example", true).is_err());
    }

    #[test]
    fn globs_are_checked_and_star_stays_in_one_directory() {
        let set = globs(&["out/*.json".into()]).unwrap();
        assert!(set.is_match("out/a.json"));
        assert!(!set.is_match("out/sub/a.json"));
        let set = globs(&["out/**".into()]).unwrap();
        assert!(set.is_match("out/sub/a.json"));
        for bad in ["../x", "/etc/passwd", "a/../b", "", "a//b"] {
            let e = globs(&[bad.into()]).unwrap_err();
            assert_eq!(e.reason(), Reason::ArtifactPatternInvalid, "{bad}");
        }
        assert!(globs(&[]).is_err());
        let many: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("f{i}")).collect();
        assert!(globs(&many).is_ok());
        let too_many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("f{i}")).collect();
        assert!(globs(&too_many).is_err());
    }

    #[test]
    fn max_bytes_ceiling_boundary() {
        let mut r = proto::ArtifactRequest {
            paths: vec!["out/**".into()],
            max_bytes: MAX_BYTES_CEILING,
            store: Some(proto::S3Store {
                endpoint: "https://s3.example".into(),
                bucket: "runs".into(),
                ..Default::default()
            }),
        };
        assert!(check_request(&r, false).is_ok());
        r.max_bytes = MAX_BYTES_CEILING + 1;
        assert_eq!(
            check_request(&r, false).unwrap_err().reason(),
            Reason::ArtifactStoreInvalid
        );
        r.max_bytes = 0;
        r.store = None;
        assert_eq!(
            check_request(&r, false).unwrap_err().reason(),
            Reason::ArtifactStoreInvalid
        );
    }

    #[test]
    fn file_count_boundary() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let set = globs(&["f*".into()]).unwrap();
        assert_eq!(
            collect(dir.path(), &set, u64::MAX).unwrap().len(),
            MAX_FILES
        );
        std::fs::write(dir.path().join("f-extra"), b"x").unwrap();
        assert_eq!(
            collect(dir.path(), &set, u64::MAX).unwrap_err().reason(),
            Reason::ArtifactsTooMany
        );
    }

    #[test]
    fn credentials_from_a_mounted_secret_directory() {
        let dir = tempfile::tempdir().unwrap();
        let source = CredentialSource::Dir(dir.path().to_owned());
        assert_eq!(
            source.load().unwrap_err().reason(),
            Reason::NoArtifactCredentials
        );
        std::fs::write(dir.path().join(ACCESS_KEY_NAME), "AKID\n").unwrap();
        std::fs::write(dir.path().join(SECRET_KEY_NAME), "secret").unwrap();
        let c = source.load().unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "secret")
        );
        assert!(!format!("{c:?}").contains("secret"));
    }
}
