//! [`SchemaCheck`] for custom resources: what the apiserver does to a custom resource
//! between decoding and storage, for one version of its CRD.
//!
//! 1. Structural pruning: fields the `openAPIV3Schema` does not list are dropped, except
//!    under `x-kubernetes-preserve-unknown-fields: true` (and `additionalProperties`
//!    maps); the root and `x-kubernetes-embedded-resource` objects keep `apiVersion`,
//!    `kind` and `metadata`.
//! 2. Nulls of non-`nullable` fields are dropped, then `default`s fill absent fields.
//! 3. The OpenAPI checks (`validate`): `type` (and `x-kubernetes-int-or-string`),
//!    `required`, `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`,
//!    `minItems`/`maxItems`, `maxProperties`, `format` (`int32`, `int64`,
//!    `date-time`), unique `x-kubernetes-list-type: set`/`map` entries.
//! 4. The CEL rules (`x-kubernetes-validations`) with kube's CEL implementation: `rule`,
//!    `message`, `messageExpression`, `fieldPath`, `reason`; transition rules (those
//!    using `oldSelf`) only on updates where the old value exists. As in the apiserver,
//!    a type error keeps the rules from running.
//!
//! Every failure is one cause of a 422 `Invalid` whose message is worded as the
//! apiserver's (`Run.kruntimes.io "r" is invalid: spec.timeout: Invalid value: "string":
//! must be a duration from 1s to 24h`). Differences from kube-apiserver are listed in
//! docs/test-cluster.md, "Admission and schema".

use kube::core::cel::{ErrorKind, ValidationError, Validator};
use serde_json::{Value, json};

use super::contract::{Denial, SchemaCheck};
use field::{ErrorType, FieldError, type_name};

mod field;
mod prune;
mod validate;

/// The apiserver's error when a type error kept the CEL rules from running.
const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

thread_local! {
    /// The thread's CEL validator: registering the Kubernetes CEL functions is done
    /// once per thread, not per object (a `Validator` is not `Sync`).
    static VALIDATOR: Validator = Validator::new();
}

/// The schema check of the emulated API server.
#[derive(Debug, Default)]
pub struct CrdSchemaCheck {
    validators: validate::Validators,
}

impl CrdSchemaCheck {
    /// A check with no compiled patterns yet.
    pub fn new() -> CrdSchemaCheck {
        CrdSchemaCheck::default()
    }

    fn field_errors(
        &self,
        schema: &Value,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Vec<FieldError> {
        prune::prune(schema, object, true);
        prune::default(schema, object);
        let mut errors = Vec::new();
        validate::validate(&self.validators, schema, object, "", true, &mut errors);
        if errors.iter().any(validate::is_type_error) {
            errors.push(FieldError::new(
                "<nil>",
                ErrorType::Invalid,
                Value::Null,
                RULES_NOT_CHECKED,
            ));
            return errors;
        }
        if let Err(failures) = VALIDATOR.with(|v| v.validate(schema, object, old)) {
            errors.extend(failures.iter().map(|f| cel_error(f, object)));
        }
        errors
    }
}

/// A CEL failure as a field error: the value shown is the type of the field the rule
/// is on (`Invalid value: "object": ...`), as the apiserver shows it.
fn cel_error(failure: &ValidationError, object: &Value) -> FieldError {
    // A root rule's `fieldPath: .spec.x` comes back with its leading dot.
    let path = failure.field_path.trim_start_matches('.');
    let field = if path.is_empty() {
        "<nil>".to_owned()
    } else {
        path.to_owned()
    };
    let shown = json!(value_at(object, path).map_or("object", type_name));
    match failure.kind {
        ErrorKind::ValidationFailure => FieldError::new(
            &field,
            ErrorType::from_cel_reason(failure.reason.as_deref()),
            shown,
            failure.message.clone(),
        ),
        // A rule that does not compile or evaluate: the apiserver refuses such a CRD
        // (or reports the evaluation error as invalid); either way the object is not
        // admitted.
        _ => FieldError::new(
            &field,
            ErrorType::Invalid,
            shown,
            format!("rule {:?}: {}", failure.rule, failure.message),
        ),
    }
}

/// The value at a field path such as `spec.env[0].name`.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            current = match index.parse::<usize>() {
                Ok(i) => current.get(i)?,
                Err(_) => current.get(index.trim_matches('"'))?,
            };
        }
    }
    Some(current)
}

/// The schema of version `version` of `crd`, `Ok(None)` when the version has none.
fn version_schema<'a>(crd: &'a Value, version: &str) -> Result<Option<&'a Value>, Denial> {
    let versions = crd["spec"]["versions"].as_array();
    let found = versions
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(version));
    match found {
        Some(v) => Ok(v.pointer("/schema/openAPIV3Schema")),
        None => Err(Denial {
            code: 500,
            reason: "InternalError".to_owned(),
            message: format!(
                "CustomResourceDefinition {:?} has no version {version:?}",
                crd["metadata"]["name"].as_str().unwrap_or_default()
            ),
            causes: Vec::new(),
        }),
    }
}

/// The apiserver's 422 for `errors` on `Kind.group "name"`: one error inline, several
/// in brackets.
fn invalid(crd: &Value, name: &str, errors: &[FieldError]) -> Denial {
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let body = match listed.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    Denial {
        code: 422,
        reason: "Invalid".to_owned(),
        message: format!("{kind}.{group} {name:?} is invalid: {body}"),
        causes: errors.iter().map(FieldError::cause).collect(),
    }
}

impl SchemaCheck for CrdSchemaCheck {
    fn check(
        &self,
        crd: &Value,
        version: &str,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Denial> {
        let Some(schema) = version_schema(crd, version)? else {
            return Ok(());
        };
        let errors = self.field_errors(schema, object, old);
        if errors.is_empty() {
            return Ok(());
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        Err(invalid(crd, name, &errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_reach_nested_values() {
        let object = json!({"spec": {"env": [{"name": "A"}], "files": {"k": "x"}}});
        assert_eq!(value_at(&object, "spec.env[0].name"), Some(&json!("A")));
        assert_eq!(value_at(&object, "spec.files.k"), Some(&json!("x")));
        assert_eq!(value_at(&object, "spec.env[3]"), None);
        assert_eq!(value_at(&object, ""), Some(&object));
    }
}
