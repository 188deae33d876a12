//! How a Run whose program could not be started ends. A missing program, one that
//! cannot be executed, or an argument list too long for `exec` is the Run's own doing:
//! phase Failed, with the exit code a shell reports for it and a message naming the
//! program and the cause. Anything else (pipes, the spawner process, the interpreter
//! the agent is configured with) is the platform's: phase Error, `SpawnFailed`.

use std::ffi::OsStr;
use std::io;

use nix::errno::Errno;
use nix::unistd::{SysconfVar, sysconf};

use super::execution::Phase;
use super::spec::Interpreter;
use crate::Reason;
use crate::agent::reaper::Exit;
use crate::agent::spawner::Launch;

/// The exit code of a Run whose program was not found: what a shell reports for a
/// command it cannot find.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The exit code of a Run whose program was found but could not be executed (no
/// permission, or an argument list too long): what a shell reports when `exec` fails.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;

/// Pages one argument or environment string may take (`MAX_ARG_STRLEN` in Linux).
const MAX_ARG_PAGES: i64 = 32;

/// Why a Run's program could not be started.
#[derive(Debug)]
pub(super) enum SpawnError {
    /// Before the program was looked at: its pipes, the spawner process.
    Platform(io::Error),
    /// Looking the program up and executing it: the errno says why.
    Program(io::Error),
}

/// The end of a Run that could not be started: as [`super::execution::finish`] takes it.
#[derive(Debug)]
pub(super) struct StartFailure {
    pub(super) phase: Phase,
    pub(super) reason: Reason,
    pub(super) exit: Option<Exit>,
    pub(super) message: String,
}

impl StartFailure {
    /// The platform failed (phase Error) for `reason`.
    pub(super) fn platform(reason: Reason, message: String) -> Self {
        Self {
            phase: Phase::Error,
            reason,
            exit: None,
            message,
        }
    }

    /// A Run that failed with `code` before its program ran.
    fn failed(reason: Reason, code: i32, message: String) -> Self {
        Self {
            phase: Phase::Failed,
            reason,
            exit: Some(Exit::Code(code)),
            message,
        }
    }

    /// How a Run ends whose `launch` failed with `error`. The configured bash or python
    /// missing is the platform's failure (the image lacks it); the program of an exec
    /// Run missing, not executable or given too many arguments is the Run's.
    pub(super) fn of(error: SpawnError, launch: &Launch, interpreter: Interpreter) -> Self {
        let program = launch.program.to_string_lossy();
        let error = match error {
            SpawnError::Platform(e) => {
                return Self::platform(
                    Reason::SpawnFailed,
                    format!("cannot start {program:?}: {e}"),
                );
            }
            SpawnError::Program(e) => e,
        };
        let errno = error.raw_os_error().map(Errno::from_raw);
        match errno {
            Some(Errno::E2BIG) => Self::failed(
                Reason::ArgumentListTooLong,
                EXIT_CANNOT_EXECUTE,
                too_long(launch),
            ),
            Some(Errno::ENOENT) if interpreter == Interpreter::Exec => {
                Self::failed(Reason::ProgramNotFound, EXIT_NOT_FOUND, not_found(launch))
            }
            Some(Errno::EACCES) if interpreter == Interpreter::Exec => Self::failed(
                Reason::ProgramNotExecutable,
                EXIT_CANNOT_EXECUTE,
                format!(
                    "program {program:?} cannot be executed: permission denied (no execute \
                     permission, a directory, or on a file system mounted noexec)"
                ),
            ),
            _ => Self::platform(
                Reason::SpawnFailed,
                format!("cannot start {program:?}: {error}"),
            ),
        }
    }
}

/// The message of a program not found: where it was looked for.
fn not_found(launch: &Launch) -> String {
    let program = launch.program.to_string_lossy();
    let cause = "no such file, or the interpreter its #! line names does not exist";
    if launch.program.as_encoded_bytes().contains(&b'/') {
        format!("program {program:?} not found: {cause}")
    } else {
        let path = launch.search_path().to_string_lossy();
        format!("program {program:?} not found in PATH {path:?}: {cause}")
    }
}

/// The message of an argument list `exec` refused: its sizes and the kernel's limits.
fn too_long(launch: &Launch) -> String {
    let program = launch.program.to_string_lossy();
    let argv = std::iter::once(launch.program.as_os_str())
        .chain(launch.args.iter().map(|a| a.as_os_str()));
    let env_strings = launch.env.iter().map(|(n, v)| n.len() + v.len() + 2);
    let string_bytes = |s: &OsStr| s.len() + 1;
    let argv_bytes: usize = argv.clone().map(string_bytes).sum();
    let env_bytes: usize = env_strings.clone().sum();
    let largest = argv.map(string_bytes).chain(env_strings).max().unwrap_or(0);
    let limit = |var| sysconf(var).ok().flatten().unwrap_or(0);
    let arg_max = limit(SysconfVar::ARG_MAX);
    let max_string = MAX_ARG_PAGES * limit(SysconfVar::PAGE_SIZE);
    format!(
        "argument list too long to start {program:?}: its {} arguments take {argv_bytes} bytes \
         and its {} environment variables {env_bytes} bytes; exec accepts {arg_max} bytes of \
         both together (a quarter of the stack size limit) and at most {max_string} bytes in \
         any one of them (the largest here: {largest} bytes)",
        launch.args.len() + 1,
        launch.env.len(),
    )
}
