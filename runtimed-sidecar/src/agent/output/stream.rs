//! One output stream of an execution, shared by the pipe's reader (the program's side)
//! and by the readers of its output (Logs, ExecuteAndFollow).
//!
//! Backpressure: a reader registers as a [`Follower`] with its position. The pipe's
//! reader takes more from the pipe only while every attached follower is within
//! [`FollowLimits::buffer`] bytes past the retained tail's share of what it has not
//! read yet: beyond that it waits, the pipe fills and the program blocks in `write`,
//! as with a shell pipe. So a follower that keeps up gets every byte, whatever the
//! bound on what is retained. A follower that takes nothing for
//! [`FollowLimits::stall`] while the program waits for it is detached: the program
//! goes on, the bytes it had not read are dropped as for any reader (the bounded
//! middle), and its next read jumps over them, one gap, counted by its offsets. It is
//! attached again from there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{BoundedOutput, Mirror};
use crate::lock;

/// How far followers may fall behind and for how long the program waits for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowLimits {
    /// Bytes a follower may lag beyond the retained tail before the program waits.
    pub buffer: usize,
    /// How long the program waits for a follower that takes nothing before it is
    /// detached.
    pub stall: Duration,
}

/// One registered reader: where it reads next and whether the program waits for it.
#[derive(Debug)]
struct Cursor {
    id: u64,
    position: u64,
    attached: bool,
}

#[derive(Debug)]
struct Shared {
    buffer: BoundedOutput,
    cursors: Vec<Cursor>,
    next_id: u64,
}

impl Shared {
    /// The first position an attached follower still needs, if any does: its own (one
    /// that has read everything needs what comes next), or the tail's start when what
    /// it had not read is gone already.
    fn keep_from(&self) -> Option<u64> {
        let tail_start = self.buffer.tail_start();
        self.cursors
            .iter()
            .filter(|c| c.attached)
            .map(|c| c.position.max(tail_start))
            .min()
    }
}

/// One output stream of an execution.
#[derive(Debug)]
pub struct OutputStream {
    shared: Mutex<Shared>,
    limits: FollowLimits,
    tail_limit: usize,
    changed: watch::Sender<u64>,
    /// Woken when a follower reads or goes away (the pipe's reader may be waiting).
    progress: Notify,
    /// The copy of the stream to the agent's stdout, if the agent mirrors output.
    mirror: Option<Mutex<Mirror>>,
}

impl OutputStream {
    /// A stream keeping `limit` bytes (head and tail), its followers within `limits`.
    pub(crate) fn new(limit: usize, limits: FollowLimits) -> Self {
        Self {
            shared: Mutex::new(Shared {
                buffer: BoundedOutput::new(limit),
                cursors: Vec::new(),
                next_id: 0,
            }),
            limits,
            tail_limit: limit - limit / 2,
            changed: watch::Sender::new(0),
            progress: Notify::new(),
            mirror: None,
        }
    }

    /// [`OutputStream::new`], every byte pushed also written to `mirror` (see
    /// [`super::Mirror`]).
    pub(crate) fn mirrored(limit: usize, limits: FollowLimits, mirror: Option<Mirror>) -> Self {
        Self {
            mirror: mirror.map(Mutex::new),
            ..Self::new(limit, limits)
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BoundedOutput) -> T) -> T {
        f(&mut lock(&self.shared).buffer)
    }

    /// Appends bytes the program wrote, keeping what attached followers have not read
    /// (the caller waited for [`OutputStream::room`] first).
    pub(crate) fn push(&self, data: &[u8]) {
        let total = {
            let mut shared = lock(&self.shared);
            let keep_from = shared.keep_from();
            shared.buffer.push_keeping(data, keep_from);
            shared.buffer.total()
        };
        // Before the readers are told: the container log is never behind a Logs call.
        // Only the pipe's reader pushes, so records leave in the stream's order.
        if let Some(mirror) = &self.mirror {
            lock(mirror).write(data);
        }
        self.changed.send_replace(total);
    }

    pub(crate) fn close(&self) {
        self.with(BoundedOutput::close);
        if let Some(mirror) = &self.mirror {
            lock(mirror).end();
        }
        self.changed.send_modify(|_| {});
    }

    /// Bytes that can be pushed now without dropping any an attached follower has not
    /// read beyond its buffer (`usize::MAX` when no follower lags).
    fn room_now(&self, shared: &Shared) -> (usize, Option<u64>) {
        let Some(keep_from) = shared.keep_from() else {
            return (usize::MAX, None);
        };
        let capacity = (self.tail_limit as u64).saturating_add(self.limits.buffer as u64);
        let lag = shared.buffer.total().saturating_sub(keep_from);
        (capacity.saturating_sub(lag) as usize, Some(keep_from))
    }

    /// Waits until at least `wanted` bytes (or what the buffer can ever hold) can be
    /// pushed, and returns how many can. A follower that takes nothing for
    /// [`FollowLimits::stall`] meanwhile is detached (see the module's comment).
    pub(crate) async fn room(&self, wanted: usize) -> usize {
        let capacity = self.tail_limit.saturating_add(self.limits.buffer);
        let wanted = wanted.min(capacity).max(1);
        let mut slowest = None;
        let mut deadline = tokio::time::Instant::now() + self.limits.stall;
        loop {
            let (room, _) = self.room_now(&lock(&self.shared));
            if room >= wanted {
                return room;
            }
            let progressed = self.progress.notified();
            tokio::pin!(progressed);
            // Registered before the second look: a read right after it is not missed.
            progressed.as_mut().enable();
            let (room, keep_from) = self.room_now(&lock(&self.shared));
            if room >= wanted {
                return room;
            }
            if keep_from != slowest {
                // The slowest follower moved (or another is now the slowest).
                slowest = keep_from;
                deadline = tokio::time::Instant::now() + self.limits.stall;
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                self.detach_stalled();
            }
        }
    }

    /// Detaches every attached follower the program is waiting for that has not read
    /// for the whole stall: the slowest ones.
    fn detach_stalled(&self) {
        let mut shared = lock(&self.shared);
        let Some(keep_from) = shared.keep_from() else {
            return;
        };
        let (tail_start, total) = (shared.buffer.tail_start(), shared.buffer.total());
        for cursor in &mut shared.cursors {
            if cursor.attached
                && cursor.position < total
                && cursor.position.max(tail_start) == keep_from
            {
                cursor.attached = false;
                tracing::warn!(
                    position = cursor.position,
                    "a follower took no output for {:?}; the program goes on without it",
                    self.limits.stall
                );
            }
        }
    }

    /// A reader from `offset` on, that the program waits for while it keeps up.
    pub fn follow(self: &Arc<Self>, offset: u64) -> Follower {
        let mut shared = lock(&self.shared);
        let id = shared.next_id;
        shared.next_id += 1;
        shared.cursors.push(Cursor {
            id,
            position: offset,
            attached: true,
        });
        Follower {
            stream: self.clone(),
            id,
        }
    }

    /// Reads kept bytes at or after `offset` (see [`BoundedOutput::read`]) and whether
    /// the stream has ended. A reader that is not a [`Follower`]: the program does not
    /// wait for it.
    pub fn read(&self, offset: u64, max: usize) -> (Option<(u64, Vec<u8>)>, bool) {
        self.with(|b| (b.read(offset, max), b.is_closed()))
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// (total, dropped, truncated).
    pub fn stats(&self) -> (u64, u64, bool) {
        self.with(|b| (b.total(), b.dropped(), b.truncated()))
    }

    /// Every kept byte.
    pub fn kept_bytes(&self) -> Vec<u8> {
        self.with(|b| b.kept_bytes())
    }

    /// Bytes kept in memory.
    pub fn kept(&self) -> usize {
        self.with(|b| b.kept())
    }
}

/// A registered reader of an [`OutputStream`]; unregistered when dropped.
#[derive(Debug)]
pub struct Follower {
    stream: Arc<OutputStream>,
    id: u64,
}

impl Follower {
    /// Up to `max` bytes from where this follower is (jumping over bytes that are
    /// gone: the offset says where they start), and whether the stream has ended.
    /// Attaches it again if it was detached.
    pub fn read(&mut self, max: usize) -> (Option<(u64, Vec<u8>)>, bool) {
        let read = {
            let mut shared = lock(&self.stream.shared);
            let Some(index) = shared.cursors.iter().position(|c| c.id == self.id) else {
                return (None, true);
            };
            let position = shared.cursors[index].position;
            let read = shared.buffer.read(position, max);
            if let Some((at, data)) = &read {
                let cursor = &mut shared.cursors[index];
                cursor.position = at + data.len() as u64;
                cursor.attached = true;
                // What no follower needs any more goes back to the tail's share.
                let keep_from = shared.keep_from();
                shared.buffer.trim(keep_from);
            }
            (read, shared.buffer.is_closed())
        };
        self.stream.progress.notify_waiters();
        read
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        {
            let mut shared = lock(&self.stream.shared);
            shared.cursors.retain(|c| c.id != self.id);
            let keep_from = shared.keep_from();
            shared.buffer.trim(keep_from);
        }
        self.stream.progress.notify_waiters();
    }
}
