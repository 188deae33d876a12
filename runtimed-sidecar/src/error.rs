//! runtimed's errors, and the one place they become gRPC statuses: the agent's and the
//! sidecar's own ([`Error`]), a git source's ([`GitError`]) and artifacts'
//! ([`ArtifactError`]). A status whose error has a [`Reason`] carries it in the
//! [`REASON_METADATA`] metadata, beside the message.

use kruntimes_runtimed_api::REASON_METADATA;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::Reason;
use crate::sidecar::artifacts::ArtifactError;
use crate::sidecar::git::{GitError, bounded};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not acceptable (bad uid, path, size).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// No execution with this id.
    #[error("execution {0:?} not found")]
    NotFound(String),
    /// Forget on an execution that is still running.
    #[error("execution {0:?} is still running")]
    StillRunning(String),
    /// Too many executions running.
    #[error("capacity reached: {0} executions running")]
    Capacity(usize),
    /// The platform failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument(_) => Self::invalid_argument(error.to_string()),
            Error::NotFound(_) => Self::not_found(error.to_string()),
            Error::StillRunning(_) => Self::failed_precondition(error.to_string()),
            Error::Capacity(_) => Self::resource_exhausted(error.to_string()),
            Error::Io { .. } => {
                // The detail is for the operator's log, not for the client.
                tracing::error!(%error, "internal error");
                Self::internal("internal error in runtimed; see its log")
            }
        }
    }
}

impl From<GitError> for Status {
    fn from(error: GitError) -> Self {
        let code = match &error {
            GitError::SourceInvalid(_) => Code::InvalidArgument,
            GitError::HostNotAllowed(_) => Code::PermissionDenied,
            GitError::RefNotFound(_) | GitError::PathNotFound(_) => Code::NotFound,
            // Not RESOURCE_EXHAUSTED: that code means "agent at capacity, retry".
            GitError::TooLarge(_) | GitError::TreeRefused(_) => Code::FailedPrecondition,
            GitError::Timeout(_) => Code::DeadlineExceeded,
            GitError::FetchFailed(_) | GitError::CaFile(_) => Code::Unavailable,
        };
        // Server and library messages can be long (and chosen by the server).
        with_reason(code, bounded(&error.to_string()), Some(error.reason()))
    }
}

impl From<ArtifactError> for Status {
    fn from(error: ArtifactError) -> Self {
        let code = match &error {
            ArtifactError::PatternInvalid { .. } | ArtifactError::StoreInvalid { .. } => {
                Code::InvalidArgument
            }
            // As for git: RESOURCE_EXHAUSTED is kept for "agent at capacity, retry".
            ArtifactError::NoCredentials(_)
            | ArtifactError::TooLarge { .. }
            | ArtifactError::TooMany(_)
            | ArtifactError::ReadFailed { .. }
            | ArtifactError::StillUploading(_) => Code::FailedPrecondition,
            ArtifactError::TooManyInProgress => Code::ResourceExhausted,
            ArtifactError::UploadFailed { .. } => Code::Unavailable,
        };
        with_reason(code, error.to_string(), error.reason())
    }
}

/// A status with `reason`, when there is one, in its [`REASON_METADATA`].
fn with_reason(code: Code, message: String, reason: Option<Reason>) -> Status {
    let mut metadata = MetadataMap::new();
    if let Some(reason) = reason {
        metadata.insert(REASON_METADATA, MetadataValue::from_static(reason.as_str()));
    }
    Status::with_metadata(code, message, metadata)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sidecar::git::MAX_GIT_ERROR_BYTES;

    #[test]
    fn git_errors_are_bounded_and_carry_the_reason() {
        let status = Status::from(GitError::FetchFailed("é".repeat(5000)));
        assert!(status.message().len() <= MAX_GIT_ERROR_BYTES);
        assert!(status.message().starts_with("GitFetchFailed: "));
        assert_eq!(
            status.metadata().get(REASON_METADATA).unwrap(),
            "GitFetchFailed"
        );
        assert_eq!(status.code(), Code::Unavailable);
        let exact = "x".repeat(MAX_GIT_ERROR_BYTES);
        assert_eq!(bounded(&exact), exact);
        assert_eq!(bounded(&format!("{exact}x")).len(), MAX_GIT_ERROR_BYTES);
    }

    #[test]
    fn artifact_refusals_carry_their_reason_when_they_have_one() {
        let invalid = Status::from(ArtifactError::StoreInvalid {
            field: "store.bucket",
            reason: "must be 3 to 63 characters".into(),
        });
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(
            invalid.message(),
            "artifacts.store.bucket: must be 3 to 63 characters"
        );
        assert_eq!(
            invalid.metadata().get(REASON_METADATA).unwrap(),
            "ArtifactStoreInvalid"
        );
        let uploading = Status::from(ArtifactError::StillUploading("r1".into()));
        assert_eq!(uploading.code(), Code::FailedPrecondition);
        assert_eq!(
            uploading.message(),
            "the artifacts of \"r1\" are still uploading"
        );
        assert!(uploading.metadata().get(REASON_METADATA).is_none());
        let busy = Status::from(ArtifactError::TooManyInProgress);
        assert_eq!(busy.code(), Code::ResourceExhausted);
    }
}
