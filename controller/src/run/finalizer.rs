//! The Run finalizer ([`RUN_FINALIZER`]): put on a Run as it is dispatched, so that
//! deleting a running Run first cancels it in runtimed and forgets its execution there.
//! The patch runs beside the Run's `Execute`, not before it (one API write less before
//! the process starts); the Run's status writes wait for it, and a Run deleted before
//! it landed (the patch, or its `Running` write, finds no Run) is cancelled.
//! What a deleted Run needs is decided purely ([`decide_cleanup`]); a cleanup that
//! cannot finish (its pod unreachable, not re-attached) is bounded by
//! [`CLEANUP_TIMEOUT`], so no Run blocks its deletion forever.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kruntimes_api::labels::RUN_FINALIZER;
use kruntimes_api::v1alpha1::{Run, RunPhase};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::Error;

pub mod artifacts;

/// Longest a deleted Run that is still running waits for its cancel to end it before
/// its finalizer is removed anyway: past runtimed's own end of a cancelled Run
/// (SIGTERM, its 5 s grace, SIGKILL) and a pod's few missed answers, short enough that
/// a Run on a lost pod is gone within a minute of its deletion.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How soon a deleted Run being cancelled is looked at again (its terminal status write
/// also triggers a reconcile; this is the bound when that write does not come).
pub const CLEANUP_RECHECK: Duration = Duration::from_secs(2);

/// What a deleted Run needs before its finalizer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing of it runs: remove the finalizer, first forgetting its execution in the
    /// runtimed of this pod (best effort: runtimed's retention forgets it too).
    Release {
        /// The pod it ran on, if it ran.
        forget_on: Option<String>,
    },
    /// This dispatcher runs it: cancel it and look again.
    Cancel,
    /// It runs on this pod, which this dispatcher does not follow yet (after a
    /// restart): re-attach to it, cancel it and look again.
    Reattach {
        /// Its pod.
        pod: String,
    },
    /// Its pod is not known yet: look again, until [`CLEANUP_TIMEOUT`].
    Wait,
    /// [`CLEANUP_TIMEOUT`] passed without its end: remove the finalizer; the message
    /// says why, for the log.
    GiveUp(String),
}

/// What the dispatcher and the Runtime cache say of a deleted Run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The dispatcher runs it now.
    pub dispatched_here: bool,
    /// Its Runtime exists.
    pub runtime_exists: bool,
    /// Its pod is in the dispatcher's pool of that Runtime and not being deleted.
    pub pod_known: bool,
}

/// Whether `run` carries [`RUN_FINALIZER`].
pub fn has_finalizer(run: &Run) -> bool {
    run.finalizers().iter().any(|f| f == RUN_FINALIZER)
}

/// What the deleted `run` needs, `now`.
pub fn decide_cleanup(run: &Run, seen: Seen, now: Timestamp) -> Cleanup {
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase;
    if phase.is_some_and(RunPhase::is_terminal) {
        return Cleanup::Release {
            forget_on: status.pod.clone(),
        };
    }
    let dispatched =
        seen.dispatched_here || matches!(phase, Some(RunPhase::Running | RunPhase::Scheduled));
    if !dispatched {
        return Cleanup::Release { forget_on: None };
    }
    let waited = waited_since_deletion(run, now);
    if waited >= CLEANUP_TIMEOUT {
        return Cleanup::GiveUp(format!(
            "deleted {}s ago and its end still unknown; its finalizer is removed after {}s",
            waited.as_secs(),
            CLEANUP_TIMEOUT.as_secs()
        ));
    }
    if seen.dispatched_here {
        return Cleanup::Cancel;
    }
    if !seen.runtime_exists {
        // Its pods go with their Runtime (owner references), and nothing can reach them.
        return Cleanup::Release { forget_on: None };
    }
    match status.pod {
        Some(pod) if seen.pod_known => Cleanup::Reattach { pod },
        _ => Cleanup::Wait,
    }
}

/// How long ago `run` was deleted, `now` (zero when it is not, or for a clock behind).
fn waited_since_deletion(run: &Run, now: Timestamp) -> Duration {
    run.metadata
        .deletion_timestamp
        .as_ref()
        .map_or(Duration::ZERO, |t| {
            Duration::try_from(now.duration_since(t.0)).unwrap_or(Duration::ZERO)
        })
}

/// Adds [`RUN_FINALIZER`] to `run` (a JSON patch that fails if its finalizers changed
/// since `run` was read; the reconcile then runs again on the newer object). A Run
/// without finalizers has no `/metadata/finalizers` to test, so its `resourceVersion`
/// is tested instead: a `test` of a missing path fails under RFC 6902, and only some
/// JSON patch implementations let a `null` value match it.
pub async fn add_finalizer(client: &kube::Client, run: &Run) -> Result<(), Error> {
    let patch = if run.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": run.metadata.resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": [RUN_FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": run.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": RUN_FINALIZER},
        ])
    };
    patch_finalizers(client, run, patch, "add the finalizer of").await
}

/// Removes [`RUN_FINALIZER`] from `run`, if it carries it.
pub async fn remove_finalizer(client: &kube::Client, run: &Run) -> Result<(), Error> {
    let Some(index) = run.finalizers().iter().position(|f| f == RUN_FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json!([
        {"op": "test", "path": path, "value": RUN_FINALIZER},
        {"op": "remove", "path": path},
    ]);
    patch_finalizers(client, run, patch, "remove the finalizer of").await
}

async fn patch_finalizers(
    client: &kube::Client,
    run: &Run,
    patch: serde_json::Value,
    what: &str,
) -> Result<(), Error> {
    let namespace = run
        .namespace()
        .ok_or(Error::MissingField("Run", "namespace"))?;
    let name = run.name_any();
    let context = || format!("{what} Run {namespace}/{name}");
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|source| Error::Serialization {
            action: context(),
            source,
        })?;
    let api: Api<Run> = Api::namespaced(client.clone(), &namespace);
    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(context(), e))
}

#[cfg(test)]
mod tests;
