//! The spawner process (`runtimed spawner`): its main loop, which starts each requested
//! program with `posix_spawn` in a session of its own, and the thread that reaps them
//! and reports their exits.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::{
    HAS_STDIN, HEADER_BYTES, Launch, MAX_REPLY_MESSAGE_BYTES, REPLY_EXITED, REPLY_FAILED,
    REPLY_HEADER_BYTES, REPLY_SIGNALED, REPLY_SPAWNED, STRAYS, check_request_len, decode_request,
};
use crate::lock;

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
    crate::agent::procs::own_children_exactly()
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

/// Reads one request; `None` at end of stream (the agent is gone). A reset connection
/// is the agent gone too: killed (SIGKILL) before it read every reply, it leaves them
/// unread, and the kernel then reports `ECONNRESET` instead of the end of stream. It is
/// not an error of the spawner's, only the end of its work.
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
            Err(rustix::io::Errno::CONNRESET) => return Ok(None),
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
/// agent closes it. Then, as the agent is gone (ended, or killed without the chance to
/// end its Runs), it kills what the Runs it started left: every Run cgroup it spawned
/// into that still holds processes and every first process's group still there, so
/// that nothing of them outlives the agent. Other processes of a Run (a child that
/// left its group, with no cgroup) are re-parented to the nearest subreaper.
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
    let mut cgroups = HashSet::new();
    let served = serve_requests(&socket, &shared, &mut cgroups);
    kill_what_is_left(&lock(&shared.out).leaders, &cgroups);
    served
}

fn serve_requests(
    socket: &UnixStream,
    shared: &Shared,
    cgroups: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    while let Some(request) = receive(socket)? {
        let mut out = lock(&shared.out);
        // Without an id the agent cannot be answered: the stream is unusable.
        let (id, launch) = decode_request(&request.body)?;
        cgroups.extend(launch.cgroup.clone());
        let stdin = request.stdin.as_ref().map_or(null.as_fd(), AsFd::as_fd);
        // Spawned under the lock: the reaping thread cannot report this child's exit
        // before its `Spawned` reply is written.
        let spawned = spawn_session(
            &launch,
            [stdin, request.stdout.as_fd(), request.stderr.as_fd()],
        );
        let (kind, value, message, stuck) = match spawned {
            // Never waited on here: the reaping thread collects it.
            Ok(pid) => {
                out.leaders.insert(pid);
                (REPLY_SPAWNED, pid, String::new(), None)
            }
            Err(e) => {
                let stuck = e.get_ref().is_some_and(|inner| inner.is::<LeaveFailed>());
                let errno = e.raw_os_error().unwrap_or(0);
                (REPLY_FAILED, errno, e.to_string(), stuck.then_some(e))
            }
        };
        out.spawned += 1;
        reply(&mut out.socket, kind, id, value, &message)?;
        drop(out);
        shared.spawned.notify_all();
        if let Some(e) = stuck {
            return Err(e);
        }
    }
    Ok(())
}

/// SIGKILL to every process in `cgroups` (those that still exist) and to the process
/// group of every first process in `leaders` (not reaped yet).
fn kill_what_is_left(leaders: &HashSet<i32>, cgroups: &HashSet<PathBuf>) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for cgroup in cgroups {
        let populated = std::fs::read_to_string(cgroup.join("cgroup.events"))
            .is_ok_and(|events| events.lines().any(|l| l == "populated 1"));
        if populated {
            let _ = std::fs::write(cgroup.join("cgroup.kill"), b"1");
        }
    }
    for leader in leaders {
        let _ = kill(Pid::from_raw(-leader), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*leader), Signal::SIGKILL);
    }
    // Reaped here: the reaping thread stops at its first reply the agent cannot take,
    // and a zombie keeps its cgroup from being removed. One the reaping thread took
    // first is no child any more (ECHILD).
    for leader in leaders {
        let _ = waitpid(Pid::from_raw(*leader), None);
    }
    // The emptied cgroups stay: this process, confined, may not remove them; the next
    // agent does (see `crate::agent::cgroup`).
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
    // Not the program's errno: a failure here is the platform's (see the lifecycle's
    // `StartFailure`), so the reply carries a message, not an errno.
    nix::unistd::chdir(&launch.cwd).map_err(|e| {
        io::Error::other(format!(
            "cannot enter the workspace {}: {e}",
            launch.cwd.display()
        ))
    })?;
    let spawned = match &launch.cgroup {
        Some(cgroup) => in_cgroup(cgroup, || spawn_in_cwd(launch, &argv, &envp, stdio))?,
        None => spawn_in_cwd(launch, &argv, &envp, stdio),
    };
    // Leave the workspace at once. A working directory keeps its inode alive: once the
    // agent deleted the workspace, the spawner's next `chdir` would free it (on ext4,
    // 0.4-0.9 ms measured under `perf trace`) on the next Run's start path. Freed by
    // the agent's removal instead, after the Run ended. "/" always exists; a failure
    // here only moves that cost back.
    let _ = nix::unistd::chdir("/");
    spawned
}

/// Runs `spawn` with this process (both its threads) in `cgroup`, so that the child it
/// forks is born there, then moves it back to its own cgroup, the parent of `cgroup`.
/// A failure to enter is the spawn's (the platform's, so a message and no errno); a
/// failure to get out is this process's own: it must not stay where the Run's end
/// kills everything (see [`LeaveFailed`]).
fn in_cgroup(
    cgroup: &Path,
    spawn: impl FnOnce() -> io::Result<i32>,
) -> io::Result<io::Result<i32>> {
    let me = std::process::id().to_string();
    let enter = std::fs::write(cgroup.join("cgroup.procs"), &me);
    if let Err(e) = enter {
        return Ok(Err(io::Error::other(format!(
            "cannot enter the Run's cgroup {}: {e}",
            cgroup.display()
        ))));
    }
    let spawned = spawn();
    let home = cgroup.parent().unwrap_or(Path::new("/"));
    match std::fs::write(home.join("cgroup.procs"), &me) {
        Ok(()) => Ok(spawned),
        Err(e) => Err(io::Error::other(LeaveFailed(format!(
            "cannot leave the Run's cgroup {} for {}: {e}",
            cgroup.display(),
            home.display()
        )))),
    }
}

/// The spawner could not move back out of a Run's cgroup: it answers the request it
/// was serving, then ends (the agent starts another), rather than be killed with the
/// Run.
#[derive(Debug)]
struct LeaveFailed(String);

impl std::fmt::Display for LeaveFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LeaveFailed {}

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
        let path = launch.search_path().as_bytes();
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

#[cfg(test)]
mod tests {
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
    fn an_agent_gone_with_replies_unread_is_the_end_not_an_error() {
        // A reply the agent never reads, then the agent is gone: the kernel reports the
        // spawner's next read as a reset connection (reading it clears it, so the setup
        // is shown on one pair and `receive` is given another).
        let gone_with_unread = || {
            let (agent, spawner) = UnixStream::pair().unwrap();
            (&spawner).write_all(b"unread reply").unwrap();
            drop(agent);
            spawner
        };
        let raw = rustix::net::recv(gone_with_unread(), &mut [0u8; 8], RecvFlags::empty());
        assert_eq!(
            raw.err(),
            Some(rustix::io::Errno::CONNRESET),
            "the setup resets"
        );
        let received = receive(&gone_with_unread());
        assert!(matches!(received, Ok(None)), "{:?}", received.err());
    }
}
