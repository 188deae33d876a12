//! The emulated cluster's CRD schema check against the project's own CRDs
//! (charts/kruntimes/crds/): pruning, defaults, OpenAPI checks and CEL rules, with the
//! apiserver's 422 wording.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use kruntimes_e2e::cluster::contract::{Denial, SchemaCheck};
use kruntimes_e2e::cluster::schema::CrdSchemaCheck;
use serde_json::{Value, json};

fn crd(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kruntimes/crds")
        .join(file);
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn runs() -> Value {
    crd("runs.kruntimes.io.yaml")
}

fn run(spec: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
           "metadata": {"name": "r", "namespace": "team-a", "labels": {"a": "b"}}, "spec": spec})
}

fn bash_script() -> Value {
    json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"})
}

fn check(crd: &Value, object: &mut Value, old: Option<&Value>) -> Result<(), Denial> {
    CrdSchemaCheck::new().check(crd, "v1alpha1", object, old)
}

fn denial(crd: &Value, mut object: Value, old: Option<&Value>) -> Denial {
    check(crd, &mut object, old).expect_err("the object must be refused")
}

#[test]
fn unknown_fields_are_pruned_and_preserved_ones_kept() {
    let mut spec = bash_script();
    spec["bogus"] = json!(1);
    spec["input"] = json!({"anything": {"nested": [1, 2]}});
    spec["env"] = json!([{"name": "A", "extra": true}]);
    let mut object = run(spec);
    object["topLevel"] = json!("x");
    object["metadata"]["annotations"] = json!({"k": "v"});
    check(&runs(), &mut object, None).unwrap();
    assert_eq!(object.get("topLevel"), None);
    assert_eq!(object["spec"].get("bogus"), None);
    assert_eq!(object["spec"]["env"][0].get("extra"), None);
    assert_eq!(
        object["spec"]["input"],
        json!({"anything": {"nested": [1, 2]}})
    );
    // The root keeps apiVersion, kind and the whole of metadata.
    assert_eq!(object["apiVersion"], "kruntimes.io/v1alpha1");
    assert_eq!(object["metadata"]["annotations"], json!({"k": "v"}));
    assert_eq!(object["metadata"]["labels"], json!({"a": "b"}));
}

#[test]
fn defaults_fill_absent_and_null_fields() {
    let mut spec = bash_script();
    spec["env"] = json!([{"name": "A"}, {"name": "B", "value": null}, {"name": "C", "value": "c"}]);
    let mut object = run(spec);
    check(&runs(), &mut object, None).unwrap();
    assert_eq!(
        object["spec"]["env"],
        json!([{"name": "A", "value": ""}, {"name": "B", "value": ""}, {"name": "C", "value": "c"}])
    );
}

#[test]
fn a_timeout_out_of_bounds_gets_the_crds_own_message() {
    for (timeout, ok) in [
        ("1s", true),
        ("24h", true),
        ("999ms", false),
        ("24h1s", false),
    ] {
        let mut spec = bash_script();
        spec["timeout"] = json!(timeout);
        let mut object = run(spec);
        let result = check(&runs(), &mut object, None);
        if ok {
            assert_eq!(result, Ok(()), "{timeout}");
            continue;
        }
        let denial = result.expect_err(timeout);
        assert_eq!(denial.code, 422);
        assert_eq!(denial.reason, "Invalid");
        assert_eq!(
            denial.message,
            "Run.kruntimes.io \"r\" is invalid: spec.timeout: Invalid value: \"string\": \
             must be a duration from 1s to 24h, such as 30s, 10m or 1h30m",
            "{timeout}"
        );
        assert_eq!(
            denial.causes,
            vec![
                json!({"reason": "FieldValueInvalid", "field": "spec.timeout",
                        "message": "Invalid value: \"string\": must be a duration from 1s to 24h, such as 30s, 10m or 1h30m"})
            ]
        );
    }
}

#[test]
fn object_level_rules_name_the_object_field() {
    let mut spec = bash_script();
    spec["command"] = json!(["true"]);
    let d = denial(&runs(), run(spec), None);
    assert!(
        d.message.starts_with("Run.kruntimes.io \"r\" is invalid: [spec: Invalid value: \"object\": exactly one program source"),
        "{}",
        d.message
    );
    assert_eq!(d.causes.len(), 2, "{:?}", d.causes);
    assert!(
        d.causes.iter().all(|c| c["field"] == "spec"),
        "{:?}",
        d.causes
    );
}

#[test]
fn required_enum_and_type_errors_are_worded_as_the_apiserver_words_them() {
    let d = denial(
        &runs(),
        run(json!({"interpreter": "ruby", "script": "x"})),
        None,
    );
    assert!(
        d.message.contains("spec.runtimeRef: Required value"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains(
            "spec.interpreter: Unsupported value: \"ruby\": supported values: \"bash\", \"python\", \"exec\""
        ),
        "{}",
        d.message
    );
    let reasons: Vec<&str> = d
        .causes
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"FieldValueRequired"), "{reasons:?}");
    assert!(reasons.contains(&"FieldValueNotSupported"), "{reasons:?}");

    // A type error keeps the CEL rules from running, as in the apiserver.
    let mut spec = bash_script();
    spec["args"] = json!("--fast");
    spec["command"] = json!(["true"]);
    let d = denial(&runs(), run(spec), None);
    assert_eq!(
        d.message,
        "Run.kruntimes.io \"r\" is invalid: [spec.args: Invalid value: \"string\": spec.args in body must be of type array: \"string\", \
         <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]"
    );
}

#[test]
fn item_and_length_bounds_hold_at_the_boundary() {
    let with_args = |n: usize| {
        let mut spec = bash_script();
        spec["args"] = json!(vec!["a"; n]);
        run(spec)
    };
    check(&runs(), &mut with_args(256), None).unwrap();
    let d = denial(&runs(), with_args(257), None);
    assert_eq!(
        d.message,
        "Run.kruntimes.io \"r\" is invalid: spec.args: Too many: 257: must have at most 256 items"
    );
    let with_entrypoint = |len: usize| {
        let mut spec = json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash"});
        spec["entrypoint"] = json!("a".repeat(len));
        spec["files"] = json!({ "a".repeat(len): "echo" });
        run(spec)
    };
    let d = denial(&runs(), with_entrypoint(1025), None);
    assert!(
        d.message
            .contains("spec.entrypoint: Too long: may not be more than 1024 bytes"),
        "{}",
        d.message
    );
    let d = denial(&runs(), with_entrypoint(0), None);
    assert!(
        d.message.contains("spec.entrypoint: Invalid value: \"\": spec.entrypoint in body should be at least 1 chars long"),
        "{}",
        d.message
    );
}

#[test]
fn transition_rules_run_only_on_updates() {
    let old = run(bash_script());
    let mut cancelled = old.clone();
    cancelled["spec"]["cancel"] = json!(true);
    check(&runs(), &mut cancelled, Some(&old)).unwrap();

    let mut edited = old.clone();
    edited["spec"]["runtimeRef"]["name"] = json!("python");
    // On create there is no old value: the immutability rules do not apply.
    check(&runs(), &mut edited.clone(), None).unwrap();
    let d = denial(&runs(), edited, Some(&old));
    assert_eq!(
        d.message,
        "Run.kruntimes.io \"r\" is invalid: spec.runtimeRef: Forbidden: \
         spec.runtimeRef is immutable: only spec.cancel may change after a Run is created"
    );
    assert_eq!(d.causes[0]["reason"], "FieldValueForbidden");
}

#[test]
fn int_or_string_fields_take_both_and_strings_must_match_the_pattern() {
    let runtimes = crd("runtimes.kruntimes.io.yaml");
    let runtime = |size: Value| {
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime", "metadata": {"name": "py"},
               "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "python"}]}},
                        "workspace": {"sizeLimit": size}}})
    };
    for ok in [json!("2Gi"), json!(1024), json!("500M")] {
        let mut object = runtime(ok.clone());
        check(&runtimes, &mut object, None).unwrap_or_else(|d| panic!("{ok}: {d:?}"));
        // The template keeps every field: x-kubernetes-preserve-unknown-fields.
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["image"],
            "python"
        );
    }
    let d = denial(&runtimes, runtime(json!("2 gigs")), None);
    assert!(
        d.message.starts_with("Runtime.kruntimes.io \"py\" is invalid: spec.workspace.sizeLimit: Invalid value: \"2 gigs\": spec.workspace.sizeLimit in body should match '^(\\+|-)?"),
        "{}",
        d.message
    );
    let d = denial(&runtimes, runtime(json!(true)), None);
    assert!(
        d.message
            .contains("spec.workspace.sizeLimit in body must be of type integer or string"),
        "{}",
        d.message
    );
}

/// No project CRD embeds a resource: a small CRD shows the embedded object keeping
/// apiVersion, kind and metadata while its other unknown fields go.
#[test]
fn embedded_resources_keep_their_object_fields() {
    let crd = json!({
        "metadata": {"name": "wrappers.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Wrapper"}, "versions": [{
            "name": "v1",
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "object": {"type": "object", "x-kubernetes-embedded-resource": true,
                               "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    "count": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10, "default": 3}
                }}
            }}}
        }]}
    });
    let mut object = json!({"apiVersion": "example.com/v1", "kind": "Wrapper", "metadata": {"name": "w"},
        "spec": {"object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                            "data": {"k": "v"}, "binaryData": {"x": "eA=="}}}});
    CrdSchemaCheck::new()
        .check(&crd, "v1", &mut object, None)
        .unwrap();
    assert_eq!(
        object["spec"],
        json!({"object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}},
               "count": 3})
    );
    let mut too_many = object.clone();
    too_many["spec"]["count"] = json!(11);
    let d = CrdSchemaCheck::new()
        .check(&crd, "v1", &mut too_many, None)
        .unwrap_err();
    assert_eq!(
        d.message,
        "Wrapper.example.com \"w\" is invalid: spec.count: Invalid value: 11: spec.count in body should be less than or equal to 10"
    );
    let d = CrdSchemaCheck::new()
        .check(&crd, "v2", &mut object, None)
        .unwrap_err();
    assert_eq!(d.code, 500);
    assert!(d.message.contains("no version \"v2\""), "{}", d.message);
}
