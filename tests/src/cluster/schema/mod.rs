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
//!    a type error keeps the rules from running. A CRD version's rules are compiled
//!    once per CRD `resourceVersion`, as the apiserver compiles them when it loads the
//!    CRD, not per request.
//!
//! Every failure is one cause of a 422 `Invalid` whose message is worded as the
//! apiserver's (`Run.kruntimes.io "r" is invalid: spec.timeout: Invalid value: "string":
//! must be a duration from 1s to 24h`). Differences from kube-apiserver are listed in
//! docs/test-cluster.md, "Admission and schema".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
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
    rules: CompiledRules,
}

/// Where a schema comes from: the CRD's uid and the version's name.
type SchemaKey = (String, String);

/// The CEL rules of each stored CRD version, compiled once per CRD `resourceVersion`
/// (one entry per CRD version: a changed CRD replaces its entry).
#[derive(Debug, Default)]
struct CompiledRules {
    by_version: Mutex<HashMap<SchemaKey, (String, Arc<CompiledSchema>)>>,
}

impl CompiledRules {
    /// The compiled rules of `schema`, version `version` of `crd`. A CRD that is not
    /// stored (no uid or `resourceVersion`, as in unit tests) is compiled each time.
    fn of(&self, crd: &Value, version: &str, schema: &Value) -> Arc<CompiledSchema> {
        let metadata = &crd["metadata"];
        let (Some(uid), Some(revision)) = (
            metadata["uid"].as_str(),
            metadata["resourceVersion"].as_str(),
        ) else {
            return Arc::new(compile_schema(schema));
        };
        let key = (uid.to_owned(), version.to_owned());
        let mut compiled = self
            .by_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, rules)) = compiled.get(&key)
            && seen == revision
        {
            return rules.clone();
        }
        let rules = Arc::new(compile_schema(schema));
        compiled.insert(key, (revision.to_owned(), rules.clone()));
        rules
    }
}

impl CrdSchemaCheck {
    /// A check with no compiled patterns yet.
    pub fn new() -> CrdSchemaCheck {
        CrdSchemaCheck::default()
    }

    fn field_errors(
        &self,
        schema: &Value,
        rules: impl FnOnce() -> Arc<CompiledSchema>,
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
        let rules = rules();
        if let Err(failures) = VALIDATOR.with(|v| v.validate_compiled(&rules, object, old)) {
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
        let rules = || self.rules.of(crd, version, schema);
        let errors = self.field_errors(schema, rules, object, old);
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

    fn crd_with_rule(revision: &str, rule: &str) -> Value {
        json!({
            "metadata": {"name": "things.example.com", "uid": "u-1", "resourceVersion": revision},
            "spec": {"group": "example.com", "names": {"kind": "Thing"}, "versions": [{
                "name": "v1",
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object",
                             "properties": {"x": {"type": "integer"}},
                             "x-kubernetes-validations": [{"rule": rule, "message": "x is too small"}]}
                }}}
            }]}
        })
    }

    #[test]
    fn a_changed_crd_is_compiled_again_and_an_unchanged_one_is_not() {
        let check = CrdSchemaCheck::new();
        let object = || json!({"metadata": {"name": "t"}, "spec": {"x": 3}});
        let old = crd_with_rule("1", "self.x > 0");
        check.check(&old, "v1", &mut object(), None).unwrap();
        let first = check.rules.of(
            &old,
            "v1",
            &old["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        );
        let again = check.rules.of(
            &old,
            "v1",
            &old["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        );
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same resourceVersion is compiled once"
        );

        let changed = crd_with_rule("2", "self.x > 5");
        let denial = check
            .check(&changed, "v1", &mut object(), None)
            .unwrap_err();
        assert_eq!(denial.code, 422);
        assert!(
            denial.message.contains("x is too small"),
            "{}",
            denial.message
        );
        assert_eq!(
            check.rules.by_version.lock().unwrap().len(),
            1,
            "one entry per CRD version"
        );
    }

    #[test]
    fn field_paths_reach_nested_values() {
        let object = json!({"spec": {"env": [{"name": "A"}], "files": {"k": "x"}}});
        assert_eq!(value_at(&object, "spec.env[0].name"), Some(&json!("A")));
        assert_eq!(value_at(&object, "spec.files.k"), Some(&json!("x")));
        assert_eq!(value_at(&object, "spec.env[3]"), None);
        assert_eq!(value_at(&object, ""), Some(&object));
    }
}
