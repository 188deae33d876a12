//! The spawner: a small helper process (`runtimed spawner`, started by the agent at
//! startup) that forks the Runs' first processes, so that the agent never forks itself.
//!
//! Why: `fork` copies the page tables of the whole calling process, and every page the
//! parent writes afterwards takes a copy-on-write fault; the child's `exec` then tears
//! that copy down again. The agent is a multi-threaded tokio process holding every
//! Run's output, so per Run that cost was a large share of its CPU (profile in
//! `docs/benchmarks.md`). The spawner is single-purpose and small: two threads, a
//! heap of a few pages, so its `fork` is cheap. The confinement between fork and exec
//! is the same (`kruntimes_preexec::confine_before_exec`, the workspace's one
//! `unsafe`): own session and process group, no new privileges, every capability
//! dropped.
//!
//! Protocol, on a unix stream socket pair (the spawner's stdin):
//! - request (agent → spawner): a header (body length, flags) carrying the Run's stdin
//!   (optional), stdout and stderr as `SCM_RIGHTS`, then the body: request id, program,
//!   working directory, argv, environment and the Run's cgroup (empty: none), each
//!   length-prefixed; with a cgroup, the spawner moves itself into it for the spawn
//!   and back to its own, its parent (see [`crate::agent::cgroup`]);
//! - replies (spawner → agent): `Spawned(id, pid)` or `Failed(id, errno, message)` for
//!   each request, in order, and `Exited(pid, code)` / `Signaled(pid, signal)` when a
//!   first process it spawned ends (the spawner is its parent and reaps it). A pid's
//!   exit is always sent after its `Spawned`: both are written under one lock. An
//!   exit's message is empty when, as the spawner reaped that process, its only
//!   children were other Runs' first processes, and [`STRAYS`] otherwise (a process
//!   made a child of the spawner with `clone(CLONE_PARENT)`, or the list unreadable):
//!   what lets the agent skip its look through `/proc` (see [`crate::agent::procs`]).
//!
//! Orphans of a Run are not the spawner's business: it is not a subreaper, so they are
//! re-parented to the agent (a child subreaper), which reaps them and finds them when it
//! kills a Run (see [`crate::agent::procs`]). Except when the agent is gone: at the end
//! of its socket the spawner kills every Run cgroup it spawned into and every first
//! process's group it has not reaped, so that nothing of the Runs outlives the agent.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kruntimes_preexec::confine_before_exec;

mod client;
mod server;

pub use client::Spawner;
pub(crate) use client::spawner_pids;
pub use server::serve;

/// Largest request body (argv, environment, paths) the spawner accepts. Above what
/// `execve` itself accepts (argv and environment together at most 6 MiB on Linux,
/// a quarter of an 8 MiB stack limit by default), so it never refuses a program the
/// kernel would start; it keeps a corrupt length from allocating without bound.
pub const MAX_SPAWN_REQUEST_BYTES: usize = 16 << 20;

/// Request header: body length (u32), flags (u32).
const HEADER_BYTES: usize = 8;
/// Header flag: a stdin descriptor comes first among the passed descriptors.
const HAS_STDIN: u32 = 1;

const REPLY_SPAWNED: u8 = 1;
const REPLY_FAILED: u8 = 2;
const REPLY_EXITED: u8 = 3;
const REPLY_SIGNALED: u8 = 4;
/// Reply header: kind (u8), id or pid (u64), value (i32), message length (u32).
const REPLY_HEADER_BYTES: usize = 17;
/// Longest error message a `Failed` reply carries.
const MAX_REPLY_MESSAGE_BYTES: usize = 4096;
/// The message of an exit reply when the spawner had, as it reaped that process,
/// children other than the Runs' first processes it spawned (or could not tell).
pub const STRAYS: &str = "strays";

/// What to start: the program, its arguments, working directory and whole environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    /// Program: a path, or a name looked up on the environment's `PATH`.
    pub program: OsString,
    /// Arguments after argv[0].
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The Run's cgroup directory, to start the program in (see
    /// [`crate::agent::cgroup`]); its parent is the spawner's own cgroup.
    pub cgroup: Option<PathBuf>,
}

impl Launch {
    /// The confined `Command` for this launch, with these standard streams.
    pub(crate) fn command(&self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        confine_before_exec(&mut command);
        command
    }

    /// The `PATH` a program name without `/` is looked up on: the launch's own (the last
    /// entry of that name), else `/bin:/usr/bin`, as `execvp` does.
    pub fn search_path(&self) -> &OsStr {
        self.env
            .iter()
            .rev()
            .find(|(name, _)| name == "PATH")
            .map_or(OsStr::new("/bin:/usr/bin"), |(_, value)| value.as_os_str())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The request body: id, then every field length-prefixed.
pub fn encode_request(id: u64, launch: &Launch) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&id.to_le_bytes());
    put_bytes(&mut out, launch.program.as_bytes());
    put_bytes(&mut out, launch.cwd.as_os_str().as_bytes());
    out.extend_from_slice(&(launch.args.len() as u32).to_le_bytes());
    for arg in &launch.args {
        put_bytes(&mut out, arg.as_bytes());
    }
    out.extend_from_slice(&(launch.env.len() as u32).to_le_bytes());
    for (name, value) in &launch.env {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    // Empty: no cgroup (a cgroup directory is never the empty path).
    let cgroup = launch
        .cgroup
        .as_deref()
        .map_or(&[][..], |c| c.as_os_str().as_bytes());
    put_bytes(&mut out, cgroup);
    out
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "spawn request truncated",
            ));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn os(&mut self) -> io::Result<OsString> {
        let n = self.u32()? as usize;
        Ok(OsStr::from_bytes(self.take(n)?).to_owned())
    }
}

/// Decodes a request body written by [`encode_request`].
pub fn decode_request(body: &[u8]) -> io::Result<(u64, Launch)> {
    let mut r = Reader { data: body };
    let id = r.u64()?;
    let program = r.os()?;
    let cwd = PathBuf::from(r.os()?);
    // Counts are bounded by the body itself: every entry takes at least 4 bytes.
    let argc = r.u32()? as usize;
    let mut args = Vec::with_capacity(argc.min(body.len() / 4));
    for _ in 0..argc {
        args.push(r.os()?);
    }
    let envc = r.u32()? as usize;
    let mut env = Vec::with_capacity(envc.min(body.len() / 8));
    for _ in 0..envc {
        env.push((r.os()?, r.os()?));
    }
    let cgroup = r.os()?;
    let cgroup = (!cgroup.is_empty()).then(|| PathBuf::from(cgroup));
    if !r.data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "spawn request has trailing bytes",
        ));
    }
    Ok((
        id,
        Launch {
            program,
            args,
            cwd,
            env,
            cgroup,
        },
    ))
}

/// Checks a request body length against [`MAX_SPAWN_REQUEST_BYTES`].
pub fn check_request_len(len: usize) -> io::Result<()> {
    if len > MAX_SPAWN_REQUEST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "argv and environment take {len} bytes, over the spawner's limit of {MAX_SPAWN_REQUEST_BYTES}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn requests_round_trip() {
        let launch = Launch {
            program: "bash".into(),
            args: vec![
                "main.sh".into(),
                "".into(),
                OsString::from_vec(vec![0xff, b'x']),
            ],
            cwd: "/workspace/r1".into(),
            env: vec![("PATH".into(), "/bin".into()), ("EMPTY".into(), "".into())],
            cgroup: Some("/sys/fs/cgroup/krt-1.0".into()),
        };
        let body = encode_request(42, &launch);
        let (id, back) = decode_request(&body).unwrap();
        assert_eq!(id, 42);
        assert_eq!(back, launch);
        // Truncated anywhere: an error, never a panic.
        for n in 0..body.len() {
            assert!(decode_request(&body[..n]).is_err(), "truncated at {n}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_request(&longer).is_err());
        let without = Launch {
            cgroup: None,
            ..launch
        };
        let (_, back) = decode_request(&encode_request(7, &without)).unwrap();
        assert_eq!(back, without);
    }

    #[test]
    fn request_length_limit_at_the_boundary() {
        assert!(check_request_len(MAX_SPAWN_REQUEST_BYTES).is_ok());
        let err = check_request_len(MAX_SPAWN_REQUEST_BYTES + 1).unwrap_err();
        assert!(err.to_string().contains("spawner's limit"), "{err}");
    }

    #[test]
    fn huge_counts_in_a_short_body_are_an_error() {
        let mut body = Vec::new();
        body.extend_from_slice(&1u64.to_le_bytes());
        put_bytes(&mut body, b"bash");
        put_bytes(&mut body, b"/");
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_request(&body).is_err());
    }
}
