//! The reason codes runtimed answers with: `Execution.reason` (why an execution is in
//! its phase), `Execution.artifacts_reason` (why its artifacts are in their state), and
//! the [`REASON_METADATA`](crate::REASON_METADATA) of a refused call. One closed set,
//! so the agent, the sidecar, `krt` and the controller never disagree on a spelling.

use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A reason code, written on the wire as its CamelCase name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The CamelCase name written on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // The execution's phase.
    /// Succeeded: the program exited 0.
    Completed,
    /// Failed: the program exited with a non-zero code.
    NonZeroExit,
    /// Failed: the program was killed by a signal.
    Signaled,
    /// TimedOut: the Run's timeout passed; its processes were ended.
    DeadlineExceeded,
    /// Cancelled: a Cancel call ended it.
    Cancelled,
    /// Failed: the workspace ran out of space (its size limit or the disk).
    WorkspaceFull,
    /// Failed, exit code 127: the program of an exec Run does not exist (on its `PATH`,
    /// or at the path given), as a shell reports a command it cannot find.
    ProgramNotFound,
    /// Failed, exit code 126: the program exists but cannot be executed (no execute
    /// permission, a directory, a file system mounted noexec).
    ProgramNotExecutable,
    /// Failed, exit code 126: the arguments and environment are more than `exec`
    /// accepts (in all, or in one string).
    ArgumentListTooLong,
    /// Error: the agent was stopping (SIGTERM to it: its pod deleted or evicted, its
    /// container stopped) and ended the Run's processes. Nobody cancelled the Run.
    AgentStopping,
    /// Error: the program could not be started.
    SpawnFailed,
    /// Error: the spawner process ended before the Run's exit was known.
    SpawnerLost,
    /// Error: the workspace directory could not be created.
    WorkspaceUnavailable,
    /// Error: the Run's files could not be written into the workspace.
    WorkspaceWriteFailed,
    /// Error: a file or path of the Run was refused (it would escape the workspace).
    SourceRefused,
    /// Error: the Run's input could not be written or opened.
    InputUnavailable,

    // Git sources (a refused Execute's metadata).
    /// The git source is malformed (scheme, URL, ref or path).
    GitSourceInvalid,
    /// The git host is not in the Runtime's `git.allowedHosts`.
    GitHostNotAllowed,
    /// The ref does not exist in the repository.
    GitRefNotFound,
    /// The path does not exist at that ref.
    GitPathNotFound,
    /// The fetch went over its byte limit.
    GitTooLarge,
    /// The tree holds something runtimed does not deliver (a submodule, a link out).
    GitTreeRefused,
    /// The fetch went over its time limit.
    GitTimeout,
    /// The fetch failed (network, TLS, server).
    GitFetchFailed,

    // Artifacts.
    /// Every matched file is in the store.
    Uploaded,
    /// An artifact glob is malformed or would escape the workspace.
    ArtifactPatternInvalid,
    /// The store configuration is not usable.
    ArtifactStoreInvalid,
    /// The sidecar has no credentials for the store.
    NoArtifactCredentials,
    /// The matched files are over the Runtime's `artifacts.maxBytes`.
    ArtifactsTooLarge,
    /// More files matched than the sidecar uploads for one Run.
    ArtifactsTooMany,
    /// A matched file could not be read.
    ArtifactReadFailed,
    /// The upload failed; what was uploaded was deleted again.
    ArtifactUploadFailed,
    /// The execution was forgotten before its artifacts were uploaded.
    ExecutionGone,
    /// The sidecar lost the upload's state (it restarted).
    ArtifactStateLost,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name that is not one of [`Reason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_wire_name() {
        for &reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }

    #[test]
    fn wire_names_are_camel_case_and_unique() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for name in &names {
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn an_unknown_name_is_refused() {
        assert_eq!(
            "Bogus".parse::<Reason>(),
            Err(UnknownReason("Bogus".into()))
        );
        assert!("completed".parse::<Reason>().is_err());
    }

    #[test]
    fn the_proto_documents_every_reason() {
        let proto = include_str!("../proto/runtimed/v1/runtimed.proto");
        for reason in Reason::ALL {
            assert!(
                proto.contains(reason.as_str()),
                "{reason} is not listed in runtimed.proto"
            );
        }
    }
}
