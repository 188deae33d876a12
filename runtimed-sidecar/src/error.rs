//! runtimed's errors, and their one mapping to gRPC statuses.

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

impl From<Error> for tonic::Status {
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
