//! The OpenAPI part of the check: `type`, `required`, `enum`, bounds on numbers,
//! strings, arrays and maps, `pattern`, `format` (`int32`, `int64`, `date-time`) and
//! `x-kubernetes-list-type` (`set`, `map` keys unique), with the apiserver's messages.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::field::{ErrorType, FieldError, child, index, type_name};

/// `pattern` and `format: date-time` are checked with the `jsonschema` crate; the
/// compiled validators are kept by their schema text.
#[derive(Debug, Default)]
pub(crate) struct Validators {
    compiled: Mutex<HashMap<String, Option<jsonschema::Validator>>>,
}

impl Validators {
    /// Whether `value` matches the one-keyword schema `schema`; `None` when the schema
    /// does not compile (a pattern this regex engine does not accept).
    fn matches(&self, schema: &Value, value: &Value) -> Option<bool> {
        let key = schema.to_string();
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let validator = compiled.entry(key).or_insert_with(|| {
            jsonschema::options()
                .should_validate_formats(true)
                .build(schema)
                .ok()
        });
        validator.as_ref().map(|v| v.is_valid(value))
    }
}

/// Walks `value` against `schema`, appending every violation to `errors`.
pub(crate) fn validate(
    validators: &Validators,
    schema: &Value,
    value: &Value,
    path: &str,
    is_root: bool,
    errors: &mut Vec<FieldError>,
) {
    if !check_type(schema, value, path, errors) {
        return;
    }
    check_enum(schema, value, path, errors);
    match value {
        Value::Object(map) => check_object(validators, schema, map, path, is_root, errors),
        Value::Array(items) => check_array(validators, schema, items, path, errors),
        Value::String(s) => check_string(validators, schema, s, value, path, errors),
        Value::Number(_) => check_number(schema, value, path, errors),
        _ => {}
    }
}

/// Whether the value is of the schema's type; a mismatch is reported and ends the walk
/// of this value (the apiserver's type errors also keep CEL rules from running).
fn check_type(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) -> bool {
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if matches!(value, Value::String(_)) || type_name(value) == "integer" {
            return true;
        }
        errors.push(type_error(path, value, "integer or string"));
        return false;
    }
    let Some(want) = schema.get("type").and_then(Value::as_str) else {
        return true;
    };
    let got = type_name(value);
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    let ok = got == want || (want == "number" && got == "integer") || (nullable && value.is_null());
    if !ok {
        errors.push(type_error(path, value, want));
    }
    ok
}

/// `spec.x: Invalid value: "string": spec.x in body must be of type integer: "string"`.
fn type_error(path: &str, value: &Value, want: &str) -> FieldError {
    let got = type_name(value);
    FieldError::new(
        path,
        ErrorType::Invalid,
        json!(got),
        format!("{path} in body must be of type {want}: \"{got}\""),
    )
}

/// Whether a field error is a type error (which blocks CEL rules).
pub(crate) fn is_type_error(error: &FieldError) -> bool {
    error.kind == ErrorType::Invalid && error.detail.contains(" in body must be of type ")
}

fn check_enum(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if !allowed.contains(value) {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(FieldError::new(
            path,
            ErrorType::NotSupported,
            value.clone(),
            format!("supported values: {}", listed.join(", ")),
        ));
    }
}

fn check_object(
    validators: &Validators,
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    is_root: bool,
    errors: &mut Vec<FieldError>,
) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            errors.push(FieldError::new(
                &child(path, required),
                ErrorType::Required,
                Value::Null,
                "",
            ));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        errors.push(FieldError::new(
            path,
            ErrorType::TooMany,
            json!(map.len()),
            format!("must have at most {max} items"),
        ));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, child_value) in map {
        // The root's metadata is ObjectMeta, checked by the API server itself.
        if is_root && key == "metadata" {
            continue;
        }
        let child_schema = properties.and_then(|p| p.get(key)).or(additional);
        if let Some(child_schema) = child_schema {
            validate(
                validators,
                child_schema,
                child_value,
                &child(path, key),
                false,
                errors,
            );
        }
    }
}

fn check_array(
    validators: &Validators,
    schema: &Value,
    items: &[Value],
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError::new(
            path,
            ErrorType::TooMany,
            json!(items.len()),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            json!(items.len()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    check_list_type(schema, items, path, errors);
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(
                validators,
                item_schema,
                item,
                &index(path, i),
                false,
                errors,
            );
        }
    }
}

/// `x-kubernetes-list-type: set` items and `map` keys are unique.
fn check_list_type(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let key_of = |item: &Value| -> Value {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                Value::Array(
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                        .collect(),
                )
            }
            _ => item.clone(),
        }
    };
    if !matches!(
        schema.get("x-kubernetes-list-type").and_then(Value::as_str),
        Some("set" | "map")
    ) {
        return;
    }
    let mut seen = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = key_of(item);
        if seen.contains(&key) {
            let shown = match &key {
                Value::Array(parts) if parts.len() == 1 => parts[0].clone(),
                other => other.clone(),
            };
            errors.push(FieldError::new(
                &index(path, i),
                ErrorType::Duplicate,
                shown,
                "",
            ));
        } else {
            seen.push(key);
        }
    }
}

fn check_string(
    validators: &Validators,
    schema: &Value,
    s: &str,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    // The apiserver counts characters for minLength/maxLength.
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        errors.push(FieldError::new(
            path,
            ErrorType::TooLong,
            value.clone(),
            format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            value.clone(),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match validators.matches(&json!({"pattern": pattern}), value) {
            Some(true) => {}
            Some(false) => errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                value.clone(),
                format!("{path} in body should match '{pattern}'"),
            )),
            None => errors.push(FieldError::new(
                path,
                ErrorType::Internal,
                value.clone(),
                format!("the schema's pattern {pattern:?} does not compile"),
            )),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && validators.matches(&json!({"format": "date-time"}), value) == Some(false)
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            value.clone(),
            format!("{path} in body must be of type date-time: {value}"),
        ));
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else {
        return;
    };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                value.clone(),
                format!("{path} in body should be {relation} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                value.clone(),
                format!("{path} in body should be {relation} {}", schema["minimum"]),
            ));
        }
    }
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX), "int32")),
        Some("int64") => Some((i64::MIN, i64::MAX, "int64")),
        _ => None,
    };
    if let Some((lo, hi, name)) = range {
        let fits = value.as_i64().is_some_and(|i| (lo..=hi).contains(&i));
        if !fits {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                value.clone(),
                format!("{path} in body must be of type {name}: {value}"),
            ));
        }
    }
}
