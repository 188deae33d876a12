//! The runtimed agent's output records, as a container log holds them (format in
//! docs/runtimed.md, "Output mirror"): one JSON object per line,
//! `{"krt":1,"run":UID,"stream":"stdout"|"stderr","offset":N,"data"|"base64":...}` or
//! `{..., "eof":true}`. [`Tracker`] keeps one Run's records in order: duplicates
//! dropped by offset, gaps passed on (the follower counts them), `eof` per stream.

use base64::Engine as _;
use serde::Deserialize;

/// The record format version this krt reads.
pub const RECORD_FORMAT_VERSION: u64 = 1;

/// One of a Run's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The program's stdout.
    Stdout,
    /// The program's stderr.
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Self::Stdout => 0,
            Self::Stderr => 1,
        }
    }

    /// runtimed's number for the stream (`proto::Stream`).
    pub fn proto(self) -> i32 {
        match self {
            Self::Stdout => kruntimes_runtimed_api::proto::Stream::Stdout as i32,
            Self::Stderr => kruntimes_runtimed_api::proto::Stream::Stderr as i32,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    krt: u64,
    run: String,
    stream: String,
    offset: u64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    eof: bool,
}

/// A record of one Run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The Run's execution id.
    pub run: String,
    /// The stream.
    pub stream: Stream,
    /// Offset of the first byte of `data` in the stream (of the end, for `eof`).
    pub offset: u64,
    /// The bytes (empty for `eof`).
    pub data: Vec<u8>,
    /// The stream has ended.
    pub eof: bool,
}

/// The record a log line holds, or `None` for any other line (the agent's own log
/// lines, a program's, records of a newer format, malformed ones): readers are lenient.
pub fn parse(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.first() != Some(&b'{') {
        return None;
    }
    let raw: Raw = serde_json::from_slice(line).ok()?;
    if raw.krt != RECORD_FORMAT_VERSION {
        return None;
    }
    let stream = match raw.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let data = match (raw.data, raw.base64, raw.eof) {
        (Some(text), None, false) => text.into_bytes(),
        (None, Some(encoded), false) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
        (None, None, true) => Vec::new(),
        _ => return None,
    };
    Some(Record {
        run: raw.run,
        stream,
        offset: raw.offset,
        data,
        eof: raw.eof,
    })
}

/// One Run's streams as its records arrive.
#[derive(Debug)]
pub struct Tracker {
    run: String,
    next: [u64; 2],
    ended: [bool; 2],
}

impl Tracker {
    /// Tracks the records of execution `run`.
    pub fn new(run: &str) -> Tracker {
        Tracker {
            run: run.to_owned(),
            next: [0; 2],
            ended: [false; 2],
        }
    }

    /// The new bytes `line` brings: `(stream, offset, bytes)`, the part already seen
    /// cut off; `None` for a line that is not this Run's record or brings nothing new.
    pub fn accept(&mut self, line: &[u8]) -> Option<(Stream, u64, Vec<u8>)> {
        let record = parse(line).filter(|r| r.run == self.run)?;
        let index = record.stream.index();
        if record.eof {
            self.ended[index] = true;
            return None;
        }
        let end = record.offset + record.data.len() as u64;
        if end <= self.next[index] {
            return None;
        }
        let skip = self.next[index].saturating_sub(record.offset) as usize;
        let offset = record.offset + skip as u64;
        self.next[index] = end;
        Some((record.stream, offset, record.data[skip..].to_vec()))
    }

    /// Whether both streams have sent `eof`.
    pub fn done(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// Bytes of each stream received so far (stdout, stderr).
    pub fn received(&self) -> [u64; 2] {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::{Stream, Tracker, parse};

    #[test]
    fn records_are_parsed_and_other_lines_ignored() {
        let text = parse(br#"{"krt":1,"run":"u","stream":"stdout","offset":0,"data":"hi\n"}"#);
        assert_eq!(text.unwrap().data, b"hi\n");
        let binary =
            parse(br#"{"krt":1,"run":"u","stream":"stderr","offset":3,"base64":"//79"}"#).unwrap();
        assert_eq!((binary.stream, binary.offset), (Stream::Stderr, 3));
        assert_eq!(binary.data, [0xff, 0xfe, 0xfd]);
        for other in [
            &b"2026-01-01 INFO agent started"[..],
            br#"{"krt":2,"run":"u","stream":"stdout","offset":0,"data":"x"}"#,
            br#"{"krt":1,"run":"u","stream":"stdin","offset":0,"data":"x"}"#,
            br#"{"krt":1,"run":"u","stream":"stdout","offset":0,"data":"x","base64":"eA=="}"#,
            br#"{"krt":1,"run":"u","stream":"stdout","offset":0}"#,
            br#"{"krt":1,"run":"u""#,
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_tracker_drops_duplicates_and_other_runs_and_sees_both_eofs() {
        let mut t = Tracker::new("u");
        let line = |run: &str, stream: &str, offset: u64, data: &str| {
            format!(
                r#"{{"krt":1,"run":"{run}","stream":"{stream}","offset":{offset},"data":"{data}"}}"#
            )
        };
        assert_eq!(
            t.accept(line("u", "stdout", 0, "abc").as_bytes()),
            Some((Stream::Stdout, 0, b"abc".to_vec()))
        );
        assert_eq!(t.accept(line("u", "stdout", 0, "abc").as_bytes()), None);
        assert_eq!(t.accept(line("other", "stdout", 3, "zzz").as_bytes()), None);
        // An overlap keeps only what is new.
        assert_eq!(
            t.accept(line("u", "stdout", 2, "cde").as_bytes()),
            Some((Stream::Stdout, 3, b"de".to_vec()))
        );
        // A gap is passed on with its offset.
        assert_eq!(
            t.accept(line("u", "stderr", 4, "e").as_bytes()),
            Some((Stream::Stderr, 4, b"e".to_vec()))
        );
        assert_eq!(t.received(), [5, 5]);
        assert!(!t.done());
        t.accept(br#"{"krt":1,"run":"u","stream":"stdout","offset":5,"eof":true}"#);
        assert!(!t.done());
        t.accept(br#"{"krt":1,"run":"other","stream":"stderr","offset":5,"eof":true}"#);
        assert!(!t.done());
        t.accept(br#"{"krt":1,"run":"u","stream":"stderr","offset":5,"eof":true}"#);
        assert!(t.done());
    }
}
