//! krt's errors, and the exit status each one means (documented in `docs/cli.md`).

/// Exit status: the input could not be used (unreadable, invalid, a bad flag value).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status: the platform failed (runtimed, the API server, the local system).
pub const EXIT_PLATFORM_ERROR: i32 = 1;
/// Exit status: the Run or Workflow timed out.
pub const EXIT_TIMED_OUT: i32 = 124;

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input is wrong: the message names the field or file and the reason.
    #[error("{0}")]
    BadInput(String),
    /// Something krt depends on failed.
    #[error("{0}")]
    Platform(String),
}

impl CliError {
    /// The exit status this error ends krt with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadInput(_) => EXIT_BAD_INPUT,
            Self::Platform(_) => EXIT_PLATFORM_ERROR,
        }
    }
}
