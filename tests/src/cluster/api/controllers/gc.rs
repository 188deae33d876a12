//! The garbage collector: an object whose every owner reference names a uid no longer
//! stored is deleted (background propagation: dependents go after their owner, without
//! `foregroundDeletion` or `orphan`). It also finishes namespace deletion, sweeping each
//! `Terminating` Namespace until it is empty and gone.

use std::collections::HashSet;

use serde_json::Value;

use crate::cluster::api::{Server, meta, namespaces};

pub(super) async fn reconcile(server: &Server) {
    let keys = server.store.keys();
    let objects: Vec<(crate::cluster::api::store::ObjectKey, Value)> = keys
        .into_iter()
        .filter_map(|k| server.store.get(&k).map(|v| (k, v)))
        .collect();
    let uids: HashSet<&str> = objects
        .iter()
        .filter_map(|(_, o)| meta::meta_str(o, "uid"))
        .collect();
    let mut orphans = Vec::new();
    for (key, object) in &objects {
        let owners = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array);
        let Some(owners) = owners.filter(|o| !o.is_empty()) else {
            continue;
        };
        let all_gone = owners.iter().all(|o| {
            o.get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| !uids.contains(u))
        });
        if all_gone && object.pointer("/metadata/deletionTimestamp").is_none() {
            orphans.push((key.clone(), object.clone()));
        }
    }
    for (key, object) in orphans {
        namespaces::remove_or_mark(server, &key, object);
    }
    // Custom resources whose CRD is gone go with it.
    let served: HashSet<(String, String)> =
        server.types().into_iter().map(|t| t.store_key()).collect();
    for (key, object) in &objects {
        if !served.contains(&(key.group.clone(), key.resource.clone())) {
            namespaces::remove_or_mark(server, key, object.clone());
        }
    }
    for (key, object) in &objects {
        if key.group.is_empty()
            && key.resource == "namespaces"
            && object.pointer("/metadata/deletionTimestamp").is_some()
        {
            namespaces::sweep(server, &key.name);
        }
    }
}
