//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase` with `=`,
//! `==`, `!=`) of list and watch requests.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;
use super::meta;

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(key: &str, rest: &str, text: &str) -> Result<(String, Vec<String>), ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {text:?}: expected a list of values in parentheses"
            ))
        })?;
    let values = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    Ok((key.trim().to_owned(), values))
}

fn parse_requirement(text: &str) -> Result<Requirement, ApiError> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_owned()));
    }
    for (op, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some((key, rest)) = text.split_once(op) {
            let (key, values) = set_values(key, rest, text)?;
            return Ok(if is_in {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            });
        }
    }
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(Requirement::NotEquals(
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Requirement::Equals(
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    let key = text.trim();
    if key.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: {text:?}"
        )));
    }
    Ok(Requirement::Exists(key.to_owned()))
}

impl LabelSelector {
    /// Parses `labelSelector`.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        split_top(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// The fields a field selector may name, and where they are in the object.
pub const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("spec.nodeName", "/spec/nodeName"),
    ("status.phase", "/status/phase"),
    ("spec.serviceAccountName", "/spec/serviceAccountName"),
    ("status.podIP", "/status/podIP"),
    ("type", "/type"),
    ("reason", "/reason"),
];

/// Event fields (`kubectl describe` selects a Pod's events by them): every
/// `involvedObject.F` (core Events) and `regarding.F` (events.k8s.io) string field.
pub const EVENT_OBJECT_FIELDS: &[&str] = &["involvedObject.", "regarding."];

/// A parsed field selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `fieldSelector`; a field outside [`FIELDS`] is a 400, as the apiserver
    /// answers for a field a resource does not index.
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for term in split_top(text) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {term:?}; can't understand"
                )));
            };
            let field = field.trim();
            let known = FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, p)| (*p).to_owned());
            let event_field = EVENT_OBJECT_FIELDS
                .iter()
                .any(|prefix| {
                    field
                        .strip_prefix(prefix)
                        .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
                })
                .then(|| format!("/{}", field.replace('.', "/")));
            let pointer = known.or(event_field).ok_or_else(|| {
                ApiError::bad_request(format!("field label not supported: {field}"))
            })?;
            terms.push((pointer, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether `object` satisfies every term (a missing field is the empty string).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(pointer, equal, value)| {
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

/// Both selectors of a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        self.fields.matches(object) && self.labels.matches(&meta::labels(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_selects_as_kubernetes_does() -> Result<(), ApiError> {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing,app=web", true),
            ("app in (db),tier", false),
            ("missing!=x", true),
            ("missing notin (x)", true),
        ];
        for (text, expected) in cases {
            assert_eq!(LabelSelector::parse(text)?.matches(&l), expected, "{text}");
        }
        Ok(())
    }

    #[test]
    fn field_selectors_name_known_fields_only() -> Result<(), ApiError> {
        let pod = serde_json::json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "node"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=a,status.phase!=Pending")?.matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName=")?.matches(&pod));
        let err = FieldSelector::parse("spec.image=x")
            .err()
            .map(|e| e.message);
        assert_eq!(
            err.as_deref(),
            Some("field label not supported: spec.image")
        );
        Ok(())
    }
}
