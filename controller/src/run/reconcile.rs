//! What to do with a Run, decided purely ([`decide`]) from the Run and its Runtime,
//! then done ([`reconcile`]): at most one status write here (`Pending` with
//! `queuedAt`, or a terminal phase for a Run that never runs); the dispatcher writes
//! `Running` and the end.

use std::sync::Arc;
use std::time::Duration;

use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::{SchemaCache, check_run_against_runtime};
use kruntimes_api::validation::{FieldPath, RunSpecContext, check_run_spec};
use kruntimes_runtimed_api::request::execute_request;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use super::sink::apply_status;
use crate::Error;
use crate::dispatch::{Dispatcher, RunKey, RuntimeKey, Submission, Submitted};
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
    /// Compiled input schemas.
    pub schemas: SchemaCache,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
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
    /// Hand it to the dispatcher, first writing `Pending` when it has no phase yet.
    Submit {
        /// The `Pending` status to write first, if not written.
        pending: Option<RunStatus>,
        /// Already `Running` on this pod (found after a restart).
        running_on: Option<String>,
    },
    /// It was dispatched and `spec.cancel` is set: cancel it in runtimed.
    Cancel,
}

/// Decides, from the Run and its Runtime (if it exists), what the Run needs.
pub fn decide(run: &Run, runtime: Option<&Runtime>, schemas: &SchemaCache, now: &str) -> Decision {
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase;
    if phase.is_some_and(RunPhase::is_terminal) {
        return Decision::Nothing;
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
            // It runs already: its pool is gone with the Runtime; the dispatcher ends
            // it when the pod goes.
            return Decision::Nothing;
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

/// Every violation of the Run, on its own and against its Runtime, as text.
fn violations(run: &Run, runtime: &Runtime, schemas: &SchemaCache) -> Vec<String> {
    let path = FieldPath::root("spec");
    let mut out: Vec<String> = check_run_spec(&run.spec, &path, RunSpecContext::Run)
        .iter()
        .map(ToString::to_string)
        .collect();
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
    let name = run.name_any();
    let uid = run.uid().ok_or(Error::MissingField("Run", "uid"))?;
    let runtime_ref = ObjectRef::<Runtime>::new(&run.spec.runtime_ref.name).within(&namespace);
    let runtime = ctx.runtimes.get(&runtime_ref);
    let runtime_key = RuntimeKey {
        namespace: namespace.clone(),
        name: run.spec.runtime_ref.name.clone(),
    };
    match decide(&run, runtime.as_deref(), &ctx.schemas, &now()) {
        Decision::Nothing => Ok(Action::await_change()),
        Decision::Wait(status) => {
            apply_status(&ctx.client, &namespace, &name, &status).await?;
            Ok(Action::requeue(WAIT_REQUEUE))
        }
        Decision::End(status) => {
            apply_status(&ctx.client, &namespace, &name, &status).await?;
            Ok(Action::await_change())
        }
        Decision::Cancel => {
            ctx.dispatcher.cancel(&runtime_key, &uid);
            Ok(Action::await_change())
        }
        Decision::Submit {
            pending,
            running_on,
        } => {
            let Some(runtime) = runtime else {
                return Ok(Action::requeue(WAIT_REQUEUE));
            };
            let mut status = run.status.clone().unwrap_or_default();
            if let Some(pending) = pending {
                apply_status(&ctx.client, &namespace, &name, &pending).await?;
                status = pending;
            }
            let request = match execute_request(&run.spec, uid.clone(), Some(&runtime.spec)) {
                Ok(request) => request,
                Err(e) => {
                    let end = ended(
                        &status,
                        RunPhase::Failed,
                        RunReason::Invalid,
                        e.to_string(),
                        &now(),
                    );
                    apply_status(&ctx.client, &namespace, &name, &end).await?;
                    return Ok(Action::await_change());
                }
            };
            let created = run
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            let submission = Submission {
                key: RunKey {
                    namespace,
                    name,
                    uid,
                },
                created,
                request,
                status,
                running_on,
                attempts: 0,
            };
            match ctx.dispatcher.submit(&runtime_key, submission) {
                Submitted::QueueFull => Ok(Action::requeue(WAIT_REQUEUE)),
                Submitted::Queued | Submitted::Known => Ok(Action::await_change()),
            }
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
