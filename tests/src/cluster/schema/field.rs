//! Field errors shaped as the apiserver's `field.Error`: the same type names, the same
//! value rendering, and the `Status.details.causes` entry each becomes.

use serde_json::{Value, json};

/// The kinds of field error the schema check reports (`k8s.io/apimachinery`'s
/// `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    TooLong,
    TooMany,
    Forbidden,
    Duplicate,
    Internal,
}

impl ErrorType {
    /// How the message names it (`Invalid value`).
    fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Internal => "Internal error",
        }
    }

    /// The cause's `reason` (`FieldValueInvalid`).
    pub(crate) fn cause_reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Internal => "InternalError",
        }
    }

    /// The type a CEL rule's `reason` names (`FieldValueForbidden`); anything else is
    /// `FieldValueInvalid`, as the apiserver defaults it.
    pub(crate) fn from_cel_reason(reason: Option<&str>) -> ErrorType {
        match reason {
            Some("FieldValueRequired") => ErrorType::Required,
            Some("FieldValueForbidden") => ErrorType::Forbidden,
            Some("FieldValueDuplicate") => ErrorType::Duplicate,
            _ => ErrorType::Invalid,
        }
    }

    /// Whether the apiserver shows the value for this type (`Required value: detail`
    /// shows none).
    fn shows_value(self) -> bool {
        !matches!(
            self,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::Internal
        )
    }
}

/// One field error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    /// The field path (`spec.timeout`, `spec.env[0].name`).
    pub(crate) field: String,
    pub(crate) kind: ErrorType,
    /// The offending value (shown for the types that show one).
    pub(crate) value: Value,
    /// Why.
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn new(
        field: &str,
        kind: ErrorType,
        value: Value,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.to_owned(),
            kind,
            value,
            detail: detail.into(),
        }
    }

    /// What follows `FIELD: ` in the message (`Invalid value: "x": why`).
    pub(crate) fn body(&self) -> String {
        let mut body = self.kind.label().to_owned();
        if self.kind.shows_value() {
            body.push_str(": ");
            body.push_str(&render_value(&self.value));
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// The `Status.details.causes` entry.
    pub(crate) fn cause(&self) -> Value {
        json!({"reason": self.kind.cause_reason(), "message": self.body(), "field": self.field})
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as `field.Error` prints it: strings quoted, numbers and booleans bare,
/// objects and arrays as JSON.
fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// The name of a JSON value's type as the OpenAPI schema says it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `base.name`, or `name` at the root.
pub(crate) fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[index]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}
