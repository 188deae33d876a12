#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;

fn run(annotations: serde_json::Value, status: serde_json::Value) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1",
                     "annotations": annotations,
                     "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"},
        "status": status,
    }))
    .unwrap()
}

fn uploaded(store: serde_json::Value) -> serde_json::Value {
    json!({
        "phase": "Succeeded",
        "artifacts": [
            {"path": "out/a.txt", "key": "runs/u-1/out/a.txt", "size": 3, "sha256": "00"},
            {"path": "out/b.txt", "key": "runs/u-1/out/b.txt", "size": 3, "sha256": "11"},
        ],
        "artifactStore": store,
    })
}

fn store() -> serde_json::Value {
    json!({"endpoint": "https://s3.example", "bucket": "results", "prefix": "runs/",
           "credentialsSecretRef": {"name": "s3-creds"}})
}

#[test]
fn a_run_without_uploaded_objects_needs_nothing() {
    assert_eq!(
        decide_artifacts(&run(json!({}), json!({"phase": "Succeeded"}))),
        ArtifactCleanup::Nothing
    );
    let empty = run(json!({}), json!({"phase": "Succeeded", "artifacts": []}));
    assert_eq!(decide_artifacts(&empty), ArtifactCleanup::Nothing);
}

#[test]
fn listed_objects_are_deleted_from_the_recorded_store_with_its_secret() {
    let ArtifactCleanup::Delete {
        store,
        secret,
        keys,
    } = decide_artifacts(&run(json!({}), uploaded(store())))
    else {
        panic!("a deletion");
    };
    assert_eq!(secret, "s3-creds");
    assert_eq!(store.bucket, "results");
    assert_eq!(keys, ["runs/u-1/out/a.txt", "runs/u-1/out/b.txt"]);
}

#[test]
fn a_store_without_a_secret_or_no_store_blocks_with_a_reason() {
    let mut no_secret = store();
    no_secret["credentialsSecretRef"] = serde_json::Value::Null;
    let ArtifactCleanup::Blocked { reason, message } =
        decide_artifacts(&run(json!({}), uploaded(no_secret)))
    else {
        panic!("blocked");
    };
    assert_eq!(reason, ArtifactReason::ArtifactCredentialsMissing);
    assert!(
        message.contains("status.artifactStore.credentialsSecretRef is not set"),
        "{message}"
    );
    assert!(message.contains(RELEASE_ARTIFACTS_ANNOTATION), "{message}");

    let ArtifactCleanup::Blocked { reason, message } =
        decide_artifacts(&run(json!({}), uploaded(serde_json::Value::Null)))
    else {
        panic!("blocked");
    };
    assert_eq!(reason, ArtifactReason::ArtifactStoreUnknown);
    assert!(message.contains("lists 2 object(s)"), "{message}");
}

#[test]
fn only_the_annotation_set_to_true_abandons_the_objects() {
    let released = run(
        json!({RELEASE_ARTIFACTS_ANNOTATION: "true"}),
        uploaded(store()),
    );
    assert_eq!(
        decide_artifacts(&released),
        ArtifactCleanup::Abandon {
            objects: 2,
            bucket: "results".into()
        }
    );
    let other = run(
        json!({RELEASE_ARTIFACTS_ANNOTATION: "yes"}),
        uploaded(store()),
    );
    assert!(matches!(
        decide_artifacts(&other),
        ArtifactCleanup::Delete { .. }
    ));
}

#[test]
fn retries_back_off_between_the_bounds() {
    assert_eq!(retry_delay(Duration::ZERO), ARTIFACT_RETRY_MIN);
    // A quarter of the time since the deletion, once past the shortest wait.
    assert_eq!(retry_delay(ARTIFACT_RETRY_MIN * 4), ARTIFACT_RETRY_MIN);
    assert_eq!(
        retry_delay(ARTIFACT_RETRY_MIN * 4 + Duration::from_secs(4)),
        ARTIFACT_RETRY_MIN + Duration::from_secs(1)
    );
    assert_eq!(retry_delay(ARTIFACT_RETRY_MAX * 4), ARTIFACT_RETRY_MAX);
    assert_eq!(
        retry_delay(ARTIFACT_RETRY_MAX * 4 + Duration::from_secs(4)),
        ARTIFACT_RETRY_MAX
    );
}

#[test]
fn the_condition_is_written_only_when_its_reason_changes() {
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let status = RunStatus::default();
    let first = blocked_status(
        &status,
        ArtifactReason::ArtifactBucketMissing,
        "bucket results does not exist",
        Some(3),
        now,
    )
    .expect("a new condition");
    let conditions = first.conditions.clone().unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].type_, ARTIFACTS_CONDITION);
    assert_eq!(conditions[0].status, "False");
    assert_eq!(conditions[0].reason, "ArtifactBucketMissing");
    assert_eq!(conditions[0].observed_generation, Some(3));
    // The same reason again (even with another message): nothing to write.
    assert_eq!(
        blocked_status(
            &first,
            ArtifactReason::ArtifactBucketMissing,
            "other text",
            Some(3),
            now
        ),
        None
    );
    // Another reason replaces it; other conditions stay.
    let mut with_other = first.clone();
    with_other
        .conditions
        .as_mut()
        .unwrap()
        .push(kruntimes_api::v1alpha1::Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            last_transition_time: Time(now),
            observed_generation: None,
        });
    let next = blocked_status(
        &with_other,
        ArtifactReason::ArtifactCredentialsMissing,
        "no Secret",
        Some(3),
        now,
    )
    .unwrap();
    let types: Vec<(&str, &str)> = next
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.type_.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("Other", "X"),
            (ARTIFACTS_CONDITION, "ArtifactCredentialsMissing")
        ]
    );
}

#[test]
fn condition_messages_are_bounded() {
    let long = "x".repeat(MAX_MESSAGE_BYTES + 10);
    let status = blocked_status(
        &RunStatus::default(),
        ArtifactReason::ArtifactDeleteRetrying,
        &long,
        None,
        Timestamp::UNIX_EPOCH,
    )
    .unwrap();
    assert!(status.conditions.unwrap()[0].message.len() <= MAX_MESSAGE_BYTES);
}
