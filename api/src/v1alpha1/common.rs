use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::limits;

/// A `metav1.Condition`, re-exported so users need not depend on k8s-openapi paths.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// How a Run's program is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interpreter {
    /// `bash main.sh ARGS` (or `bash ENTRYPOINT ARGS`).
    #[default]
    Bash,
    /// `python main.py ARGS` (or `python ENTRYPOINT ARGS`).
    Python,
    /// `COMMAND ARGS`, run directly with no interpreter.
    Exec,
}

impl Interpreter {
    /// The spelling used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Python => "python",
            Self::Exec => "exec",
        }
    }

    /// The file an inline `script` is written to, for interpreters that take one.
    pub fn script_file(self) -> Option<&'static str> {
        match self {
            Self::Bash => Some("main.sh"),
            Self::Python => Some("main.py"),
            Self::Exec => None,
        }
    }
}

impl std::fmt::Display for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// `conditions`: a list-map keyed by `type`, as `metav1.Condition` lists are in
/// Kubernetes' own APIs, so server-side apply merges them per condition.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "maxItems": limits::MAX_CONDITIONS,
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// A Kubernetes resource quantity (`1Gi`, `500Mi`, `1048576`): an integer or a string
/// matching the quantity grammar. `x-kubernetes-int-or-string` alone says "integer or
/// string" to the apiserver; an `anyOf` would lose its types in kube's structural rewrite.
pub(crate) fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": true,
    })
}

/// A Go-style duration (`30s`, `10m`, `1h30m`), bounded in length; its value, from
/// `MIN_TIMEOUT_SECONDS` to `MAX_TIMEOUT_SECONDS`, is checked by CEL (`duration(self)`)
/// and by the validation library (`check_timeout`), with the same constants.
pub(crate) fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": limits::MAX_DURATION_BYTES,
        "x-kubernetes-validations": [{
            "rule": format!(
                "duration(self) >= duration('{}s') && duration(self) <= duration('{}h')",
                limits::MIN_TIMEOUT_SECONDS,
                limits::MAX_TIMEOUT_SECONDS / 3600,
            ),
            "message": format!(
                "must be a duration from {}s to {}h, such as 30s, 10m or 1h30m",
                limits::MIN_TIMEOUT_SECONDS,
                limits::MAX_TIMEOUT_SECONDS / 3600,
            ),
        }],
    })
}

/// The pod template is kept as the user wrote it (`x-kubernetes-preserve-unknown-fields`)
/// rather than with the full PodTemplateSpec schema: that schema would make the CRD
/// several hundred KiB and tie it to one Kubernetes minor. The webhook and `krt check`
/// decode it as a typed PodTemplateSpec, so malformed templates are still refused.
pub(crate) fn pod_template_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "A PodTemplateSpec: the user's image, resources, service account and scheduling. See docs/api.md for the reserved fields.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Any JSON value (Run `input`, Runtime `inputSchema`).
pub(crate) fn any_json_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A map of inline files: relative path -> content.
pub(crate) fn files_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": limits::MAX_FILES,
        "additionalProperties": {"type": "string", "maxLength": limits::MAX_INLINE_SOURCE_BYTES},
    })
}
