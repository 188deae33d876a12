//! The garbage collector: an object whose every owner reference names a uid no longer
//! stored is deleted (background propagation: dependents go after their owner, without
//! `foregroundDeletion` or `orphan`). It also finishes namespace deletion, sweeping each
//! `Terminating` Namespace until it is empty and gone.

use std::collections::HashSet;

use serde_json::Value;

use crate::cluster::api::{Server, meta, namespaces};

pub(super) async fn reconcile(server: &Server) {
    let served: HashSet<(String, String)> =
        server.types().into_iter().map(|t| t.store_key()).collect();
    // One pass over the store in place: only what is to be deleted is copied out, so a
    // pass costs no copy of the thousands of Runs a benchmark leaves stored.
    let (orphans, unserved, terminating) = server.store.inspect(|objects| {
        let uids: HashSet<&str> = objects
            .values()
            .filter_map(|o| meta::meta_str(o, "uid"))
            .collect();
        let mut orphans = Vec::new();
        let mut unserved = Vec::new();
        let mut terminating = Vec::new();
        for (key, object) in objects {
            let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
            let owners = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .filter(|o| !o.is_empty());
            let all_owners_gone = owners.is_some_and(|owners| {
                owners.iter().all(|o| {
                    o.get("uid")
                        .and_then(Value::as_str)
                        .is_none_or(|u| !uids.contains(u))
                })
            });
            if all_owners_gone && !deleting {
                orphans.push((key.clone(), object.clone()));
            }
            // Custom resources whose CRD is gone go with it.
            if !served.contains(&(key.group.clone(), key.resource.clone())) {
                unserved.push((key.clone(), object.clone()));
            }
            if key.group.is_empty() && key.resource == "namespaces" && deleting {
                terminating.push(key.name.clone());
            }
        }
        (orphans, unserved, terminating)
    });
    for (key, object) in orphans.into_iter().chain(unserved) {
        namespaces::remove_or_mark(server, &key, object);
    }
    for namespace in terminating {
        namespaces::sweep(server, &namespace);
    }
}
