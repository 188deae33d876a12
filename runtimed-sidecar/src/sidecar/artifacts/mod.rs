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

use std::path::PathBuf;
use std::time::Duration;

use crate::Reason;

mod collect;
mod credentials;
mod request;
mod tracking;
mod upload;

pub use collect::{Matched, collect};
pub use credentials::{CredentialSource, Credentials};
pub use request::{check_request, globs};
pub use tracking::Uploads;
pub use upload::{build_store, install_crypto_provider, object_key, upload, upload_workspace};

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

/// Why artifacts were refused or not uploaded, or a call about them refused.
/// [`ArtifactError::reason`] is the reason reported in `Execution.artifacts_reason`
/// (and in the `krt-reason` metadata of a refused call); `crate::error` maps each
/// variant to its gRPC status.
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
    /// Execute refused: [`MAX_TRACKED_RUNS`] Runs with artifacts are tracked and none
    /// of them is finished (so none can be forgotten to make room).
    #[error("{max} Runs with artifacts are in progress", max = MAX_TRACKED_RUNS)]
    TooManyInProgress,
    /// Forget refused: the Run's artifacts are uploading (upload first, then forget).
    #[error("the artifacts of {0:?} are still uploading")]
    StillUploading(String),
}

impl ArtifactError {
    /// The reason for the artifacts' state; `None` for the refusals of a call that
    /// leave the Run's artifacts as they were.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Self::PatternInvalid { .. } => Reason::ArtifactPatternInvalid,
            Self::StoreInvalid { .. } => Reason::ArtifactStoreInvalid,
            Self::NoCredentials(_) => Reason::NoArtifactCredentials,
            Self::TooLarge { .. } => Reason::ArtifactsTooLarge,
            Self::TooMany(_) => Reason::ArtifactsTooMany,
            Self::ReadFailed { .. } => Reason::ArtifactReadFailed,
            Self::UploadFailed { .. } => Reason::ArtifactUploadFailed,
            Self::TooManyInProgress | Self::StillUploading(_) => return None,
        })
    }
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
