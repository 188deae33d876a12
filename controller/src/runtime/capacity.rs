//! `status.capacity.busy` kept current between a Runtime's reconciles. A reconcile
//! applies the Runtime's Secret, Deployment and NetworkPolicy and writes its whole
//! status, so reconciling on every Run's start and end would cost several writes per
//! Run. Instead, every [`BUSY_REFRESH_INTERVAL`] the dispatcher's busy slots of each
//! pool are compared with the value last written, and only a changed one is written:
//! a merge patch of that one field on `/status`. So an autoscaler reading
//! `capacity.busy` (HPA on a custom metric, KEDA) sees it at most that stale, and a
//! Runtime whose load does not change costs no write.

use std::collections::HashMap;
use std::time::Duration;

use kruntimes_api::v1alpha1::Runtime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::Error;
use crate::dispatch::RuntimeKey;
use crate::naming::FIELD_MANAGER;

/// How often busy slots are compared with `status.capacity.busy`: at most one status
/// write per Runtime in this time, however many Runs start and end in it.
pub const BUSY_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// The pools whose busy slots `now` differ from those `written` last (a pool with none
/// written counts as 0: its reconcile wrote the count of its time, 0 for an idle one).
pub fn changed(
    written: &HashMap<RuntimeKey, u32>,
    now: &[(RuntimeKey, u32)],
) -> Vec<(RuntimeKey, u32)> {
    now.iter()
        .filter(|(key, busy)| written.get(key).copied().unwrap_or(0) != *busy)
        .cloned()
        .collect()
}

/// Writes `status.capacity.busy` of `runtime`.
pub async fn write_busy(
    client: &kube::Client,
    runtime: &RuntimeKey,
    busy: u32,
) -> Result<(), Error> {
    let api: Api<Runtime> = Api::namespaced(client.clone(), &runtime.namespace);
    let busy = i32::try_from(busy).unwrap_or(i32::MAX);
    let patch = json!({"status": {"capacity": {"busy": busy}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch_status(&runtime.name, &params, &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::kube(
                format!(
                    "write capacity.busy of Runtime {}/{}",
                    runtime.namespace, runtime.name
                ),
                e,
            )
        })
}

/// Every [`BUSY_REFRESH_INTERVAL`], writes the busy slots `read` reports for each pool
/// where they changed; runs until dropped.
pub async fn keep_busy_current(
    client: kube::Client,
    read: impl Fn() -> Vec<(RuntimeKey, u32)> + Send,
) {
    let mut written: HashMap<RuntimeKey, u32> = HashMap::new();
    let mut ticker = tokio::time::interval(BUSY_REFRESH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let now = read();
        written.retain(|key, _| now.iter().any(|(k, _)| k == key));
        for (runtime, busy) in changed(&written, &now) {
            match write_busy(&client, &runtime, busy).await {
                Ok(()) => {
                    written.insert(runtime, busy);
                }
                // Gone: its pool goes with it.
                Err(e) if e.is_not_found() => {
                    written.remove(&runtime);
                }
                // Tried again at the next tick; the Runtime's own reconcile writes it too.
                Err(e) => tracing::info!(error = %e, "cannot write a Runtime's busy slots"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> RuntimeKey {
        RuntimeKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn only_changed_counts_are_written_and_an_unwritten_idle_pool_is_not() {
        let mut written = HashMap::new();
        assert_eq!(
            changed(&written, &[(key("idle"), 0), (key("busy"), 3)]),
            [(key("busy"), 3)]
        );
        written.insert(key("busy"), 3);
        assert!(changed(&written, &[(key("idle"), 0), (key("busy"), 3)]).is_empty());
        assert_eq!(changed(&written, &[(key("busy"), 0)]), [(key("busy"), 0)]);
    }
}
