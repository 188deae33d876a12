//! Helpers shared by the test files that evaluate the generated CRDs: the schema of a
//! kind, and the CEL rules of that schema evaluated offline by kube's CEL implementation
//! (the same document the apiserver receives).

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kube::core::cel::{ErrorKind, ValidationError, Validator};
use serde_json::{Value, json};

/// The `openAPIV3Schema` of the generated CRD of `kind`.
pub(crate) fn schema_of(kind: &str) -> Value {
    let generated = kruntimes_api::crd::all()
        .into_iter()
        .find(|g| g.crd.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(&generated.crd).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        .clone()
}

fn errors(kind: &str, object: &Value, old: Option<&Value>) -> Vec<ValidationError> {
    match Validator::new().validate(&schema_of(kind), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec(),
    }
}

/// Messages of the rules that evaluated to false; any other failure (a rule this CEL
/// implementation cannot evaluate) fails the test, so a rule cannot pass by being skipped.
pub(crate) fn failures(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    errors(kind, object, old)
        .into_iter()
        .map(|e| {
            assert!(
                matches!(e.kind, ErrorKind::ValidationFailure),
                "rule {:?} could not be evaluated: {:?} {}",
                e.rule,
                e.kind,
                e.message
            );
            format!("{}: {}", e.field_path, e.message)
        })
        .collect()
}

/// A Run named `r` with `spec`.
pub(crate) fn run(spec: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": {"name": "r"}, "spec": spec})
}

/// A Runtime named `rt` with a one-container template and the fields of `spec` added.
pub(crate) fn runtime(spec: Value) -> Value {
    let mut full =
        json!({"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime", "metadata": {"name": "rt"}, "spec": full})
}
