//! The scheduler: every Pod without `spec.nodeName` is bound to the one node, with the
//! `PodScheduled` condition. The binding is written directly to the store (no
//! `pods/binding` subresource, no admission of the binding).

use serde_json::{Value, json};

use crate::cluster::api::Server;
use crate::cluster::api::meta;
use crate::cluster::api::store::ObjectKey;

pub(super) fn reconcile(server: &Server, node_name: &str) {
    let (pods, _) = server.store.list("", "pods", None);
    for pod in pods {
        let unbound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if !unbound || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let (Some(ns), Some(name), Some(rv)) = (
            meta::meta_str(&pod, "namespace"),
            meta::meta_str(&pod, "name"),
            meta::meta_str(&pod, "resourceVersion"),
        ) else {
            continue;
        };
        let key = ObjectKey::new("", "pods", ns, name);
        let rv = rv.to_owned();
        let mut bound = pod.clone();
        bound["spec"]["nodeName"] = json!(node_name);
        let condition =
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now()});
        match bound["status"]["conditions"].as_array_mut() {
            Some(conditions) => {
                conditions.retain(|c| c["type"] != "PodScheduled");
                conditions.push(condition);
            }
            None => bound["status"]["conditions"] = json!([condition]),
        }
        // A concurrent write leaves the Pod for the next pass.
        let _ = server.store.put(&key, bound, Some(&rv));
    }
}
