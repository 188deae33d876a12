//! Structural pruning and defaulting, in the apiserver's order: unknown fields are
//! dropped, nulls of non-nullable fields are dropped, then `default`s fill what is
//! absent.

use serde_json::{Map, Value};

/// The fields every embedded resource (`x-kubernetes-embedded-resource`) keeps whatever
/// its schema lists; the root object keeps them too.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// Prunes `value` against `schema`. At the root (and in embedded resources)
/// `apiVersion`, `kind` and `metadata` are kept and `metadata` is not descended into:
/// the apiserver handles it as `ObjectMeta`, not through the schema.
pub(crate) fn prune(schema: &Value, value: &mut Value, is_root: bool) {
    let keeps_object_fields = is_root || flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(map) => prune_object(schema, map, keeps_object_fields),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(schema: &Value, map: &mut Map<String, Value>, keeps_object_fields: bool) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    map.retain(|key, _| {
        (keeps_object_fields && OBJECT_FIELDS.contains(&key.as_str()))
            || preserve
            || additional.is_some()
            || properties.is_some_and(|p| p.contains_key(key))
    });
    for (key, child) in map.iter_mut() {
        if keeps_object_fields && key == "metadata" {
            continue;
        }
        let child_schema = properties.and_then(|p| p.get(key)).or(additional);
        if let Some(child_schema) = child_schema {
            prune(child_schema, child, false);
        }
    }
}

/// Drops nulls of fields that are not `nullable` (so a default can replace them), then
/// sets the `default` of every absent property, recursively.
pub(crate) fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                if let Some(additional) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    for child in map.values_mut() {
                        default(additional, child);
                    }
                }
                return;
            };
            for (key, child_schema) in properties {
                if map.get(key).is_some_and(Value::is_null) && !flag(child_schema, "nullable") {
                    map.remove(key);
                }
                if !map.contains_key(key)
                    && let Some(value) = child_schema.get("default")
                {
                    map.insert(key.clone(), value.clone());
                }
                if let Some(child) = map.get_mut(key) {
                    default(child_schema, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}
