//! The pure decisions about a Workflow's end: the status of one that fails
//! re-validation, its `completionTime`, and when a finished one is deleted
//! (`spec.ttlSecondsAfterFinished`, else the controller's default).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kruntimes_api::v1alpha1::{Workflow, WorkflowPhase, WorkflowStatus};
use kruntimes_api::validation::Violation;

use super::plan::is_done;
use crate::run_status::{MAX_MESSAGE_BYTES, bounded};

/// The condition a Workflow that fails re-validation gets (status `False`).
pub const VALID_CONDITION: &str = "Valid";
/// Its reason: the message lists every violation.
pub const INVALID_REASON: &str = "Invalid";

/// What a finished Workflow needs for its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No TTL applies: it is kept until deleted.
    Keep,
    /// A TTL applies but `status.completionTime` is missing (a Workflow that finished
    /// before the field existed): write it now, and count from then.
    StampCompletion,
    /// The TTL has passed: delete it.
    Now,
    /// The TTL ends in this long.
    In(Duration),
}

/// The TTL of `workflow`: its `spec.ttlSecondsAfterFinished`, else `default_ttl`.
pub fn ttl_of(workflow: &Workflow, default_ttl: Option<u64>) -> Option<u64> {
    match workflow.spec.ttl_seconds_after_finished {
        // Validation bounds it to 0..=a year; a negative value that got past it counts
        // as 0, the soonest.
        Some(ttl) => Some(u64::try_from(ttl).unwrap_or(0)),
        None => default_ttl,
    }
}

/// What the finished `workflow`'s TTL asks at `now`. Not for a Workflow still running
/// ([`Expiry::Keep`]).
pub fn expiry(workflow: &Workflow, now: Timestamp, default_ttl: Option<u64>) -> Expiry {
    if !is_done(workflow.status.as_ref()) {
        return Expiry::Keep;
    }
    let Some(ttl) = ttl_of(workflow, default_ttl) else {
        return Expiry::Keep;
    };
    let completed = workflow
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let Some(completed) = completed else {
        return Expiry::StampCompletion;
    };
    let since = Duration::try_from(now.duration_since(completed)).unwrap_or(Duration::ZERO);
    match Duration::from_secs(ttl).checked_sub(since) {
        Some(left) if !left.is_zero() => Expiry::In(left),
        _ => Expiry::Now,
    }
}

/// `status` with `completionTime` set to `now` when its phase is terminal and it has
/// none yet (an earlier one is kept: the TTL counts from the first end).
pub fn stamp_completion(mut status: WorkflowStatus, now: Timestamp) -> WorkflowStatus {
    if is_done(Some(&status)) && status.completion_time.is_none() {
        status.completion_time = Some(now.to_string());
    }
    status
}

/// The status of a Workflow that fails re-validation (it reached the controller
/// without the webhook): `Failed`, no child Run created, and the `Valid` condition
/// `False` with every violation in its message.
pub fn invalid(workflow: &Workflow, violations: &[Violation], now: Timestamp) -> WorkflowStatus {
    let listed = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("the Workflow fails validation, so no step runs: {listed}");
    let previous = workflow.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = previous
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != VALID_CONDITION)
        .collect();
    conditions.push(Condition {
        type_: VALID_CONDITION.to_owned(),
        status: "False".to_owned(),
        reason: INVALID_REASON.to_owned(),
        message: bounded(&message, MAX_MESSAGE_BYTES),
        last_transition_time: Time(now),
        observed_generation: workflow.metadata.generation,
    });
    WorkflowStatus {
        observed_generation: workflow.metadata.generation,
        phase: Some(WorkflowPhase::Failed),
        jobs: previous.jobs,
        completion_time: Some(now.to_string()),
        conditions: Some(conditions),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kruntimes_api::validation::Validate;
    use serde_json::json;

    use super::*;

    fn workflow(ttl: Option<i64>, status: serde_json::Value) -> Workflow {
        let mut wf = json!({
            "apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "release", "namespace": "ns", "generation": 1},
            "spec": {"jobs": [{"name": "a", "steps": [{"name": "s", "run":
                {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}}]}]},
            "status": status,
        });
        if let Some(ttl) = ttl {
            wf["spec"]["ttlSecondsAfterFinished"] = json!(ttl);
        }
        serde_json::from_value(wf).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const ENDED: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn the_ttl_counts_from_the_completion_time() {
        let done = workflow(
            Some(60),
            json!({"phase": "Succeeded", "completionTime": ENDED}),
        );
        assert_eq!(
            expiry(&done, at("2026-01-01T00:00:20Z"), None),
            Expiry::In(Duration::from_secs(40))
        );
        // At the second the TTL ends, and after it: deleted.
        assert_eq!(expiry(&done, at("2026-01-01T00:01:00Z"), None), Expiry::Now);
        assert_eq!(expiry(&done, at("2026-01-02T00:00:00Z"), None), Expiry::Now);
        let at_once = workflow(Some(0), json!({"phase": "Failed", "completionTime": ENDED}));
        assert_eq!(expiry(&at_once, at(ENDED), None), Expiry::Now);
    }

    #[test]
    fn the_spec_wins_over_the_default_and_no_ttl_keeps_it() {
        let status = json!({"phase": "Cancelled", "completionTime": ENDED});
        let now = at("2026-01-01T00:00:30Z");
        assert_eq!(
            expiry(&workflow(None, status.clone()), now, None),
            Expiry::Keep
        );
        assert_eq!(
            expiry(&workflow(None, status.clone()), now, Some(10)),
            Expiry::Now
        );
        assert_eq!(
            expiry(&workflow(Some(3600), status), now, Some(10)),
            Expiry::In(Duration::from_secs(3570))
        );
    }

    #[test]
    fn a_running_workflow_never_expires_and_a_missing_completion_is_stamped() {
        let now = at("2030-01-01T00:00:00Z");
        for phase in ["Pending", "Running"] {
            let running = workflow(Some(0), json!({"phase": phase, "completionTime": ENDED}));
            assert_eq!(expiry(&running, now, Some(0)), Expiry::Keep, "{phase}");
        }
        let unstamped = workflow(Some(5), json!({"phase": "TimedOut"}));
        assert_eq!(expiry(&unstamped, now, None), Expiry::StampCompletion);
        assert_eq!(
            expiry(&workflow(None, json!({"phase": "TimedOut"})), now, None),
            Expiry::Keep,
            "no TTL: nothing to stamp"
        );
    }

    #[test]
    fn the_completion_time_is_set_once_when_the_phase_becomes_terminal() {
        let now = at("2026-01-01T00:05:00Z");
        let running = WorkflowStatus {
            phase: Some(WorkflowPhase::Running),
            ..WorkflowStatus::default()
        };
        assert_eq!(stamp_completion(running, now).completion_time, None);
        let ended = WorkflowStatus {
            phase: Some(WorkflowPhase::Succeeded),
            ..WorkflowStatus::default()
        };
        let stamped = stamp_completion(ended, now);
        assert_eq!(
            stamped.completion_time.as_deref(),
            Some("2026-01-01T00:05:00Z")
        );
        let later = stamp_completion(stamped, at("2026-01-01T01:00:00Z"));
        assert_eq!(
            later.completion_time.as_deref(),
            Some("2026-01-01T00:05:00Z")
        );
    }

    #[test]
    fn an_invalid_workflow_fails_with_every_violation_in_its_condition() {
        let mut wf = workflow(None, json!({}));
        // A cycle, and a step Run that names no Runtime: two violations.
        wf.spec.jobs[0].needs = vec!["a".into()];
        wf.spec.jobs[0].steps[0]
            .run
            .as_mut()
            .unwrap()
            .runtime_ref
            .name = String::new();
        let violations = wf.validate();
        assert!(violations.len() >= 2, "{violations:?}");
        let status = invalid(&wf, &violations, at(ENDED));
        assert_eq!(status.phase, Some(WorkflowPhase::Failed));
        assert_eq!(status.completion_time.as_deref(), Some(ENDED));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        let valid = &conditions[0];
        assert_eq!(
            (
                valid.type_.as_str(),
                valid.status.as_str(),
                valid.reason.as_str()
            ),
            ("Valid", "False", "Invalid")
        );
        for violation in &violations {
            assert!(
                valid.message.contains(&violation.to_string()),
                "{violation} missing from {}",
                valid.message
            );
        }
    }
}
