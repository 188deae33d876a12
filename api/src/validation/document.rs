//! From an untyped document (one YAML or JSON object) to the typed object and every
//! violation: kind dispatch, decoding with field paths, unknown fields, then the rules.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Reason, Validate, Violation};
use crate::labels::API_VERSION;
use crate::v1alpha1::{Run, Runtime, Workflow};

/// A decoded kruntimes object.
#[derive(Clone, Debug)]
pub enum TypedObject {
    /// A Runtime.
    Runtime(Box<Runtime>),
    /// A Run.
    Run(Box<Run>),
    /// A Workflow.
    Workflow(Box<Workflow>),
}

/// The result of checking one kruntimes document.
#[derive(Clone, Debug)]
pub struct CheckedObject {
    /// `Runtime`, `Run` or `Workflow`.
    pub kind: &'static str,
    /// `metadata.name`, or `metadata.generateName` followed by `*`, or `<unnamed>`.
    pub name: String,
    /// Everything wrong with it.
    pub violations: Vec<Violation>,
    /// The typed object, when it could be decoded.
    pub object: Option<TypedObject>,
}

/// Why a document is not a kruntimes object at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// The document is not a mapping.
    #[error("not a Kubernetes object (expected a mapping with apiVersion and kind)")]
    NotAnObject,
    /// `apiVersion` or `kind` is missing.
    #[error("missing {0}")]
    MissingField(&'static str),
    /// Some other kind of object.
    #[error(
        "{api_version} {kind} is not a kruntimes kind; krt check validates {API_VERSION} Runtime, Run and Workflow (krt check pss evaluates Pod Security)"
    )]
    UnknownKind {
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// JSON that cannot be read as a tree (nested deeper than the decoder allows).
    #[error("unreadable document: {0}")]
    Unreadable(String),
}

/// The kind and name of any object, for messages.
pub fn describe(value: &Value) -> (String, String) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("<no kind>")
        .to_owned();
    (kind, object_name(value))
}

fn object_name(value: &Value) -> String {
    let meta = value.get("metadata");
    if let Some(name) = meta.and_then(|m| m.get("name")).and_then(Value::as_str) {
        return name.to_owned();
    }
    if let Some(prefix) = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
    {
        return format!("{prefix}*");
    }
    "<unnamed>".to_owned()
}

/// Checks one document: decodes it as the kruntimes kind it claims to be and runs every
/// rule. A document that decodes only partly still gets a result, with the decoding
/// error as a violation at its field path.
pub fn check_document(value: &Value) -> Result<CheckedObject, DocumentError> {
    let map = value.as_object().ok_or(DocumentError::NotAnObject)?;
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(DocumentError::MissingField("apiVersion"))?;
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(DocumentError::MissingField("kind"))?;
    let unknown = || DocumentError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    if api_version != API_VERSION {
        return Err(unknown());
    }
    let name = object_name(value);
    let (kind, decoded) = match kind {
        "Runtime" => (
            "Runtime",
            decode::<Runtime>(value).map(|(o, u)| (TypedObject::Runtime(Box::new(o)), u)),
        ),
        "Run" => (
            "Run",
            decode::<Run>(value).map(|(o, u)| (TypedObject::Run(Box::new(o)), u)),
        ),
        "Workflow" => (
            "Workflow",
            decode::<Workflow>(value).map(|(o, u)| (TypedObject::Workflow(Box::new(o)), u)),
        ),
        _ => return Err(unknown()),
    };
    let (violations, object) = match decoded {
        Err(violation) => (vec![violation], None),
        Ok((object, mut violations)) => {
            violations.extend(rules(&object));
            (violations, Some(object))
        }
    };
    Ok(CheckedObject {
        kind,
        name,
        violations,
        object,
    })
}

fn rules(object: &TypedObject) -> Vec<Violation> {
    match object {
        TypedObject::Runtime(o) => o.validate(),
        TypedObject::Run(o) => o.validate(),
        TypedObject::Workflow(o) => o.validate(),
    }
}

/// What [`check_json`] reads before choosing the type to decode.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Option<HeadMetadata<'a>>,
}

#[derive(Deserialize)]
struct HeadMetadata<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "generateName", borrow)]
    generate_name: Option<Cow<'a, str>>,
}

/// [`check_document`] for a document that is still JSON text: the admission webhook's
/// hot path. The typed object is decoded straight from the text, and fields the type
/// does not know are noticed during that same pass (`serde_ignored`), so a valid
/// document costs one decode instead of a tree, a typed decode from it and a re-encode
/// to compare. A document that does not decode, or has any field its type ignores,
/// takes the tree path, so every message and field path is exactly
/// [`check_document`]'s (a test compares the two over every fixture and example).
pub fn check_json(json: &RawValue) -> Result<CheckedObject, DocumentError> {
    let text = json.get();
    let tree_path = || {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DocumentError::Unreadable(e.to_string()))?;
        check_document(&value)
    };
    let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
        return tree_path();
    };
    let (Some(api_version), Some(kind)) = (head.api_version.as_deref(), head.kind.as_deref())
    else {
        return tree_path();
    };
    if api_version != API_VERSION {
        return tree_path();
    }
    let (kind, object) = match kind {
        "Runtime" => (
            "Runtime",
            decode_clean::<Runtime>(text).map(|o| TypedObject::Runtime(Box::new(o))),
        ),
        "Run" => (
            "Run",
            decode_clean::<Run>(text).map(|o| TypedObject::Run(Box::new(o))),
        ),
        "Workflow" => (
            "Workflow",
            decode_clean::<Workflow>(text).map(|o| TypedObject::Workflow(Box::new(o))),
        ),
        _ => return tree_path(),
    };
    let Some(object) = object else {
        return tree_path();
    };
    let metadata = head.metadata.as_ref();
    let name = match (
        metadata.and_then(|m| m.name.as_deref()),
        metadata.and_then(|m| m.generate_name.as_deref()),
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "<unnamed>".to_owned(),
    };
    Ok(CheckedObject {
        kind,
        name,
        violations: rules(&object),
        object: Some(object),
    })
}

/// `text` decoded as `T` when it decodes and every field in it is one `T` reads.
/// The top-level `apiVersion` and `kind` are read by [`check_json`] itself (kube's
/// `CustomResource` types skip them when decoding and write them back when encoding).
fn decode_clean<T: DeserializeOwned>(text: &str) -> Option<T> {
    let mut ignored_any = false;
    let mut decoder = serde_json::Deserializer::from_str(text);
    let typed = serde_ignored::deserialize(&mut decoder, |path| match path {
        serde_ignored::Path::Map {
            parent: serde_ignored::Path::Root,
            key,
        } if key == "apiVersion" || key == "kind" => {}
        _ => ignored_any = true,
    })
    .ok()?;
    decoder.end().ok()?;
    (!ignored_any).then_some(typed)
}

/// Decodes `value` as `T`, reporting a decoding failure at its field path, and every
/// field the type does not know (which the apiserver would silently prune).
fn decode<T: DeserializeOwned + Serialize>(
    value: &Value,
) -> Result<(T, Vec<Violation>), Violation> {
    // From the borrowed tree: no deep copy of the object per review.
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "<root>".to_owned()
        } else {
            path
        };
        Violation::new(path, Reason::Invalid, e.into_inner().to_string())
    })?;
    let round_trip = serde_json::to_value(&typed).unwrap_or(Value::Null);
    let mut unknown = Vec::new();
    find_unknown_fields(value, &round_trip, "", &mut unknown);
    Ok((typed, unknown))
}

/// Fields of a step object that are execution methods or names; any other key on a step
/// is reported as an unsupported execution method rather than a mere unknown field.
const STEP_FIELDS: [&str; 3] = ["name", "run", "uses"];

fn find_unknown_fields(raw: &Value, known: &Value, path: &str, out: &mut Vec<Violation>) {
    match (raw, known) {
        (Value::Object(raw_map), Value::Object(known_map)) => {
            let is_step = is_step_path(path);
            for (key, raw_value) in raw_map {
                let child = child_path(path, key);
                match known_map.get(key) {
                    Some(known_value) => find_unknown_fields(raw_value, known_value, &child, out),
                    None if is_trivially_empty(raw_value) => {}
                    None if is_step && !STEP_FIELDS.contains(&key.as_str()) => {
                        out.push(Violation::with_value(
                            child,
                            Reason::Unsupported,
                            key,
                            "unknown execution method; supported: run",
                        ))
                    }
                    None => out.push(Violation::new(
                        child,
                        Reason::Forbidden,
                        "unknown field: the apiserver would drop it; check its spelling",
                    )),
                }
            }
        }
        (Value::Array(raw_items), Value::Array(known_items)) => {
            for (i, (r, k)) in raw_items.iter().zip(known_items).enumerate() {
                find_unknown_fields(r, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The field path of `key` under `path`. An empty key (JSON allows it, and YAML's
/// `? : ...` gives one) is written `[""]`, so the path never ends up empty or ending in
/// a dot.
fn child_path(path: &str, key: &str) -> String {
    match (path.is_empty(), key.is_empty()) {
        (true, true) => "<root>[\"\"]".to_owned(),
        (false, true) => format!("{path}[\"\"]"),
        (true, false) => key.to_owned(),
        (false, false) => format!("{path}.{key}"),
    }
}

/// `spec.jobs[N].steps[M]`
fn is_step_path(path: &str) -> bool {
    path.strip_prefix("spec.jobs[")
        .and_then(|rest| rest.split_once("].steps["))
        .is_some_and(|(_, rest)| rest.ends_with(']') && !rest.contains('.'))
}

fn is_trivially_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_json` answers like `check_document` (api/tests/rules.rs compares them on
    /// every document there); this checks that it does so on its own path for clean
    /// objects, which is the point of it.
    #[test]
    fn clean_objects_take_the_one_pass_path() {
        let run = |extra: Value| {
            let mut document = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "Run",
                "metadata": {
                    "name": "hello",
                    "managedFields": [{"manager": "kubectl", "operation": "Update",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {".": {}}}}]
                },
                "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}
            });
            if let (Some(spec), Some(extra)) = (document["spec"].as_object_mut(), extra.as_object())
            {
                spec.extend(extra.clone());
            }
            document.to_string()
        };
        assert!(decode_clean::<Run>(&run(serde_json::json!({}))).is_some());
        assert!(decode_clean::<Run>(&run(serde_json::json!({"scirpt": "x"}))).is_none());
        assert!(decode_clean::<Run>(&run(serde_json::json!({"timeout": 5}))).is_none());
    }

    /// Found by the `rules` fuzz target: an unknown empty key gave a violation with an
    /// empty field path.
    #[test]
    fn unknown_empty_keys_have_a_field_path() {
        let document = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "Run",
            "": 1,
            "metadata": {"name": "hello", "": "x"},
            "spec": {
                "runtimeRef": {"name": "bash"},
                "interpreter": "bash",
                "script": "echo hi",
                "": true
            }
        });
        let checked = check_document(&document).unwrap();
        let fields: Vec<&str> = checked
            .violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert!(fields.contains(&"<root>[\"\"]"), "{fields:?}");
        assert!(fields.contains(&"metadata[\"\"]"), "{fields:?}");
        assert!(fields.contains(&"spec[\"\"]"), "{fields:?}");
        assert!(fields.iter().all(|f| !f.is_empty()), "{fields:?}");
    }
}
