//! Errors as the apiserver sends them: a `metav1.Status` with the HTTP code, a reason
//! clients switch on (`NotFound`, `Conflict`, ...) and a message worded like the
//! apiserver's, so that kube-rs and kubectl report them as they would on a cluster.

use serde_json::{Value, json};

use crate::cluster::contract::Denial;

/// A refused request: becomes a `Status` response.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when there is something to say about the object.
    pub details: Option<Value>,
}

/// The group and plural of a resource plus an object name, for `Status.details`.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// API group (`""` for core).
    pub group: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 `NotFound` for an object.
    pub fn not_found(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", subject.qualified(), subject.name),
            )
        }
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 `AlreadyExists`.
    pub fn already_exists(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "{} \"{}\" already exists",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// 409 `Conflict` on a stale `resourceVersion` or a failed precondition.
    pub fn conflict(subject: Subject<'_>, why: &str) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// 422 `Invalid` with one cause per field.
    pub fn invalid(subject: Subject<'_>, kind: &str, causes: Vec<(String, String)>) -> ApiError {
        let summary: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| json!({"reason": "FieldValueInvalid", "field": field, "message": message}))
            .collect();
        let qualified_kind = if subject.group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{}", subject.group)
        };
        let mut details = subject.details();
        details["kind"] = json!(kind);
        details["causes"] = Value::Array(causes);
        ApiError {
            details: Some(details),
            ..ApiError::new(
                422,
                "Invalid",
                format!(
                    "{qualified_kind} \"{}\" is invalid: {}",
                    subject.name,
                    summary.join(", ")
                ),
            )
        }
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(what: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
        )
    }

    /// 410 `Expired`: a watch from a resourceVersion older than the kept history.
    pub fn gone(resource_version: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {resource_version} ({oldest})"),
        )
    }

    /// 415 `UnsupportedMediaType` for a patch type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 415 for a body that is neither JSON, YAML nor Protobuf (CBOR is not decoded).
    pub fn unsupported_body(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?}; this server decodes no CBOR, and Protobuf only for a few kinds)"
            ),
        )
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The `Status` object clients decode.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> ApiError {
        let details = (!denial.causes.is_empty()).then(|| json!({"causes": denial.causes}));
        ApiError {
            code: denial.code,
            reason: denial.reason,
            message: denial.message,
            details,
        }
    }
}
