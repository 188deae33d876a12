#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::json;

const NOW: &str = "2026-01-01T00:00:00Z";

fn run(extra: serde_json::Value) -> Run {
    let mut run = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"},
    });
    merge(&mut run, extra);
    serde_json::from_value(run).unwrap()
}

fn runtime() -> Runtime {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "ns"},
        "spec": {
            "limits": {"maxTimeout": "1m"},
            "template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}
        },
    }))
    .unwrap()
}

fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), extra) {
        for (k, v) in b {
            match a.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    a.insert(k, v);
                }
            }
        }
    }
}

fn decide_now(run: &Run, runtime: Option<&Runtime>) -> Decision {
    decide(run, runtime, &SchemaCache::new(), NOW, None)
}

#[test]
fn a_new_run_is_written_pending_with_its_queue_time_once_then_submitted() {
    let rt = runtime();
    let Decision::Submit {
        pending: Some(pending),
        running_on: None,
    } = decide_now(&run(json!({})), Some(&rt))
    else {
        panic!("a new Run is submitted with a Pending write")
    };
    assert_eq!(pending.phase, Some(RunPhase::Pending));
    assert_eq!(pending.queued_at.as_deref(), Some(NOW));
    assert_eq!(pending.reason.as_deref(), Some("WaitingForCapacity"));
    assert_eq!(pending.observed_generation, Some(1));
    // Once written, the next reconcile writes nothing and submits again (idempotent).
    let written = run(json!({"status": serde_json::to_value(&pending).unwrap()}));
    assert_eq!(
        decide_now(&written, Some(&rt)),
        Decision::Submit {
            pending: None,
            running_on: None
        }
    );
}

#[test]
fn a_missing_runtime_is_a_wait_with_a_clear_reason_not_an_error() {
    let Decision::Wait(status) = decide_now(&run(json!({})), None) else {
        panic!("a missing Runtime is waited for")
    };
    assert_eq!(status.phase, Some(RunPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("RuntimeNotFound"));
    assert!(status.message.unwrap().contains("not an error"));
    let written =
        run(json!({"status": serde_json::to_value(decide_status(&run(json!({})))).unwrap()}));
    assert_eq!(
        decide_now(&written, None),
        Decision::Nothing,
        "no write that changes nothing"
    );
}

fn decide_status(r: &Run) -> RunStatus {
    match decide_now(r, None) {
        Decision::Wait(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_invalid_run_fails_with_every_violation_and_never_runs() {
    let bad = run(json!({"spec": {"timeout": "2h", "script": null}}));
    let Decision::End(status) = decide_now(&bad, Some(&runtime())) else {
        panic!("an invalid Run ends")
    };
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("Invalid"));
    let message = status.message.unwrap();
    assert!(message.contains("spec.timeout"), "{message}");
    assert!(message.contains("spec"), "{message}");
}

#[test]
fn cancel_before_dispatch_ends_it_cancelled_and_after_dispatch_cancels_it() {
    let cancelled = run(json!({"spec": {"cancel": true}}));
    let Decision::End(status) = decide_now(&cancelled, Some(&runtime())) else {
        panic!()
    };
    assert_eq!(status.phase, Some(RunPhase::Cancelled));
    assert_eq!(status.reason.as_deref(), Some("CancelledBeforeStart"));
    let running =
        run(json!({"spec": {"cancel": true}, "status": {"phase": "Running", "pod": "p"}}));
    assert_eq!(decide_now(&running, Some(&runtime())), Decision::Cancel);
}

#[test]
fn a_running_run_found_after_a_restart_is_reattached_to_its_pod() {
    let running = run(json!({"status": {"phase": "Running", "pod": "p-1"}}));
    assert_eq!(
        decide_now(&running, Some(&runtime())),
        Decision::Submit {
            pending: None,
            running_on: Some("p-1".into())
        }
    );
}

#[test]
fn a_running_run_whose_runtime_is_gone_is_still_followed_on_its_pod() {
    let running = run(json!({"status": {"phase": "Running", "pod": "p-1"}}));
    assert_eq!(
        decide_now(&running, None),
        Decision::Submit {
            pending: None,
            running_on: Some("p-1".into())
        }
    );
}

#[test]
fn a_terminal_run_needs_nothing() {
    for phase in ["Succeeded", "Failed", "TimedOut", "Cancelled", "Error"] {
        let done = run(json!({"status": {"phase": phase}}));
        assert_eq!(
            decide_now(&done, Some(&runtime())),
            Decision::Nothing,
            "{phase}"
        );
    }
}

#[test]
fn a_finished_run_is_deleted_once_its_ttl_passed_from_its_completion() {
    // NOW is 2026-01-01T00:00:00Z.
    let finished = |ttl: i64, completed: &str| {
        run(json!({
            "spec": {"ttlSecondsAfterFinished": ttl},
            "status": {"phase": "Succeeded", "completionTime": completed},
        }))
    };
    assert_eq!(
        decide_now(&finished(60, "2025-12-31T23:59:00Z"), Some(&runtime())),
        Decision::Expire,
        "exactly its TTL ago"
    );
    assert_eq!(
        decide_now(&finished(60, "2025-12-31T23:59:01Z"), Some(&runtime())),
        Decision::ExpireIn(Duration::from_secs(1)),
        "one second before"
    );
    assert_eq!(
        decide_now(&finished(0, "2026-01-01T00:00:00Z"), Some(&runtime())),
        Decision::Expire,
        "0: as soon as it finished"
    );
    // Without the field, or before the Run finished, nothing is deleted.
    let kept =
        run(json!({"status": {"phase": "Failed", "completionTime": "2020-01-01T00:00:00Z"}}));
    assert_eq!(decide_now(&kept, Some(&runtime())), Decision::Nothing);
    let running = run(json!({
        "spec": {"ttlSecondsAfterFinished": 0},
        "status": {"phase": "Running", "pod": "p0"},
    }));
    assert_ne!(decide_now(&running, Some(&runtime())), Decision::Expire);
}

#[test]
fn the_controller_default_ttl_applies_to_runs_without_one_but_not_to_steps() {
    let finished = |extra: serde_json::Value| {
        let mut r = run(
            json!({"status": {"phase": "Succeeded", "completionTime": "2025-12-31T23:59:00Z"}}),
        );
        merge_metadata(&mut r, extra);
        r
    };
    let decide_default =
        |r: &Run, ttl: u64| decide(r, Some(&runtime()), &SchemaCache::new(), NOW, Some(ttl));
    let plain = finished(json!({}));
    assert_eq!(decide_default(&plain, 60), Decision::Expire);
    assert_eq!(
        decide_default(&plain, 61),
        Decision::ExpireIn(Duration::from_secs(1))
    );
    // The Run's own field wins over the default.
    let mut own = plain.clone();
    own.spec.ttl_seconds_after_finished = Some(120);
    assert_eq!(
        decide_default(&own, 0),
        Decision::ExpireIn(Duration::from_secs(60))
    );
    // A Workflow's step Run goes with its Workflow.
    let step = finished(json!({"labels": {"kruntimes.io/workflow": "w"}}));
    assert_eq!(decide_default(&step, 0), Decision::Nothing);
}

fn merge_metadata(r: &mut Run, extra: serde_json::Value) {
    if let Some(labels) = extra.get("labels") {
        r.metadata.labels = Some(serde_json::from_value(labels.clone()).unwrap());
    }
}

#[test]
fn a_run_with_artifacts_is_submitted_with_its_store_and_credentials_secret_recorded() {
    let with_store: Runtime = {
        let mut value = serde_json::to_value(runtime()).unwrap();
        merge(
            &mut value,
            json!({"spec": {"artifacts": {"s3": {
                "endpoint": "https://s3.example", "bucket": "results", "prefix": "runs/",
                "credentialsSecretRef": {"name": "s3-creds"}}}}}),
        );
        serde_json::from_value(value).unwrap()
    };
    let asks = run(json!({"spec": {"artifacts": {"paths": ["out/**"]}}}));
    let submitted = submission(&asks, Some(&with_store), RunStatus::default(), None).unwrap();
    let store = submitted.status.artifact_store.unwrap();
    assert_eq!(store.bucket, "results");
    assert_eq!(store.credentials_secret_ref.unwrap().name, "s3-creds");
    // A Run that asks for no artifacts records no store.
    let plain = submission(
        &run(json!({})),
        Some(&with_store),
        RunStatus::default(),
        None,
    );
    assert_eq!(plain.unwrap().status.artifact_store, None);
}
