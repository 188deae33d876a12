//! The generated CRDs: committed copies in sync, and their CEL rules doing what they
//! claim, evaluated offline by kube's CEL implementation against the generated schema
//! (the same document the apiserver receives).

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
use serde_json::{Value, json};

mod support;
use support::{failures, run, runtime, schema_of};

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kruntimes/crds")
}

#[test]
fn committed_crds_match_the_types() {
    for generated in kruntimes_api::crd::all() {
        let path = crd_dir().join(generated.file_name);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let fresh = kruntimes_api::crd::to_yaml(&generated.crd).unwrap();
        assert!(
            committed == fresh,
            "{} is out of date; regenerate with `cargo run -p krt -- crds --out-dir charts/kruntimes/crds`",
            path.display()
        );
    }
    let files: Vec<_> = std::fs::read_dir(crd_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 3, "unexpected files in crds/: {files:?}");
}

#[test]
fn every_stored_version_is_served_and_structural() {
    for generated in kruntimes_api::crd::all() {
        let crd = serde_json::to_value(&generated.crd).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0]["name"], "v1alpha1");
        assert_eq!(versions[0]["served"], true);
        assert_eq!(versions[0]["storage"], true);
        assert_eq!(versions[0]["subresources"]["status"], json!({}));
        let text = crd.to_string();
        assert!(
            !text.contains("\"$ref\""),
            "a structural schema has no $ref"
        );
        assert!(
            !text.contains("\"nullable\""),
            "null means unset: no nullable fields"
        );
    }
}

fn bash_script() -> Value {
    json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"})
}

fn assert_one_failure(got: Vec<String>, expected: &str) {
    assert_eq!(
        got.len(),
        1,
        "expected one failure containing {expected:?}, got {got:?}"
    );
    assert!(
        got[0].contains(expected),
        "expected {expected:?} in {got:?}"
    );
}

#[test]
fn run_needs_exactly_one_program_source() {
    assert_eq!(
        failures("Run", &run(bash_script()), None),
        Vec::<String>::new()
    );
    let mut two = bash_script();
    two["entrypoint"] = json!("x.sh");
    two["files"] = json!({"x.sh": "echo"});
    assert_one_failure(
        failures("Run", &run(two), None),
        "exactly one program source",
    );
    let none = json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash"});
    assert_one_failure(
        failures("Run", &run(none), None),
        "exactly one program source",
    );
}

#[test]
fn command_goes_with_exec_only() {
    let exec = json!({"runtimeRef": {"name": "b"}, "interpreter": "exec", "command": ["echo"]});
    assert_eq!(failures("Run", &run(exec), None), Vec::<String>::new());
    let bash_command =
        json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "command": ["echo"]});
    assert_one_failure(
        failures("Run", &run(bash_command), None),
        "command goes with interpreter exec",
    );
    let exec_script = json!({"runtimeRef": {"name": "b"}, "interpreter": "exec", "script": "x"});
    assert_one_failure(
        failures("Run", &run(exec_script), None),
        "command goes with interpreter exec",
    );
}

#[test]
fn git_replaces_inline_sources_and_entrypoint_needs_a_tree() {
    let mut git_and_script = bash_script();
    git_and_script["git"] = json!({"url": "https://github.com/o/r"});
    assert_one_failure(
        failures("Run", &run(git_and_script), None),
        "git is used instead of inline sources",
    );
    let bare_entrypoint =
        json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "entrypoint": "x.sh"});
    assert_one_failure(
        failures("Run", &run(bare_entrypoint), None),
        "entrypoint names a file",
    );
    let git_entrypoint = json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "entrypoint": "x.sh", "git": {"url": "https://github.com/o/r"}});
    assert_eq!(
        failures("Run", &run(git_entrypoint), None),
        Vec::<String>::new()
    );
}

/// Every duration field at its bounds, in every place one is: the CEL rule and the
/// validation library must give the same answer (`MIN_TIMEOUT_SECONDS`,
/// `MAX_TIMEOUT_SECONDS`).
#[test]
fn timeouts_are_bounded_alike_by_cel_and_the_library() {
    let workflow = |timeout: &str| {
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
               "spec": {"timeout": timeout, "jobs": [{"name": "j", "steps": [{"name": "s", "run": bash_script()}]}]}})
    };
    let run_timeout = |timeout: &str| {
        let mut spec = bash_script();
        spec["timeout"] = json!(timeout);
        run(spec)
    };
    /// Kind, field path, and the object with that field set to a duration.
    type Place = (&'static str, &'static str, fn(&str) -> Value);
    let places: [Place; 5] = [
        ("Run", "spec.timeout", run_timeout),
        ("Workflow", "spec.timeout", workflow),
        ("Runtime", "spec.limits.defaultTimeout", |t| {
            runtime(json!({"limits": {"defaultTimeout": t}}))
        }),
        ("Runtime", "spec.limits.maxTimeout", |t| {
            runtime(json!({"limits": {"maxTimeout": t}}))
        }),
        ("Runtime", "spec.git.timeout", |t| {
            runtime(json!({"git": {"allowedHosts": ["github.com"], "timeout": t}}))
        }),
    ];
    for (timeout, ok) in [
        ("1s", true),
        ("1000ms", true),
        ("5m", true),
        ("1h30m", true),
        ("24h", true),
        ("999ms", false),
        ("999999999ns", false),
        ("1ns", false),
        ("0s", false),
        ("24h0m0.000000001s", false),
        ("24h1s", false),
    ] {
        for (kind, field, object) in &places {
            let object = object(timeout);
            let cel = failures(kind, &object, None);
            let library: Vec<String> = kruntimes_api::validation::check_document(&object)
                .unwrap()
                .violations
                .iter()
                .map(ToString::to_string)
                .collect();
            if ok {
                assert_eq!(cel, Vec::<String>::new(), "CEL, {kind} {field}: {timeout}");
                assert_eq!(
                    library,
                    Vec::<String>::new(),
                    "library, {kind} {field}: {timeout}"
                );
            } else {
                assert_one_failure(cel, "must be a duration from 1s to 24h");
                assert_eq!(
                    library.len(),
                    1,
                    "library, {kind} {field}: {timeout}: {library:?}"
                );
                assert!(
                    library[0].starts_with(&format!(
                        "{field}: Invalid value: \"{timeout}\" (must be at "
                    )),
                    "library, {kind} {field}: {timeout}: {library:?}"
                );
            }
        }
    }
}

#[test]
fn only_cancel_may_change() {
    let old = run(bash_script());
    let mut cancelled = old.clone();
    cancelled["spec"]["cancel"] = json!(true);
    assert_eq!(
        failures("Run", &cancelled, Some(&old)),
        Vec::<String>::new()
    );

    let mut edited = old.clone();
    edited["spec"]["script"] = json!("echo changed");
    assert_one_failure(
        failures("Run", &edited, Some(&old)),
        "spec.script is immutable",
    );

    let mut added = old.clone();
    added["spec"]["timeout"] = json!("5m");
    assert_one_failure(
        failures("Run", &added, Some(&old)),
        "spec.timeout is immutable",
    );

    let mut removed = old.clone();
    removed["spec"]["args"] = json!(["a"]);
    let without = old.clone();
    assert_one_failure(
        failures("Run", &without, Some(&removed)),
        "spec.args is immutable",
    );
}

#[test]
fn runtime_bounds() {
    for (replicas, ok) in [(0, true), (1000, true), (-1, false), (1001, false)] {
        let got = failures("Runtime", &runtime(json!({"replicas": replicas})), None);
        assert_eq!(got.is_empty(), ok, "replicas {replicas}: {got:?}");
    }
    for (concurrency, ok) in [(1, true), (256, true), (0, false), (257, false)] {
        let got = failures(
            "Runtime",
            &runtime(json!({"concurrency": concurrency})),
            None,
        );
        assert_eq!(got.is_empty(), ok, "concurrency {concurrency}: {got:?}");
    }
    let inverted = runtime(json!({"limits": {"defaultTimeout": "2h", "maxTimeout": "1h"}}));
    assert_one_failure(
        failures("Runtime", &inverted, None),
        "defaultTimeout must not exceed maxTimeout",
    );
    let ordered = runtime(json!({"limits": {"defaultTimeout": "10m", "maxTimeout": "1h"}}));
    assert_eq!(failures("Runtime", &ordered, None), Vec::<String>::new());
}

#[test]
fn workflow_steps_need_run_and_refuse_uses() {
    let wf = |step: Value| {
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
               "spec": {"jobs": [{"name": "j", "steps": [step]}]}})
    };
    assert_eq!(
        failures(
            "Workflow",
            &wf(json!({"name": "s", "run": bash_script()})),
            None
        ),
        Vec::<String>::new()
    );
    assert_one_failure(
        failures(
            "Workflow",
            &wf(json!({"name": "s", "uses": "org/action@v1", "run": bash_script()})),
            None,
        ),
        "steps[].uses is not implemented",
    );
    assert_one_failure(
        failures("Workflow", &wf(json!({"name": "s"})), None),
        "a step needs an execution method",
    );
    // The RunSpec rules apply inside steps too.
    let mut bad = bash_script();
    bad["command"] = json!(["x"]);
    let got = failures("Workflow", &wf(json!({"name": "s", "run": bad})), None);
    assert!(
        got.iter().any(|m| m.contains("exactly one program source")),
        "{got:?}"
    );
}

/// Walks a schema and returns (sub-schema, rule) for every CEL rule in it.
fn rules_in(schema: &Value, out: &mut Vec<(Value, String)>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            out.push((schema.clone(), rule["rule"].as_str().unwrap().to_owned()));
        }
    }
    match schema {
        Value::Object(map) => map.values().for_each(|v| rules_in(v, out)),
        Value::Array(items) => items.iter().for_each(|v| rules_in(v, out)),
        _ => {}
    }
}

#[test]
fn every_rule_is_in_scope_and_within_the_cost_budget() {
    let mut checked = 0;
    for kind in ["Runtime", "Run", "Workflow"] {
        let mut rules = Vec::new();
        rules_in(&schema_of(kind), &mut rules);
        assert!(!rules.is_empty(), "{kind} has CEL rules");
        for (schema, rule) in rules {
            let compiled = compile_schema(&schema);
            let warnings = analyze_rule(&rule, &compiled, ScopeContext::CrdValidation);
            assert!(warnings.is_empty(), "{kind}: {rule}: {warnings:?}");
            checked += 1;
        }
    }
    // 12 immutability rules, 4 RunSpec rules (twice: Run and Workflow steps), durations...
    assert!(checked >= 25, "only {checked} rules found");
}

/// The schema's literal bounds and CEL strings repeat the `limits` constants; this ties
/// them together so one cannot change without the other.
#[test]
fn schema_bounds_match_the_limit_constants() {
    use kruntimes_api::v1alpha1::limits::*;
    let run = schema_of("Run");
    let spec = &run["properties"]["spec"]["properties"];
    let n = |v: &Value| v.as_u64().unwrap() as usize;
    assert_eq!(n(&spec["script"]["maxLength"]), MAX_INLINE_SOURCE_BYTES);
    assert_eq!(n(&spec["files"]["maxProperties"]), MAX_FILES);
    assert_eq!(
        n(&spec["files"]["additionalProperties"]["maxLength"]),
        MAX_INLINE_SOURCE_BYTES
    );
    assert_eq!(n(&spec["entrypoint"]["maxLength"]), MAX_PATH_BYTES);
    assert_eq!(n(&spec["command"]["maxItems"]), MAX_ARGS);
    assert_eq!(n(&spec["args"]["maxItems"]), MAX_ARGS);
    assert_eq!(n(&spec["args"]["items"]["maxLength"]), MAX_ARG_BYTES);
    assert_eq!(n(&spec["env"]["maxItems"]), MAX_ENV);
    assert_eq!(
        n(&spec["env"]["items"]["properties"]["name"]["maxLength"]),
        MAX_ENV_NAME_BYTES
    );
    assert_eq!(
        n(&spec["env"]["items"]["properties"]["value"]["maxLength"]),
        MAX_ENV_VALUE_BYTES
    );
    assert_eq!(
        n(&spec["artifacts"]["properties"]["paths"]["maxItems"]),
        MAX_ARTIFACT_PATHS
    );
    assert_eq!(
        n(&spec["artifacts"]["properties"]["paths"]["items"]["maxLength"]),
        MAX_PATH_BYTES
    );
    assert_eq!(
        n(&spec["git"]["properties"]["url"]["maxLength"]),
        MAX_URL_BYTES
    );
    assert_eq!(
        n(&spec["git"]["properties"]["ref"]["maxLength"]),
        MAX_GIT_REF_BYTES
    );
    assert_eq!(
        n(&spec["git"]["properties"]["path"]["maxLength"]),
        MAX_PATH_BYTES
    );
    assert_eq!(n(&spec["timeout"]["maxLength"]), MAX_DURATION_BYTES);
    let bounds = format!(
        "duration(self) >= duration('{MIN_TIMEOUT_SECONDS}s') && duration(self) <= duration('{}h')",
        MAX_TIMEOUT_SECONDS / 3600
    );
    assert_eq!(
        spec["timeout"]["x-kubernetes-validations"][0]["rule"], bounds,
        "{}",
        spec["timeout"]
    );

    let wf = schema_of("Workflow");
    let jobs = &wf["properties"]["spec"]["properties"]["jobs"];
    assert_eq!(n(&jobs["maxItems"]), MAX_JOBS);
    assert_eq!(
        n(&jobs["items"]["properties"]["steps"]["maxItems"]),
        MAX_STEPS_PER_JOB
    );
    assert_eq!(
        n(&jobs["items"]["properties"]["needs"]["maxItems"]),
        MAX_NEEDS
    );
    assert_eq!(
        n(&jobs["items"]["properties"]["name"]["maxLength"]),
        MAX_LABEL_BYTES
    );

    let rt = schema_of("Runtime");
    let spec = &rt["properties"]["spec"]["properties"];
    assert!(
        spec["replicas"]
            .to_string()
            .contains(&format!("self <= {MAX_REPLICAS}"))
    );
    assert!(
        spec["concurrency"]
            .to_string()
            .contains(&format!("self <= {MAX_CONCURRENCY}"))
    );
    assert_eq!(
        n(&spec["git"]["properties"]["allowedHosts"]["maxItems"]),
        MAX_ALLOWED_HOSTS
    );
    let conditions = &rt["properties"]["status"]["properties"]["conditions"];
    assert_eq!(n(&conditions["maxItems"]), MAX_CONDITIONS);
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}

#[test]
fn every_rule_compiles() {
    for kind in ["Runtime", "Run", "Workflow"] {
        let mut rules = Vec::new();
        rules_in(&schema_of(kind), &mut rules);
        for (_, rule) in rules {
            if let Err(e) = kube::core::cel::cel::Program::compile(&rule) {
                panic!("{kind}: {rule}: {e}");
            }
        }
    }
}
