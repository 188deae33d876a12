//! A Runtime's status, pure: a function of the Runtime, its Deployment as the API server
//! returned it, and the busy slots the dispatcher counts. [`changed`] says whether it
//! differs from the stored status, so an unchanged Runtime costs no write.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kruntimes_api::v1alpha1::{Condition, Runtime, RuntimeCapacity, RuntimeStatus};
use kruntimes_api::validation::Violation;

use super::render::selector_string;

/// Condition: every desired pod is ready to take Runs.
pub const READY: &str = "Ready";
/// Condition: a rollout of the pod template is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition: something keeps the pool from reaching its desired state.
pub const DEGRADED: &str = "Degraded";

/// Reasons of the conditions, `PascalCase` as Kubernetes' own.
pub mod reason {
    /// Ready=True: `readyReplicas` reached `spec.replicas`.
    pub const PODS_READY: &str = "PodsReady";
    /// Ready=False: fewer pods are ready than `spec.replicas`.
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    /// Progressing=True: pods of the current template are still being created.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Progressing=False: every pod runs the current template.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Ready=False (when pods are missing) and Degraded=True: the ReplicaSet cannot
    /// create pods (the webhook refused the injection, a quota, Pod Security); the
    /// message is the Deployment's `ReplicaFailure` message.
    pub const TEMPLATE_REJECTED: &str = "TemplateRejected";
    /// Degraded=True: the rollout made no progress within the Deployment's
    /// `progressDeadlineSeconds` (an image that cannot be pulled, pods that never get
    /// ready); the message is the Deployment's.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Degraded=False.
    pub const NO_FAILURE: &str = "NoFailure";
    /// All three conditions: the Runtime fails re-validation; nothing is applied and
    /// the message lists every violation.
    pub const INVALID: &str = "Invalid";
}

/// Longest condition message kept, in bytes: `metav1.Condition`'s own limit, which the
/// API server enforces. A longer message is cut there and ends with [`CUT_MARK`].
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 32 * 1024;
/// What ends a message cut at [`MAX_CONDITION_MESSAGE_BYTES`].
pub const CUT_MARK: &str = "...";

/// The status of a valid Runtime whose Deployment is `deployment` (as returned by the
/// apply, so with its status), with `busy_slots` Runs executing.
pub fn observed(
    runtime: &Runtime,
    deployment: &Deployment,
    busy_slots: u32,
    now: Timestamp,
) -> RuntimeStatus {
    let desired = runtime.spec.replicas;
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let deployment_condition = |type_: &str, status: &str| {
        status_conditions(deployment)
            .find(|c| c.type_.as_deref() == Some(type_) && c.status.as_deref() == Some(status))
    };
    let replica_failure = deployment_condition("ReplicaFailure", "True").map(message_of);
    let deadline = deployment_condition("Progressing", "False")
        .filter(|c| c.reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED))
        .map(message_of);
    let counts = format!("{ready} of {desired} pods ready");
    let ready_condition = match (&replica_failure, ready >= desired) {
        (_, true) => (true, reason::PODS_READY, counts),
        (Some(failure), false) => (
            false,
            reason::TEMPLATE_REJECTED,
            format!("{counts}: {failure}"),
        ),
        (None, false) => (false, reason::PODS_NOT_READY, counts),
    };
    let progressing = match rollout_pending(deployment, desired) {
        Some(what) => (true, reason::ROLLING_OUT, what),
        None => (
            false,
            reason::ROLLOUT_COMPLETE,
            "every pod runs the current template".to_owned(),
        ),
    };
    let degraded = match (replica_failure, deadline) {
        (Some(failure), _) => (true, reason::TEMPLATE_REJECTED, failure),
        (None, Some(stuck)) => (true, reason::PROGRESS_DEADLINE_EXCEEDED, stuck),
        (None, None) => (false, reason::NO_FAILURE, String::new()),
    };
    let concurrency = runtime.spec.concurrency;
    let mut new = base(runtime);
    new.replicas = Some(status.replicas.unwrap_or(0));
    new.ready_replicas = Some(ready);
    new.capacity = Some(RuntimeCapacity {
        total: ready.max(0).saturating_mul(concurrency.max(0)),
        busy: clamp(busy_slots),
    });
    new.conditions = Some(conditions(
        runtime,
        [ready_condition, progressing, degraded],
        now,
    ));
    new
}

/// The status of a Runtime that fails re-validation: nothing was applied, so the pod
/// counts are the last observed ones (the pool of the last valid spec keeps running),
/// and every condition says `Invalid` with every violation.
pub fn invalid(
    runtime: &Runtime,
    violations: &[Violation],
    busy_slots: u32,
    now: Timestamp,
) -> RuntimeStatus {
    let listed = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("the Runtime fails validation, so its pool is left as it was: {listed}");
    let last = runtime.status.clone().unwrap_or_default();
    let mut new = base(runtime);
    new.replicas = last.replicas;
    new.ready_replicas = last.ready_replicas;
    new.capacity = Some(RuntimeCapacity {
        total: last.capacity.map_or(0, |c| c.total),
        busy: clamp(busy_slots),
    });
    new.conditions = Some(conditions(
        runtime,
        [
            (false, reason::INVALID, message.clone()),
            (
                false,
                reason::INVALID,
                "nothing is applied until the Runtime is valid".to_owned(),
            ),
            (true, reason::INVALID, message),
        ],
        now,
    ));
    new
}

/// Whether writing `new` would change the stored status `old`: every field the
/// controller writes, and each of its conditions by type (conditions of other types
/// belong to other field managers, and server-side apply leaves them alone).
pub fn changed(old: Option<&RuntimeStatus>, new: &RuntimeStatus) -> bool {
    let Some(old) = old else { return true };
    let fields = |s: &RuntimeStatus| {
        (
            s.observed_generation,
            s.replicas,
            s.ready_replicas,
            s.capacity.clone(),
            s.selector.clone(),
        )
    };
    fields(old) != fields(new)
        || new
            .conditions
            .iter()
            .flatten()
            .any(|c| find(old, &c.type_) != Some(c))
}

/// The new Ready condition when its status or reason differs from the stored one (an
/// Event is published then, and only then).
pub fn ready_transition<'a>(
    old: Option<&RuntimeStatus>,
    new: &'a RuntimeStatus,
) -> Option<&'a Condition> {
    let now = find(new, READY)?;
    let before = old.and_then(|o| find(o, READY));
    match before {
        Some(b)
            if (b.status.as_str(), b.reason.as_str())
                == (now.status.as_str(), now.reason.as_str()) =>
        {
            None
        }
        _ => Some(now),
    }
}

fn find<'a>(status: &'a RuntimeStatus, type_: &str) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn base(runtime: &Runtime) -> RuntimeStatus {
    RuntimeStatus {
        observed_generation: runtime.metadata.generation,
        selector: runtime.metadata.name.as_deref().map(selector_string),
        ..RuntimeStatus::default()
    }
}

fn clamp(slots: u32) -> i32 {
    i32::try_from(slots).unwrap_or(i32::MAX)
}

/// Ready, Progressing, Degraded, in that order, each keeping its stored
/// `lastTransitionTime` while its status does not change.
fn conditions(
    runtime: &Runtime,
    wanted: [(bool, &str, String); 3],
    now: Timestamp,
) -> Vec<Condition> {
    let old = runtime.status.as_ref();
    [READY, PROGRESSING, DEGRADED]
        .into_iter()
        .zip(wanted)
        .map(|(type_, (is_true, reason, message))| {
            let status = if is_true { "True" } else { "False" };
            let since = old
                .and_then(|o| find(o, type_))
                .filter(|c| c.status == status)
                .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message: cut(message),
                observed_generation: runtime.metadata.generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// `message`, at most [`MAX_CONDITION_MESSAGE_BYTES`].
fn cut(message: String) -> String {
    cut_to(message, MAX_CONDITION_MESSAGE_BYTES)
}

/// `message`, at most `max` bytes (at least [`CUT_MARK`]'s length), cut on a character
/// boundary and ending with [`CUT_MARK`] when it was longer.
pub(crate) fn cut_to(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut end = max.saturating_sub(CUT_MARK.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(CUT_MARK);
    message
}

fn status_conditions(d: &Deployment) -> impl Iterator<Item = &DeploymentCondition> {
    d.status.iter().flat_map(|s| s.conditions.iter().flatten())
}

fn message_of(c: &DeploymentCondition) -> String {
    match (&c.reason, &c.message) {
        (Some(reason), Some(message)) => format!("{reason}: {message}"),
        (None, Some(message)) => message.clone(),
        (Some(reason), None) => reason.clone(),
        (None, None) => "no message".to_owned(),
    }
}

/// What the rollout still waits for, as `kubectl rollout status` checks it; `None`
/// when every pod runs the current template and is available.
fn rollout_pending(d: &Deployment, desired: i32) -> Option<String> {
    let status = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if observed < generation {
        Some(format!(
            "the Deployment controller has not seen generation {generation} yet"
        ))
    } else if updated < desired {
        Some(format!(
            "{updated} of {desired} pods run the current template"
        ))
    } else if total > updated {
        Some(format!(
            "{} old pods are still to be removed",
            total - updated
        ))
    } else if available < updated {
        Some(format!(
            "{available} of {updated} pods of the current template are available"
        ))
    } else {
        None
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
