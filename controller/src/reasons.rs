//! The reasons the controller itself writes into a Run's status (runtimed's own are
//! `kruntimes_runtimed_api::Reason`): one closed set, documented in docs/controller.md.

macro_rules! run_reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A reason the controller writes on a Run.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RunReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl RunReason {
            /// Every reason.
            pub const ALL: &'static [RunReason] = &[$(RunReason::$name,)*];

            /// The CamelCase name written in `status.reason`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(RunReason::$name => stringify!($name),)*
                }
            }
        }
    };
}

run_reasons! {
    /// Pending: waiting for a free slot in a ready pod of its Runtime.
    WaitingForCapacity,
    /// Pending: its Runtime does not exist (yet); it runs once the Runtime does.
    RuntimeNotFound,
    /// Failed: the Run does not pass validation (it reached the controller without the
    /// webhook); the message lists every violation. Nothing ran.
    Invalid,
    /// Cancelled: `spec.cancel` was set before the Run was dispatched. Nothing ran.
    CancelledBeforeStart,
    /// Error: the pod running the Run went away (deleted, evicted, its node lost), or
    /// its runtimed agent was stopping and ended the Run (runtimed's `AgentStopping`).
    PodLost,
    /// Error: runtimed no longer knows the execution (the agent restarted).
    ExecutionLost,
    /// Error: the pod's runtimed stopped answering while the Run ran.
    RuntimedUnreachable,
    /// Error: every dispatch attempt failed before runtimed accepted the Run.
    DispatchFailed,
    /// Error: runtimed refused the Run (the message says why).
    ExecuteRefused,
}

impl std::fmt::Display for RunReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a deleted Run's artifacts are not deleted yet: the reason of its
/// `ArtifactsDeleted` condition (status `False`) and of the Event that announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactReason {
    /// `status.artifacts` lists objects but `status.artifactStore` is not set.
    ArtifactStoreUnknown,
    /// `status.artifactStore` cannot be used (its endpoint is not an http(s) URL), or a
    /// key in `status.artifacts` is not a valid object path.
    ArtifactStoreInvalid,
    /// No credentials: the store names no Secret, the Secret does not exist in the
    /// Run's namespace, or it lacks `AWS_ACCESS_KEY_ID` or `AWS_SECRET_ACCESS_KEY`.
    ArtifactCredentialsMissing,
    /// The bucket does not exist (S3's `NoSuchBucket`).
    ArtifactBucketMissing,
    /// The store refused the credentials (403 or 401).
    ArtifactAccessDenied,
    /// A failure that may pass (no answer, a 5xx): retried with backoff.
    ArtifactDeleteRetrying,
}

impl ArtifactReason {
    /// Every reason.
    pub const ALL: &'static [ArtifactReason] = &[
        ArtifactReason::ArtifactStoreUnknown,
        ArtifactReason::ArtifactStoreInvalid,
        ArtifactReason::ArtifactCredentialsMissing,
        ArtifactReason::ArtifactBucketMissing,
        ArtifactReason::ArtifactAccessDenied,
        ArtifactReason::ArtifactDeleteRetrying,
    ];

    /// The CamelCase name written in the condition's `reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ArtifactReason::ArtifactStoreUnknown => "ArtifactStoreUnknown",
            ArtifactReason::ArtifactStoreInvalid => "ArtifactStoreInvalid",
            ArtifactReason::ArtifactCredentialsMissing => "ArtifactCredentialsMissing",
            ArtifactReason::ArtifactBucketMissing => "ArtifactBucketMissing",
            ArtifactReason::ArtifactAccessDenied => "ArtifactAccessDenied",
            ArtifactReason::ArtifactDeleteRetrying => "ArtifactDeleteRetrying",
        }
    }
}

impl std::fmt::Display for ArtifactReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
