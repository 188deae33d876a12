//! The validation library at its boundaries: each rule with a passing and a failing
//! case, field paths and reasons as users see them, and the shipped examples.

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kruntimes_api::validation::{
    CheckedObject, DocumentError, check_json, check_json_as, names::child_run_name,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// `check_document` on the tree, after checking that the webhook's paths from JSON text
/// give exactly the same answer: `check_json`, and `check_json_as` whatever kind it is
/// told to expect (the webhook tells it the review's `request.kind`, which a hand-made
/// review can get wrong). Every test in this file is also a test of that equivalence.
fn check_document(document: &Value) -> Result<CheckedObject, DocumentError> {
    let tree = kruntimes_api::validation::check_document(document);
    let text = RawValue::from_string(document.to_string()).unwrap();
    let fast = [
        ("check_json", check_json(&text)),
        ("check_json_as Runtime", check_json_as("Runtime", &text)),
        ("check_json_as Run", check_json_as("Run", &text)),
        ("check_json_as Workflow", check_json_as("Workflow", &text)),
        ("check_json_as Pod", check_json_as("Pod", &text)),
    ];
    for (path, fast) in &fast {
        match (&tree, fast) {
            (Ok(t), Ok(f)) => {
                assert_eq!((t.kind, &t.name), (f.kind, &f.name), "{path}: {document}");
                assert_eq!(t.violations, f.violations, "{path}: {document}");
                assert_eq!(t.object.is_some(), f.object.is_some(), "{path}: {document}");
            }
            (Err(t), Err(f)) => assert_eq!(t, f, "{path}: {document}"),
            _ => panic!("check_document {tree:?} but {path} {fast:?} for {document}"),
        }
    }
    tree
}

fn lines(document: Value) -> Vec<String> {
    check_document(&document)
        .expect("a kruntimes kind")
        .violations
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn run(spec: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": {"name": "r"}, "spec": spec})
}

fn has(lines: &[String], expected: &str) {
    assert!(
        lines.iter().any(|l| l == expected),
        "missing\n  {expected}\nin\n  {}",
        lines.join("\n  ")
    );
}

#[test]
fn a_minimal_run_is_valid() {
    let got = lines(run(
        json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}),
    ));
    assert_eq!(got, Vec::<String>::new());
}

#[test]
fn run_program_sources() {
    let got = lines(run(
        json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash"}),
    ));
    assert_eq!(
        got,
        [
            "spec: Required value: one program source must be set: script, entrypoint (with files or git), or command (interpreter exec)"
        ]
    );
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "python", "entrypoint": "main.py", "files": {"lib.py": ""}}),
    ));
    assert_eq!(
        got,
        ["spec.entrypoint: Not found: \"main.py\" (no such key in files; files are: lib.py)"]
    );
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "python", "script": "x", "files": {"main.py": ""}}),
    ));
    assert_eq!(
        got,
        [
            "spec.files[main.py]: Duplicate value: \"main.py\" (script is written to main.py; rename this file)"
        ]
    );
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "exec", "command": [""]}),
    ));
    assert_eq!(
        got,
        ["spec.command[0]: Required value: the program to run may not be empty"]
    );
}

/// A `files` key under another one would need that file as a directory too: refused at
/// validation, naming both, instead of failing in runtimed at write time.
#[test]
fn files_may_not_nest_under_another_file() {
    let spec = |files: Value, script: bool| {
        let mut spec = json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "files": files});
        if script {
            spec["script"] = json!("x");
        } else {
            spec["entrypoint"] = json!("a");
        }
        run(spec)
    };
    assert_eq!(
        lines(spec(json!({"a": "", "a/b": ""}), false)),
        [
            "spec.files[a/b]: Invalid value: \"a/b\" (files[a] is a file, so it cannot also be the directory of a/b)"
        ]
    );
    assert_eq!(
        lines(spec(json!({"a": "", "a/b/c": ""}), false)),
        [
            "spec.files[a/b/c]: Invalid value: \"a/b/c\" (files[a] is a file, so it cannot also be the directory of a/b/c)"
        ]
    );
    assert_eq!(
        lines(spec(json!({"main.sh/x": ""}), true)),
        [
            "spec.files[main.sh/x]: Invalid value: \"main.sh/x\" (script is written to main.sh, so it cannot also be the directory of main.sh/x)"
        ]
    );
    // Siblings, shared directories and names that only share a prefix are fine.
    assert_eq!(
        lines(spec(
            json!({"a": "", "ab/c": "", "d/e": "", "d/f": "", "a.d/x": ""}),
            false
        )),
        Vec::<String>::new()
    );
}

#[test]
fn run_paths_urls_and_env() {
    let got = lines(run(json!({
        "runtimeRef": {"name": "b"}, "interpreter": "bash", "entrypoint": "run.sh",
        "git": {"url": "https://user:pw@github.com/o/r", "ref": "--upload-pack=x", "path": "/abs"},
        "env": [{"name": "KRT_INPUT_FILE", "value": "x"}, {"name": "1X"}, {"name": "A"}, {"name": "A"}],
        "artifacts": {"paths": ["out/**", "../secrets"]},
    })));
    has(
        &got,
        "spec.git.url: Invalid value: \"https://user:pw@github.com/o/r\" (must not embed credentials; configure access on the Runtime instead)",
    );
    has(
        &got,
        "spec.git.ref: Invalid value: \"--upload-pack=x\" (must not start with '-')",
    );
    has(
        &got,
        "spec.git.path: Invalid value: \"/abs\" (must be relative to the workspace (no leading '/'))",
    );
    has(
        &got,
        "spec.env[0].name: Forbidden: \"KRT_INPUT_FILE\" (names starting with KRT_ are set by runtimed)",
    );
    has(
        &got,
        "spec.env[1].name: Invalid value: \"1X\" (must consist of letters, digits and '_', and must not start with a digit (e.g. 'MY_VAR'))",
    );
    has(
        &got,
        "spec.env[3].name: Duplicate value: \"A\" (env[2] sets the same variable)",
    );
    has(
        &got,
        "spec.artifacts.paths[1]: Invalid value: \"../secrets\" (must not contain '..' segments)",
    );
    assert_eq!(got.len(), 7, "{got:#?}");
}

#[test]
fn decoding_errors_name_the_field() {
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "ruby", "script": "x"}),
    ));
    assert_eq!(
        got,
        [
            "spec.interpreter: Invalid value: unknown variant `ruby`, expected one of `bash`, `python`, `exec`"
        ]
    );
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": 5}),
    ));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("spec.script: Invalid value: invalid type: integer `5`"),
        "{got:?}"
    );
}

#[test]
fn unknown_fields_are_reported_not_pruned_silently() {
    let got = lines(run(
        json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x", "timout": "5m"}),
    ));
    assert_eq!(
        got,
        ["spec.timout: Forbidden: unknown field: the apiserver would drop it; check its spelling"]
    );
}

fn runtime(spec: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime", "metadata": {"name": "rt"}, "spec": spec})
}

#[test]
fn runtime_reserved_fields() {
    let got = lines(runtime(json!({
        "template": {
            "metadata": {"annotations": {"kruntimes.io/container": "x"}},
            "spec": {
                "containers": [{"name": "main", "image": "bash", "args": ["x"],
                                "volumeMounts": [{"name": "krt-bin", "mountPath": "/x"}]}],
                "initContainers": [{"name": "runtimed", "image": "x"}],
            }
        },
        "limits": {"maxOutputBytes": "1", "defaultTimeout": "2h", "maxTimeout": "1h"},
        "workspace": {"sizeLimit": "1Gb"},
    })));
    has(
        &got,
        "spec.template.metadata.annotations[kruntimes.io/container]: Forbidden: \"kruntimes.io/container\" (annotations under kruntimes.io/ are set by kruntimes)",
    );
    has(
        &got,
        "spec.template.spec.containers[0].args: Forbidden: the runtimed agent replaces the args of the container that runs Runs; set the program in each Run",
    );
    has(
        &got,
        "spec.template.spec.containers[0].volumeMounts[0].name: Forbidden: \"krt-bin\" (mounts of krt-* and workspace are added by the injector)",
    );
    has(
        &got,
        "spec.template.spec.initContainers[0].name: Forbidden: \"runtimed\" (container names runtimed and krt-* are added by the injector)",
    );
    has(
        &got,
        "spec.limits.maxOutputBytes: Invalid value: \"1\" (must be between 1024 and 67108864 bytes)",
    );
    has(
        &got,
        "spec.limits.defaultTimeout: Invalid value: \"2h\" (must not exceed maxTimeout (1h))",
    );
    has(
        &got,
        "spec.workspace.sizeLimit: Invalid value: \"1Gb\" (\"1Gb\" is not a quantity such as 512Mi, 1Gi or 1000000)",
    );
    assert_eq!(got.len(), 7, "{got:#?}");
}

#[test]
fn runtime_without_containers() {
    let got = lines(runtime(json!({"template": {"spec": {"containers": []}}})));
    assert_eq!(
        got,
        [
            "spec.template.spec.containers: Required value: the template needs at least one container"
        ]
    );
}

fn workflow(name: &str, jobs: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "metadata": {"name": name}, "spec": {"jobs": jobs}})
}

fn step(name: &str) -> Value {
    json!({"name": name, "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}})
}

#[test]
fn workflow_child_names_never_collide() {
    let got = lines(workflow(
        "w",
        json!([{"name": "a-b", "steps": [step("c")]}, {"name": "a", "steps": [step("b-c")]}]),
    ));
    assert_eq!(
        got,
        [
            "spec.jobs[1].steps[0].name: Duplicate value: \"b-c\" (its Run would be named \"w-a-b-c\", like the Run of jobs[0].steps[0]; rename the job or step)"
        ]
    );
}

#[test]
fn workflow_steps_report_every_problem() {
    let got = lines(workflow(
        "w",
        json!([{"name": "j", "steps": [
            {"name": "s", "uses": "org/a@v1"},
            {"name": "t", "action": {"x": 1}},
            {"name": "u", "run": {"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x", "cancel": true}},
        ]}]),
    ));
    has(
        &got,
        "spec.jobs[0].steps[0].uses: Unsupported value: \"org/a@v1\" (steps[].uses is not implemented; use run)",
    );
    has(
        &got,
        "spec.jobs[0].steps[1].action: Unsupported value: \"action\" (unknown execution method; supported: run)",
    );
    has(
        &got,
        "spec.jobs[0].steps[1].run: Required value: a step needs an execution method; supported: run",
    );
    has(
        &got,
        "spec.jobs[0].steps[2].run.cancel: Forbidden: a step's Run is cancelled with its Workflow (spec.cancel of the Workflow), not on its own",
    );
    assert_eq!(got.len(), 4, "{got:#?}");
}

#[test]
fn a_workflow_step_may_not_set_a_ttl() {
    let got = lines(workflow(
        "w",
        json!([{"name": "j", "steps": [
            {"name": "s", "run": {"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x", "ttlSecondsAfterFinished": 5}},
        ]}]),
    ));
    assert_eq!(
        got,
        [
            "spec.jobs[0].steps[0].run.ttlSecondsAfterFinished: Forbidden: a step's Run goes with its Workflow; its own deletion would lose the step's result"
        ]
    );
}

#[test]
fn long_workflow_names_get_hashed_child_names_not_rejections() {
    let name = "w".repeat(63);
    let got = lines(workflow(
        &name,
        json!([{"name": "job", "steps": [step("step")]}]),
    ));
    assert_eq!(got, Vec::<String>::new());
    let child = child_run_name(&name, "job", "step");
    assert_eq!(child.len(), 63);
}

#[test]
fn other_kinds_are_reported() {
    let err = check_document(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("apps/v1 Deployment is not a kruntimes kind"),
        "{err}"
    );
    let err = check_document(&json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Thing"}))
        .unwrap_err();
    assert!(err.to_string().contains("not a kruntimes kind"), "{err}");
    assert!(check_document(&json!("text")).is_err());
    assert!(check_document(&json!({"kind": "Run"})).is_err());
}

#[test]
fn shipped_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if value.is_null() {
                continue;
            }
            let checked_object = check_document(&value).unwrap();
            assert!(
                checked_object.violations.is_empty(),
                "{}: {}/{}: {:#?}",
                path.display(),
                checked_object.kind,
                checked_object.name,
                checked_object.violations
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} example objects found");
}

#[test]
fn generate_name_leaves_room_for_the_suffix() {
    let prefix = "w".repeat(58);
    let doc = |p: &str| {
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": p},
               "spec": {"jobs": [{"name": "j", "steps": [step("s")]}]}})
    };
    assert_eq!(lines(doc(&prefix)), Vec::<String>::new());
    let got = lines(doc(&format!("{prefix}w")));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("metadata.generateName: Invalid value:"),
        "{got:?}"
    );
}

#[test]
fn env_boundaries() {
    let name_at_limit = "A".repeat(256);
    let value_at_limit = "v".repeat(32 * 1024);
    let spec = |name: &str, value: &str| {
        run(
            json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x",
                   "env": [{"name": name, "value": value}]}),
        )
    };
    assert_eq!(
        lines(spec(&name_at_limit, &value_at_limit)),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(spec(&format!("{name_at_limit}A"), "v")),
        ["spec.env[0].name: Too long: must be no more than 256 bytes"]
    );
    assert_eq!(
        lines(spec("A", &format!("{value_at_limit}v"))),
        ["spec.env[0].value: Too long: must be no more than 32768 bytes"]
    );
}

/// `ttlSecondsAfterFinished` from 0 to `MAX_TTL_SECONDS_AFTER_FINISHED` (a year), not
/// one second more, not negative, and never in a Workflow step.
#[test]
fn ttl_seconds_after_finished_boundaries() {
    let spec = |ttl: i64| {
        run(
            json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x",
                   "ttlSecondsAfterFinished": ttl}),
        )
    };
    assert_eq!(lines(spec(0)), Vec::<String>::new());
    assert_eq!(lines(spec(31_536_000)), Vec::<String>::new());
    assert_eq!(
        lines(spec(31_536_001)),
        [
            "spec.ttlSecondsAfterFinished: Invalid value: 31536001 (must be from 0 to 31536000 seconds, a year)"
        ]
    );
    assert_eq!(
        lines(spec(-1)),
        [
            "spec.ttlSecondsAfterFinished: Invalid value: -1 (must be from 0 to 31536000 seconds, a year)"
        ]
    );
}

/// `command`, `args` and `env` together at `MAX_ARGV_ENV_BYTES` (1 MiB, each string
/// counted with 9 bytes for its NUL and pointer) and one byte over. Each entry is within
/// its own bound, so only the total refuses it, before exec would (`Argument list too
/// long`).
#[test]
fn argv_and_env_size_boundary() {
    // 32 args of 32759 bytes: 32 x (32759 + 9) = 1048576.
    let at_limit = vec!["a".repeat(32 * 1024 - 9); 32];
    let spec = |args: &[String], env: Value| {
        run(
            json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x", "args": args, "env": env}),
        )
    };
    assert_eq!(lines(spec(&at_limit, json!([]))), Vec::<String>::new());
    let mut over = at_limit.clone();
    over[0].push('a');
    assert_eq!(
        lines(spec(&over, json!([]))),
        [
            "spec.args: Too long: command, args and env must take at most 1048576 bytes together (each string counted with its NUL and pointer, as exec counts them: Linux refuses more with Argument list too long); they take 1048577 (command 0, args 1048577, env 0)"
        ]
    );
    // An env entry counts as NAME=value: `A=v` and its 9 bytes take 12 of the last arg's.
    let mut with_env = at_limit.clone();
    with_env[31] = "a".repeat(32 * 1024 - 9 - 12);
    let env = |value: &str| json!([{"name": "A", "value": value}]);
    assert_eq!(lines(spec(&with_env, env("v"))), Vec::<String>::new());
    let got = lines(spec(&with_env, env("vv")));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].ends_with("they take 1048577 (command 0, args 1048564, env 13)"),
        "{got:?}"
    );
    // The largest of the three is named: here env, 40 values of 32 KiB.
    let big_env: Vec<Value> = (0..40)
        .map(|i| json!({"name": format!("V{i}"), "value": "v".repeat(32 * 1024)}))
        .collect();
    let got = lines(spec(&[], json!(big_env)));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("spec.env: Too long: "), "{got:?}");
    // The reported case: 256 args of 32 KiB (8 MiB), each within MAX_ARG_BYTES.
    let got = lines(spec(&vec!["a".repeat(32 * 1024); 256], json!([])));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("spec.args: Too long: "), "{got:?}");
}

#[test]
fn timeout_boundaries() {
    let spec = |timeout: &str| {
        run(
            json!({"runtimeRef": {"name": "b"}, "interpreter": "bash", "script": "x", "timeout": timeout}),
        )
    };
    assert_eq!(lines(spec("24h")), Vec::<String>::new());
    assert_eq!(lines(spec("1s")), Vec::<String>::new());
    // Under a millisecond, runtimed would read the timeout as 0, its default: refused.
    for short in ["999ms", "1ns"] {
        assert_eq!(
            lines(spec(short)),
            [format!(
                "spec.timeout: Invalid value: \"{short}\" (must be at least 1s)"
            )]
        );
    }
    assert_eq!(
        lines(spec("24h0m0.000000001s")),
        ["spec.timeout: Invalid value: \"24h0m0.000000001s\" (must be at most 24h)"]
    );
    assert_eq!(
        lines(spec("0s")),
        ["spec.timeout: Invalid value: \"0s\" (must be at least 1s)"]
    );
    let long = format!("{}1s", "0".repeat(31));
    assert_eq!(long.len(), 33);
    assert_eq!(
        lines(spec(&long)),
        ["spec.timeout: Too long: must be no more than 32 bytes"]
    );
}

#[test]
fn quantities_may_be_integers_or_strings() {
    let containers = json!({"spec": {"containers": [{"name": "main", "image": "bash"}]}});
    for size in [json!(1_048_576), json!("1Mi"), json!("1.5Gi")] {
        let got = lines(runtime(
            json!({"template": containers, "workspace": {"sizeLimit": size}}),
        ));
        assert_eq!(got, Vec::<String>::new(), "{size}");
    }
    let got = lines(runtime(
        json!({"template": containers, "workspace": {"sizeLimit": "0"}}),
    ));
    assert_eq!(
        got,
        ["spec.workspace.sizeLimit: Invalid value: \"0\" (must be greater than zero)"]
    );
}
