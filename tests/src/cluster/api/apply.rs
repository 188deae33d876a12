//! Server-side apply and the field ownership (`managedFields`) behind it.
//!
//! A simplified model of structured-merge-diff: a manager owns a set of leaf paths
//! (scalars, whole lists and empty maps: lists are atomic, never merged by key). An
//! apply deep-merges the applied maps into the object; a path the same manager applied
//! before and now omits, owned by nobody else, is removed; a path owned by another
//! manager whose value the apply changes is a conflict (409) unless `force=true`, which
//! moves ownership. Updates (`PUT`, other patches) give their manager the paths they
//! change and take them from the others. Entries are recorded as
//! `metadata.managedFields` with `fieldsType: FieldsV1`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::meta;
use super::resources::ResourceType;

type Path = Vec<String>;

/// Fields nobody owns: identity and server-set metadata.
fn ignored(path: &[String]) -> bool {
    match path {
        [top, ..] if top == "apiVersion" || top == "kind" => true,
        [m, field, ..] if m == "metadata" => !matches!(
            field.as_str(),
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// Whether `path` is in the part a request on `subresource` writes.
fn in_scope(path: &[String], subresource: Option<&str>, has_status: bool) -> bool {
    let is_status = path.first().is_some_and(|p| p == "status");
    match subresource {
        Some("status") => is_status,
        _ => !(has_status && is_status),
    }
}

/// The leaf paths of `value`. An empty map claims nothing (applying `data: {}` takes
/// no field from anyone).
fn leaves(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

fn scoped_leaves(value: &Value, subresource: Option<&str>, has_status: bool) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(value, &mut Vec::new(), &mut out);
    out.retain(|p| !ignored(p) && in_scope(p, subresource, has_status));
    out
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn remove_at(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for p in parents {
        let Some(next) = at.get_mut(p) else { return };
        at = next;
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last);
    }
}

/// FieldsV1 (`{"f:spec": {"f:replicas": {}}}`) of a path set.
fn encode(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut at = &mut root;
        for part in path {
            let entry = at.entry(format!("f:{part}")).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            at = next;
        }
    }
    Value::Object(root)
}

fn decode(fields: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    let children: Vec<(&String, &Value)> =
        map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, v) in children {
        prefix.push(k[2..].to_owned());
        decode(v, prefix, out);
        prefix.pop();
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    api_version: String,
    paths: BTreeSet<Path>,
    /// When the entry last changed; `None`: now.
    time: Option<String>,
}

fn entries(object: Option<&Value>) -> Vec<Entry> {
    let list = object
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|e| {
            let mut paths = BTreeSet::new();
            decode(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut paths,
            );
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            Entry {
                manager: s("manager").unwrap_or_default(),
                operation: s("operation").unwrap_or_else(|| "Update".to_owned()),
                subresource: s("subresource"),
                api_version: s("apiVersion").unwrap_or_default(),
                paths,
                time: s("time"),
            }
        })
        .collect()
}

fn write_entries(object: &mut Value, entries: &[Entry]) {
    let time = meta::now();
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time.clone().unwrap_or_else(|| time.clone()), "fieldsType": "FieldsV1", "fieldsV1": encode(&e.paths)});
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]["managedFields"] = Value::Array(list);
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn deep_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                deep_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Server-side apply of `applied` by `manager` to `old` (`None`: the object is
/// created). Returns the merged object with its `managedFields`, or a 409 naming each
/// conflicting field and manager.
pub(crate) fn apply(
    old: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    rtype: &ResourceType,
) -> Result<Value, ApiError> {
    let applied_paths = scoped_leaves(applied, subresource, rtype.status);
    let current = old.cloned().unwrap_or_else(|| json!({}));
    let sub = subresource.map(str::to_owned);
    let mut all = entries(old);
    let mine = |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == sub;
    let mut conflicts = Vec::new();
    for entry in all.iter_mut().filter(|e| !mine(e)) {
        let clashing: Vec<Path> = entry
            .paths
            .iter()
            .filter(|p| {
                applied_paths
                    .iter()
                    .any(|a| overlaps(a, p) && value_at(&current, a) != value_at(applied, a))
            })
            .cloned()
            .collect();
        if force {
            for p in &clashing {
                entry.paths.remove(p);
            }
        } else {
            conflicts.extend(clashing.into_iter().map(|p| (entry.manager.clone(), p)));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts, &rtype.api_version()));
    }
    let previous: BTreeSet<Path> = all
        .iter()
        .filter(|e| mine(e))
        .flat_map(|e| e.paths.clone())
        .collect();
    let mut merged = current;
    let applied_scoped = match subresource {
        Some("status") => {
            json!({"status": applied.get("status").cloned().unwrap_or_else(|| json!({}))})
        }
        _ if rtype.status => {
            let mut main = applied.clone();
            if let Some(m) = main.as_object_mut() {
                m.remove("status");
            }
            main
        }
        _ => applied.clone(),
    };
    deep_merge(&mut merged, &applied_scoped);
    for dropped in previous
        .iter()
        .filter(|p| !applied_paths.iter().any(|a| overlaps(a, p)))
    {
        let others_own = all
            .iter()
            .filter(|e| !mine(e))
            .any(|e| e.paths.iter().any(|q| overlaps(q, dropped)));
        if !others_own {
            remove_at(&mut merged, dropped);
        }
    }
    // An apply that claims what it claimed before keeps its entry's time, so that a
    // repeated apply is a no-op write.
    let time = all
        .iter()
        .find(|e| mine(e))
        .filter(|_| previous == applied_paths)
        .and_then(|e| e.time.clone());
    all.retain(|e| !mine(e));
    all.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".to_owned(),
        subresource: sub,
        api_version: rtype.api_version(),
        paths: applied_paths,
        time,
    });
    write_entries(&mut merged, &all);
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, Path)], api_version: &str) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| {
            format!(
                "conflict with \"{m}\" using {api_version}: .{}",
                p.join(".")
            )
        })
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {api_version}"), "field": format!(".{}", p.join("."))}))
        .collect();
    let message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        lines.join("\n")
    );
    ApiError {
        details: Some(json!({"causes": causes})),
        ..ApiError::new(409, "Conflict", message)
    }
}

/// Records an update (create, `PUT`, non-apply patch) by `manager`: it owns the paths
/// whose values it changed, and the other managers lose them.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    has_status: bool,
) {
    let new_paths = scoped_leaves(new, subresource, has_status);
    let changed: BTreeSet<Path> = new_paths
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    let mut all = entries(old);
    let old_paths = old
        .map(|o| scoped_leaves(o, subresource, has_status))
        .unwrap_or_default();
    let gone: Vec<&Path> = old_paths
        .iter()
        .filter(|p| value_at(new, p).is_none())
        .collect();
    for entry in &mut all {
        entry
            .paths
            .retain(|p| !changed.iter().any(|c| overlaps(c, p)) && !gone.contains(&p));
    }
    if !changed.is_empty() {
        let sub = subresource.map(str::to_owned);
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match all
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(entry) => {
                entry.paths.extend(changed);
                entry.time = None;
            }
            None => all.push(Entry {
                manager: manager.to_owned(),
                operation: "Update".to_owned(),
                subresource: sub,
                api_version,
                paths: changed,
                time: None,
            }),
        }
    }
    write_entries(new, &all);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::resources::builtin;

    fn deployments() -> Option<ResourceType> {
        builtin().into_iter().find(|t| t.plural == "deployments")
    }

    #[test]
    fn a_second_manager_conflicts_unless_forced_and_omitted_fields_go() -> Result<(), ApiError> {
        let rtype = deployments().ok_or_else(|| ApiError::internal("no deployments type"))?;
        let first = json!({"metadata": {"name": "d", "labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let stored = apply(None, &first, "alice", false, None, &rtype)?;
        let clash = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        let err = apply(Some(&stored), &clash, "bob", false, None, &rtype)
            .err()
            .map(|e| (e.code, e.message));
        assert_eq!(err, Some((409, "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas".to_owned())));
        let same_value = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        assert!(apply(Some(&stored), &same_value, "bob", false, None, &rtype).is_ok());
        let forced = apply(Some(&stored), &clash, "bob", true, None, &rtype)?;
        assert_eq!(forced["spec"]["replicas"], 3);
        let again = json!({"metadata": {"name": "d", "labels": {"a": "1"}}});
        let shrunk = apply(Some(&forced), &again, "alice", false, None, &rtype)?;
        assert_eq!(shrunk["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(shrunk["spec"]["replicas"], 3, "bob's field stays");
        Ok(())
    }
}
