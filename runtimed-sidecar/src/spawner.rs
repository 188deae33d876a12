//! The spawner: a small helper process (`runtimed spawner`, started by the agent at
//! startup) that forks the Runs' first processes, so that the agent never forks itself.
//!
//! Why: `fork` copies the page tables of the whole calling process, and every page the
//! parent writes afterwards takes a copy-on-write fault; the child's `exec` then tears
//! that copy down again. The agent is a multi-threaded tokio process holding every
//! Run's output, so per Run that cost was a large share of its CPU (profile in
//! `docs/benchmarks.md`). The spawner is single-purpose and small: two threads, a
//! heap of a few pages, so its `fork` is cheap. The confinement between fork and exec
//! is the same (`sandbox::confine_command`, the crate's one `unsafe`): own session and
//! process group, no new privileges, every capability dropped.
//!
//! Protocol, on a unix stream socket pair (the spawner's stdin):
//! - request (agent → spawner): a header (body length, flags) carrying the Run's stdin
//!   (optional), stdout and stderr as `SCM_RIGHTS`, then the body: request id, program,
//!   working directory, argv and environment, each length-prefixed;
//! - replies (spawner → agent): `Spawned(id, pid)` or `Failed(id, errno, message)` for
//!   each request, in order, and `Exited(pid, code)` / `Signaled(pid, signal)` when a
//!   first process it spawned ends (the spawner is its parent and reaps it). A pid's
//!   exit is always sent after its `Spawned`: both are written under one lock. An
//!   exit's message is empty when, as the spawner reaped that process, its only
//!   children were other Runs' first processes, and [`STRAYS`] otherwise (a process
//!   made a child of the spawner with `clone(CLONE_PARENT)`, or the list unreadable):
//!   what lets the agent skip its look through `/proc` (see [`crate::procs`]).
//!
//! Orphans of a Run are not the spawner's business: it is not a subreaper, so they are
//! re-parented to the agent (a child subreaper), which reaps them and finds them when it
//! kills a Run (see [`crate::procs`]).

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::sync::oneshot;

use crate::lock;
use crate::reaper::{Exit, Reaper};
use crate::sandbox::confine_command;

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
        confine_command(&mut command);
        command
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

// ---------------------------------------------------------------------------------
// The spawner process.

/// What the spawner's two threads share, under one lock: the writing side of the
/// socket (so an exit never overtakes its `Spawned`), a count of spawns (which wakes
/// the reaping thread when it had no child to wait for) and the pids of the first
/// processes spawned and not reaped yet. Every fork happens under this lock.
struct Out {
    socket: UnixStream,
    spawned: u64,
    leaders: HashSet<i32>,
}

struct Shared {
    out: Mutex<Out>,
    spawned: Condvar,
}

/// Whether this process has a child that is not in `leaders`. Called by the reaping
/// thread under the [`Out`] lock: every fork happens under it and this thread is the
/// only one that reaps, so no child is added or removed while the lists are read
/// (except by `clone(CLONE_PARENT)` from a Run's process: a stray either way). The
/// spawner's threads never end, so no child moves between their lists. Unreadable:
/// true (cannot tell).
fn has_strays(leaders: &HashSet<i32>) -> bool {
    crate::procs::own_children_exactly()
        .is_none_or(|children| children.iter().any(|c| !leaders.contains(c)))
}

fn reply(out: &mut UnixStream, kind: u8, id: u64, value: i32, message: &str) -> io::Result<()> {
    let message = &message.as_bytes()[..message.len().min(MAX_REPLY_MESSAGE_BYTES)];
    let mut frame = Vec::with_capacity(REPLY_HEADER_BYTES + message.len());
    frame.push(kind);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&value.to_le_bytes());
    frame.extend_from_slice(&(message.len() as u32).to_le_bytes());
    frame.extend_from_slice(message);
    out.write_all(&frame)
}

/// One request as received: the body and the passed descriptors.
struct Received {
    body: Vec<u8>,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Reads one request; `None` at end of stream (the agent is gone).
fn receive(socket: &UnixStream) -> io::Result<Option<Received>> {
    let mut header = [0u8; HEADER_BYTES];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut header)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => break msg.bytes,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(3);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if got == 0 {
        return Ok(None);
    }
    let mut reader = socket;
    reader.read_exact(&mut header[got..])?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let flags = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    check_request_len(len)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let want = if flags & HAS_STDIN != 0 { 3 } else { 2 };
    if fds.len() != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "spawn request with {} descriptors, {want} expected",
                fds.len()
            ),
        ));
    }
    let mut fds = fds.into_iter();
    let stdin = if want == 3 { fds.next() } else { None };
    let (Some(stdout), Some(stderr)) = (fds.next(), fds.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors missing",
        ));
    };
    Ok(Some(Received {
        body,
        stdin,
        stdout,
        stderr,
    }))
}

/// The spawner's main loop (`runtimed spawner`): serves requests on `socket` until the
/// agent closes it, then returns. Its children left running at that point are
/// re-parented to the nearest subreaper (the agent, if it still exists).
pub fn serve(socket: UnixStream) -> io::Result<()> {
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            socket: socket.try_clone()?,
            spawned: 0,
            leaders: HashSet::new(),
        }),
        spawned: Condvar::new(),
    });
    let reaping = shared.clone();
    std::thread::Builder::new()
        .name("spawner-reaper".into())
        .spawn(move || reap_forever(&reaping))?;
    let null = std::fs::File::open("/dev/null")?;
    while let Some(request) = receive(&socket)? {
        let mut out = lock(&shared.out);
        let (kind, id, value, message) = match decode_request(&request.body) {
            Ok((id, launch)) => {
                let stdin = request.stdin.as_ref().map_or(null.as_fd(), AsFd::as_fd);
                // Spawned under the lock: the reaping thread cannot report this child's
                // exit before its `Spawned` reply is written.
                match spawn_session(
                    &launch,
                    [stdin, request.stdout.as_fd(), request.stderr.as_fd()],
                ) {
                    // Never waited on here: the reaping thread collects it.
                    Ok(pid) => {
                        out.leaders.insert(pid);
                        (REPLY_SPAWNED, id, pid, String::new())
                    }
                    Err(e) => (
                        REPLY_FAILED,
                        id,
                        e.raw_os_error().unwrap_or(0),
                        e.to_string(),
                    ),
                }
            }
            Err(e) => {
                // Without an id the agent cannot be answered: the stream is unusable.
                return Err(e);
            }
        };
        out.spawned += 1;
        reply(&mut out.socket, kind, id, value, &message)?;
        drop(out);
        shared.spawned.notify_all();
    }
    Ok(())
}

/// `bytes` as a C string for `posix_spawn`; a nul byte inside is an invalid argument.
fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// Starts `launch` in a new session with these descriptors as its stdin, stdout and
/// stderr, through `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)`, no copy of this
/// process's page tables, nothing to tear down at exec) with `POSIX_SPAWN_SETSID`; the
/// rest of the confinement (no new privileges, no capabilities) is inherited from this
/// process, confined when the agent started it. SIGPIPE back to its default and an
/// empty signal mask, as `std::process::Command` gives. Returns once the program has
/// been exec'ed. The program is looked up as `execvp` does (what `Command` did here
/// before): a name without `/` on the launch's own `PATH` (`/bin:/usr/bin` without
/// one), `EACCES` remembered and the search going on, a file without a `#!` line run
/// by `/bin/sh`. Only the spawner's main thread calls this (it changes this process's
/// working directory to the launch's, which the child inherits, and back to `/`).
fn spawn_session(launch: &Launch, stdio: [BorrowedFd<'_>; 3]) -> io::Result<i32> {
    let mut argv = Vec::with_capacity(launch.args.len() + 1);
    argv.push(cstring(launch.program.as_bytes())?);
    for arg in &launch.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut envp = Vec::with_capacity(launch.env.len());
    for (name, value) in &launch.env {
        let mut pair = Vec::with_capacity(name.len() + value.len() + 1);
        pair.extend_from_slice(name.as_bytes());
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        envp.push(cstring(&pair)?);
    }
    nix::unistd::chdir(&launch.cwd)?;
    let spawned = spawn_in_cwd(launch, &argv, &envp, stdio);
    // Leave the workspace at once. A working directory keeps its inode alive: once the
    // agent deleted the workspace, the spawner's next `chdir` would free it (on ext4,
    // 0.4-0.9 ms measured under `perf trace`) on the next Run's start path. Freed by
    // the agent's removal instead, after the Run ended. "/" always exists; a failure
    // here only moves that cost back.
    let _ = nix::unistd::chdir("/");
    spawned
}

/// [`spawn_session`] once the working directory is the launch's.
fn spawn_in_cwd(
    launch: &Launch,
    argv: &[CString],
    envp: &[CString],
    stdio: [BorrowedFd<'_>; 3],
) -> io::Result<i32> {
    use std::os::fd::AsRawFd;

    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
    use nix::sys::signal::{SigSet, Signal};

    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::from_bits_retain(libc::c_int::from(libc::POSIX_SPAWN_SETSID)),
    )?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut actions = PosixSpawnFileActions::init()?;
    for (target, fd) in stdio.iter().enumerate() {
        actions.add_dup2(fd.as_raw_fd(), target as i32)?;
    }

    let program = launch.program.as_bytes();
    let candidates: Vec<Vec<u8>> = if program.contains(&b'/') {
        vec![program.to_vec()]
    } else {
        let path = launch
            .env
            .iter()
            .rev()
            .find(|(name, _)| name == "PATH")
            .map_or(&b"/bin:/usr/bin"[..], |(_, value)| value.as_bytes());
        path.split(|b| *b == b':')
            .map(|dir| {
                let dir = if dir.is_empty() { &b"."[..] } else { dir };
                let mut candidate = dir.to_vec();
                candidate.push(b'/');
                candidate.extend_from_slice(program);
                candidate
            })
            .collect()
    };
    let mut denied = false;
    for candidate in candidates {
        // A stat first, so that a missing candidate costs no clone.
        match std::fs::metadata(OsStr::from_bytes(&candidate)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                denied = true;
                continue;
            }
            Err(_) => continue,
        }
        let path = cstring(&candidate)?;
        match posix_spawn(path.as_c_str(), &actions, &attr, argv, envp) {
            Ok(pid) => return Ok(pid.as_raw()),
            Err(Errno::EACCES) => denied = true,
            Err(
                Errno::ENOENT | Errno::ESTALE | Errno::ENOTDIR | Errno::ENODEV | Errno::ETIMEDOUT,
            ) => {}
            Err(Errno::ENOEXEC) => {
                // As execvp: a file the kernel cannot execute is a shell script.
                let mut shell_argv = vec![cstring(b"/bin/sh")?, path.clone()];
                shell_argv.extend(argv.iter().skip(1).cloned());
                let pid = posix_spawn(c"/bin/sh", &actions, &attr, &shell_argv, envp)?;
                return Ok(pid.as_raw());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from(if denied {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }))
}

fn reap_forever(shared: &Shared) {
    loop {
        let spawned_before = lock(&shared.out).spawned;
        // Peek without reaping, so that a child std reaps itself (failed exec) is left
        // to std.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let mut out = lock(&shared.out);
                let (kind, value) = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => (REPLY_EXITED, code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => (REPLY_SIGNALED, signal as i32),
                    _ => continue,
                };
                let was_leader = out.leaders.remove(&pid.as_raw());
                let note = if was_leader && !has_strays(&out.leaders) {
                    ""
                } else {
                    STRAYS
                };
                if reply(&mut out.socket, kind, pid.as_raw() as u64, value, note).is_err() {
                    return; // the agent is gone; the main thread ends the process
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                // No child: wait for a spawn since the count was read.
                let guard = lock(&shared.out);
                let _ =
                    shared
                        .spawned
                        .wait_timeout_while(guard, Duration::from_millis(200), |out| {
                            out.spawned == spawned_before
                        });
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The agent's side.

type SpawnReply = io::Result<u32>;

#[derive(Debug, Default)]
struct ClientState {
    /// Requests sent and not answered: where the answer goes, and where the exit of the
    /// process goes once it is known to exist.
    pending: HashMap<u64, (oneshot::Sender<SpawnReply>, oneshot::Sender<Exit>)>,
    /// Spawned processes whose exit has not come yet.
    exits: HashMap<i32, oneshot::Sender<Exit>>,
    /// Spawned processes that ended while the spawner had no other children than Runs'
    /// first processes (their exit message was empty); taken by [`Spawner::take_clean_exit`].
    clean_exits: HashSet<i32>,
    /// The spawner is gone: nothing more can be spawned.
    closed: bool,
}

/// The agent's handle on its spawner process.
#[derive(Debug)]
pub struct Spawner {
    socket: Mutex<UnixStream>,
    state: Arc<Mutex<ClientState>>,
    next_id: AtomicU64,
    pid: i32,
}

/// Pids of the live spawners of this process: their children are Runs' first
/// processes, which [`crate::procs`] walks as if they were this process's own.
static SPAWNERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The pids of this process's spawners.
pub(crate) fn spawner_pids() -> Vec<i32> {
    lock(&SPAWNERS).clone()
}

impl Spawner {
    /// Starts `runtimed spawner` from the executable `program` (through `reaper`, the
    /// one place that waits for this process's children).
    pub fn start(program: &Path, reaper: &Reaper) -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = Command::new(program);
        command
            .arg("spawner")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The spawner itself is confined (own session, no new privileges, every
        // capability dropped): the Runs' processes inherit all of it, so each needs
        // only a new session, which `posix_spawn` gives without a fork (see `serve`).
        confine_command(&mut command);
        let (child, _exit) = reaper.spawn(&mut command)?;
        let pid = child.id() as i32;
        drop(child);
        lock(&SPAWNERS).push(pid);
        let state = Arc::new(Mutex::new(ClientState::default()));
        let reading = ours.try_clone()?;
        let read_state = state.clone();
        std::thread::Builder::new()
            .name("runtimed-spawner-replies".into())
            .spawn(move || read_replies(reading, &read_state))?;
        Ok(Self {
            socket: Mutex::new(ours),
            state,
            next_id: AtomicU64::new(1),
            pid,
        })
    }

    /// The spawner process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the spawner process has ended (its socket was closed).
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Whether the process `pid` it spawned has ended and, when the spawner reaped it,
    /// the spawner's only children were other Runs' first processes. Forgets `pid`.
    pub fn take_clean_exit(&self, pid: i32) -> bool {
        lock(&self.state).clean_exits.remove(&pid)
    }

    /// Starts `launch` with these standard streams (the caller's copies of the
    /// descriptors can be closed once this returns) and returns the pid of the process
    /// (a session and group leader) and a receiver of its exit once the spawner has
    /// exec'd the program or failed to. Sending blocks only while the socket's buffer is
    /// full; the answer is awaited, so the caller's thread serves other work meanwhile.
    ///
    /// Not cancel-safe: dropped after the request went out, the process still starts
    /// but nothing waits for its exit. Callers finish it in a task of its own.
    pub async fn spawn(
        &self,
        launch: &Launch,
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<(u32, oneshot::Receiver<Exit>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = encode_request(id, launch);
        check_request_len(body.len())?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(io::Error::other("the spawner process is gone"));
            }
            state.pending.insert(id, (reply_tx, exit_tx));
        }
        let sent = self.send(
            &body,
            stdin.as_ref().map(AsFd::as_fd),
            stdout.as_fd(),
            stderr.as_fd(),
        );
        if let Err(e) = sent {
            lock(&self.state).pending.remove(&id);
            return Err(e);
        }
        match reply_rx.await {
            Ok(Ok(pid)) => Ok((pid, exit_rx)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the spawner process is gone")),
        }
    }

    fn send(
        &self,
        body: &[u8],
        stdin: Option<BorrowedFd<'_>>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let flags = if stdin.is_some() { HAS_STDIN } else { 0 };
        header[4..].copy_from_slice(&flags.to_le_bytes());
        let fds: Vec<BorrowedFd<'_>> = stdin.into_iter().chain([stdout, stderr]).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other(
                "descriptors do not fit the control buffer",
            ));
        }
        let mut socket = lock(&self.socket);
        // Header and body in one message: the spawner, woken by the header, finds the
        // body already there instead of waiting (and being woken) a second time.
        let sent = loop {
            match rustix::net::sendmsg(
                &*socket,
                &[IoSlice::new(&header), IoSlice::new(body)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        // What did not fit in the socket's buffer (a large request).
        if sent < HEADER_BYTES {
            socket.write_all(&header[sent..])?;
            socket.write_all(body)
        } else {
            socket.write_all(&body[sent - HEADER_BYTES..])
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        lock(&SPAWNERS).retain(|p| *p != self.pid);
        // Closing our end ends the spawner (end of stream); its reply thread then sees
        // the end of stream too.
        let _ = lock(&self.socket).shutdown(std::net::Shutdown::Both);
    }
}

fn read_replies(mut socket: UnixStream, state: &Mutex<ClientState>) {
    let mut header = [0u8; REPLY_HEADER_BYTES];
    let mut message = Vec::new();
    loop {
        if socket.read_exact(&mut header).is_err() {
            break;
        }
        let kind = header[0];
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[1..9]);
        let id = u64::from_le_bytes(id);
        let value = i32::from_le_bytes([header[9], header[10], header[11], header[12]]);
        let len = u32::from_le_bytes([header[13], header[14], header[15], header[16]]) as usize;
        if len > MAX_REPLY_MESSAGE_BYTES {
            break;
        }
        message.resize(len, 0);
        if socket.read_exact(&mut message).is_err() {
            break;
        }
        let mut state = lock(state);
        match kind {
            REPLY_SPAWNED => {
                if let Some((reply, exit)) = state.pending.remove(&id) {
                    state.exits.insert(value, exit);
                    let _ = reply.send(Ok(value as u32));
                }
            }
            REPLY_FAILED => {
                if let Some((reply, _)) = state.pending.remove(&id) {
                    let error = if value != 0 {
                        io::Error::from_raw_os_error(value)
                    } else {
                        io::Error::other(String::from_utf8_lossy(&message).into_owned())
                    };
                    let _ = reply.send(Err(error));
                }
            }
            REPLY_EXITED | REPLY_SIGNALED => {
                if let Some(exit) = state.exits.remove(&(id as i32)) {
                    if message.is_empty() {
                        state.clean_exits.insert(id as i32);
                    }
                    let _ = exit.send(if kind == REPLY_EXITED {
                        Exit::Code(value)
                    } else {
                        Exit::Signal(value)
                    });
                }
            }
            _ => break,
        }
    }
    // The spawner is gone: pending spawns fail; Runs still waiting for an exit see
    // their sender dropped (see the driver).
    let mut state = lock(state);
    state.closed = true;
    state.pending.clear();
    if !state.exits.is_empty() {
        tracing::error!(
            running = state.exits.len(),
            "the spawner process ended while Runs were running"
        );
    }
    state.exits.clear();
    state.clean_exits.clear();
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    #[test]
    fn a_child_that_is_not_a_first_process_is_a_stray() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let strays = has_strays(&HashSet::new());
        let known = has_strays(&HashSet::from([pid]));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(strays, "an unknown child is a stray");
        assert!(!known, "a known child is not");
        assert!(!has_strays(&HashSet::new()), "no child: none");
    }

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
