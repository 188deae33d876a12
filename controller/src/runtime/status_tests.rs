use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::jiff::SignedDuration;
use kruntimes_api::validation::Reason;

use super::*;
use crate::runtime::render::{deployment, fixtures::runtime};

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// The rendered Deployment as the API server would return it: generation 1, with
/// `status`.
fn deployed(status: DeploymentStatus) -> Deployment {
    let mut d = deployment(&runtime()).unwrap();
    d.metadata.generation = Some(1);
    d.status = Some(status);
    d
}

fn settled(ready: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        updated_replicas: Some(2),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    }
}

/// [`settled`] with `ready` pods and one Deployment condition.
fn with_condition(ready: i32, [type_, status, reason, message]: [&str; 4]) -> DeploymentStatus {
    let mut st = settled(ready);
    st.conditions = Some(vec![DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..DeploymentCondition::default()
    }]);
    st
}

fn condition<'a>(s: &'a RuntimeStatus, type_: &str) -> &'a Condition {
    find(s, type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

fn summary(s: &RuntimeStatus) -> Vec<(String, String, String)> {
    s.conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn triple(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.into(), status.into(), reason.into())
}

#[test]
fn all_pods_ready_and_rolled_out() {
    let s = observed(&runtime(), &deployed(settled(2)), 3, t(0));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
    assert_eq!(
        s.capacity,
        Some(RuntimeCapacity { total: 8, busy: 3 }),
        "2 pods x concurrency 4"
    );
    assert_eq!(s.selector.as_deref(), Some("kruntimes.io/runtime=python"));
    assert_eq!(
        summary(&s),
        [
            triple(READY, "True", reason::PODS_READY),
            triple(PROGRESSING, "False", reason::ROLLOUT_COMPLETE),
            triple(DEGRADED, "False", reason::NO_FAILURE),
        ]
    );
    let ready = condition(&s, READY);
    assert_eq!(ready.message, "2 of 2 pods ready");
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(ready.last_transition_time, Time(t(0)));
}

#[test]
fn capacity_counts_only_ready_pods() {
    let s = observed(&runtime(), &deployed(settled(1)), 0, t(0));
    assert_eq!(s.capacity, Some(RuntimeCapacity { total: 4, busy: 0 }));
    let ready = condition(&s, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::PODS_NOT_READY)
    );
    assert_eq!(ready.message, "1 of 2 pods ready");
    // The pod that is not ready is not available either: the rollout is not done.
    assert_eq!(condition(&s, PROGRESSING).reason, reason::ROLLING_OUT);
}

#[test]
fn busy_slots_beyond_i32_are_clamped() {
    let s = observed(&runtime(), &deployed(settled(2)), u32::MAX, t(0));
    assert_eq!(s.capacity.unwrap().busy, i32::MAX);
}

#[test]
fn a_new_deployment_is_rolling_out() {
    let mut d = deployed(DeploymentStatus::default());
    d.status = None;
    let s = observed(&runtime(), &d, 0, t(0));
    assert_eq!((s.replicas, s.ready_replicas), (Some(0), Some(0)));
    let progressing = condition(&s, PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", reason::ROLLING_OUT)
    );
    assert_eq!(
        progressing.message,
        "the Deployment controller has not seen generation 1 yet"
    );
}

#[test]
fn rollout_waits_for_updates_old_pods_and_availability() {
    let rt = runtime();
    let mut st = settled(2);
    st.updated_replicas = Some(1);
    st.replicas = Some(3);
    let msg = |st: &DeploymentStatus| {
        condition(&observed(&rt, &deployed(st.clone()), 0, t(0)), PROGRESSING)
            .message
            .clone()
    };
    assert_eq!(msg(&st), "1 of 2 pods run the current template");
    st.updated_replicas = Some(2);
    assert_eq!(msg(&st), "1 old pods are still to be removed");
    st.replicas = Some(2);
    st.available_replicas = Some(1);
    assert_eq!(
        msg(&st),
        "1 of 2 pods of the current template are available"
    );
    // Old pods still serve during a rollout: Ready stays True (maxUnavailable 0).
    let s = observed(&rt, &deployed(st), 0, t(0));
    assert_eq!(condition(&s, READY).status, "True");
}

#[test]
fn a_replica_failure_is_template_rejected_with_its_message() {
    let mut st = with_condition(
        0,
        [
            "ReplicaFailure",
            "True",
            "FailedCreate",
            "admission webhook \"inject.kruntimes.io\" denied the request: spec.hostNetwork: Forbidden",
        ],
    );
    let s = observed(&runtime(), &deployed(st.clone()), 0, t(0));
    let ready = condition(&s, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::TEMPLATE_REJECTED)
    );
    assert!(
        ready
            .message
            .starts_with("0 of 2 pods ready: FailedCreate: admission webhook"),
        "{}",
        ready.message
    );
    let degraded = condition(&s, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::TEMPLATE_REJECTED)
    );
    assert!(degraded.message.ends_with("spec.hostNetwork: Forbidden"));

    // A rejected new template while the old pods are all ready: Ready, but Degraded.
    st.ready_replicas = Some(2);
    let s = observed(&runtime(), &deployed(st), 0, t(0));
    assert_eq!(condition(&s, READY).reason, reason::PODS_READY);
    assert_eq!(condition(&s, DEGRADED).reason, reason::TEMPLATE_REJECTED);
}

#[test]
fn a_rollout_past_its_deadline_is_degraded() {
    let st = with_condition(
        1,
        [
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            "ReplicaSet \"python-abc\" has timed out progressing.",
        ],
    );
    let s = observed(&runtime(), &deployed(st), 0, t(0));
    let degraded = condition(&s, DEGRADED);
    assert_eq!(degraded.reason, reason::PROGRESS_DEADLINE_EXCEEDED);
    assert_eq!(degraded.status, "True");
    // A ReplicaFailure condition that is False is no failure.
    let st = with_condition(2, ["ReplicaFailure", "False", "FailedCreate", "old"]);
    let s = observed(&runtime(), &deployed(st), 0, t(0));
    assert_eq!(condition(&s, DEGRADED).status, "False");
}

#[test]
fn zero_replicas_is_ready_with_no_capacity() {
    let mut rt = runtime();
    rt.spec.replicas = 0;
    let st = DeploymentStatus {
        observed_generation: Some(1),
        ..DeploymentStatus::default()
    };
    let s = observed(&rt, &deployed(st), 0, t(0));
    assert_eq!(s.capacity, Some(RuntimeCapacity { total: 0, busy: 0 }));
    assert_eq!(condition(&s, READY).message, "0 of 0 pods ready");
    assert_eq!(condition(&s, PROGRESSING).reason, reason::ROLLOUT_COMPLETE);
}

#[test]
fn transition_times_are_kept_while_the_status_holds() {
    let mut rt = runtime();
    let first = observed(&rt, &deployed(settled(1)), 0, t(0));
    rt.status = Some(first.clone());
    // Later, same picture: nothing changes, so nothing is written.
    let again = observed(&rt, &deployed(settled(1)), 0, t(60));
    assert_eq!(again, first);
    assert!(!changed(Some(&first), &again));
    assert!(ready_transition(Some(&first), &again).is_none());
    // The pods become ready: Ready flips (new time), Degraded holds (old time).
    let later = observed(&rt, &deployed(settled(2)), 0, t(120));
    assert_eq!(condition(&later, READY).last_transition_time, Time(t(120)));
    assert_eq!(condition(&later, DEGRADED).last_transition_time, Time(t(0)));
    assert!(changed(Some(&first), &later));
    assert_eq!(
        ready_transition(Some(&first), &later).unwrap().reason,
        reason::PODS_READY
    );
}

#[test]
fn a_reason_change_keeps_the_time_but_is_a_ready_transition() {
    let mut rt = runtime();
    let first = observed(&rt, &deployed(settled(0)), 0, t(0));
    rt.status = Some(first.clone());
    let st = with_condition(0, ["ReplicaFailure", "True", "FailedCreate", "quota"]);
    let second = observed(&rt, &deployed(st), 0, t(30));
    let ready = condition(&second, READY);
    assert_eq!(ready.reason, reason::TEMPLATE_REJECTED);
    assert_eq!(ready.last_transition_time, Time(t(0)), "still False");
    assert!(ready_transition(Some(&first), &second).is_some());
}

#[test]
fn every_written_field_counts_as_a_change() {
    let base = observed(&runtime(), &deployed(settled(2)), 1, t(0));
    assert!(changed(None, &base));
    let edits: [fn(&mut RuntimeStatus); 6] = [
        |s| s.observed_generation = Some(4),
        |s| s.replicas = Some(3),
        |s| s.ready_replicas = Some(1),
        |s| s.capacity = Some(RuntimeCapacity { total: 8, busy: 2 }),
        |s| s.selector = None,
        |s| s.conditions.as_mut().unwrap()[2].message = "other".into(),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut old = base.clone();
        edit(&mut old);
        assert!(changed(Some(&old), &base), "edit {i} not seen");
    }
}

#[test]
fn conditions_of_other_managers_and_their_order_are_not_a_change() {
    let new = observed(&runtime(), &deployed(settled(2)), 1, t(0));
    let mut old = new.clone();
    let conditions = old.conditions.as_mut().unwrap();
    conditions.reverse();
    conditions.push(Condition {
        type_: "Draining".into(),
        status: "False".into(),
        reason: "Idle".into(),
        message: String::new(),
        observed_generation: Some(3),
        last_transition_time: Time(t(-5)),
    });
    assert!(!changed(Some(&old), &new));
}

#[test]
fn an_invalid_runtime_lists_every_violation_and_keeps_the_last_counts() {
    let mut rt = runtime();
    rt.status = Some(observed(&rt, &deployed(settled(2)), 0, t(0)));
    let violations = [
        Violation::with_value(
            "spec.concurrency",
            Reason::Invalid,
            0,
            "must be between 1 and 256",
        ),
        Violation::new(
            "spec.template.spec.containers[0].command",
            Reason::Forbidden,
            "the runtimed agent replaces it",
        ),
    ];
    let s = invalid(&rt, &violations, 1, t(10));
    assert_eq!(
        summary(&s),
        [
            triple(READY, "False", reason::INVALID),
            triple(PROGRESSING, "False", reason::INVALID),
            triple(DEGRADED, "True", reason::INVALID),
        ]
    );
    let message = &condition(&s, READY).message;
    assert!(
        message.contains("spec.concurrency: Invalid value: 0 (must be between 1 and 256)"),
        "{message}"
    );
    assert!(message.contains(
        "; spec.template.spec.containers[0].command: Forbidden: the runtimed agent replaces it"
    ));
    assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
    assert_eq!(s.capacity, Some(RuntimeCapacity { total: 8, busy: 1 }));
    assert_eq!(
        condition(&s, READY).last_transition_time,
        Time(t(10)),
        "was True"
    );
    assert!(ready_transition(rt.status.as_ref(), &s).is_some());
}

#[test]
fn messages_are_cut_at_the_condition_limit() {
    let exact = "a".repeat(MAX_CONDITION_MESSAGE_BYTES);
    assert_eq!(cut(exact.clone()), exact);
    let over = format!("{exact}b");
    let got = cut(over);
    assert_eq!(got.len(), MAX_CONDITION_MESSAGE_BYTES);
    assert!(got.ends_with(CUT_MARK));
    // A multi-byte character across the cut is dropped whole.
    let wide = format!(
        "{}é{}",
        "a".repeat(MAX_CONDITION_MESSAGE_BYTES - CUT_MARK.len() - 1),
        "z".repeat(10)
    );
    let got = cut(wide);
    assert!(got.len() <= MAX_CONDITION_MESSAGE_BYTES && got.ends_with(CUT_MARK));
    assert!(!got.contains('é'));
}

#[test]
fn many_violations_stay_within_the_limit() {
    let violations: Vec<Violation> = (0..2000)
        .map(|i| {
            Violation::new(
                format!("spec.template.spec.volumes[{i}].name"),
                Reason::Forbidden,
                "reserved for the injected runtimed",
            )
        })
        .collect();
    let s = invalid(&runtime(), &violations, 0, t(0));
    let message = &condition(&s, READY).message;
    assert_eq!(message.len(), MAX_CONDITION_MESSAGE_BYTES);
    assert!(message.ends_with(CUT_MARK));
}

#[test]
fn a_stored_transition_time_is_kept_as_it_is() {
    // A stored condition whose time is in the future (clock skew between replicas) is
    // still kept as it is while its status holds.
    let mut rt = runtime();
    let mut first = observed(&rt, &deployed(settled(2)), 0, t(0));
    let future = Time(t(0) + SignedDuration::from_hours(1));
    first.conditions.as_mut().unwrap()[0].last_transition_time = future.clone();
    rt.status = Some(first);
    let s = observed(&rt, &deployed(settled(2)), 0, t(5));
    assert_eq!(condition(&s, READY).last_transition_time, future);
}

#[test]
fn event_notes_are_cut_at_their_limit() {
    use crate::runtime::reconcile::MAX_EVENT_NOTE_BYTES;
    let exact = "n".repeat(MAX_EVENT_NOTE_BYTES);
    assert_eq!(cut_to(exact.clone(), MAX_EVENT_NOTE_BYTES), exact);
    let got = cut_to(format!("{exact}n"), MAX_EVENT_NOTE_BYTES);
    assert_eq!(got.len(), MAX_EVENT_NOTE_BYTES);
    assert!(got.ends_with(CUT_MARK));
}
