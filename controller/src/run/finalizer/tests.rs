#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const DELETED: &str = "2026-01-01T00:00:00Z";

fn run(status: serde_json::Value) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1",
                     "finalizers": [RUN_FINALIZER], "deletionTimestamp": DELETED},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"},
        "status": status,
    }))
    .unwrap()
}

fn running() -> Run {
    run(json!({"phase": "Running", "pod": "p0"}))
}

fn at(seconds_after_deletion: i64) -> Timestamp {
    DELETED.parse::<Timestamp>().unwrap()
        + k8s_openapi::jiff::SignedDuration::from_secs(seconds_after_deletion)
}

const HERE: Seen = Seen {
    dispatched_here: true,
    runtime_exists: true,
    pod_known: true,
};

#[test]
fn a_finished_run_is_released_and_forgotten_on_its_pod() {
    let done = run(json!({"phase": "Succeeded", "pod": "p0"}));
    assert_eq!(
        decide_cleanup(&done, HERE, at(0)),
        Cleanup::Release {
            forget_on: Some("p0".into())
        }
    );
}

#[test]
fn a_run_that_never_ran_is_released_at_once() {
    let queued = run(json!({"phase": "Pending"}));
    let seen = Seen {
        dispatched_here: false,
        ..HERE
    };
    assert_eq!(
        decide_cleanup(&queued, seen, at(0)),
        Cleanup::Release { forget_on: None }
    );
    // Handed to a pod between the read and the cancel: it is cancelled first.
    assert_eq!(decide_cleanup(&queued, HERE, at(0)), Cleanup::Cancel);
}

#[test]
fn a_running_run_is_cancelled_or_reattached_first() {
    assert_eq!(decide_cleanup(&running(), HERE, at(0)), Cleanup::Cancel);
    let restarted = Seen {
        dispatched_here: false,
        ..HERE
    };
    assert_eq!(
        decide_cleanup(&running(), restarted, at(0)),
        Cleanup::Reattach { pod: "p0".into() }
    );
}

#[test]
fn a_run_whose_runtime_is_gone_does_not_block_its_deletion() {
    let gone = Seen {
        dispatched_here: false,
        runtime_exists: false,
        pod_known: false,
    };
    assert_eq!(
        decide_cleanup(&running(), gone, at(0)),
        Cleanup::Release { forget_on: None }
    );
}

#[test]
fn an_unknown_pod_is_waited_for_up_to_the_cleanup_timeout() {
    let unknown = Seen {
        dispatched_here: false,
        runtime_exists: true,
        pod_known: false,
    };
    let limit = CLEANUP_TIMEOUT.as_secs() as i64;
    assert_eq!(
        decide_cleanup(&running(), unknown, at(limit - 1)),
        Cleanup::Wait
    );
    assert!(matches!(
        decide_cleanup(&running(), unknown, at(limit)),
        Cleanup::GiveUp(_)
    ));
    // A cancel that never ends the Run is bounded the same way.
    assert_eq!(
        decide_cleanup(&running(), HERE, at(limit - 1)),
        Cleanup::Cancel
    );
    assert!(matches!(
        decide_cleanup(&running(), HERE, at(limit)),
        Cleanup::GiveUp(_)
    ));
}

#[test]
fn only_the_controllers_finalizer_counts() {
    assert!(has_finalizer(&running()));
    let mut other = running();
    other.metadata.finalizers = Some(vec!["example.com/other".into()]);
    assert!(!has_finalizer(&other));
}
