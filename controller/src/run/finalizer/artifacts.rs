//! A deleted Run's uploaded artifacts: its finalizer stays until the objects listed in
//! `status.artifacts` are deleted from the store in `status.artifactStore`, with the
//! credentials Secret that store names (in the Run's namespace). Nothing of the
//! Runtime is needed, so this works after the Runtime was deleted or scaled to zero.
//!
//! What to do is decided purely ([`decide_artifacts`], [`retry_delay`],
//! [`blocked_status`]); [`clear_artifacts`] does it. A failure that may pass is retried
//! with backoff; one an operator must fix (no credentials, no bucket, access denied)
//! is written as the Run's [`ARTIFACTS_CONDITION`] condition and an Event, once per
//! change, and retried the same way, until it is fixed or the operator sets
//! [`RELEASE_ARTIFACTS_ANNOTATION`] to `"true"`, which releases the Run and leaves its
//! objects in the store.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kruntimes_api::labels::RELEASE_ARTIFACTS_ANNOTATION;
use kruntimes_api::v1alpha1::{ArtifactStore, Condition, Run, RunStatus};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use object_store::aws::AmazonS3;

use super::waited_since_deletion;
use crate::Error;
use crate::artifacts::{Credentials, DELETE_TIMEOUT, DeleteOutcome, build_store, delete_objects};
use crate::reasons::ArtifactReason;
use crate::run::apply_status;
use crate::run_status::{MAX_MESSAGE_BYTES, bounded};

/// The Run condition that says why its artifacts are not deleted yet (status `False`).
pub const ARTIFACTS_CONDITION: &str = "ArtifactsDeleted";

/// Shortest wait before a failed artifact cleanup is tried again.
pub const ARTIFACT_RETRY_MIN: Duration = Duration::from_secs(5);

/// Longest wait between two tries: a fixed Secret or a recreated bucket is noticed
/// within this long, while a store that stays down is asked about 12 times an hour.
pub const ARTIFACT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// Longest Event note, in bytes (the API server's limit on `note` is 1 KiB).
const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// The Event action of the artifact cleanup's Events.
const EVENT_ACTION: &str = "DeleteArtifacts";

/// What the artifacts of a deleted Run need before its finalizer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactCleanup {
    /// Its status lists no object: nothing to delete.
    Nothing,
    /// The operator set [`RELEASE_ARTIFACTS_ANNOTATION`]: release the Run and leave
    /// its `objects` objects in `bucket`.
    Abandon {
        /// How many objects stay.
        objects: usize,
        /// Where they stay.
        bucket: String,
    },
    /// The status lacks what a deletion needs: say so and look again later.
    Blocked {
        /// Why.
        reason: ArtifactReason,
        /// What is missing, for the condition and the Event.
        message: String,
    },
    /// Delete `keys` from `store` with the credentials in Secret `secret`.
    Delete {
        /// The store the objects went to.
        store: ArtifactStore,
        /// The credentials Secret, in the Run's namespace.
        secret: String,
        /// The objects' keys.
        keys: Vec<String>,
    },
}

/// What the artifacts of the deleted `run` need.
pub fn decide_artifacts(run: &Run) -> ArtifactCleanup {
    let status = run.status.clone().unwrap_or_default();
    let keys: Vec<String> = status
        .artifacts
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.key)
        .collect();
    if keys.is_empty() {
        return ArtifactCleanup::Nothing;
    }
    let released = run
        .annotations()
        .get(RELEASE_ARTIFACTS_ANNOTATION)
        .is_some_and(|v| v == "true");
    let bucket = status.artifact_store.as_ref().map(|s| s.bucket.clone());
    if released {
        return ArtifactCleanup::Abandon {
            objects: keys.len(),
            bucket: bucket.unwrap_or_else(|| "(unknown)".into()),
        };
    }
    let Some(store) = status.artifact_store else {
        return ArtifactCleanup::Blocked {
            reason: ArtifactReason::ArtifactStoreUnknown,
            message: format!(
                "status.artifacts lists {} object(s) but status.artifactStore is not set: the controller does not know where to delete them; {}",
                keys.len(),
                release_hint()
            ),
        };
    };
    let Some(secret) = store
        .credentials_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|name| !name.is_empty())
    else {
        return ArtifactCleanup::Blocked {
            reason: ArtifactReason::ArtifactCredentialsMissing,
            message: format!(
                "status.artifactStore.credentialsSecretRef is not set: the controller has no credentials to delete {} object(s) from bucket {}; {}",
                keys.len(),
                store.bucket,
                release_hint()
            ),
        };
    };
    ArtifactCleanup::Delete {
        store,
        secret,
        keys,
    }
}

fn release_hint() -> String {
    format!(
        "the Run's deletion waits; annotate it {RELEASE_ARTIFACTS_ANNOTATION}=true to release it and leave the objects"
    )
}

/// How long to wait before the next try, `waited` after the Run's deletion: a quarter
/// of that, within [`ARTIFACT_RETRY_MIN`] and [`ARTIFACT_RETRY_MAX`] (a backoff that
/// needs no state, so it survives a controller restart).
pub fn retry_delay(waited: Duration) -> Duration {
    (waited / 4).clamp(ARTIFACT_RETRY_MIN, ARTIFACT_RETRY_MAX)
}

/// `status` with the [`ARTIFACTS_CONDITION`] condition saying `reason` and `message`,
/// or `None` when its condition already gives that reason (no write, no Event).
pub fn blocked_status(
    status: &RunStatus,
    reason: ArtifactReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<RunStatus> {
    let mut conditions = status.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == ARTIFACTS_CONDITION && c.reason == reason.as_str())
    {
        return None;
    }
    conditions.retain(|c| c.type_ != ARTIFACTS_CONDITION);
    conditions.push(Condition {
        type_: ARTIFACTS_CONDITION.into(),
        status: "False".into(),
        reason: reason.as_str().into(),
        message: bounded(message, MAX_MESSAGE_BYTES),
        last_transition_time: Time(now),
        observed_generation: generation,
    });
    let mut next = status.clone();
    next.conditions = Some(conditions);
    Some(next)
}

/// What [`clear_artifacts`] leaves the finalizer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    /// Nothing of the artifacts holds the Run any more: go on with its release.
    Done,
    /// Keep the finalizer; look again in this long.
    RetryIn(Duration),
}

/// Deletes the artifacts of the deleted `run` (or releases them, or records why it
/// cannot yet), `now`.
pub async fn clear_artifacts(
    client: &kube::Client,
    run: &Run,
    now: Timestamp,
) -> Result<Cleared, Error> {
    let namespace = run
        .namespace()
        .ok_or(Error::MissingField("Run", "namespace"))?;
    let (store, secret, keys) = match decide_artifacts(run) {
        ArtifactCleanup::Nothing => return Ok(Cleared::Done),
        ArtifactCleanup::Abandon { objects, bucket } => {
            let note = format!(
                "{RELEASE_ARTIFACTS_ANNOTATION}=true: the Run is released without deleting its {objects} artifact object(s); they stay in bucket {bucket}"
            );
            tracing::warn!(%note, "artifacts released by annotation");
            publish(client, run, EventType::Warning, "ArtifactsReleased", note).await;
            return Ok(Cleared::Done);
        }
        ArtifactCleanup::Blocked { reason, message } => {
            return blocked(client, run, reason, message, now).await;
        }
        ArtifactCleanup::Delete {
            store,
            secret,
            keys,
        } => (store, secret, keys),
    };
    let s3 = match store_client(client, &namespace, &store, &secret).await? {
        Ok(s3) => s3,
        Err((reason, why)) => {
            let message = format!("{why}; {}", release_hint());
            return blocked(client, run, reason, message, now).await;
        }
    };
    let outcome = delete_objects(Arc::new(s3), &keys, DELETE_TIMEOUT).await;
    let Some((reason, message)) = failure(outcome, &store, &secret) else {
        let note = format!(
            "deleted {} artifact object(s) from bucket {}",
            keys.len(),
            store.bucket
        );
        publish(client, run, EventType::Normal, "ArtifactsDeleted", note).await;
        return Ok(Cleared::Done);
    };
    blocked(client, run, reason, message, now).await
}

/// The S3 client for `store` with the credentials of Secret `secret`, or why there is
/// none (without the release hint); an API error is the reconcile's.
async fn store_client(
    client: &kube::Client,
    namespace: &str,
    store: &ArtifactStore,
    secret: &str,
) -> Result<Result<AmazonS3, (ArtifactReason, String)>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|e| Error::kube(format!("get Secret {namespace}/{secret}"), e))?;
    let Some(found) = found else {
        return Ok(Err((
            ArtifactReason::ArtifactCredentialsMissing,
            format!(
                "the credentials Secret {secret} (status.artifactStore.credentialsSecretRef) does not exist in namespace {namespace}"
            ),
        )));
    };
    let credentials = match Credentials::from_secret(&found) {
        Ok(credentials) => credentials,
        Err(e) => {
            return Ok(Err((
                ArtifactReason::ArtifactCredentialsMissing,
                e.to_string(),
            )));
        }
    };
    Ok(build_store(store, &credentials, DELETE_TIMEOUT)
        .map_err(|e| (ArtifactReason::ArtifactStoreInvalid, e.to_string())))
}

/// The reason and message of a deletion that did not delete everything; `None` when it
/// did.
fn failure(
    outcome: DeleteOutcome,
    store: &ArtifactStore,
    secret: &str,
) -> Option<(ArtifactReason, String)> {
    let hint = release_hint();
    Some(match outcome {
        DeleteOutcome::Deleted => return None,
        DeleteOutcome::BucketMissing => (
            ArtifactReason::ArtifactBucketMissing,
            format!(
                "bucket {} does not exist at {}; {hint}",
                store.bucket, store.endpoint
            ),
        ),
        DeleteOutcome::AccessDenied(why) => (
            ArtifactReason::ArtifactAccessDenied,
            format!("the store refused the credentials of Secret {secret}: {why}; {hint}"),
        ),
        DeleteOutcome::KeyInvalid(why) => (
            ArtifactReason::ArtifactStoreInvalid,
            format!("status.artifacts: {why}; {hint}"),
        ),
        DeleteOutcome::Transient(why) => (
            ArtifactReason::ArtifactDeleteRetrying,
            format!("deleting the Run's artifacts failed, retried with backoff: {why}"),
        ),
    })
}

/// Records `reason` on `run` (condition and Event, when it changed) and asks for the
/// next try.
async fn blocked(
    client: &kube::Client,
    run: &Run,
    reason: ArtifactReason,
    message: String,
    now: Timestamp,
) -> Result<Cleared, Error> {
    let status = run.status.clone().unwrap_or_default();
    if let Some(next) = blocked_status(&status, reason, &message, run.metadata.generation, now) {
        let namespace = run
            .namespace()
            .ok_or(Error::MissingField("Run", "namespace"))?;
        apply_status(client, &namespace, &run.name_any(), &next).await?;
        let kind = if reason == ArtifactReason::ArtifactDeleteRetrying {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(client, run, kind, reason.as_str(), message.clone()).await;
    }
    tracing::info!(%reason, %message, "the deleted Run's artifacts hold its finalizer");
    Ok(Cleared::RetryIn(retry_delay(waited_since_deletion(
        run, now,
    ))))
}

/// Publishes an Event on `run`. An Event is a notice (the condition or the log says
/// the same), so one that cannot be published is logged, not an error.
async fn publish(client: &kube::Client, run: &Run, type_: EventType, reason: &str, note: String) {
    let reporter = Reporter {
        controller: crate::naming::FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(bounded(&note, MAX_EVENT_NOTE_BYTES)),
        action: EVENT_ACTION.to_owned(),
        secondary: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    if let Err(error) = recorder.publish(&event, &run.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot publish the Run's Event");
    }
}

#[cfg(test)]
mod tests;
