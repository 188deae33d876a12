//! Following one execution: its output to stdout and stderr as it comes (each line
//! prefixed with `[job/step]` for a Workflow step), then its final state
//! ([`super::result::Ending::of_run`] says what exit status that state means).

use std::io::Write;

use kruntimes_runtimed_api::proto;

use super::result::{Ending, Reason};
use crate::error::EXIT_PLATFORM_ERROR;

/// Exit status when krt's stdout is closed by its reader (`krt run ... | head`): 128 +
/// SIGPIPE, as a shell reports a pipeline member ended by it. The Run is cancelled.
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// A prefixed line longer than this is written in pieces of this size instead of being
/// held until its newline: a step that writes one huge line without a newline keeps
/// krt's memory flat. Below it, lines of concurrent steps never interleave.
pub(crate) const MAX_HELD_LINE_BYTES: usize = 64 * 1024;

/// Why following stopped before the execution's end.
#[derive(Debug)]
pub(crate) enum FollowError {
    /// The reader of krt's stdout went away.
    BrokenPipe,
    /// The call or the output failed.
    Failed(String),
}

/// Follows an ExecuteAndFollow call to its end: output to stdout and stderr, then the
/// Run's final state. Cancel-safe: `output` keeps what was received, so a caller that
/// drops the future (to handle a signal) calls it again and nothing is lost or repeated.
pub(crate) async fn follow(
    events: &mut tonic::Streaming<proto::ExecutionEvent>,
    output: &mut Output<'_>,
) -> Result<proto::Execution, FollowError> {
    use proto::execution_event::Event;
    while let Some(message) = events
        .message()
        .await
        .map_err(|s| FollowError::Failed(format!("following the Run: {}", s.message())))?
    {
        match message.event {
            Some(Event::Output(chunk)) => output.write(chunk)?,
            Some(Event::Ended(execution)) => output.ended = Some(execution),
            Some(Event::Started(_)) | None => {}
        }
    }
    output.finish()?;
    output
        .ended
        .take()
        .ok_or_else(|| FollowError::Failed("the call ended before the Run did".to_owned()))
}

/// Output chunks to stdout and stderr; with a prefix, whole lines, each prefixed. Bytes
/// runtimed dropped (a gap in the offsets) are counted and reported once at the end.
#[derive(Debug)]
pub(crate) struct Output<'a> {
    prefix: Option<&'a str>,
    ended: Option<proto::Execution>,
    next: [u64; 3],
    dropped: [u64; 3],
    partial: [Vec<u8>; 3],
    /// Whether the stream is in the middle of a line already written in part.
    mid_line: [bool; 3],
    /// krt's stdout is gone: the rest is read (to follow the cancelled Run to its end)
    /// and dropped.
    discard: bool,
}

impl<'a> Output<'a> {
    /// Output with every line prefixed with `[prefix] `, or as it comes.
    pub(crate) fn new(prefix: Option<&'a str>) -> Self {
        Self {
            prefix,
            ended: None,
            next: [0; 3],
            dropped: [0; 3],
            partial: Default::default(),
            mid_line: [false; 3],
            discard: false,
        }
    }

    /// From now on nothing is written: krt's stdout was closed, and the Run, cancelled,
    /// is followed to its end only so that krt ends after it.
    pub(crate) fn discard(&mut self) {
        self.discard = true;
        self.partial = Default::default();
    }

    pub(crate) fn write(&mut self, chunk: proto::LogChunk) -> Result<(), FollowError> {
        let index = chunk.stream.clamp(0, 2) as usize;
        if chunk.offset > self.next[index] {
            self.dropped[index] += chunk.offset - self.next[index];
        }
        self.next[index] = chunk.offset + chunk.data.len() as u64;
        if self.discard {
            return Ok(());
        }
        let Some(prefix) = self.prefix else {
            return write_stream(chunk.stream, &chunk.data);
        };
        let partial = &mut self.partial[index];
        partial.extend_from_slice(&chunk.data);
        let data = match partial.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let rest = partial.split_off(end + 1);
                let lines = std::mem::replace(partial, rest);
                let out = prefixed(prefix, &lines, self.mid_line[index]);
                self.mid_line[index] = false;
                out
            }
            None if partial.len() >= MAX_HELD_LINE_BYTES => {
                let piece = std::mem::take(partial);
                let out = if self.mid_line[index] {
                    piece
                } else {
                    prefixed(prefix, &piece, false)
                };
                self.mid_line[index] = true;
                out
            }
            None => return Ok(()),
        };
        write_stream(chunk.stream, &data)
    }

    /// The last line of each stream, when it had no newline; then one note per stream
    /// that lost bytes.
    pub(crate) fn finish(&mut self) -> Result<(), FollowError> {
        if self.discard {
            return Ok(());
        }
        if let Some(prefix) = self.prefix {
            for (index, rest) in self.partial.iter_mut().enumerate() {
                if !rest.is_empty() || self.mid_line[index] {
                    rest.push(b'\n');
                    let last = prefixed(prefix, rest, self.mid_line[index]);
                    rest.clear();
                    self.mid_line[index] = false;
                    write_stream(index as i32, &last)?;
                }
            }
        }
        let tag = self.prefix.map(|p| format!("[{p}] ")).unwrap_or_default();
        for (index, name) in [(1, "stdout"), (2, "stderr")] {
            if self.dropped[index] > 0 {
                let dropped = std::mem::take(&mut self.dropped[index]);
                eprintln!(
                    "krt run: {tag}{} bytes of {name} were dropped (over the Run's output bound, or written faster than it was read)",
                    dropped
                );
            }
        }
        Ok(())
    }
}

/// Complete lines, each prefixed with `[prefix] ` (the first one not, when it continues
/// a line already begun).
fn prefixed(prefix: &str, lines: &[u8], continues: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + prefix.len() + 3);
    for (i, line) in lines.split_inclusive(|b| *b == b'\n').enumerate() {
        if i > 0 || !continues {
            out.extend_from_slice(format!("[{prefix}] ").as_bytes());
        }
        out.extend_from_slice(line);
    }
    out
}

fn write_stream(stream: i32, data: &[u8]) -> Result<(), FollowError> {
    let written = if stream == proto::Stream::Stderr as i32 {
        let mut err = std::io::stderr().lock();
        err.write_all(data).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data).and_then(|()| out.flush())
    };
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => FollowError::BrokenPipe,
        _ => FollowError::Failed(format!("writing output: {e}")),
    })
}

/// Reports a Run's artifacts on stderr and folds their outcome into its `ending`: a
/// Run that succeeded but whose artifacts are not all in the store (the sidecar rolled
/// back what it had uploaded) ends with a platform error (1, `ArtifactsFailed`); a Run
/// that failed keeps its own status.
pub(crate) fn with_artifacts(
    ending: Ending,
    execution: &proto::Execution,
    label: Option<&str>,
) -> Ending {
    use proto::ArtifactsState;
    let tag = label.map(|l| format!("[{l}] ")).unwrap_or_default();
    let failure = match execution.artifacts_state() {
        ArtifactsState::Unspecified => return ending,
        ArtifactsState::Uploaded => {
            if execution.artifacts.is_empty() {
                eprintln!("krt run: {tag}artifacts: no file matched");
            }
            for artifact in &execution.artifacts {
                eprintln!(
                    "krt run: {tag}artifact {} uploaded as {} ({} bytes, sha256 {})",
                    artifact.path, artifact.key, artifact.size, artifact.sha256
                );
            }
            return ending;
        }
        ArtifactsState::Failed => format!(
            "{}: {}",
            execution.artifacts_reason, execution.artifacts_message
        ),
        state @ (ArtifactsState::Pending | ArtifactsState::Uploading) => {
            format!("still {} when the Run ended", state.as_str_name())
        }
    };
    let message = format!("artifacts not uploaded: {failure}");
    eprintln!("krt run: {tag}{message}");
    if ending.status != 0 {
        return ending;
    }
    Ending {
        status: EXIT_PLATFORM_ERROR,
        reason: Reason::ArtifactsFailed,
        message,
        ..ending
    }
}

#[cfg(test)]
mod tests {
    use super::prefixed;

    #[test]
    fn every_line_is_prefixed_but_a_continued_one() {
        assert_eq!(prefixed("a/b", b"x\ny\n", false), b"[a/b] x\n[a/b] y\n");
        assert_eq!(prefixed("a/b", b"x\ny\n", true), b"x\n[a/b] y\n");
    }
}
