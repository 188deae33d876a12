//! Pods with running Runs are deleted last: while a Runtime's pool is being replaced (a
//! template change) or shrunk (a scale-down), each of its pods that runs Runs carries
//! the annotation `controller.kubernetes.io/pod-deletion-cost` equal to its busy slots,
//! which the ReplicaSet controller reads to pick the pods it deletes first (the lowest
//! cost). Idle pods carry none (cost 0, deleted first), and once the pool is steady the
//! annotations are removed, so that a steady pool costs no pod write at all.
//!
//! [`cost_changes`] is pure: from the Runtime, its pods (with their current
//! annotations) and the busy slots per pod, the pod writes needed, none when every pod
//! already says the right thing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kruntimes_api::v1alpha1::Runtime;
use kube::ResourceExt;

/// The annotation the ReplicaSet controller ranks pods by when it scales down.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The label the Deployment controller gives each pod: its template's hash. Two values
/// among a pool's live pods mean a rollout is under way.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// One pod write: set the deletion cost, or remove the annotation (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostChange {
    /// The pod's name.
    pub pod: String,
    /// The cost to set; `None` removes the annotation.
    pub cost: Option<u32>,
}

/// Whether `pods` (the Runtime's live pods, not being deleted) are being replaced or
/// shrunk: more than one template hash among them, or more of them than
/// `spec.replicas`.
pub fn draining(runtime: &Runtime, pods: &[&Pod]) -> bool {
    let hashes: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str))
        .collect();
    let replicas = usize::try_from(runtime.spec.replicas.max(0)).unwrap_or(0);
    hashes.len() > 1 || pods.len() > replicas
}

/// The pod writes that make every pod of `runtime` in `pods` carry the cost it should:
/// while [`draining`], its busy slots (from `busy`) on each busy pod and nothing on an
/// idle one; otherwise nothing. Pods being deleted are left alone: the cost only
/// matters for the choice of which pod to delete. Sorted by pod name.
pub fn cost_changes<'a>(
    runtime: &Runtime,
    pods: impl IntoIterator<Item = &'a Pod>,
    busy: &BTreeMap<String, u32>,
) -> Vec<CostChange> {
    let live: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let drain = draining(runtime, &live);
    let mut changes: Vec<CostChange> = live
        .iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let wanted = busy.get(&name).copied().filter(|slots| drain && *slots > 0);
            let current = pod.annotations().get(POD_DELETION_COST_ANNOTATION);
            let same = match (current, wanted) {
                (None, None) => true,
                (Some(text), Some(cost)) => text.trim().parse::<u32>().ok() == Some(cost),
                _ => false,
            };
            (!same).then_some(CostChange {
                pod: name,
                cost: wanted,
            })
        })
        .collect();
    changes.sort_by(|a, b| a.pod.cmp(&b.pod));
    changes
}

/// The merge patch of one [`CostChange`]: the annotation as a string (annotations are
/// strings), or `null` to remove it.
pub fn cost_patch(change: &CostChange) -> serde_json::Value {
    let value = change
        .cost
        .map_or(serde_json::Value::Null, |c| c.to_string().into());
    serde_json::json!({"metadata": {"annotations": {POD_DELETION_COST_ANNOTATION: value}}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn runtime(replicas: i32) -> Runtime {
        serde_json::from_value(json!({
            "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
            "metadata": {"name": "py", "namespace": "ns"},
            "spec": {"replicas": replicas, "concurrency": 4,
                     "template": {"spec": {"containers": [{"name": "main", "image": "python"}]}}},
        }))
        .unwrap()
    }

    /// A pod of template `hash` with deletion cost `cost` (none: no annotation).
    fn pod(name: &str, hash: &str, cost: Option<&str>, deleting: bool) -> Pod {
        let mut pod = json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {"kruntimes.io/runtime": "py", POD_TEMPLATE_HASH_LABEL: hash}}});
        if let Some(cost) = cost {
            pod["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: cost});
        }
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(pod).unwrap()
    }

    fn busy(slots: &[(&str, u32)]) -> BTreeMap<String, u32> {
        slots.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect()
    }

    fn change(pod: &str, cost: Option<u32>) -> CostChange {
        CostChange {
            pod: pod.to_owned(),
            cost,
        }
    }

    #[test]
    fn a_steady_pool_costs_no_write_however_busy() {
        let pods = [pod("a", "v1", None, false), pod("b", "v1", None, false)];
        let slots = busy(&[("a", 4), ("b", 1)]);
        assert!(!draining(&runtime(2), &pods.iter().collect::<Vec<_>>()));
        assert_eq!(cost_changes(&runtime(2), &pods, &slots), []);
    }

    #[test]
    fn during_a_rollout_busy_pods_get_their_busy_slots_and_idle_ones_nothing() {
        // Old template v1 on a (3 Runs) and b (idle); the surge pod c of v2 is new.
        let pods = [
            pod("a", "v1", None, false),
            pod("b", "v1", None, false),
            pod("c", "v2", None, false),
        ];
        let slots = busy(&[("a", 3), ("b", 0), ("c", 1)]);
        assert_eq!(
            cost_changes(&runtime(2), &pods, &slots),
            [change("a", Some(3)), change("c", Some(1))]
        );
    }

    #[test]
    fn a_scale_down_is_a_drain_too() {
        let pods = [pod("a", "v1", None, false), pod("b", "v1", None, false)];
        assert!(draining(&runtime(1), &pods.iter().collect::<Vec<_>>()));
        assert_eq!(
            cost_changes(&runtime(1), &pods, &busy(&[("b", 2)])),
            [change("b", Some(2))]
        );
    }

    #[test]
    fn only_changed_costs_are_written() {
        let pods = [
            pod("a", "v1", Some("3"), false),
            pod("b", "v1", Some("2"), false),
            pod("c", "v2", Some("1"), false),
        ];
        // a unchanged; b went from 2 to 1 Run; c became idle: its annotation goes.
        let slots = busy(&[("a", 3), ("b", 1)]);
        assert_eq!(
            cost_changes(&runtime(2), &pods, &slots),
            [change("b", Some(1)), change("c", None)]
        );
    }

    #[test]
    fn once_steady_the_annotations_are_removed_and_deleted_pods_left_alone() {
        let pods = [
            pod("c", "v2", Some("1"), false),
            pod("d", "v2", None, false),
            // The last old pod, being deleted: no write, and no longer a second hash.
            pod("a", "v1", Some("3"), true),
        ];
        let slots = busy(&[("a", 3), ("c", 1)]);
        assert!(!draining(
            &runtime(2),
            &[&pods[0], &pods[1]] // the live pods
        ));
        assert_eq!(
            cost_changes(&runtime(2), &pods, &slots),
            [change("c", None)]
        );
    }

    #[test]
    fn an_unreadable_cost_is_replaced() {
        let pods = [
            pod("a", "v1", Some("lots"), false),
            pod("b", "v2", None, false),
        ];
        assert_eq!(
            cost_changes(&runtime(1), &pods, &busy(&[("a", 2)])),
            [change("a", Some(2))]
        );
    }

    #[test]
    fn the_patch_sets_a_string_or_removes_the_annotation() {
        assert_eq!(
            cost_patch(&change("a", Some(3))),
            json!({"metadata": {"annotations": {POD_DELETION_COST_ANNOTATION: "3"}}})
        );
        assert_eq!(
            cost_patch(&change("a", None)),
            json!({"metadata": {"annotations": {POD_DELETION_COST_ANNOTATION: null}}})
        );
    }
}
