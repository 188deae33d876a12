//! The controller's errors. Each failed operation is one variant with its context, and
//! maps to a bounded metric label (never an object's name).

/// Why a reconcile or a dispatch failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done ("apply Deployment team-a/python").
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be serialized or read back.
    #[error("{action}: {source}")]
    Serialization {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A certificate or token could not be made.
    #[error("making the runtimed credentials: {0}")]
    Credentials(String),
    /// An object lacks a field the API server always sets (name, namespace, uid).
    #[error("{0} has no {1}")]
    MissingField(&'static str, &'static str),
    /// A cache (reflector) stopped before its first list filled it.
    #[error("the {0} cache stopped before it was filled")]
    CacheClosed(&'static str),
}

impl Error {
    /// A bounded label for `kruntimes_reconcile_errors_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "Conflict",
                kube::Error::Api(status) if status.code == 404 => "NotFound",
                kube::Error::Api(status) if status.code == 403 => "Forbidden",
                kube::Error::Api(_) => "ApiError",
                _ => "ApiUnreachable",
            },
            Self::Serialization { .. } => "Serialization",
            Self::Credentials(_) => "Credentials",
            Self::MissingField(..) => "MissingField",
            Self::CacheClosed(_) => "CacheClosed",
        }
    }

    /// Whether the API server answered 404: the object is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 404)
    }

    /// A Kubernetes API error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }
}
