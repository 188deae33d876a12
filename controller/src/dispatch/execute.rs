//! One dispatched Run: `ExecuteAndFollow` on its pod's sidecar, the `Running` write
//! when runtimed accepted it, the output tails, the terminal write. A Run that provably
//! never reached runtimed goes back to the queue; one that may have started is only
//! ever followed again on the same pod (Execute is idempotent on the Run's uid), never
//! started elsewhere.

use std::time::{Duration, Instant};

use kruntimes_api::v1alpha1::{RunPhase, RunStatus};
use kruntimes_runtimed_api::client::{TlsClient, TlsTarget, connect_tls};
use kruntimes_runtimed_api::{DEFAULT_TIMEOUT_MS, REASON_METADATA, proto};
use tokio::sync::watch;

use super::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, Connection, DISPATCH_BACKOFF, Dispatcher, MAX_DISPATCH_ATTEMPTS,
    MAX_FOLLOW_MISSES, PodTarget, RuntimeKey, Submission, target,
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
    let list = bounded_call(client.list(proto::ListRequest {}))
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

/// Whether a Run's task has written `Running` (or found it written), how often
/// following failed in a row, and where the Run's deadline is published once known.
struct Progress {
    started: bool,
    misses: u32,
    attempts: u32,
    /// When the Run must have ended (on this process's monotonic clock): its start,
    /// its timeout and the dispatcher's deadline grace. `None` until it started.
    deadline: watch::Sender<Option<Instant>>,
}

/// How driving a Run stopped, before its terminal status is written.
enum Driven {
    /// runtimed reported its end: this status.
    Ended(Box<RunStatus>),
    /// It ends `Error` with this reason and message.
    Failed(RunReason, String),
    /// It provably never reached runtimed (the message says why).
    NotStarted(String),
}

impl Dispatcher {
    /// Drives one Run on `pod` to its end, and writes that end; past the Run's
    /// deadline, a pod whose runtimed does not answer ends it `Error` (see
    /// [`Dispatcher::watch_deadline`]).
    pub(super) async fn run(
        &self,
        runtime: &RuntimeKey,
        pod: &str,
        submission: Submission,
        cancelled: watch::Receiver<bool>,
    ) -> Outcome {
        let mut status = submission.status.clone();
        let (deadline, deadline_rx) = watch::channel(None);
        if submission.running_on.is_some() {
            // Re-attached after a restart: its deadline runs from its recorded start.
            deadline.send_replace(self.deadline_from_start(&submission.request, &status));
        }
        let progress = Progress {
            started: submission.running_on.is_some(),
            misses: 0,
            attempts: 0,
            deadline,
        };
        let driven = tokio::select! {
            biased;
            driven = self.drive(runtime, pod, &submission, &mut status, progress, cancelled) => driven,
            driven = self.watch_deadline(runtime, pod, &submission, deadline_rx) => driven,
        };
        match driven {
            Driven::Ended(terminal) => {
                self.write(&submission, &terminal).await;
                Outcome::Done(submission.key.uid.clone())
            }
            Driven::Failed(reason, message) => {
                self.fail(&submission, &mut status, reason, message).await
            }
            Driven::NotStarted(message) => {
                self.retry_or_fail(submission, &mut status, message).await
            }
        }
    }

    /// The follow loop of one Run: connect, confirm, follow, again after a miss.
    async fn drive(
        &self,
        runtime: &RuntimeKey,
        pod: &str,
        submission: &Submission,
        status: &mut RunStatus,
        mut progress: Progress,
        mut cancelled: watch::Receiver<bool>,
    ) -> Driven {
        let uid = submission.key.uid.clone();
        loop {
            let mut client = match self.connect(runtime, pod).await {
                Ok(client) => client,
                Err(message) if !progress.started => return Driven::NotStarted(message),
                Err(message) => {
                    if let Some(done) = self.missed(runtime, pod, &mut progress, message).await {
                        return done;
                    }
                    continue;
                }
            };
            if progress.started || progress.attempts > 0 {
                // It may have started: follow it only if runtimed still knows it.
                let request = proto::StatusRequest {
                    execution_id: uid.clone(),
                };
                match bounded_call(client.status(request)).await {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound && !progress.started => {
                        return Driven::NotStarted(s.message().to_owned());
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        let message = "runtimed no longer knows the execution (its agent restarted); it is not started again, since it may have run".to_owned();
                        return Driven::Failed(RunReason::ExecutionLost, message);
                    }
                    Err(s) => {
                        let message = s.message().to_owned();
                        if let Some(done) = self.missed(runtime, pod, &mut progress, message).await
                        {
                            return done;
                        }
                        continue;
                    }
                }
            }
            progress.attempts += 1;
            let stop = self
                .follow(
                    &mut client,
                    pod,
                    submission,
                    status,
                    &mut progress,
                    &mut cancelled,
                )
                .await;
            match stop {
                Stop::Ended(terminal) => return Driven::Ended(terminal),
                Stop::Refused(message) => {
                    return Driven::Failed(RunReason::ExecuteRefused, message);
                }
                Stop::Miss(message) => {
                    if let Some(done) = self.missed(runtime, pod, &mut progress, message).await {
                        return done;
                    }
                }
            }
        }
    }

    /// When a Run that started now must have ended: its timeout (runtimed's default
    /// when it has none) and the deadline grace from now.
    fn deadline_from_now(&self, request: &proto::ExecuteRequest) -> Instant {
        Instant::now() + run_timeout(request) + self.inner.deadline_grace
    }

    /// The deadline of a Run re-attached after a restart, from its recorded
    /// `startTime` (now, when it has none or it cannot be read).
    fn deadline_from_start(
        &self,
        request: &proto::ExecuteRequest,
        status: &RunStatus,
    ) -> Option<Instant> {
        let started = status
            .start_time
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        let Some(started) = started else {
            return Some(self.deadline_from_now(request));
        };
        let elapsed = k8s_openapi::jiff::Timestamp::now()
            .duration_since(started)
            .as_secs_f64()
            .max(0.0);
        let left = (run_timeout(request) + self.inner.deadline_grace)
            .saturating_sub(Duration::from_secs_f64(elapsed));
        Some(Instant::now() + left)
    }

    /// Waits for the Run's deadline, then asks its pod's runtimed (on a new
    /// connection, within [`CONNECT_TIMEOUT`] and [`CALL_TIMEOUT`]) whether it still
    /// answers. A pod that does not ends the Run `Error` / `RuntimedUnreachable`: its
    /// deadline passed and nobody can say how it ended. One that answers keeps the
    /// Run followed (runtimed ends it at its timeout itself); asked again after
    /// another grace.
    async fn watch_deadline(
        &self,
        runtime: &RuntimeKey,
        pod: &str,
        submission: &Submission,
        mut deadline: watch::Receiver<Option<Instant>>,
    ) -> Driven {
        let known = deadline.wait_for(Option::is_some).await.map(|d| *d);
        let Ok(Some(mut at)) = known else {
            // The Run's task ends without a deadline (it never started).
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep_until(at.into()).await;
            if !self.pod_alive(runtime, pod) {
                let message =
                    format!("pod {pod} went away while the Run ran, and its deadline passed");
                return Driven::Failed(RunReason::PodLost, message);
            }
            let answer = match self.connect(runtime, pod).await {
                Ok(mut client) => {
                    let request = proto::StatusRequest {
                        execution_id: submission.key.uid.clone(),
                    };
                    match bounded_call(client.status(request)).await {
                        // runtimed answered, knowing the execution or not.
                        Ok(_) => Ok(()),
                        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                        Err(s) => Err(s.message().to_owned()),
                    }
                }
                Err(message) => Err(message),
            };
            match answer {
                Ok(()) => at = Instant::now() + self.inner.deadline_grace,
                Err(message) => {
                    let timeout = run_timeout(&submission.request);
                    let message = format!(
                        "the Run's deadline passed (its timeout {timeout:?} from its start, plus {:?}) and runtimed in pod {pod} does not answer ({message}); how the Run ended is unknown",
                        self.inner.deadline_grace
                    );
                    return Driven::Failed(RunReason::RuntimedUnreachable, message);
                }
            }
        }
    }

    /// Forgets the execution `uid` in the runtimed of `pod` (its workspace and
    /// retained output go), within [`CONNECT_TIMEOUT`] and [`CALL_TIMEOUT`]. An
    /// execution runtimed does not know is already forgotten.
    pub async fn forget(&self, runtime: &RuntimeKey, pod: &str, uid: &str) -> Result<(), String> {
        let mut client = self.connect(runtime, pod).await?;
        let request = proto::ForgetRequest {
            execution_id: uid.to_owned(),
        };
        match bounded_call(client.forget(request)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(s.message().to_owned()),
        }
    }

    /// A client of `pod`'s sidecar: the pod's open connection when it was opened with
    /// the pod's IP and the Runtime's credentials of now, else a new one (kept for the
    /// next calls).
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
        let target = target(&pod_target, &credentials);
        let key = (runtime.clone(), pod.to_owned());
        if let Some(open) = self.connections().get(&key)
            && open.target == target
        {
            return Ok(open.client.clone());
        }
        let client = connect_tls(&target, CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        self.connections().insert(
            key,
            Connection {
                target,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// Closes `pod`'s open connection (after a failed call on it): the next call opens
    /// a new one rather than trying a broken one again.
    fn disconnect(&self, runtime: &RuntimeKey, pod: &str) {
        self.connections()
            .remove(&(runtime.clone(), pod.to_owned()));
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
                        send_cancel(client, &submission.key.uid).await;
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
                            // Why it waited is over: `Running` says no more than that.
                            status.reason = None;
                            status.message = None;
                            status.pod = Some(pod.to_owned());
                            status.execution_id = Some(started.execution_id.clone());
                            status.start_time = Some(now());
                            let gone = self.write(submission, status).await;
                            if gone && !cancel_sent {
                                // Deleted before its finalizer was on it: nothing else
                                // would cancel it.
                                cancel_sent = true;
                                send_cancel(client, &submission.key.uid).await;
                            }
                            progress.started = true;
                            progress
                                .deadline
                                .send_replace(Some(self.deadline_from_now(&submission.request)));
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
        progress: &mut Progress,
        message: String,
    ) -> Option<Driven> {
        self.disconnect(runtime, pod);
        progress.misses += 1;
        if !self.pod_alive(runtime, pod) {
            let message = format!("pod {pod} went away while the Run ran: {message}");
            return Some(Driven::Failed(RunReason::PodLost, message));
        }
        if progress.misses > MAX_FOLLOW_MISSES {
            let message = format!(
                "runtimed in pod {pod} did not answer {MAX_FOLLOW_MISSES} times in a row: {message}"
            );
            return Some(Driven::Failed(RunReason::RuntimedUnreachable, message));
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

    /// Writes `status`; whether the Run is gone (its object not found).
    async fn write(&self, submission: &Submission, status: &RunStatus) -> bool {
        // After a delayed `Pending` write of the same Run, or its finalizer patch, still
        // in flight.
        let _order = submission.write_order.0.lock().await;
        let terminal = status.phase.filter(|p| p.is_terminal());
        if let Some(phase) = terminal {
            self.count_end(phase, status);
        }
        let Err(e) = self.inner.sink.write(&submission.key, status).await else {
            return false;
        };
        if e.is_not_found() {
            tracing::info!(run = %submission.key.name, "the Run was deleted");
            return true;
        }
        if terminal.is_none() {
            // A missed `Running` is not retried: the terminal write follows.
            tracing::warn!(run = %submission.key.name, error = %e, "cannot write the Run's status");
            return false;
        }
        // Nothing else would write the end: the Run's object is unchanged, so no
        // reconcile comes. The slot is freed meanwhile (the execution ended).
        tracing::warn!(run = %submission.key.name, error = %e, "cannot write the Run's end; retrying");
        self.keep_writing(submission.key.clone(), status.clone());
        false
    }

    /// Writes a terminal `status` again, with [`backoff`] (at most 10 s apart), until
    /// it is written or the Run is gone (404). A new controller re-attaches to a Run
    /// still `Running` and writes its end from runtimed's retained execution.
    fn keep_writing(&self, key: super::RunKey, status: RunStatus) {
        let sink = self.inner.sink.clone();
        tokio::spawn(async move {
            let mut attempt = 1;
            loop {
                tokio::time::sleep(backoff(attempt)).await;
                match sink.write(&key, &status).await {
                    Ok(()) => return,
                    Err(e) if e.is_not_found() => return,
                    Err(e) => {
                        tracing::warn!(run = %key.name, attempt, error = %e, "cannot write the Run's end; retrying");
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        });
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

/// Asks runtimed to cancel the execution `uid` (its end then comes on the followed
/// call; a failed cancel is seen there too).
async fn send_cancel(client: &mut TlsClient, uid: &str) {
    let request = proto::CancelRequest {
        execution_id: uid.to_owned(),
        grace_ms: 0,
    };
    let _ = client.cancel(request).await;
}

/// The timeout runtimed enforces on the execution `request` starts.
fn run_timeout(request: &proto::ExecuteRequest) -> Duration {
    let ms = if request.timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        request.timeout_ms
    };
    Duration::from_millis(ms)
}

/// A unary call to runtimed, failed with `DeadlineExceeded` after [`CALL_TIMEOUT`].
async fn bounded_call<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {CALL_TIMEOUT:?}"
        ))),
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
