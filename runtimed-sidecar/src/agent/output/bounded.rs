//! Bounded output of one stream: the first and the last bytes are kept, the middle is
//! dropped and counted, so memory stays flat whatever a program writes.

use std::collections::VecDeque;

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
    pub fn push(&mut self, data: &[u8]) {
        self.push_keeping(data, None);
    }

    /// Appends bytes the program wrote, dropping from the tail's front only bytes
    /// before `keep_from` (a follower's next position: see `super::stream`), so that
    /// the tail may hold more than its share until that follower has read them. The
    /// caller bounds how much more (see [`BoundedOutput::tail_len`]).
    pub fn push_keeping(&mut self, mut data: &[u8], keep_from: Option<u64>) {
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
        if keep_from.is_none() && data.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_limit..]);
            return;
        }
        self.tail.extend(data);
        self.trim(keep_from);
    }

    /// Drops the tail's oldest bytes beyond its share, but none at or after `keep_from`.
    pub fn trim(&mut self, keep_from: Option<u64>) {
        let overflow = self.tail.len().saturating_sub(self.tail_limit);
        let allowed = match keep_from {
            Some(position) => position.saturating_sub(self.tail_start()) as usize,
            None => usize::MAX,
        };
        self.tail.drain(..overflow.min(allowed));
    }

    /// The position of the first byte the tail holds.
    pub fn tail_start(&self) -> u64 {
        self.total - self.tail.len() as u64
    }

    /// Bytes the tail holds.
    pub fn tail_len(&self) -> usize {
        self.tail.len()
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
        let tail_start = self.tail_start();
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
    fn bytes_a_follower_has_not_read_are_kept_past_the_tails_share() {
        let mut out = BoundedOutput::new(4);
        out.push(b"ab");
        // The follower is at 2: nothing after it may go.
        out.push_keeping(b"cdefgh", Some(2));
        assert_eq!(out.kept_bytes(), b"abcdefgh");
        assert_eq!(out.dropped(), 0);
        // It read up to 6: the tail goes back to its share, but keeps 6 onwards.
        out.trim(Some(6));
        assert_eq!(out.kept_bytes(), b"abgh");
        assert_eq!(out.dropped(), 4);
        assert_eq!(out.read(2, 100), Some((6, b"gh".to_vec())));
    }

    #[test]
    fn one_huge_write_keeps_its_end() {
        let mut out = BoundedOutput::new(4);
        out.push(b"abcdefghij");
        assert_eq!(out.kept_bytes(), b"abij");
        assert_eq!(out.dropped(), 6);
    }
}
