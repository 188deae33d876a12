//! JSON merge patches (RFC 7386), JSON patches (RFC 6902) and strategic merge patches.
//!
//! The strategic merge patch is a merge patch whose lists of known keyed fields merge
//! by key (`containers`, `initContainers`, `ephemeralContainers`, `env`, `volumes`,
//! `imagePullSecrets` by `name`; `volumeMounts` by `mountPath`; `ports` by
//! `containerPort`, or `port` for Services; `conditions` by `type`; `ownerReferences`
//! by `uid`) and `finalizers` merge as a set. `$patch: delete` in a keyed list element
//! removes it, `$patch: replace` in a map replaces it, `$deleteFromPrimitiveList/F`
//! removes values from a list of strings, and `$setElementOrder/F` and `$retainKeys`
//! are accepted and ignored (the merged order is the stored order then new elements).
//! Every other list is replaced whole. Custom resources refuse it (415), as on a real
//! apiserver.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Applies a patch body of `content_type` to `current`.
pub(crate) fn apply_patch(
    content_type: &str,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let parse = || {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
    };
    let mut doc = current.clone();
    match content_type {
        "application/merge-patch+json" => {
            let patch = parse()?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            json_patch::patch(&mut doc, &patch.0).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        "application/strategic-merge-patch+json" => {
            let patch = parse()?;
            let Value::Object(patch) = patch else {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            };
            strategic_merge_map(&mut doc, &patch);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(doc)
}

/// The key a keyed list merges its elements by, from the field name (and, for
/// `ports`, the elements).
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => {
            Some("containerPort")
        }
        "ports" => Some("port"),
        _ => None,
    }
}

fn strategic_merge_map(doc: &mut Value, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        *doc = Value::Object(replaced);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (target.get_mut(field), value) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                strategic_merge_map(target.entry(key.clone()).or_insert(Value::Null), inner)
            }
            Value::Array(items) => merge_list(target, key, items),
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
}

fn merge_list(target: &mut Map<String, Value>, field: &str, items: &[Value]) {
    if field == "finalizers" {
        let list = target
            .entry(field.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        return;
    }
    let existing = target
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(key) = merge_key(field, &existing).or_else(|| merge_key(field, items)) else {
        target.insert(field.to_owned(), Value::Array(items.to_vec()));
        return;
    };
    let mut merged = existing;
    for item in items {
        let id = item.get(key);
        let position = merged.iter().position(|e| e.get(key) == id && id.is_some());
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, item) {
            (Some(i), _) if delete => {
                merged.remove(i);
            }
            (_, _) if delete => {}
            (Some(i), Value::Object(patch)) => strategic_merge_map(&mut merged[i], patch),
            (None, Value::Object(patch)) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge_map(&mut fresh, patch);
                merged.push(fresh);
            }
            (_, other) => merged.push(other.clone()),
        }
    }
    target.insert(field.to_owned(), Value::Array(merged));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(doc: Value, patch: Value) -> Result<Value, ApiError> {
        apply_patch(
            "application/strategic-merge-patch+json",
            &doc,
            patch.to_string().as_bytes(),
        )
    }

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() -> Result<(), ApiError> {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patched = smp(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "env": [{"name": "B", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "z"}
            ]}}),
        )?;
        assert_eq!(
            patched,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "c", "image": "z"}
            ]}})
        );
        Ok(())
    }

    #[test]
    fn strategic_merge_replaces_unkeyed_lists_and_unions_finalizers() -> Result<(), ApiError> {
        let doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"args": ["1", "2"]}});
        let patched = smp(
            doc,
            json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"args": ["3"]}}),
        )?;
        assert_eq!(
            patched,
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["3"]}})
        );
        let removed = smp(
            patched,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )?;
        assert_eq!(removed["metadata"]["finalizers"], json!(["b"]));
        Ok(())
    }

    #[test]
    fn unknown_patch_types_are_415() {
        let err = apply_patch("text/plain", &json!({}), b"{}")
            .err()
            .map(|e| e.code);
        assert_eq!(err, Some(415));
    }
}
