//! Rules for a Run's program: one source, supported interpreter, safe paths and URLs.

use std::collections::{BTreeMap, HashMap};

use super::git::{check_git_ref, check_git_url};
use super::names::check_c_identifier;
use super::paths::{PathKind, check_relative_path};
use super::{FieldPath, Reason, Violation, check_timeout};
use crate::labels::RESERVED_ENV_PREFIX;
use crate::v1alpha1::limits::{
    MAX_ARG_BYTES, MAX_ARGS, MAX_ARTIFACT_PATHS, MAX_ENV, MAX_ENV_NAME_BYTES, MAX_ENV_VALUE_BYTES,
    MAX_FILES, MAX_INLINE_SOURCE_BYTES, MAX_TTL_SECONDS_AFTER_FINISHED,
};
use crate::v1alpha1::{GitSource, Interpreter, RunSpec};

/// Most bytes `command`, `args` and `env` may take together, counted as the kernel counts
/// them against `ARG_MAX` at exec: each string with its NUL terminator and its 8-byte
/// pointer, an env entry as `NAME=value`. Linux refuses an exec whose argv and environment
/// exceed a quarter of the stack limit (2 MiB under the usual 8 MiB stack) with
/// `Argument list too long`; half of that leaves room for the interpreter, the script
/// path and the few variables runtimed sets. The per-entry bounds alone allow about 20 MiB.
pub(crate) const MAX_ARGV_ENV_BYTES: usize = 1024 * 1024;

/// Bytes one string takes in the argument and environment space of an exec.
const EXEC_STRING_OVERHEAD: usize = 1 + std::mem::size_of::<u64>();

/// Where a RunSpec sits: a Run of its own, or the `run` of a Workflow step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunSpecContext {
    /// `Run.spec`.
    Run,
    /// `Workflow.spec.jobs[].steps[].run`: `cancel` belongs to the Workflow there.
    WorkflowStep,
}

/// Checks everything about one RunSpec at `path`.
pub fn check_run_spec(spec: &RunSpec, path: &FieldPath, context: RunSpecContext) -> Vec<Violation> {
    let mut v = Vec::new();
    check_program_source(spec, path, &mut v);
    check_sources(spec, path, &mut v);
    check_argv(spec, path, &mut v);
    check_env(spec, path, &mut v);
    check_exec_size(spec, path, &mut v);
    if spec.runtime_ref.name.is_empty() {
        v.push(Violation::new(
            path.child("runtimeRef").child("name"),
            Reason::Required,
            "name the Runtime whose pods run this program",
        ));
    } else if let Err(why) = super::names::check_dns1123_label(&spec.runtime_ref.name) {
        v.push(Violation::with_value(
            path.child("runtimeRef").child("name"),
            Reason::Invalid,
            &spec.runtime_ref.name,
            format!("Runtime names are DNS-1123 labels: {why}"),
        ));
    }
    if let Some(timeout) = &spec.timeout {
        v.extend(check_timeout(timeout, &path.child("timeout")));
    }
    if let Some(artifacts) = &spec.artifacts {
        let globs = path.child("artifacts").child("paths");
        if artifacts.paths.is_empty() {
            v.push(Violation::new(
                &globs,
                Reason::Required,
                "list at least one glob, such as out/**",
            ));
        }
        if artifacts.paths.len() > MAX_ARTIFACT_PATHS {
            v.push(Violation::with_value(
                &globs,
                Reason::TooMany,
                artifacts.paths.len(),
                format!("must have at most {MAX_ARTIFACT_PATHS} entries"),
            ));
        }
        for (i, glob) in artifacts.paths.iter().enumerate() {
            if let Err(why) = check_relative_path(glob, PathKind::Glob) {
                v.push(Violation::with_value(
                    globs.index(i),
                    Reason::Invalid,
                    glob,
                    why,
                ));
            }
        }
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        let field = path.child("ttlSecondsAfterFinished");
        if context == RunSpecContext::WorkflowStep {
            v.push(Violation::new(
                field,
                Reason::Forbidden,
                "a step's Run goes with its Workflow; its own deletion would lose the step's result",
            ));
        } else {
            v.extend(check_ttl_seconds_after_finished(ttl, &field));
        }
    }
    if context == RunSpecContext::WorkflowStep && spec.cancel.is_some() {
        v.push(Violation::new(
            path.child("cancel"),
            Reason::Forbidden,
            "a step's Run is cancelled with its Workflow (spec.cancel of the Workflow), not on its own",
        ));
    }
    v
}

/// Checks a `ttlSecondsAfterFinished` (of a Run or a Workflow): from 0 to
/// `MAX_TTL_SECONDS_AFTER_FINISHED`, the bounds the CRDs carry too.
pub(crate) fn check_ttl_seconds_after_finished(ttl: i64, field: &FieldPath) -> Option<Violation> {
    (!(0..=MAX_TTL_SECONDS_AFTER_FINISHED).contains(&ttl)).then(|| {
        Violation::with_value(
            field,
            Reason::Invalid,
            ttl,
            format!("must be from 0 to {MAX_TTL_SECONDS_AFTER_FINISHED} seconds, a year"),
        )
    })
}

fn check_program_source(spec: &RunSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    let sources: Vec<&str> = [
        ("script", spec.script.is_some()),
        ("entrypoint", spec.entrypoint.is_some()),
        ("command", spec.command.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    match sources.as_slice() {
        [] => v.push(Violation::new(
            path,
            Reason::Required,
            "one program source must be set: script, entrypoint (with files or git), or command (interpreter exec)",
        )),
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                v.push(Violation::new(
                    path.child(other),
                    Reason::Forbidden,
                    format!("may not be set together with {first}: a Run has exactly one program source"),
                ));
            }
        }
    }
    match (spec.interpreter, &spec.command) {
        (Interpreter::Exec, None) => {
            if !sources.is_empty() {
                v.push(Violation::with_value(
                    path.child("interpreter"),
                    Reason::Invalid,
                    "exec",
                    "interpreter exec runs command directly; use bash or python for script and entrypoint",
                ));
            }
        }
        (Interpreter::Exec, Some(command)) => {
            if command.is_empty() {
                v.push(Violation::new(
                    path.child("command"),
                    Reason::Required,
                    "command needs at least the program to run",
                ));
            } else if command[0].is_empty() {
                v.push(Violation::new(
                    path.child("command").index(0),
                    Reason::Required,
                    "the program to run may not be empty",
                ));
            }
        }
        (interpreter, Some(_)) => v.push(Violation::new(
            path.child("command"),
            Reason::Forbidden,
            format!("command is only used with interpreter exec, not {interpreter}; use script or entrypoint"),
        )),
        (_, None) => {}
    }
    if let Some(script) = &spec.script {
        if script.is_empty() {
            v.push(Violation::new(
                path.child("script"),
                Reason::Required,
                "script may not be empty",
            ));
        } else if script.len() > MAX_INLINE_SOURCE_BYTES {
            v.push(Violation::new(
                path.child("script"),
                Reason::TooLong,
                format!("must be no more than {MAX_INLINE_SOURCE_BYTES} bytes; put larger programs in git"),
            ));
        }
    }
}

fn check_sources(spec: &RunSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    if let Some(files) = &spec.files {
        check_files(spec, files, path, v);
    }
    if let Some(git) = &spec.git {
        check_git(spec, git, path, v);
    }
    if let Some(entrypoint) = &spec.entrypoint {
        check_entrypoint(spec, entrypoint, path, v);
    }
}

/// `spec.files`: how many, each key a plain relative path that does not collide with the
/// script's file or sit under another file, each content within the inline limit.
fn check_files(
    spec: &RunSpec,
    files: &BTreeMap<String, String>,
    path: &FieldPath,
    v: &mut Vec<Violation>,
) {
    let files_path = path.child("files");
    if files.len() > MAX_FILES {
        v.push(Violation::with_value(
            &files_path,
            Reason::TooMany,
            files.len(),
            format!("must have at most {MAX_FILES} files"),
        ));
    }
    let script_file = spec
        .script
        .as_ref()
        .and_then(|_| spec.interpreter.script_file());
    for (name, content) in files {
        let entry = files_path.key(name);
        if let Err(why) = check_relative_path(name, PathKind::Plain) {
            v.push(Violation::with_value(&entry, Reason::Invalid, name, why));
        } else if let Some(why) = file_under_a_file(name, files, script_file) {
            v.push(Violation::with_value(&entry, Reason::Invalid, name, why));
        }
        if Some(name.as_str()) == script_file {
            v.push(Violation::with_value(
                &entry,
                Reason::Duplicate,
                name,
                format!("script is written to {name}; rename this file"),
            ));
        }
        if content.len() > MAX_INLINE_SOURCE_BYTES {
            v.push(Violation::new(
                &entry,
                Reason::TooLong,
                format!(
                    "must be no more than {MAX_INLINE_SOURCE_BYTES} bytes; put larger files in git"
                ),
            ));
        }
    }
}

/// `spec.git`: exclusive with inline sources; URL, ref and path well formed.
fn check_git(spec: &RunSpec, git: &GitSource, path: &FieldPath, v: &mut Vec<Violation>) {
    let git_path = path.child("git");
    for field in ["script", "files"] {
        let set = if field == "script" {
            spec.script.is_some()
        } else {
            spec.files.is_some()
        };
        if set {
            v.push(Violation::new(
                git_path.clone(),
                Reason::Forbidden,
                format!(
                    "git is used instead of inline sources; it may not be set together with {field}"
                ),
            ));
        }
    }
    if let Err(why) = check_git_url(&git.url) {
        v.push(Violation::with_value(
            git_path.child("url"),
            Reason::Invalid,
            &git.url,
            why,
        ));
    }
    if let Some(git_ref) = &git.git_ref
        && let Err(why) = check_git_ref(git_ref)
    {
        v.push(Violation::with_value(
            git_path.child("ref"),
            Reason::Invalid,
            git_ref,
            why,
        ));
    }
    if let Some(sub) = &git.path
        && let Err(why) = check_relative_path(sub, PathKind::Plain)
    {
        v.push(Violation::with_value(
            git_path.child("path"),
            Reason::Invalid,
            sub,
            why,
        ));
    }
}

/// `spec.entrypoint`: a plain relative path to a file that `files` holds (or git brings).
fn check_entrypoint(spec: &RunSpec, entrypoint: &str, path: &FieldPath, v: &mut Vec<Violation>) {
    let entry_path = path.child("entrypoint");
    if let Err(why) = check_relative_path(entrypoint, PathKind::Plain) {
        v.push(Violation::with_value(
            &entry_path,
            Reason::Invalid,
            entrypoint,
            why,
        ));
    } else if spec.git.is_none() {
        match &spec.files {
            None => v.push(Violation::with_value(
                &entry_path,
                Reason::Required,
                entrypoint,
                "entrypoint names a file that files or git must provide; neither is set",
            )),
            Some(files) if !files.contains_key(entrypoint) => v.push(Violation::with_value(
                &entry_path,
                Reason::NotFound,
                entrypoint,
                format!(
                    "no such key in files; files are: {}",
                    files.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(_) => {}
        }
    }
}

/// Why `name` cannot be written: one of its parent directories is itself a file (another
/// `files` key, or the script's file). The workspace would need `a` as a file and as the
/// directory of `a/b` at once; runtimed could only fail at write time, as if it were its
/// own fault.
fn file_under_a_file(
    name: &str,
    files: &BTreeMap<String, String>,
    script_file: Option<&str>,
) -> Option<String> {
    name.match_indices('/').find_map(|(end, _)| {
        let parent = &name[..end];
        if files.contains_key(parent) {
            Some(format!(
                "files[{parent}] is a file, so it cannot also be the directory of {name}"
            ))
        } else if Some(parent) == script_file {
            Some(format!(
                "script is written to {parent}, so it cannot also be the directory of {name}"
            ))
        } else {
            None
        }
    })
}

fn check_argv(spec: &RunSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    for (field, list) in [("command", &spec.command), ("args", &spec.args)] {
        let Some(list) = list else { continue };
        if list.len() > MAX_ARGS {
            v.push(Violation::with_value(
                path.child(field),
                Reason::TooMany,
                list.len(),
                format!("must have at most {MAX_ARGS} entries"),
            ));
        }
        for (i, arg) in list.iter().enumerate() {
            if arg.len() > MAX_ARG_BYTES {
                v.push(Violation::new(
                    path.child(field).index(i),
                    Reason::TooLong,
                    format!("must be no more than {MAX_ARG_BYTES} bytes"),
                ));
            }
            if arg.contains('\0') {
                v.push(Violation::new(
                    path.child(field).index(i),
                    Reason::Invalid,
                    "must not contain a NUL character",
                ));
            }
        }
    }
}

/// `command`, `args` and `env` together within [`MAX_ARGV_ENV_BYTES`], reported on the
/// largest of the three, since that is the one to shrink.
fn check_exec_size(spec: &RunSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    let strings = |list: &Option<Vec<String>>| -> usize {
        list.iter()
            .flatten()
            .map(|s| s.len() + EXEC_STRING_OVERHEAD)
            .sum()
    };
    let env: usize = spec
        .env
        .iter()
        .flatten()
        .map(|var| var.name.len() + 1 + var.value.len() + EXEC_STRING_OVERHEAD)
        .sum();
    let sizes = [
        ("command", strings(&spec.command)),
        ("args", strings(&spec.args)),
        ("env", env),
    ];
    let total: usize = sizes.iter().map(|(_, size)| size).sum();
    if total <= MAX_ARGV_ENV_BYTES {
        return;
    }
    let largest = sizes
        .iter()
        .max_by_key(|(_, size)| *size)
        .map_or("args", |(field, _)| field);
    let [command, args, env] = sizes.map(|(_, size)| size);
    v.push(Violation::new(
        path.child(largest),
        Reason::TooLong,
        format!(
            "command, args and env must take at most {MAX_ARGV_ENV_BYTES} bytes together (each string counted with its NUL and pointer, as exec counts them: Linux refuses more with Argument list too long); they take {total} (command {command}, args {args}, env {env})"
        ),
    ));
}

fn check_env(spec: &RunSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    let Some(env) = &spec.env else { return };
    let env_path = path.child("env");
    if env.len() > MAX_ENV {
        v.push(Violation::with_value(
            &env_path,
            Reason::TooMany,
            env.len(),
            format!("must have at most {MAX_ENV} entries"),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, var) in env.iter().enumerate() {
        let name_path = env_path.index(i).child("name");
        if var.name.len() > MAX_ENV_NAME_BYTES {
            v.push(Violation::new(
                &name_path,
                Reason::TooLong,
                format!("must be no more than {MAX_ENV_NAME_BYTES} bytes"),
            ));
        } else if let Err(why) = check_c_identifier(&var.name) {
            v.push(Violation::with_value(
                &name_path,
                Reason::Invalid,
                &var.name,
                why,
            ));
        } else if var.name.starts_with(RESERVED_ENV_PREFIX) {
            v.push(Violation::with_value(
                &name_path,
                Reason::Forbidden,
                &var.name,
                format!("names starting with {RESERVED_ENV_PREFIX} are set by runtimed"),
            ));
        }
        if let Some(first) = seen.insert(&var.name, i) {
            v.push(Violation::with_value(
                &name_path,
                Reason::Duplicate,
                &var.name,
                format!("env[{first}] sets the same variable"),
            ));
        }
        if var.value.len() > MAX_ENV_VALUE_BYTES {
            v.push(Violation::new(
                env_path.index(i).child("value"),
                Reason::TooLong,
                format!("must be no more than {MAX_ENV_VALUE_BYTES} bytes"),
            ));
        } else if var.value.contains('\0') {
            v.push(Violation::new(
                env_path.index(i).child("value"),
                Reason::Invalid,
                "must not contain a NUL character",
            ));
        }
    }
}
