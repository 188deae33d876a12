//! What to run: the agent's view of a Run spec, and its checks before anything is
//! created.

use std::time::Duration;

use crate::{Error, limits};

/// How a Run's program is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    /// `bash main.sh ARGS` or `bash ENTRYPOINT ARGS`.
    Bash,
    /// `python3 main.py ARGS` or `python3 ENTRYPOINT ARGS`.
    Python,
    /// `COMMAND ARGS`.
    Exec,
}

/// What to run: the agent's view of a Run spec.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// The Run's uid: execution id and workspace directory name.
    pub run_uid: String,
    /// How to start it (`None` is bash).
    pub interpreter: Option<Interpreter>,
    /// Inline program.
    pub script: Option<String>,
    /// More files: relative path and content.
    pub files: Vec<(String, Vec<u8>)>,
    /// Paths among `files` written with mode 0755 (git's executable bit).
    pub executable: std::collections::BTreeSet<String>,
    /// File to run with the interpreter.
    pub entrypoint: Option<String>,
    /// Interpreter `exec`: the argv.
    pub command: Vec<String>,
    /// Arguments for the program.
    pub args: Vec<String>,
    /// Environment added to the scrubbed one.
    pub env: Vec<(String, String)>,
    /// JSON text given on stdin and as `$KRT_INPUT_FILE`.
    pub input: Option<Vec<u8>>,
    /// Time limit; `None` is [`limits::DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Keep the workspace after the Run is terminal.
    pub keep_workspace: bool,
}

/// Checks that a run uid is a safe single path segment.
pub fn check_run_uid(uid: &str) -> Result<(), Error> {
    let ok = !uid.is_empty()
        && uid.len() <= limits::MAX_RUN_UID_BYTES
        && uid != "."
        && uid != ".."
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "run_uid must be 1 to {} characters among [A-Za-z0-9._-]",
            limits::MAX_RUN_UID_BYTES
        )))
    }
}

/// Checks a spec before anything is created.
pub fn check_spec(spec: &ExecSpec) -> Result<(), Error> {
    use kruntimes_api::validation::paths::{PathKind, check_relative_path};
    check_run_uid(&spec.run_uid)?;
    let bad = |m: String| Err(Error::InvalidArgument(m));
    let interpreter = spec.interpreter.unwrap_or(Interpreter::Bash);
    match interpreter {
        Interpreter::Exec => {
            if spec.command.is_empty() || spec.script.is_some() || spec.entrypoint.is_some() {
                return bad(
                    "interpreter exec needs command, and neither script nor entrypoint".into(),
                );
            }
        }
        Interpreter::Bash | Interpreter::Python => {
            if !spec.command.is_empty() || spec.script.is_some() == spec.entrypoint.is_some() {
                return bad(
                    "bash and python need exactly one of script or entrypoint, and no command"
                        .into(),
                );
            }
        }
    }
    for (path, _) in &spec.files {
        if let Err(reason) = check_relative_path(path, PathKind::Plain) {
            return bad(format!("file {path:?}: {reason}"));
        }
    }
    if let Some(entrypoint) = &spec.entrypoint
        && let Err(reason) = check_relative_path(entrypoint, PathKind::Plain)
    {
        return bad(format!("entrypoint {entrypoint:?}: {reason}"));
    }
    for (name, _) in &spec.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || name.starts_with("KRT_")
        {
            return bad(format!("env {name:?}: not a valid name (KRT_ is reserved)"));
        }
    }
    if spec
        .input
        .as_ref()
        .is_some_and(|i| i.len() > limits::MAX_INPUT_BYTES)
    {
        return bad(format!(
            "input larger than {} bytes",
            limits::MAX_INPUT_BYTES
        ));
    }
    if spec
        .timeout
        .is_some_and(|t| t > limits::MAX_TIMEOUT || t.is_zero())
    {
        return bad("timeout must be positive and at most 24h".into());
    }
    Ok(())
}
