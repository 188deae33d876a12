//! One dispatched Run: `ExecuteAndFollow` on its pod's sidecar, the `Running` write
//! when runtimed accepted it, the output tails, the terminal write. A Run that provably
//! never reached runtimed goes back to the queue; one that may have started is only
//! ever followed again on the same pod (Execute is idempotent on the Run's uid), never
//! started elsewhere.

use std::time::{Duration, Instant};

use kruntimes_api::v1alpha1::{RunPhase, RunStatus};
use kruntimes_runtimed_api::client::{TlsClient, TlsTarget, connect_tls};
use kruntimes_runtimed_api::{REASON_METADATA, proto};
use tokio::sync::watch;

use super::{
    CONNECT_TIMEOUT, DISPATCH_BACKOFF, Dispatcher, MAX_DISPATCH_ATTEMPTS, MAX_FOLLOW_MISSES,
    PodTarget, RuntimeKey, Submission, target,
};
use crate::metrics::{PhaseLabels, PhaseReasonLabels};
use crate::reasons::RunReason;
use crate::run_status::{MAX_MESSAGE_BYTES, Tails, bounded, terminal_status};

/// How a Run's task ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Its terminal status was written (or could not be: the reconciler retries).
    Done(String),
    /// It never reached runtimed: queue it again.
    Retry(Box<Submission>),
}

impl Outcome {
    pub(super) fn uid(&self) -> &str {
        match self {
            Self::Done(uid) => uid,
            Self::Retry(s) => &s.key.uid,
        }
    }
}

/// Why one attempt at following stopped.
enum Stop {
    /// The terminal status is known.
    Ended(Box<RunStatus>),
    /// The call failed; try again (on the same pod).
    Miss(String),
    /// runtimed refused the request.
    Refused(String),
}

/// The uids of the executions `target` runs now.
pub(super) async fn running_executions(target: &TlsTarget) -> Result<Vec<String>, String> {
    let mut client = connect_tls(target, CONNECT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let list = client
        .list(proto::ListRequest {})
        .await
        .map_err(|s| s.message().to_owned())?;
    Ok(list
        .into_inner()
        .executions
        .into_iter()
        .filter(|e| e.phase == proto::Phase::Running as i32)
        .map(|e| e.run_uid)
        .collect())
}

/// Whether a Run's task has written `Running` (or found it written), and how often
/// following failed in a row.
struct Progress {
    started: bool,
    misses: u32,
    attempts: u32,
}

impl Dispatcher {
    /// Drives one Run on `pod` to its end.
    pub(super) async fn run(
        &self,
        runtime: &RuntimeKey,
        pod: &str,
        submission: Submission,
        mut cancelled: watch::Receiver<bool>,
    ) -> Outcome {
        let uid = submission.key.uid.clone();
        let mut status = submission.status.clone();
        let mut progress = Progress {
            started: submission.running_on.is_some(),
            misses: 0,
            attempts: 0,
        };
        loop {
            let client = match self.connect(runtime, pod).await {
                Ok(client) => client,
                Err(message) if !progress.started => {
                    return self.retry_or_fail(submission, &mut status, message).await;
                }
                Err(message) => {
                    if let Some(done) = self
                        .missed(
                            runtime,
                            pod,
                            &submission,
                            &mut status,
                            &mut progress,
                            message,
                        )
                        .await
                    {
                        return done;
                    }
                    continue;
                }
            };
            let mut client = client;
            if progress.started || progress.attempts > 0 {
                // It may have started: follow it only if runtimed still knows it.
                match client
                    .status(proto::StatusRequest {
                        execution_id: uid.clone(),
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound && !progress.started => {
                        return self
                            .retry_or_fail(submission, &mut status, s.message().to_owned())
                            .await;
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        let message = "runtimed no longer knows the execution (its agent restarted); it is not started again, since it may have run".to_owned();
                        return self
                            .fail(&submission, &mut status, RunReason::ExecutionLost, message)
                            .await;
                    }
                    Err(s) => {
                        if let Some(done) = self
                            .missed(
                                runtime,
                                pod,
                                &submission,
                                &mut status,
                                &mut progress,
                                s.message().to_owned(),
                            )
                            .await
                        {
                            return done;
                        }
                        continue;
                    }
                }
            }
            progress.attempts += 1;
            match self
                .follow(
                    &mut client,
                    pod,
                    &submission,
                    &mut status,
                    &mut progress,
                    &mut cancelled,
                )
                .await
            {
                Stop::Ended(terminal) => {
                    self.write(&submission, &terminal).await;
                    return Outcome::Done(uid);
                }
                Stop::Refused(message) => {
                    return self
                        .fail(&submission, &mut status, RunReason::ExecuteRefused, message)
                        .await;
                }
                Stop::Miss(message) => {
                    if let Some(done) = self
                        .missed(
                            runtime,
                            pod,
                            &submission,
                            &mut status,
                            &mut progress,
                            message,
                        )
                        .await
                    {
                        return done;
                    }
                }
            }
        }
    }

    async fn connect(&self, runtime: &RuntimeKey, pod: &str) -> Result<TlsClient, String> {
        let (Some(credentials), Some(ip)) = (self.credentials(runtime), self.pod_ip(runtime, pod))
        else {
            return Err(format!("pod {pod} has no IP or its Runtime no credentials"));
        };
        let pod_target = PodTarget {
            name: pod.to_owned(),
            ip,
            ready: true,
            terminating: false,
        };
        connect_tls(&target(&pod_target, &credentials), CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
    }

    /// One `ExecuteAndFollow` call, to the execution's end or the call's failure.
    async fn follow(
        &self,
        client: &mut TlsClient,
        pod: &str,
        submission: &Submission,
        status: &mut RunStatus,
        progress: &mut Progress,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Stop {
        use proto::execution_event::Event;
        let mut events = match client.execute_and_follow(submission.request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(s) if is_refusal(&s) => return Stop::Refused(refusal(&s)),
            Err(s) => return Stop::Miss(s.message().to_owned()),
        };
        let mut tails = Tails::default();
        let mut cancel_sent = false;
        let called = Instant::now();
        loop {
            let message = tokio::select! {
                message = events.message() => message,
                changed = cancelled.changed(), if !cancel_sent => {
                    if changed.is_ok() && *cancelled.borrow() {
                        cancel_sent = true;
                        let _ = client
                            .cancel(proto::CancelRequest { execution_id: submission.key.uid.clone(), grace_ms: 0 })
                            .await;
                    }
                    continue;
                }
            };
            match message {
                Ok(Some(event)) => match event.event {
                    Some(Event::Started(started)) => {
                        if !progress.started {
                            self.metrics()
                                .dispatch_latency
                                .observe(called.elapsed().as_secs_f64());
                            status.phase = Some(RunPhase::Running);
                            status.pod = Some(pod.to_owned());
                            status.execution_id = Some(started.execution_id.clone());
                            status.start_time = Some(now());
                            self.write(submission, status).await;
                            progress.started = true;
                        }
                        progress.misses = 0;
                    }
                    Some(Event::Output(chunk)) => tails.push(&chunk),
                    Some(Event::Ended(execution)) => {
                        return Stop::Ended(Box::new(terminal_status(status, &execution, &tails)));
                    }
                    None => {}
                },
                Ok(None) => return Stop::Miss("the call ended before the Run did".into()),
                Err(s) => return Stop::Miss(s.message().to_owned()),
            }
        }
    }

    /// One more failed attempt at a Run that may have started: gives up with `Error`
    /// once its pod is gone or after [`MAX_FOLLOW_MISSES`]; else waits and says to try
    /// again (`None`).
    async fn missed(
        &self,
        runtime: &RuntimeKey,
        pod: &str,
        submission: &Submission,
        status: &mut RunStatus,
        progress: &mut Progress,
        message: String,
    ) -> Option<Outcome> {
        progress.misses += 1;
        if !self.pod_alive(runtime, pod) {
            let message = format!("pod {pod} went away while the Run ran: {message}");
            return Some(
                self.fail(submission, status, RunReason::PodLost, message)
                    .await,
            );
        }
        if progress.misses > MAX_FOLLOW_MISSES {
            let message = format!(
                "runtimed in pod {pod} did not answer {MAX_FOLLOW_MISSES} times in a row: {message}"
            );
            return Some(
                self.fail(submission, status, RunReason::RuntimedUnreachable, message)
                    .await,
            );
        }
        tokio::time::sleep(backoff(progress.misses)).await;
        None
    }

    /// A Run that never reached runtimed: again, after a backoff, or `Error` once every
    /// attempt failed.
    async fn retry_or_fail(
        &self,
        mut submission: Submission,
        status: &mut RunStatus,
        message: String,
    ) -> Outcome {
        let tries = submission.attempts + 1;
        if tries >= MAX_DISPATCH_ATTEMPTS {
            let message =
                format!("{MAX_DISPATCH_ATTEMPTS} dispatch attempts failed; the last: {message}");
            return self
                .fail(&submission, status, RunReason::DispatchFailed, message)
                .await;
        }
        tracing::info!(run = %submission.key.name, %message, "dispatch failed before runtimed accepted the Run; queued again");
        tokio::time::sleep(backoff(tries)).await;
        submission.running_on = None;
        submission.attempts = tries;
        Outcome::Retry(Box::new(submission))
    }

    async fn fail(
        &self,
        submission: &Submission,
        status: &mut RunStatus,
        reason: RunReason,
        message: String,
    ) -> Outcome {
        status.phase = Some(RunPhase::Error);
        status.reason = Some(reason.as_str().to_owned());
        status.message = Some(bounded(&message, MAX_MESSAGE_BYTES));
        status.completion_time = Some(now());
        self.write(submission, status).await;
        Outcome::Done(submission.key.uid.clone())
    }

    async fn write(&self, submission: &Submission, status: &RunStatus) {
        if let Some(phase) = status.phase.filter(|p| p.is_terminal()) {
            self.count_end(phase, status);
        }
        if let Err(e) = self.inner.sink.write(&submission.key, status).await {
            // The Run reconciler sees the Run unchanged and tries again; the execution
            // itself is idempotent on the uid.
            tracing::warn!(run = %submission.key.name, error = %e, "cannot write the Run's status");
        }
    }
}

impl Dispatcher {
    fn count_end(&self, phase: RunPhase, status: &RunStatus) {
        let phase = format!("{phase:?}");
        let reason = status.reason.clone().unwrap_or_default();
        self.metrics()
            .runs_total
            .get_or_create(&PhaseReasonLabels {
                phase: phase.clone(),
                reason,
            })
            .inc();
        let started = status
            .start_time
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let Some(started) = started {
            let seconds = k8s_openapi::jiff::Timestamp::now()
                .duration_since(started)
                .as_secs_f64()
                .max(0.0);
            self.metrics()
                .run_duration
                .get_or_create(&PhaseLabels { phase })
                .observe(seconds);
        }
    }
}

/// Whether runtimed refused the request itself (as opposed to the call failing).
fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
    ) || status.metadata().get(REASON_METADATA).is_some()
}

fn refusal(status: &tonic::Status) -> String {
    match status
        .metadata()
        .get(REASON_METADATA)
        .and_then(|v| v.to_str().ok())
    {
        Some(reason) => format!("{reason}: {}", status.message()),
        None => status.message().to_owned(),
    }
}

/// The wait before attempt `n` (1-based): [`DISPATCH_BACKOFF`] doubled each time, at
/// most 10 s.
fn backoff(n: u32) -> Duration {
    (DISPATCH_BACKOFF * 2u32.saturating_pow(n.saturating_sub(1))).min(Duration::from_secs(10))
}

/// Now, RFC 3339.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
