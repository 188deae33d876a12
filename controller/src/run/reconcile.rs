//! What to do with a Run, decided purely ([`decide`]) from the Run and its Runtime,
//! then done ([`reconcile`]): at most one status write here (a terminal phase for a
//! Run that never runs, or `Pending` for one that waits for its Runtime or a full
//! queue); the dispatcher writes `Pending` for a Run that waits for a slot (after
//! [`PENDING_WRITE_DELAY`](crate::dispatch::PENDING_WRITE_DELAY)), `Running` and the
//! end. A Run dispatched at once costs three writes: its finalizer, `Running` and its
//! end.

use std::sync::Arc;
use std::time::Duration;

use kruntimes_api::labels::WORKFLOW_LABEL;
use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::{SchemaCache, check_run_against_runtime};
use kruntimes_api::validation::{FieldPath, Validate};
use kruntimes_runtimed_api::request::execute_request;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use super::finalizer::artifacts::{Cleared, clear_artifacts};
use super::finalizer::{
    CLEANUP_RECHECK, Cleanup, Seen, add_finalizer, decide_cleanup, has_finalizer, remove_finalizer,
};
use super::sink::apply_status;
use crate::Error;
use crate::dispatch::{
    ADOPTION_RETRY, Dispatcher, RunKey, RuntimeKey, Submission, Submitted, WriteOrder,
};
use crate::reasons::RunReason;
use crate::run_status::{MAX_MESSAGE_BYTES, bounded};

/// How soon a Run waiting for its Runtime, or for room in a full queue, is looked at
/// again (Runtime events do not re-trigger Runs).
pub const WAIT_REQUEUE: Duration = Duration::from_secs(10);

/// What the Run reconciler needs.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Where Runs go.
    pub dispatcher: Dispatcher,
    /// Runtimes, from a reflector.
    pub runtimes: Store<Runtime>,
    /// True once `runtimes` was filled by its reflector's first list
    /// ([`runtimes_ready`]).
    pub runtimes_ready: watch::Receiver<bool>,
    /// Compiled input schemas.
    pub schemas: SchemaCache,
    /// `--run-ttl-seconds-after-finished`: the TTL of a finished Run that sets none
    /// (not of a Workflow's step Runs); `None` keeps them.
    pub default_ttl_seconds_after_finished: Option<u64>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// A signal that turns true once `runtimes` was filled by its reflector's first list,
/// for any number of waiters. kube-runtime's `Store::wait_until_ready` wakes only the
/// last of several concurrent waiters (its oneshot channel keeps one waker), so one
/// task waits on the store and every reconcile, and the readiness probe, on this.
pub fn runtimes_ready(runtimes: Store<Runtime>) -> watch::Receiver<bool> {
    let (ready, signal) = watch::channel(false);
    tokio::spawn(async move {
        if runtimes.wait_until_ready().await.is_ok() {
            let _ = ready.send(true);
        }
        // Dropping `ready` unfilled ends the waits with `CacheClosed`.
    });
    signal
}

/// What a Run needs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing: it is terminal, or its status already says what is known.
    Nothing,
    /// Write this status and look again later.
    Wait(RunStatus),
    /// Write this terminal status: the Run never runs.
    End(RunStatus),
    /// Hand it to the dispatcher.
    Submit {
        /// Its `Pending` status with `queuedAt`, when the API does not have it yet: the
        /// dispatcher writes it if the Run waits for a slot, and bases `Running` on it.
        pending: Option<RunStatus>,
        /// Already `Running` on this pod (found after a restart).
        running_on: Option<String>,
    },
    /// It was dispatched and `spec.cancel` is set: cancel it in runtimed.
    Cancel,
    /// It finished `spec.ttlSecondsAfterFinished` or more ago: delete it.
    Expire,
    /// It finished; its `spec.ttlSecondsAfterFinished` ends in this long.
    ExpireIn(Duration),
}

/// Decides, from the Run and its Runtime (if it exists), what the Run needs;
/// `default_ttl` is the TTL of a finished Run that sets none.
pub fn decide(
    run: &Run,
    runtime: Option<&Runtime>,
    schemas: &SchemaCache,
    now: &str,
    default_ttl: Option<u64>,
) -> Decision {
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase;
    if phase.is_some_and(RunPhase::is_terminal) {
        return expiry(run, &status, now, default_ttl);
    }
    let cancel = run.spec.cancel == Some(true);
    let dispatched = matches!(phase, Some(RunPhase::Running | RunPhase::Scheduled));
    if cancel && dispatched {
        return Decision::Cancel;
    }
    if cancel {
        return Decision::End(ended(
            &status,
            RunPhase::Cancelled,
            RunReason::CancelledBeforeStart,
            "spec.cancel was set before the Run was dispatched; nothing ran".into(),
            now,
        ));
    }
    let Some(runtime) = runtime else {
        if dispatched {
            // It runs already and its Runtime is gone: the dispatcher keeps following
            // it (a new controller re-attaches to it), and ends it `Error` once its pod
            // is gone with the pool.
            return Decision::Submit {
                pending: None,
                running_on: status.pod.clone(),
            };
        }
        // A Run invalid on its own never runs, whether or not its Runtime comes.
        let own: Vec<String> = run.validate().iter().map(ToString::to_string).collect();
        if !own.is_empty() {
            let message = own.join("; ");
            return Decision::End(ended(
                &status,
                RunPhase::Failed,
                RunReason::Invalid,
                message,
                now,
            ));
        }
        let mut waiting = status.clone();
        waiting.phase = Some(RunPhase::Pending);
        waiting.reason = Some(RunReason::RuntimeNotFound.as_str().into());
        waiting.message = Some(format!(
            "Runtime {:?} does not exist in this namespace; the Run starts once it does (this is not an error until the Run is deleted)",
            run.spec.runtime_ref.name
        ));
        waiting.queued_at.get_or_insert_with(|| now.to_owned());
        return if waiting == status {
            Decision::Nothing
        } else {
            Decision::Wait(waiting)
        };
    };
    if !dispatched {
        let violations = violations(run, runtime, schemas);
        if !violations.is_empty() {
            return Decision::End(ended(
                &status,
                RunPhase::Failed,
                RunReason::Invalid,
                violations.join("; "),
                now,
            ));
        }
    }
    if dispatched {
        return Decision::Submit {
            pending: None,
            running_on: status.pod.clone(),
        };
    }
    let mut pending = status.clone();
    pending.phase = Some(RunPhase::Pending);
    pending.reason = Some(RunReason::WaitingForCapacity.as_str().into());
    pending.message = None;
    pending.queued_at.get_or_insert_with(|| now.to_owned());
    pending.observed_generation = run.metadata.generation;
    Decision::Submit {
        pending: (pending != status).then_some(pending),
        running_on: None,
    }
}

/// What a finished Run's `spec.ttlSecondsAfterFinished` (else `default_ttl`, except
/// for a Workflow's step Run) asks `now`, counted from its `completionTime` (nothing
/// without either).
fn expiry(run: &Run, status: &RunStatus, now: &str, default_ttl: Option<u64>) -> Decision {
    let step = run.labels().contains_key(WORKFLOW_LABEL);
    let ttl = match run.spec.ttl_seconds_after_finished {
        Some(ttl) => u64::try_from(ttl).unwrap_or(0),
        None => match default_ttl {
            Some(ttl) if !step => ttl,
            _ => return Decision::Nothing,
        },
    };
    let parse = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().ok();
    let (Some(completed), Some(now)) = (
        status.completion_time.as_deref().and_then(parse),
        parse(now),
    ) else {
        return Decision::Nothing;
    };
    let ttl = Duration::from_secs(ttl);
    let since = Duration::try_from(now.duration_since(completed)).unwrap_or(Duration::ZERO);
    match ttl.checked_sub(since) {
        Some(left) if !left.is_zero() => Decision::ExpireIn(left),
        _ => Decision::Expire,
    }
}

/// Every violation of the Run (its name and spec), on its own and against its Runtime,
/// as text.
fn violations(run: &Run, runtime: &Runtime, schemas: &SchemaCache) -> Vec<String> {
    // The name and the spec, as the webhook checks them; then against the Runtime.
    let path = FieldPath::root("spec");
    let mut out: Vec<String> = run.validate().iter().map(ToString::to_string).collect();
    out.extend(
        check_run_against_runtime(&run.spec, &path, runtime, schemas)
            .violations
            .iter()
            .map(ToString::to_string),
    );
    out
}

fn ended(
    status: &RunStatus,
    phase: RunPhase,
    reason: RunReason,
    message: String,
    now: &str,
) -> RunStatus {
    let mut end = status.clone();
    end.phase = Some(phase);
    end.reason = Some(reason.as_str().into());
    end.message = Some(bounded(&message, MAX_MESSAGE_BYTES));
    end.completion_time = Some(now.to_owned());
    end
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Reconciles one Run.
#[tracing::instrument(skip(run, ctx), fields(run = %run.name_any()))]
pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = run
        .namespace()
        .ok_or(Error::MissingField("Run", "namespace"))?;
    let uid = run.uid().ok_or(Error::MissingField("Run", "uid"))?;
    // A new controller's first reconciles can come before its Runtime cache is filled:
    // deciding then would take an existing Runtime for a missing one (a Running Run
    // would not be re-attached, a queued one would read `RuntimeNotFound`).
    ctx.runtimes_ready
        .clone()
        .wait_for(|ready| *ready)
        .await
        .map_err(|_| Error::CacheClosed("Runtime"))?;
    let runtime_ref = ObjectRef::<Runtime>::new(&run.spec.runtime_ref.name).within(&namespace);
    let runtime = ctx.runtimes.get(&runtime_ref);
    let runtime_key = RuntimeKey {
        namespace: namespace.clone(),
        name: run.spec.runtime_ref.name.clone(),
    };
    if run.metadata.deletion_timestamp.is_some() {
        return finalize(&run, &ctx, runtime.as_deref(), &runtime_key, &uid).await;
    }
    let decision = decide(
        &run,
        runtime.as_deref(),
        &ctx.schemas,
        &now(),
        ctx.default_ttl_seconds_after_finished,
    );
    if matches!(decision, Decision::Wait(_)) && !has_finalizer(&run) {
        // Before its status: a deletion then waits for the Run's cancel.
        add_finalizer(&ctx.client, &run).await?;
    }
    let name = run.name_any();
    match decision {
        Decision::Nothing => Ok(Action::await_change()),
        Decision::Wait(status) => {
            apply_status(&ctx.client, &namespace, &name, &status).await?;
            Ok(Action::requeue(WAIT_REQUEUE))
        }
        Decision::End(status) => {
            // A queued Run leaves its queue; one this dispatcher started already (its
            // `Running` not seen yet) is ended by its task: a cancel reaches runtimed.
            let running_here = if run.spec.cancel == Some(true) {
                ctx.dispatcher.cancel(&runtime_key, &uid)
            } else {
                ctx.dispatcher.withdraw(&runtime_key, &uid)
            };
            if !running_here {
                apply_status(&ctx.client, &namespace, &name, &status).await?;
            }
            Ok(Action::await_change())
        }
        Decision::Cancel => {
            ctx.dispatcher.cancel(&runtime_key, &uid);
            Ok(Action::await_change())
        }
        Decision::Expire => {
            delete_finished(&ctx.client, &namespace, &name, &uid).await?;
            Ok(Action::await_change())
        }
        Decision::ExpireIn(left) => Ok(Action::requeue(left)),
        Decision::Submit {
            pending,
            running_on,
        } => {
            let status_written = pending.is_none();
            let status = pending.unwrap_or_else(|| run.status.clone().unwrap_or_default());
            let submission = match submission(&run, runtime.as_deref(), status.clone(), running_on)
            {
                Ok(submission) => Submission {
                    status_written,
                    ..submission
                },
                Err(message) => {
                    let end = ended(
                        &status,
                        RunPhase::Failed,
                        RunReason::Invalid,
                        message,
                        &now(),
                    );
                    apply_status(&ctx.client, &namespace, &name, &end).await?;
                    return Ok(Action::await_change());
                }
            };
            let finalizer = (!has_finalizer(&run)).then(|| submission.write_order.hold());
            let submitted = ctx.dispatcher.submit(&runtime_key, submission);
            if let Some(held) = finalizer {
                // Added while the Run starts, not before: its writes wait for it (`held`),
                // and a Run deleted before the finalizer is on it is cancelled here.
                if let Err(e) = add_finalizer(&ctx.client, &run).await {
                    if e.is_not_found() {
                        ctx.dispatcher.cancel(&runtime_key, &uid);
                        return Ok(Action::await_change());
                    }
                    return Err(e);
                }
                drop(held);
            }
            match submitted {
                Submitted::QueueFull => {
                    // It waits outside the queue: say so now.
                    if !status_written {
                        apply_status(&ctx.client, &namespace, &name, &status).await?;
                    }
                    Ok(Action::requeue(WAIT_REQUEUE))
                }
                Submitted::PodNotKnownYet => Ok(Action::requeue(ADOPTION_RETRY)),
                Submitted::Queued | Submitted::Known => Ok(Action::await_change()),
            }
        }
    }
}

/// Deletes a finished Run whose TTL passed; only this Run (its uid is a
/// precondition), and one already gone is deleted.
async fn delete_finished(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), Error> {
    let api: Api<Run> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("delete finished Run {namespace}/{name}"),
            e,
        )),
    }
}

/// What the dispatcher needs of `run`; the message of a request that cannot be made.
/// `runtime` is `None` only for a Run re-attached after its Runtime was deleted: such a
/// Run is only ever followed, never started again, so the Runtime's defaults in the
/// request do not matter.
fn submission(
    run: &Run,
    runtime: Option<&Runtime>,
    status: RunStatus,
    running_on: Option<String>,
) -> Result<Submission, String> {
    let namespace = run.namespace().unwrap_or_default();
    let uid = run.uid().unwrap_or_default();
    let request = execute_request(&run.spec, uid.clone(), runtime.map(|r| &r.spec))
        .map_err(|e| e.to_string())?;
    let mut status = status;
    if run.spec.artifacts.is_some()
        && let Some(config) = runtime.and_then(|r| r.spec.artifacts.as_ref())
    {
        // The store with its credentials Secret, recorded before anything is uploaded:
        // the deletion of the Run's objects then needs no Runtime.
        status
            .artifact_store
            .get_or_insert_with(|| config.s3.clone());
    }
    let created = run
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    Ok(Submission {
        key: RunKey {
            namespace,
            name: run.name_any(),
            uid,
        },
        created,
        request,
        status,
        status_written: true,
        write_order: WriteOrder::default(),
        running_on,
        attempts: 0,
    })
}

/// A deleted Run: cancelled in runtimed first when it runs, forgotten there once it
/// ended, then released from [`RUN_FINALIZER`](kruntimes_api::labels::RUN_FINALIZER).
async fn finalize(
    run: &Run,
    ctx: &Context,
    runtime: Option<&Runtime>,
    runtime_key: &RuntimeKey,
    uid: &str,
) -> Result<Action, Error> {
    if !has_finalizer(run) {
        return Ok(Action::await_change());
    }
    // Drops a queued Run from its queue; one in flight gets its cancel (again: the
    // cancel is idempotent).
    let dispatched_here = ctx.dispatcher.cancel(runtime_key, uid);
    let pod = run.status.as_ref().and_then(|s| s.pod.as_deref());
    let seen = Seen {
        dispatched_here,
        runtime_exists: runtime.is_some(),
        pod_known: pod.is_some_and(|p| ctx.dispatcher.has_pod(runtime_key, p)),
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let cleanup = decide_cleanup(run, seen, now);
    if matches!(cleanup, Cleanup::Release { .. } | Cleanup::GiveUp(_))
        && let Cleared::RetryIn(delay) = clear_artifacts(&ctx.client, run, now).await?
    {
        // Its uploaded objects are not deleted yet: the finalizer stays.
        return Ok(Action::requeue(delay));
    }
    match cleanup {
        Cleanup::Release { forget_on } => {
            if let Some(pod) = forget_on
                && let Err(e) = ctx.dispatcher.forget(runtime_key, &pod, uid).await
            {
                tracing::info!(pod, error = %e, "cannot forget the deleted Run's execution; runtimed's retention will");
            }
            remove_finalizer(&ctx.client, run).await?;
            Ok(Action::await_change())
        }
        Cleanup::Cancel | Cleanup::Wait => Ok(Action::requeue(CLEANUP_RECHECK)),
        Cleanup::Reattach { pod } => {
            if let Some(runtime) = runtime {
                let status = run.status.clone().unwrap_or_default();
                if let Ok(submission) = submission(run, Some(runtime), status, Some(pod)) {
                    ctx.dispatcher.submit(runtime_key, submission);
                    ctx.dispatcher.cancel(runtime_key, uid);
                }
            }
            Ok(Action::requeue(CLEANUP_RECHECK))
        }
        Cleanup::GiveUp(message) => {
            tracing::warn!(%message, "releasing a deleted Run whose end is unknown");
            remove_finalizer(&ctx.client, run).await?;
            Ok(Action::await_change())
        }
    }
}

/// Retries a failed reconcile with a short delay.
pub fn error_policy(_run: Arc<Run>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, reason = error.metric_label(), "Run reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests;
