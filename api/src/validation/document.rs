//! From an untyped document (one YAML or JSON object) to the typed object and every
//! violation: kind dispatch, decoding with field paths, unknown fields, then the rules.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Reason, Validate, Violation};
use crate::labels::API_VERSION;
use crate::v1alpha1::{
    Run, RunSpec, RunStatus, Runtime, RuntimeSpec, RuntimeStatus, Workflow, WorkflowSpec,
    WorkflowStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
    let field = |key| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    display_name(field("name"), field("generateName"))
}

/// `name`, or `generateName` followed by `*`, or `<unnamed>`.
fn display_name(name: Option<&str>, generate_name: Option<&str>) -> String {
    match (name, generate_name) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "<unnamed>".to_owned(),
    }
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
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
}

/// [`check_document`] for a document that is still JSON text: the admission webhook's
/// hot path. The typed object is decoded straight from the text, and fields the type
/// does not know are noticed during that same pass (`serde_ignored`), so a valid
/// document costs one decode instead of a tree, a typed decode from it and a re-encode
/// to compare. A document that does not decode, or has any field its type ignores,
/// takes the tree path, so every message and field path is exactly
/// [`check_document`]'s (a test compares the two over every fixture and example).
///
/// The kind is read first, with a scan of the whole text; a caller that already knows
/// the kind the document claims (the webhook: the review's `request.kind`) saves that
/// scan with [`check_json_as`].
pub fn check_json(json: &RawValue) -> Result<CheckedObject, DocumentError> {
    let text = json.get();
    let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
        return check_tree(text);
    };
    match head.kind.as_deref() {
        Some(kind) => check_json_as(kind, json),
        None => check_tree(text),
    }
}

/// [`check_json`] for a document expected to be a `kind` (`Runtime`, `Run` or
/// `Workflow`) of [`API_VERSION`]: decoded in one pass, `apiVersion` and `kind` read in
/// that same pass. Any other document (another kind or version than expected included)
/// takes [`check_document`]'s path and gets its answer.
pub fn check_json_as(kind: &str, json: &RawValue) -> Result<CheckedObject, DocumentError> {
    let text = json.get();
    let decoded = match kind {
        "Runtime" => decode_typed::<Runtime>(text),
        "Run" => decode_typed::<Run>(text),
        "Workflow" => decode_typed::<Workflow>(text),
        _ => None,
    };
    let Some((kind, name, object)) = decoded else {
        return check_tree(text);
    };
    Ok(CheckedObject {
        kind,
        name,
        violations: rules(&object),
        object: Some(object),
    })
}

/// A kruntimes kind assembled from the parts [`Tagged`] decodes.
trait Kind: Sized {
    const KIND: &'static str;
    type Spec: DeserializeOwned;
    type Status: DeserializeOwned;
    fn assemble(metadata: ObjectMeta, spec: Self::Spec, status: Option<Self::Status>) -> Self;
    fn typed(self) -> TypedObject;
}

macro_rules! kind {
    ($kind:ident, $spec:ident, $status:ident) => {
        impl Kind for $kind {
            const KIND: &'static str = stringify!($kind);
            type Spec = $spec;
            type Status = $status;
            fn assemble(metadata: ObjectMeta, spec: $spec, status: Option<$status>) -> Self {
                Self {
                    metadata,
                    spec,
                    status,
                }
            }
            fn typed(self) -> TypedObject {
                TypedObject::$kind(Box::new(self))
            }
        }
    };
}

kind!(Runtime, RuntimeSpec, RuntimeStatus);
kind!(Run, RunSpec, RunStatus);
kind!(Workflow, WorkflowSpec, WorkflowStatus);

/// `text` as a `K` in one pass: its kind, name and typed object.
fn decode_typed<K: Kind>(text: &str) -> Option<(&'static str, String, TypedObject)> {
    let tagged = decode_clean::<K::Spec, K::Status>(text, K::KIND)?;
    let name = tagged.name();
    let object = K::assemble(tagged.metadata, tagged.spec, tagged.status);
    Some((K::KIND, name, object.typed()))
}

/// The tree path: [`check_document`] on the parsed text.
fn check_tree(text: &str) -> Result<CheckedObject, DocumentError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DocumentError::Unreadable(e.to_string()))?;
    check_document(&value)
}

/// A kruntimes object as it is on the wire, `apiVersion` and `kind` included: the
/// fields of kube's `CustomResource` types (which skip `apiVersion` and `kind` when
/// decoding) plus those two, so that one pass reads all of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tagged<'a, Spec, Status> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    metadata: ObjectMeta,
    spec: Spec,
    status: Option<Status>,
}

impl<Spec, Status> Tagged<'_, Spec, Status> {
    /// What [`object_name`] gives for the same document.
    fn name(&self) -> String {
        display_name(
            self.metadata.name.as_deref(),
            self.metadata.generate_name.as_deref(),
        )
    }
}

/// `text` decoded as a `kind` of [`API_VERSION`] when it decodes, says it is one, and
/// every field in it is one the type reads.
fn decode_clean<'a, Spec, Status>(text: &'a str, kind: &str) -> Option<Tagged<'a, Spec, Status>>
where
    Spec: Deserialize<'a>,
    Status: Deserialize<'a>,
{
    let mut ignored_any = false;
    let mut decoder = serde_json::Deserializer::from_str(text);
    let tagged: Tagged<'a, Spec, Status> =
        serde_ignored::deserialize(&mut decoder, |_| ignored_any = true).ok()?;
    decoder.end().ok()?;
    (!ignored_any && tagged.api_version == API_VERSION && tagged.kind == kind).then_some(tagged)
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
        let clean = |text: &str| decode_clean::<RunSpec, RunStatus>(text, "Run").is_some();
        assert!(clean(&run(serde_json::json!({}))));
        assert!(!clean(&run(serde_json::json!({"scirpt": "x"}))));
        assert!(!clean(&run(serde_json::json!({"timeout": 5}))));
        // apiVersion and kind are read in the same pass, and must be what was expected.
        let other_kind =
            run(serde_json::json!({})).replace("\"kind\":\"Run\"", "\"kind\":\"Workflow\"");
        assert!(!clean(&other_kind));
        assert!(decode_clean::<WorkflowSpec, WorkflowStatus>(&other_kind, "Workflow").is_none());
        let other_version = run(serde_json::json!({})).replace(API_VERSION, "kruntimes.io/v1beta1");
        assert!(!clean(&other_version));
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
