//! The Deployment controller, without ReplicaSets: Pods are owned by the Deployment
//! directly, named `NAME-HASH-XXXXX` and labelled `pod-template-hash: HASH` (a hash of
//! the Pod template). A template change rolls Pods with surge 1 and no unavailability:
//! one new Pod beyond the desired count at a time, an old Pod deleted only while enough
//! others are Ready. Status carries the replica counts, `observedGeneration`, and the
//! `Available` and `Progressing` conditions. Pods are created and deleted through the
//! write pipeline (admission applies); status is written straight to the store.

use serde_json::{Value, json};

use crate::cluster::api::store::ObjectKey;
use crate::cluster::api::{Server, internal, meta};

/// The identity (field manager, user) the controller writes as.
const WHO: &str = "deployment-controller";

/// FNV-1a of the template, in the generated-name alphabet (10 characters).
fn template_hash(template: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = ALPHABET.len() as u64;
    (0..10)
        .map(|i| {
            let digit = (hash / base.pow(i)) % base;
            char::from(ALPHABET[usize::try_from(digit).unwrap_or(0)])
        })
        .collect()
}

fn ready(pod: &Value) -> bool {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    conditions
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    owners
        .into_iter()
        .flatten()
        .any(|o| o["uid"] == uid && o["controller"] == true)
}

pub(super) async fn reconcile(server: &Server) {
    let (deployments, _) = server.store.list("apps", "deployments", None);
    for deployment in deployments {
        if deployment.pointer("/metadata/deletionTimestamp").is_none() {
            reconcile_one(server, &deployment).await;
        }
    }
}

struct Observed {
    current: Vec<Value>,
    old: Vec<Value>,
}

async fn reconcile_one(server: &Server, deployment: &Value) {
    let (Some(ns), Some(name), Some(uid)) = (
        meta::meta_str(deployment, "namespace"),
        meta::meta_str(deployment, "name"),
        meta::meta_str(deployment, "uid"),
    ) else {
        return;
    };
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_default();
    let hash = template_hash(&template);
    let desired = usize::try_from(
        deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0),
    )
    .unwrap_or(0);
    let (pods, _) = server.store.list("", "pods", Some(ns));
    let live: Vec<Value> = pods
        .into_iter()
        .filter(|p| owned_by(p, uid) && p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let (current, old): (Vec<Value>, Vec<Value>) = live.into_iter().partition(|p| {
        p.pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str)
            == Some(hash.as_str())
    });
    let observed = Observed { current, old };
    let to_create = if observed.old.is_empty() {
        desired.saturating_sub(observed.current.len())
    } else {
        usize::from(
            observed.current.len() < desired
                && observed.current.len() + observed.old.len() < desired + 1,
        )
    };
    for _ in 0..to_create {
        let pod = new_pod(deployment, &template, &hash, name, uid);
        // A refused Pod (admission, quota) is retried on the next pass.
        let _ = internal::create(server, "pods", "", ns, &pod, WHO).await;
    }
    for extra in observed.current.iter().skip(desired) {
        delete_pod(server, ns, extra).await;
    }
    let ready_total = observed
        .current
        .iter()
        .chain(&observed.old)
        .filter(|p| ready(p))
        .count();
    let mut available = ready_total;
    for old in &observed.old {
        if !ready(old) || desired == 0 {
            delete_pod(server, ns, old).await;
        } else if available > desired {
            available -= 1;
            delete_pod(server, ns, old).await;
        }
    }
    write_status(server, deployment, &observed, desired);
}

fn new_pod(deployment: &Value, template: &Value, hash: &str, name: &str, uid: &str) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})), "spec": template.get("spec").cloned().unwrap_or_default()});
    pod["metadata"]["name"] = json!(format!("{name}-{hash}-{}", meta::random_suffix(5)));
    pod["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let api_version = deployment
        .get("apiVersion")
        .cloned()
        .unwrap_or_else(|| json!("apps/v1"));
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    pod
}

async fn delete_pod(server: &Server, ns: &str, pod: &Value) {
    if let Some(name) = meta::meta_str(pod, "name") {
        // Already gone or refused: the next pass looks again.
        let _ = internal::delete(server, "pods", "", ns, name, WHO).await;
    }
}

fn condition(old: &Value, kind: &str, status: bool, reason: &str, message: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == kind));
    let now = meta::now();
    let unchanged = previous.is_some_and(|p| p["status"] == status && p["reason"] == reason);
    let transition = previous
        .filter(|p| p["status"] == status)
        .map_or_else(|| json!(now), |p| p["lastTransitionTime"].clone());
    let update = if unchanged {
        previous.map_or_else(|| json!(now), |p| p["lastUpdateTime"].clone())
    } else {
        json!(now)
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
}

fn write_status(server: &Server, deployment: &Value, observed: &Observed, desired: usize) {
    let all = observed.current.len() + observed.old.len();
    let ready_count = observed
        .current
        .iter()
        .chain(&observed.old)
        .filter(|p| ready(p))
        .count();
    let updated_ready = observed.current.iter().filter(|p| ready(p)).count();
    let complete =
        observed.old.is_empty() && observed.current.len() == desired && updated_ready == desired;
    let available = ready_count >= desired;
    let name = meta::meta_str(deployment, "name").unwrap_or("");
    let conditions = vec![
        condition(
            deployment,
            "Available",
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if available {
                "Deployment has minimum availability."
            } else {
                "Deployment does not have minimum availability."
            },
        ),
        condition(
            deployment,
            "Progressing",
            true,
            if complete {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            &format!("Deployment \"{name}\" is progressing."),
        ),
    ];
    let count = |n: usize| json!(n);
    let status = json!({
        "observedGeneration": deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": count(all),
        "updatedReplicas": count(observed.current.len()),
        "readyReplicas": count(ready_count),
        "availableReplicas": count(ready_count),
        "unavailableReplicas": count(desired.saturating_sub(ready_count)),
        "conditions": conditions,
    });
    if deployment.get("status") == Some(&status) {
        return;
    }
    let (Some(ns), Some(rv)) = (
        meta::meta_str(deployment, "namespace"),
        meta::meta_str(deployment, "resourceVersion"),
    ) else {
        return;
    };
    let mut updated = deployment.clone();
    updated["status"] = status;
    let rv = rv.to_owned();
    // A concurrent write is seen on the next pass.
    let _ = server.store.put(
        &ObjectKey::new("apps", "deployments", ns, name),
        updated,
        Some(&rv),
    );
}
