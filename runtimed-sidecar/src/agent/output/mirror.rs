//! The output mirror: every Run's output copied to the agent's own stdout, one JSON
//! record per line, so that the container log holds it and the Kubernetes `pods/log`
//! API serves it to anyone RBAC lets read that log (`krt run --wait`, `krt logs -f`).
//! The record format (version 1) is documented in docs/runtimed.md, "Output mirror":
//!
//! ```text
//! {"krt":1,"run":"<uid>","stream":"stdout","offset":0,"data":"hello\n"}
//! {"krt":1,"run":"<uid>","stream":"stderr","offset":12,"base64":"//79"}
//! {"krt":1,"run":"<uid>","stream":"stdout","offset":6,"eof":true}
//! ```
//!
//! Only the first `limit` bytes of a stream (runtimed's per-stream output limit) are
//! mirrored: a program that writes without end does not fill the node's disk through
//! its container log faster than through the agent's memory. The Run's status says
//! `truncated` when more was written.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;

/// The record format's version, the `krt` field of every record.
pub const MIRROR_FORMAT_VERSION: u32 = 1;

/// Raw bytes one record carries at most: container runtimes split log lines longer
/// than 16 KiB into several, which a reader would then see as broken JSON; 8 KiB of
/// base64 (10.7 KiB) plus the record's fields stays below that.
pub const MIRROR_CHUNK_BYTES: usize = 8 * 1024;

/// Where records go: the agent's stdout, or a buffer in tests.
#[derive(Debug, Clone)]
pub enum MirrorSink {
    /// The process's stdout (the container log when the agent is the container's PID 1).
    Stdout,
    /// Appended to a shared buffer.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl MirrorSink {
    /// Writes whole lines at once. Failures are not the Run's: a closed stdout stops
    /// the mirror, never the program.
    fn write_lines(&self, lines: &[u8]) -> bool {
        match self {
            // The std lock keeps a line whole against any other writer of stdout in
            // this process (the agent logs to stderr, so there should be none).
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(lines).and_then(|()| out.flush()).is_ok()
            }
            Self::Buffer(buffer) => {
                crate::lock(buffer).extend_from_slice(lines);
                true
            }
        }
    }
}

/// One record of the mirror.
#[derive(Debug, Serialize)]
struct Record<'a> {
    krt: u32,
    run: &'a str,
    stream: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    eof: bool,
}

/// The mirror of one stream of one Run.
#[derive(Debug)]
pub struct Mirror {
    sink: MirrorSink,
    run: String,
    stream: &'static str,
    /// Bytes mirrored so far: the offset of the next record.
    offset: u64,
    /// Bytes of the stream mirrored at most.
    limit: u64,
    ended: bool,
    /// Set when the sink failed: nothing more is written.
    broken: bool,
}

impl Mirror {
    /// A mirror of `stream` (`"stdout"` or `"stderr"`) of Run `run`, mirroring at most
    /// `limit` bytes.
    pub fn new(sink: MirrorSink, run: &str, stream: &'static str, limit: usize) -> Self {
        Self {
            sink,
            run: run.to_owned(),
            stream,
            offset: 0,
            limit: limit as u64,
            ended: false,
            broken: false,
        }
    }

    /// Mirrors the next bytes of the stream, as far as the limit allows.
    pub fn write(&mut self, data: &[u8]) {
        if self.ended || self.broken {
            return;
        }
        let room = self.limit.saturating_sub(self.offset);
        let data = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        if data.is_empty() {
            return;
        }
        let mut lines = Vec::with_capacity(data.len() + 128);
        for piece in pieces(data) {
            self.record(&mut lines, piece);
            self.offset += piece.len() as u64;
        }
        self.broken = !self.sink.write_lines(&lines);
    }

    /// Marks the end of the stream (once; later calls do nothing).
    pub fn end(&mut self) {
        if self.ended || self.broken {
            return;
        }
        self.ended = true;
        let mut line = Vec::new();
        self.push_line(
            &mut line,
            &Record {
                krt: MIRROR_FORMAT_VERSION,
                run: &self.run,
                stream: self.stream,
                offset: self.offset,
                data: None,
                base64: None,
                eof: true,
            },
        );
        self.broken = !self.sink.write_lines(&line);
    }

    fn record(&self, lines: &mut Vec<u8>, piece: &[u8]) {
        let (data, base64) = match std::str::from_utf8(piece) {
            Ok(text) => (Some(text), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(piece)),
            ),
        };
        let record = Record {
            krt: MIRROR_FORMAT_VERSION,
            run: &self.run,
            stream: self.stream,
            offset: self.offset,
            data,
            base64,
            eof: false,
        };
        self.push_line(lines, &record);
    }

    fn push_line(&self, lines: &mut Vec<u8>, record: &Record<'_>) {
        // Serializing strings, numbers and bools cannot fail; were it to, the record
        // is left out and the reader sees a gap in the offsets.
        if serde_json::to_writer(&mut *lines, record).is_ok() {
            lines.push(b'\n');
        }
    }
}

/// `data` cut into pieces of at most [`MIRROR_CHUNK_BYTES`], each cut moved back to a
/// character boundary when the text there is UTF-8, so that text stays readable text
/// (`data`) instead of becoming base64 around every cut.
fn pieces(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let mut end = data.len().min(MIRROR_CHUNK_BYTES);
        if end < data.len() {
            // A UTF-8 character is at most 4 bytes: a continuation byte (10xxxxxx) at
            // the cut means the cut is inside one; step back to its first byte.
            let back = (0..4)
                .take_while(|i| end > *i && data[end - i] & 0xC0 == 0x80)
                .count();
            if back < 4 && end > back {
                end -= back;
            }
        }
        let (piece, rest) = data.split_at(end);
        data = rest;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use base64::Engine;
    use serde_json::Value;

    use super::{MIRROR_CHUNK_BYTES, Mirror, MirrorSink};

    fn mirror(limit: usize) -> (Mirror, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = MirrorSink::Buffer(buffer.clone());
        (Mirror::new(sink, "uid-1", "stdout", limit), buffer)
    }

    fn records(buffer: &Mutex<Vec<u8>>) -> Vec<Value> {
        let bytes = buffer.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The raw bytes of a data record, from `data` or `base64`.
    fn raw(record: &Value) -> Vec<u8> {
        match (record.get("data"), record.get("base64")) {
            (Some(Value::String(text)), None) => text.as_bytes().to_vec(),
            (None, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            other => panic!("exactly one of data and base64: {other:?} in {record}"),
        }
    }

    #[test]
    fn text_is_mirrored_as_data_with_offsets_and_one_eof() {
        let (mut m, buffer) = mirror(1 << 20);
        m.write(b"hello\n");
        m.write(b"world\n");
        m.end();
        m.end();
        let got = records(&buffer);
        assert_eq!(
            got,
            vec![
                serde_json::json!({"krt":1,"run":"uid-1","stream":"stdout","offset":0,"data":"hello\n"}),
                serde_json::json!({"krt":1,"run":"uid-1","stream":"stdout","offset":6,"data":"world\n"}),
                serde_json::json!({"krt":1,"run":"uid-1","stream":"stdout","offset":12,"eof":true}),
            ]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_mirrored_as_base64() {
        let (mut m, buffer) = mirror(1 << 20);
        m.write(b"ok");
        m.write(&[0xff, 0xfe, 0xfd]);
        let got = records(&buffer);
        assert_eq!(got[0]["data"], "ok");
        assert_eq!(got[1]["base64"], "//79");
        assert_eq!(got[1]["offset"], 2);
        assert!(got[1].get("data").is_none());
    }

    #[test]
    fn large_writes_are_split_at_8_kib_and_at_character_boundaries() {
        let (mut m, buffer) = mirror(1 << 20);
        // One ASCII byte first, then 3-byte characters: the 8 KiB cut falls inside one.
        let mut text = String::from("a");
        while text.len() < 3 * MIRROR_CHUNK_BYTES {
            text.push('€');
        }
        m.write(text.as_bytes());
        m.end();
        let got = records(&buffer);
        let mut joined = Vec::new();
        for record in &got[..got.len() - 1] {
            assert_eq!(record["offset"], joined.len() as u64, "{record}");
            let bytes = raw(record);
            assert!(bytes.len() <= MIRROR_CHUNK_BYTES, "{}", bytes.len());
            assert!(
                record.get("data").is_some(),
                "cut inside a character: {record}"
            );
            joined.extend(bytes);
        }
        assert!(got.len() >= 4, "{} records", got.len());
        assert_eq!(joined, text.as_bytes());
        assert_eq!(got.last().unwrap()["offset"], text.len() as u64);
        assert_eq!(got.last().unwrap()["eof"], true);
    }

    #[test]
    fn binary_output_is_split_at_exactly_8_kib() {
        let (mut m, buffer) = mirror(1 << 20);
        let binary = vec![0x80u8; MIRROR_CHUNK_BYTES + 1];
        m.write(&binary);
        let got = records(&buffer);
        assert_eq!(got.len(), 2);
        assert_eq!(raw(&got[0]).len(), MIRROR_CHUNK_BYTES);
        assert_eq!(got[1]["offset"], MIRROR_CHUNK_BYTES as u64);
        assert_eq!(raw(&got[1]), vec![0x80]);
    }

    #[test]
    fn nothing_past_the_per_stream_limit_is_mirrored() {
        let (mut m, buffer) = mirror(10);
        m.write(b"0123456");
        m.write(b"789abc");
        m.write(b"def");
        m.end();
        let got = records(&buffer);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["data"], "0123456");
        assert_eq!(got[1]["data"], "789");
        assert_eq!(got[1]["offset"], 7);
        // The eof's offset is what was mirrored, the limit.
        assert_eq!(got[2]["offset"], 10);
        assert_eq!(got[2]["eof"], true);
    }

    #[test]
    fn each_stream_has_its_own_offsets_and_eof() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = MirrorSink::Buffer(buffer.clone());
        let mut out = Mirror::new(sink.clone(), "r", "stdout", 100);
        let mut err = Mirror::new(sink, "r", "stderr", 100);
        out.write(b"abc");
        err.write(b"x");
        out.end();
        err.write(b"yz");
        err.end();
        let got: Vec<(String, u64, bool)> = records(&buffer)
            .iter()
            .map(|r| {
                (
                    r["stream"].as_str().unwrap().to_owned(),
                    r["offset"].as_u64().unwrap(),
                    r.get("eof").is_some(),
                )
            })
            .collect();
        let expected = [
            ("stdout", 0, false),
            ("stderr", 0, false),
            ("stdout", 3, true),
            ("stderr", 1, false),
            ("stderr", 3, true),
        ];
        let expected: Vec<(String, u64, bool)> = expected
            .iter()
            .map(|(s, o, e)| ((*s).to_owned(), *o, *e))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn an_output_stream_mirrors_what_is_pushed_and_ends_once() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let limits = crate::agent::output::FollowLimits {
            buffer: 1024,
            stall: std::time::Duration::from_secs(1),
        };
        let sink = MirrorSink::Buffer(buffer.clone());
        let stream = crate::agent::output::OutputStream::mirrored(
            64,
            limits,
            Some(Mirror::new(sink, "r", "stderr", 64)),
        );
        stream.push(b"one\n");
        // Closed twice (a start failure and the end of supervision both close).
        stream.close();
        stream.close();
        let got = records(&buffer);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0]["data"], "one\n");
        assert_eq!(got[0]["stream"], "stderr");
        assert_eq!(got[1]["eof"], true);
        assert_eq!(got[1]["offset"], 4);
    }
}
