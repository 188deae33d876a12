//! Bounded output of one stream: the first and the last bytes are kept, the middle is
//! dropped and counted, so memory stays flat whatever a program writes; and the
//! [`OutputStream`] an execution's readers share.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

/// The kept bytes of one stream. Offsets are positions in the full stream as written.
#[derive(Debug)]
pub struct BoundedOutput {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    closed: bool,
}

impl BoundedOutput {
    /// Keeps at most `limit` bytes: `limit / 2` from the head, the rest from the tail.
    pub fn new(limit: usize) -> Self {
        let head_limit = limit / 2;
        Self {
            head_limit,
            tail_limit: limit - head_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            closed: false,
        }
    }

    /// Appends bytes the program wrote.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.head.len() < self.head_limit {
            let n = (self.head_limit - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            self.total += n as u64;
            data = &data[n..];
        }
        if data.is_empty() {
            return;
        }
        self.total += data.len() as u64;
        if data.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_limit..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// Marks the end of the stream.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes written by the program.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes kept in memory.
    pub fn kept(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Bytes dropped from the middle.
    pub fn dropped(&self) -> u64 {
        self.total - self.kept() as u64
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped() > 0
    }

    /// Up to `max` kept bytes at or after `offset`, with the offset of the first one
    /// (later than `offset` when the bytes there were dropped); `None` when there is
    /// nothing at or after `offset` yet.
    pub fn read(&self, offset: u64, max: usize) -> Option<(u64, Vec<u8>)> {
        let head_len = self.head.len() as u64;
        if offset < head_len {
            let start = offset as usize;
            let end = self.head.len().min(start + max);
            return Some((offset, self.head[start..end].to_vec()));
        }
        let tail_start = self.total - self.tail.len() as u64;
        let start = offset.max(tail_start);
        if start >= self.total {
            return None;
        }
        let skip = (start - tail_start) as usize;
        let n = max.min(self.tail.len() - skip);
        Some((start, self.tail.range(skip..skip + n).copied().collect()))
    }

    /// Every kept byte, head then tail (the gap, if any, is not marked).
    pub fn kept_bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        out.extend(self.tail.iter());
        out
    }
}

/// One output stream of an execution.
#[derive(Debug)]
pub struct OutputStream {
    buffer: Mutex<BoundedOutput>,
    changed: watch::Sender<u64>,
}

impl OutputStream {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buffer: Mutex::new(BoundedOutput::new(limit)),
            changed: watch::Sender::new(0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BoundedOutput) -> T) -> T {
        let mut guard = match self.buffer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub(crate) fn push(&self, data: &[u8]) {
        let total = self.with(|b| {
            b.push(data);
            b.total()
        });
        self.changed.send_replace(total);
    }

    pub(crate) fn close(&self) {
        self.with(BoundedOutput::close);
        self.changed.send_modify(|_| {});
    }

    /// Reads kept bytes at or after `offset` (see [`BoundedOutput::read`]) and whether
    /// the stream has ended.
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

#[cfg(test)]
mod tests {
    use super::BoundedOutput;

    #[test]
    fn small_output_is_kept_whole() {
        let mut out = BoundedOutput::new(10);
        out.push(b"abc");
        out.push(b"defg");
        assert_eq!(out.kept_bytes(), b"abcdefg");
        assert!(!out.truncated());
        assert_eq!(out.read(0, 100), Some((0, b"abcde".to_vec())));
        assert_eq!(out.read(5, 100), Some((5, b"fg".to_vec())));
        assert_eq!(out.read(7, 100), None);
    }

    #[test]
    fn large_output_keeps_head_and_tail_and_counts_the_middle() {
        let mut out = BoundedOutput::new(10);
        for chunk in b"0123456789abcdefghijklmnopqrstuvwxyz".chunks(3) {
            out.push(chunk);
        }
        assert_eq!(out.total(), 36);
        assert_eq!(out.kept(), 10);
        assert_eq!(out.dropped(), 26);
        assert!(out.truncated());
        assert_eq!(out.kept_bytes(), b"01234vwxyz");
        // A reader inside the dropped middle jumps to the tail.
        assert_eq!(out.read(5, 100), Some((31, b"vwxyz".to_vec())));
        assert_eq!(out.read(33, 1), Some((33, b"x".to_vec())));
    }

    #[test]
    fn one_huge_write_keeps_its_end() {
        let mut out = BoundedOutput::new(4);
        out.push(b"abcdefghij");
        assert_eq!(out.kept_bytes(), b"abij");
        assert_eq!(out.dropped(), 6);
    }
}
