//! The agent's handle on its spawner process: requests sent with their descriptors,
//! answers and exits read by a thread of their own and delivered to the waiting Runs.

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::sync::oneshot;

use super::{
    HAS_STDIN, HEADER_BYTES, Launch, MAX_REPLY_MESSAGE_BYTES, REPLY_EXITED, REPLY_FAILED,
    REPLY_HEADER_BYTES, REPLY_SIGNALED, REPLY_SPAWNED, check_request_len, encode_request,
};
use crate::agent::reaper::{Exit, Reaper};
use crate::lock;
use kruntimes_preexec::confine_before_exec;

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
/// processes, which [`crate::agent::procs`] walks as if they were this process's own.
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
        confine_before_exec(&mut command);
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
        // Over the spawner's limit is over what exec accepts too: the same error as the
        // kernel's, so that the Run fails the same way either side of the limit.
        check_request_len(body.len()).map_err(|_| io::Error::from(Errno::E2BIG))?;
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
