//! A Run's status from what runtimed answers, pure: the phase mapping, the bounded
//! output tails kept for `krt logs` after the pod is gone, and the terminal fields.

use kruntimes_api::v1alpha1::{ArtifactStore, RunArtifactResult, RunOutput, RunPhase, RunStatus};
use kruntimes_runtimed_api::{Reason, proto};

use crate::reasons::RunReason;

/// Bytes of each stream's end kept in `status.output`: enough for the last lines of an
/// error, small enough that a Run object stays far below etcd's object size limit.
pub const MAX_TAIL_BYTES: usize = 4096;

/// Longest `status.message` written (the CRD allows 4096).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The ends of stdout and stderr, collected while the Run's output is followed.
#[derive(Debug, Default, Clone)]
pub struct Tails {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// A gap in the offsets was seen (runtimed dropped bytes).
    gap: bool,
    next: [u64; 3],
}

impl Tails {
    /// Adds one chunk of output.
    pub fn push(&mut self, chunk: &proto::LogChunk) {
        let index = chunk.stream.clamp(0, 2) as usize;
        if chunk.offset > self.next[index] {
            self.gap = true;
        }
        self.next[index] = chunk.offset + chunk.data.len() as u64;
        let tail = if chunk.stream == proto::Stream::Stderr as i32 {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        tail.extend_from_slice(&chunk.data);
        if tail.len() > 2 * MAX_TAIL_BYTES {
            tail.drain(..tail.len() - MAX_TAIL_BYTES);
        }
    }

    /// The tails as status, each cut to [`MAX_TAIL_BYTES`] at a character boundary;
    /// `truncated` when anything of either stream is not in them.
    pub fn to_output(&self, execution: &proto::Execution) -> RunOutput {
        let dropped = |s: &Option<proto::StreamStats>| {
            s.as_ref()
                .is_some_and(|s| s.truncated || s.dropped_bytes > 0)
        };
        let (stdout_tail, cut_out) = tail_text(&self.stdout);
        let (stderr_tail, cut_err) = tail_text(&self.stderr);
        RunOutput {
            stdout_tail,
            stderr_tail,
            truncated: self.gap
                || cut_out
                || cut_err
                || dropped(&execution.stdout)
                || dropped(&execution.stderr),
        }
    }
}

/// The last [`MAX_TAIL_BYTES`] of `bytes` as text (invalid UTF-8 replaced), starting at
/// a character boundary; and whether anything was cut.
fn tail_text(bytes: &[u8]) -> (String, bool) {
    let mut start = bytes.len().saturating_sub(MAX_TAIL_BYTES);
    // Skip continuation bytes so the tail starts at a character.
    while start < bytes.len() && start > 0 && (bytes[start] & 0b1100_0000) == 0b1000_0000 {
        start += 1;
    }
    (
        String::from_utf8_lossy(&bytes[start..]).into_owned(),
        start > 0,
    )
}

/// The Run phase of a terminal execution.
pub fn run_phase(execution: &proto::Execution) -> RunPhase {
    match proto::Phase::try_from(execution.phase) {
        Ok(proto::Phase::Succeeded) => RunPhase::Succeeded,
        Ok(proto::Phase::Failed) => RunPhase::Failed,
        Ok(proto::Phase::TimedOut) => RunPhase::TimedOut,
        Ok(proto::Phase::Cancelled) => RunPhase::Cancelled,
        Ok(proto::Phase::Running) => RunPhase::Running,
        Ok(proto::Phase::Error | proto::Phase::Unspecified) | Err(_) => RunPhase::Error,
    }
}

/// `text` cut to `max` bytes at a character boundary.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// RFC 3339 of a Unix time in milliseconds (runtimed's clock).
pub fn rfc3339_ms(unix_ms: u64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    let secs = i64::try_from(unix_ms / 1000).ok()?;
    let nanos = u32::try_from((unix_ms % 1000) * 1_000_000).ok()?;
    let time = k8s_openapi::jiff::Timestamp::new(secs, nanos as i32).ok()?;
    Some(time.to_string())
}

/// The status of a Run whose execution ended: phase, exit code, reason, message, times,
/// output tails, artifacts and the store they went to. `base` is the status written
/// when the Run started (pod, execution id, queue time), kept.
pub fn terminal_status(base: &RunStatus, execution: &proto::Execution, tails: &Tails) -> RunStatus {
    let phase = run_phase(execution);
    let mut status = base.clone();
    status.phase = Some(phase);
    status.exit_code = execution.exit_code.or(execution.signal.map(|s| 128 + s));
    let (reason, message) = agent_stopping(base, execution)
        .or_else(|| artifacts_override(execution))
        .unwrap_or_else(|| (execution.reason.clone(), execution.message.clone()));
    status.reason = (!reason.is_empty()).then_some(reason);
    status.message = (!message.is_empty()).then(|| bounded(&message, MAX_MESSAGE_BYTES));
    if status.start_time.is_none() {
        status.start_time = rfc3339_ms(execution.start_time_unix_ms);
    }
    status.completion_time = rfc3339_ms(execution.end_time_unix_ms);
    status.output = Some(tails.to_output(execution));
    if !execution.artifacts.is_empty() {
        status.artifacts = Some(
            execution
                .artifacts
                .iter()
                .map(|a| RunArtifactResult {
                    path: a.path.clone(),
                    key: a.key.clone(),
                    size: i64::try_from(a.size).unwrap_or(i64::MAX),
                    sha256: a.sha256.clone(),
                })
                .collect(),
        );
    }
    if let Some(store) = &execution.artifact_store
        && !store.bucket.is_empty()
    {
        status.artifact_store = Some(ArtifactStore {
            endpoint: store.endpoint.clone(),
            region: (!store.region.is_empty()).then(|| store.region.clone()),
            bucket: store.bucket.clone(),
            prefix: (!store.prefix.is_empty()).then(|| store.prefix.clone()),
            // runtimed never sees the Secret's name; the controller recorded it at
            // dispatch (the deletion of the objects reads it).
            credentials_secret_ref: base
                .artifact_store
                .as_ref()
                .and_then(|s| s.credentials_secret_ref.clone()),
        });
    }
    status
}

/// A Run that runtimed's agent ended because it was stopping (SIGTERM to it: the pod
/// deleted or evicted, its container stopped) lost its pod: nobody cancelled it, so it
/// is written `Error` with the controller's `PodLost`, as when the pod vanished.
fn agent_stopping(base: &RunStatus, execution: &proto::Execution) -> Option<(String, String)> {
    (execution.reason == Reason::AgentStopping.as_str()).then(|| {
        let pod = base.pod.as_deref().unwrap_or("of the Run");
        (
            RunReason::PodLost.as_str().to_owned(),
            format!(
                "runtimed's agent in pod {pod} was stopping (the pod deleted or evicted, or its container stopped) and ended the Run ({}): {}",
                Reason::AgentStopping,
                execution.message
            ),
        )
    })
}

/// A Run that succeeded but whose artifacts did not reach the store did not do what it
/// was asked: its reason and message say so (the phase stays what the program did).
fn artifacts_override(execution: &proto::Execution) -> Option<(String, String)> {
    (execution.artifacts_state() == proto::ArtifactsState::Failed).then(|| {
        (
            execution.artifacts_reason.clone(),
            format!(
                "the program ended ({}), but its artifacts were not uploaded: {}",
                execution.reason, execution.artifacts_message
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: proto::Stream, offset: u64, data: &[u8]) -> proto::LogChunk {
        proto::LogChunk {
            stream: stream as i32,
            offset,
            data: data.to_vec(),
        }
    }

    fn execution(phase: proto::Phase) -> proto::Execution {
        proto::Execution {
            phase: phase as i32,
            reason: "Completed".into(),
            start_time_unix_ms: 1_700_000_000_123,
            end_time_unix_ms: 1_700_000_001_456,
            ..Default::default()
        }
    }

    #[test]
    fn tails_keep_the_end_of_each_stream_apart() {
        let mut tails = Tails::default();
        tails.push(&chunk(proto::Stream::Stdout, 0, b"out\n"));
        tails.push(&chunk(proto::Stream::Stderr, 0, b"err\n"));
        let output = tails.to_output(&execution(proto::Phase::Succeeded));
        assert_eq!(output.stdout_tail, "out\n");
        assert_eq!(output.stderr_tail, "err\n");
        assert!(!output.truncated);
    }

    #[test]
    fn a_long_stream_keeps_its_last_bytes_and_says_it_was_cut() {
        let mut tails = Tails::default();
        let mut offset = 0;
        for _ in 0..100 {
            let data = "é".repeat(100);
            tails.push(&chunk(proto::Stream::Stdout, offset, data.as_bytes()));
            offset += data.len() as u64;
        }
        let output = tails.to_output(&execution(proto::Phase::Succeeded));
        assert!(output.stdout_tail.len() <= MAX_TAIL_BYTES);
        assert!(output.stdout_tail.len() >= MAX_TAIL_BYTES - 1);
        assert!(
            output.stdout_tail.chars().all(|c| c == 'é'),
            "cut inside a character"
        );
        assert!(output.truncated);
    }

    #[test]
    fn a_gap_in_the_offsets_marks_the_output_truncated() {
        let mut tails = Tails::default();
        tails.push(&chunk(proto::Stream::Stdout, 0, b"a"));
        tails.push(&chunk(proto::Stream::Stdout, 10, b"b"));
        assert!(
            tails
                .to_output(&execution(proto::Phase::Succeeded))
                .truncated
        );
    }

    #[test]
    fn terminal_status_carries_phase_code_reason_and_times() {
        let mut e = execution(proto::Phase::Failed);
        e.exit_code = Some(3);
        e.reason = "NonZeroExit".into();
        e.message = "exit code 3".into();
        let base = RunStatus {
            pod: Some("p".into()),
            ..Default::default()
        };
        let status = terminal_status(&base, &e, &Tails::default());
        assert_eq!(status.phase, Some(RunPhase::Failed));
        assert_eq!(status.exit_code, Some(3));
        assert_eq!(status.reason.as_deref(), Some("NonZeroExit"));
        assert_eq!(
            status.pod.as_deref(),
            Some("p"),
            "what was written at the start stays"
        );
        assert_eq!(
            status.start_time.as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            status.completion_time.as_deref(),
            Some("2023-11-14T22:13:21.456Z")
        );
    }

    #[test]
    fn a_signal_becomes_128_plus_its_number() {
        let mut e = execution(proto::Phase::Failed);
        e.signal = Some(9);
        assert_eq!(
            terminal_status(&RunStatus::default(), &e, &Tails::default()).exit_code,
            Some(137)
        );
    }

    #[test]
    fn a_run_ended_by_its_stopping_agent_is_a_lost_pod_not_a_cancel() {
        let mut e = execution(proto::Phase::Error);
        e.reason = "AgentStopping".into();
        e.message = "the agent ended it".into();
        e.signal = Some(15);
        let base = RunStatus {
            pod: Some("p0".into()),
            ..Default::default()
        };
        let status = terminal_status(&base, &e, &Tails::default());
        assert_eq!(status.phase, Some(RunPhase::Error));
        assert_eq!(status.reason.as_deref(), Some("PodLost"));
        let message = status.message.unwrap();
        assert!(
            message.contains("pod p0") && message.contains("AgentStopping"),
            "{message}"
        );
    }

    #[test]
    fn failed_artifacts_name_their_reason() {
        let mut e = execution(proto::Phase::Succeeded);
        e.artifacts_state = proto::ArtifactsState::Failed as i32;
        e.artifacts_reason = "ArtifactUploadFailed".into();
        e.artifacts_message = "bucket gone".into();
        let status = terminal_status(&RunStatus::default(), &e, &Tails::default());
        assert_eq!(status.phase, Some(RunPhase::Succeeded));
        assert_eq!(status.reason.as_deref(), Some("ArtifactUploadFailed"));
        assert!(status.message.unwrap().contains("bucket gone"));
    }

    #[test]
    fn the_recorded_credentials_secret_is_kept_with_the_store_runtimed_reports() {
        let mut e = execution(proto::Phase::Succeeded);
        e.artifacts = vec![proto::ArtifactResult {
            path: "out/a.txt".into(),
            key: "runs/u/out/a.txt".into(),
            size: 1,
            sha256: "00".into(),
        }];
        e.artifact_store = Some(proto::S3Store {
            endpoint: "https://s3.example".into(),
            bucket: "results".into(),
            prefix: "runs/".into(),
            ..Default::default()
        });
        let base = RunStatus {
            artifact_store: Some(ArtifactStore {
                endpoint: "https://s3.example".into(),
                bucket: "results".into(),
                credentials_secret_ref: Some(kruntimes_api::v1alpha1::LocalObjectReference {
                    name: "s3-creds".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = terminal_status(&base, &e, &Tails::default());
        let store = status.artifact_store.unwrap();
        assert_eq!(store.prefix.as_deref(), Some("runs/"));
        assert_eq!(store.credentials_secret_ref.unwrap().name, "s3-creds");
        assert_eq!(status.artifacts.unwrap()[0].key, "runs/u/out/a.txt");
        // Without a recorded store (a Run dispatched before it was recorded): no Secret.
        let bare = terminal_status(&RunStatus::default(), &e, &Tails::default());
        assert_eq!(bare.artifact_store.unwrap().credentials_secret_ref, None);
    }

    #[test]
    fn messages_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = bounded(&long, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
