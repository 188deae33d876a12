//! Namespace deletion: a deleted Namespace is `Terminating` until everything in it is
//! gone; objects with finalizers (or Pods the node still runs) are marked deleted and
//! the Namespace goes once the last of them does.

use serde_json::{Value, json};

use super::Server;
use super::store::ObjectKey;
use super::{meta, write};

/// Deletes what is in `namespace` and then the Namespace itself once it is empty.
/// Called on the Namespace's deletion and again by the garbage collector until done.
pub(crate) fn sweep(server: &Server, namespace: &str) {
    let ns_key = ObjectKey::new("", "namespaces", "", namespace);
    let Some(ns) = server.store.get(&ns_key) else {
        return;
    };
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let mut left = 0;
    for key in server
        .store
        .keys()
        .into_iter()
        .filter(|k| k.namespace == namespace)
    {
        let Some(object) = server.store.get(&key) else {
            continue;
        };
        if !remove_or_mark(server, &key, object) {
            left += 1;
        }
    }
    if left == 0 && meta::finalizers(&ns).is_empty() {
        let rv = meta::meta_str(&ns, "resourceVersion")
            .unwrap_or("")
            .to_owned();
        // A concurrent change to the Namespace leaves it for the next sweep.
        let _ = server.store.remove(&ns_key, &rv);
    }
}

/// Removes `object`, or marks it deleted when it must wait; returns whether it is gone.
pub(crate) fn remove_or_mark(server: &Server, key: &ObjectKey, mut object: Value) -> bool {
    let rv = meta::meta_str(&object, "resourceVersion")
        .unwrap_or("")
        .to_owned();
    let is_pod = key.group.is_empty() && key.resource == "pods";
    let waits = write::must_wait(server, is_pod, &object);
    if !waits {
        return server.store.remove(key, &rv).is_ok();
    }
    if object.pointer("/metadata/deletionTimestamp").is_none() {
        object["metadata"]["deletionTimestamp"] = json!(meta::now());
        let grace = if is_pod {
            write::pod_grace(&object, &json!({}))
        } else {
            0
        };
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        // A concurrent change leaves it for the next sweep.
        let _ = server.store.put(key, object, Some(&rv));
    }
    false
}
