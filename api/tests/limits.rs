//! Every limit of the API at its boundary: the value at the limit accepted, one over
//! refused, with the refusal naming the field and the reason. Where the CRD carries the
//! limit too (an OpenAPI bound or a CEL rule), the schema is evaluated on the same
//! objects and must give the same answer as the validation library, so the apiserver,
//! the webhook and `krt check` agree. Values are built from the `limits` constants.

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kruntimes_api::v1alpha1::limits::*;
use kruntimes_api::validation::{MAX_OUTPUT_BYTES, MIN_OUTPUT_BYTES, Reason, Violation};
use serde_json::{Map, Value, json};

mod support;
use support::{failures, run, runtime, schema_of};

/// What the CRD alone refuses, as the apiserver evaluates it: every OpenAPI bound
/// (`maxLength`, `maxItems`, `maxProperties`, ...; evaluated with the jsonschema crate,
/// whose `maxLength` counts characters as the apiserver does) as `/json/pointer keyword`,
/// then every CEL rule that fails as `field.path: message`.
fn schema_refusals(kind: &str, object: &Value) -> Vec<String> {
    let schema = schema_of(kind);
    // The openAPIV3Schema of a CRD is OpenAPI 3.0's dialect, closest to draft 4.
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .unwrap();
    let mut refusals: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{} {}", e.instance_path().as_str(), e.kind().keyword()))
        .collect();
    refusals.extend(failures(kind, object, None));
    refusals
}

/// The validation library's answer (what the webhook and `krt check` say), one line a
/// violation.
fn library_refusals(object: &Value) -> Vec<String> {
    kruntimes_api::validation::check_document(object)
        .unwrap()
        .violations
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `at` is accepted by the schema and the library; `over` is refused by the library with
/// exactly `library` and by the schema with exactly `schema` (empty: the limit is the
/// library's alone, and the schema accepts `over`).
fn boundary(kind: &str, at: &Value, over: &Value, library: &[String], schema: &[&str]) {
    assert_eq!(
        schema_refusals(kind, at),
        Vec::<String>::new(),
        "schema, at"
    );
    assert_eq!(library_refusals(at), Vec::<String>::new(), "library, at");
    assert_eq!(schema_refusals(kind, over), schema, "schema, over");
    assert_eq!(library_refusals(over), library, "library, over");
}

/// A valid bash Run spec with `extra` fields set (or replaced).
fn bash(extra: Value) -> Value {
    let mut spec = json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "x"});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// A valid exec Run spec running `command`.
fn exec(command: &[String]) -> Value {
    json!({"runtimeRef": {"name": "bash"}, "interpreter": "exec", "command": command})
}

fn git_run(git: Value) -> Value {
    run(
        json!({"runtimeRef": {"name": "bash"}, "interpreter": "bash", "entrypoint": "run.sh", "git": git}),
    )
}

fn workflow(jobs: Value) -> Value {
    json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"}, "spec": {"jobs": jobs}})
}

/// A job named `name` with `steps` valid steps and `needs`.
fn job(name: &str, steps: usize, needs: &[String]) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|s| json!({"name": format!("s{s}"), "run": bash(json!({}))}))
        .collect();
    json!({"name": name, "needs": needs, "steps": steps})
}

fn strings(count: usize, make: impl Fn(usize) -> String) -> Vec<String> {
    (0..count).map(make).collect()
}

/// `Too many: N (must have at most ...)` at `field`, as the library words it.
fn too_many(field: &str, count: usize, detail: &str) -> String {
    format!("{field}: Too many: {count} ({detail})")
}

#[test]
fn inline_source_bytes() {
    let at = "x".repeat(MAX_INLINE_SOURCE_BYTES);
    let over = format!("{at}x");
    let too_long = |field: &str, what: &str| {
        format!(
            "{field}: Too long: must be no more than {MAX_INLINE_SOURCE_BYTES} bytes; put larger {what} in git"
        )
    };
    let script = |s: &str| run(bash(json!({"script": s})));
    boundary(
        "Run",
        &script(&at),
        &script(&over),
        &[too_long("spec.script", "programs")],
        &["/spec/script maxLength"],
    );
    let file = |s: &str| run(bash(json!({"files": {"lib.sh": s}})));
    boundary(
        "Run",
        &file(&at),
        &file(&over),
        &[too_long("spec.files[lib.sh]", "files")],
        &["/spec/files/lib.sh maxLength"],
    );
    // The same RunSpec bounds hold inside a Workflow step.
    let step = |s: &str| {
        workflow(
            json!([{"name": "j", "steps": [{"name": "s", "run": bash(json!({"script": s}))}]}]),
        )
    };
    boundary(
        "Workflow",
        &step(&at),
        &step(&over),
        &[too_long("spec.jobs[0].steps[0].run.script", "programs")],
        &["/spec/jobs/0/steps/0/run/script maxLength"],
    );
}

/// The schema's `maxLength` counts characters, the library's byte limits count bytes:
/// for text outside ASCII the library is the stricter, and the webhook applies it.
#[test]
fn byte_limits_count_bytes_where_the_schema_counts_characters() {
    let two_byte_chars = "é".repeat(MAX_INLINE_SOURCE_BYTES);
    let object = run(bash(json!({"script": two_byte_chars})));
    assert_eq!(schema_refusals("Run", &object), Vec::<String>::new());
    assert_eq!(
        library_refusals(&object),
        [format!(
            "spec.script: Too long: must be no more than {MAX_INLINE_SOURCE_BYTES} bytes; put larger programs in git"
        )]
    );
}

#[test]
fn files_per_run() {
    let files = |count: usize| -> Map<String, Value> {
        (0..count)
            .map(|i| (format!("f{i}.sh"), json!("")))
            .collect()
    };
    boundary(
        "Run",
        &run(bash(json!({"files": files(MAX_FILES)}))),
        &run(bash(json!({"files": files(MAX_FILES + 1)}))),
        &[too_many(
            "spec.files",
            MAX_FILES + 1,
            &format!("must have at most {MAX_FILES} files"),
        )],
        &["/spec/files maxProperties"],
    );
}

#[test]
fn command_and_args_entries() {
    let detail = format!("must have at most {MAX_ARGS} entries");
    let args = |count: usize| run(bash(json!({"args": strings(count, |i| format!("a{i}"))})));
    boundary(
        "Run",
        &args(MAX_ARGS),
        &args(MAX_ARGS + 1),
        &[too_many("spec.args", MAX_ARGS + 1, &detail)],
        &["/spec/args maxItems"],
    );
    let command = |count: usize| run(exec(&strings(count, |_| "echo".into())));
    boundary(
        "Run",
        &command(MAX_ARGS),
        &command(MAX_ARGS + 1),
        &[too_many("spec.command", MAX_ARGS + 1, &detail)],
        &["/spec/command maxItems"],
    );
}

#[test]
fn bytes_of_one_argument() {
    let at = "a".repeat(MAX_ARG_BYTES);
    let over = format!("{at}a");
    let too_long =
        |field: &str| format!("{field}: Too long: must be no more than {MAX_ARG_BYTES} bytes");
    let args = |arg: &str| run(bash(json!({"args": [arg]})));
    boundary(
        "Run",
        &args(&at),
        &args(&over),
        &[too_long("spec.args[0]")],
        &["/spec/args/0 maxLength"],
    );
    let command = |arg: &str| run(exec(&["echo".into(), arg.into()]));
    boundary(
        "Run",
        &command(&at),
        &command(&over),
        &[too_long("spec.command[1]")],
        &["/spec/command/1 maxLength"],
    );
}

#[test]
fn env_entries() {
    let env = |count: usize| {
        let vars: Vec<Value> = (0..count)
            .map(|i| json!({"name": format!("V{i}"), "value": "v"}))
            .collect();
        run(bash(json!({"env": vars})))
    };
    boundary(
        "Run",
        &env(MAX_ENV),
        &env(MAX_ENV + 1),
        &[too_many(
            "spec.env",
            MAX_ENV + 1,
            &format!("must have at most {MAX_ENV} entries"),
        )],
        &["/spec/env maxItems"],
    );
}

#[test]
fn artifact_globs() {
    let globs = |count: usize| {
        run(bash(
            json!({"artifacts": {"paths": strings(count, |i| format!("out{i}/**"))}}),
        ))
    };
    boundary(
        "Run",
        &globs(MAX_ARTIFACT_PATHS),
        &globs(MAX_ARTIFACT_PATHS + 1),
        &[too_many(
            "spec.artifacts.paths",
            MAX_ARTIFACT_PATHS + 1,
            &format!("must have at most {MAX_ARTIFACT_PATHS} entries"),
        )],
        &["/spec/artifacts/paths maxItems"],
    );
}

#[test]
fn git_url_bytes() {
    let base = "https://github.com/o/";
    let at = format!("{base}{}", "r".repeat(MAX_URL_BYTES - base.len()));
    let over = format!("{at}r");
    assert_eq!(at.len(), MAX_URL_BYTES);
    let refusal = Violation::with_value(
        "spec.git.url",
        Reason::Invalid,
        &over,
        format!("must be no more than {MAX_URL_BYTES} bytes"),
    );
    boundary(
        "Run",
        &git_run(json!({"url": at})),
        &git_run(json!({"url": over})),
        &[refusal.to_string()],
        &["/spec/git/url maxLength"],
    );
}

#[test]
fn git_ref_bytes() {
    let at = "r".repeat(MAX_GIT_REF_BYTES);
    let over = format!("{at}r");
    let url = "https://github.com/o/r";
    let refusal = Violation::with_value(
        "spec.git.ref",
        Reason::Invalid,
        &over,
        format!("must be no more than {MAX_GIT_REF_BYTES} bytes"),
    );
    boundary(
        "Run",
        &git_run(json!({"url": url, "ref": at})),
        &git_run(json!({"url": url, "ref": over})),
        &[refusal.to_string()],
        &["/spec/git/ref maxLength"],
    );
}

/// `replicas` and `concurrency` at both ends, in the library and in the CEL rule.
#[test]
fn replicas_and_concurrency() {
    let cases: [(&str, i32, i32); 2] = [
        ("replicas", 0, MAX_REPLICAS),
        ("concurrency", 1, MAX_CONCURRENCY),
    ];
    for (field, min, max) in cases {
        let object = |value: i32| runtime(json!({field: value}));
        let detail = format!("must be between {min} and {max}");
        for (at, over) in [(min, min - 1), (max, max + 1)] {
            boundary(
                "Runtime",
                &object(at),
                &object(over),
                &[format!("spec.{field}: Invalid value: {over} ({detail})")],
                &[&format!("spec.{field}: {detail}")],
            );
        }
    }
}

#[test]
fn allowed_hosts_entries() {
    let hosts = |count: usize| {
        runtime(json!({"git": {"allowedHosts": strings(count, |i| format!("h{i}.example.com"))}}))
    };
    boundary(
        "Runtime",
        &hosts(MAX_ALLOWED_HOSTS),
        &hosts(MAX_ALLOWED_HOSTS + 1),
        &[too_many(
            "spec.git.allowedHosts",
            MAX_ALLOWED_HOSTS + 1,
            &format!("must have at most {MAX_ALLOWED_HOSTS} entries"),
        )],
        &["/spec/git/allowedHosts maxItems"],
    );
}

/// A DNS-1123 subdomain of exactly `len` characters: labels of 63 with a dot between.
fn subdomain(len: usize) -> String {
    let name: String = (0..len)
        .map(|i| if i % 64 == 63 { '.' } else { 'a' })
        .collect();
    assert!(!name.ends_with('.'), "{len} would end with a dot");
    name
}

/// `MAX_NAME_BYTES` (Kubernetes' own 253) wherever a field holds an object or host name.
#[test]
fn object_and_host_names() {
    let at = subdomain(MAX_NAME_BYTES);
    let over = subdomain(MAX_NAME_BYTES + 1);
    let detail = format!("must be no more than {MAX_NAME_BYTES} characters");

    // metadata.name is bounded by the apiserver itself, not by the CRD schema.
    let named = |name: &str| {
        let mut object = run(bash(json!({})));
        object["metadata"] = json!({"name": name});
        object
    };
    let refusal = Violation::with_value("metadata.name", Reason::Invalid, &over, &detail);
    boundary(
        "Run",
        &named(&at),
        &named(&over),
        &[refusal.to_string()],
        &[],
    );

    // generateName leaves room for the 5 characters the apiserver appends.
    let (prefix_at, prefix_over) = (subdomain(MAX_NAME_BYTES - 5), subdomain(MAX_NAME_BYTES - 4));
    let generated = |prefix: &str| {
        let mut object = run(bash(json!({})));
        object["metadata"] = json!({"generateName": prefix});
        object
    };
    let refusal = Violation::with_value(
        "metadata.generateName",
        Reason::Invalid,
        &prefix_over,
        format!("with the 5 characters the apiserver appends, the name {detail}"),
    );
    boundary(
        "Run",
        &generated(&prefix_at),
        &generated(&prefix_over),
        &[refusal.to_string()],
        &[],
    );

    let secret = |name: &str| {
        runtime(
            json!({"artifacts": {"s3": {"endpoint": "https://s3.example.com", "bucket": "bkt",
                                             "credentialsSecretRef": {"name": name}}}}),
        )
    };
    let field = "spec.artifacts.s3.credentialsSecretRef.name";
    let refusal = Violation::with_value(field, Reason::Invalid, &over, &detail);
    boundary(
        "Runtime",
        &secret(&at),
        &secret(&over),
        &[refusal.to_string()],
        &["/spec/artifacts/s3/credentialsSecretRef/name maxLength"],
    );

    // An allowed host is bounded as a whole, its port included, as the schema bounds it.
    let host = |host: &str| runtime(json!({"git": {"allowedHosts": [host]}}));
    let port = ":8443";
    for (at, over) in [
        (at.clone(), over.clone()),
        (
            format!("{}{port}", subdomain(MAX_NAME_BYTES - port.len())),
            format!("{}{port}", subdomain(MAX_NAME_BYTES + 1 - port.len())),
        ),
    ] {
        let refusal =
            Violation::with_value("spec.git.allowedHosts[0]", Reason::Invalid, &over, &detail);
        boundary(
            "Runtime",
            &host(&at),
            &host(&over),
            &[refusal.to_string()],
            &["/spec/git/allowedHosts/0 maxLength"],
        );
    }
}

/// `ttlSecondsAfterFinished` of a Run and of a Workflow: one bound, 0 to
/// `MAX_TTL_SECONDS_AFTER_FINISHED`, in the library and in the schema of both kinds.
#[test]
fn ttl_seconds_after_finished_of_runs_and_workflows() {
    let max = MAX_TTL_SECONDS_AFTER_FINISHED;
    let of_run = |ttl: i64| run(bash(json!({"ttlSecondsAfterFinished": ttl})));
    let of_workflow = |ttl: i64| {
        let mut object = workflow(json!([job("j", 1, &[])]));
        object["spec"]["ttlSecondsAfterFinished"] = json!(ttl);
        object
    };
    let makers: [(&str, &dyn Fn(i64) -> Value); 2] = [("Run", &of_run), ("Workflow", &of_workflow)];
    for (kind, object) in makers {
        for (at, over, keyword) in [(0, -1, "minimum"), (max, max + 1, "maximum")] {
            boundary(
                kind,
                &object(at),
                &object(over),
                &[format!(
                    "spec.ttlSecondsAfterFinished: Invalid value: {over} (must be from 0 to {max} seconds, a year)"
                )],
                &[&format!("/spec/ttlSecondsAfterFinished {keyword}")],
            );
        }
    }
}

#[test]
fn jobs_per_workflow() {
    let jobs = |count: usize| {
        let jobs: Vec<Value> = (0..count).map(|i| job(&format!("j{i}"), 1, &[])).collect();
        workflow(json!(jobs))
    };
    boundary(
        "Workflow",
        &jobs(MAX_JOBS),
        &jobs(MAX_JOBS + 1),
        &[too_many(
            "spec.jobs",
            MAX_JOBS + 1,
            &format!("must have at most {MAX_JOBS} jobs"),
        )],
        &["/spec/jobs maxItems"],
    );
}

#[test]
fn steps_per_job() {
    let steps = |count: usize| workflow(json!([job("j", count, &[])]));
    boundary(
        "Workflow",
        &steps(MAX_STEPS_PER_JOB),
        &steps(MAX_STEPS_PER_JOB + 1),
        &[too_many(
            "spec.jobs[0].steps",
            MAX_STEPS_PER_JOB + 1,
            &format!("must have at most {MAX_STEPS_PER_JOB} steps"),
        )],
        &["/spec/jobs/0/steps maxItems"],
    );
}

/// Full jobs up to `MAX_STEPS_PER_WORKFLOW`, then one job of one step more. The schema
/// bounds each list, not their sum: only the library (and so the webhook) refuses it.
#[test]
fn steps_per_workflow() {
    let full_jobs = MAX_STEPS_PER_WORKFLOW / MAX_STEPS_PER_JOB;
    assert_eq!(full_jobs * MAX_STEPS_PER_JOB, MAX_STEPS_PER_WORKFLOW);
    assert!(full_jobs < MAX_JOBS, "one more job must still be allowed");
    let mut jobs: Vec<Value> = (0..full_jobs)
        .map(|i| job(&format!("j{i}"), MAX_STEPS_PER_JOB, &[]))
        .collect();
    let at = workflow(json!(jobs));
    jobs.push(job("extra", 1, &[]));
    let over = workflow(json!(jobs));
    boundary(
        "Workflow",
        &at,
        &over,
        &[too_many(
            "spec.jobs",
            MAX_STEPS_PER_WORKFLOW + 1,
            &format!("must have at most {MAX_STEPS_PER_WORKFLOW} steps across all jobs"),
        )],
        &[],
    );
}

/// A job can need at most every other job, `MAX_JOBS - 1`, so `MAX_NEEDS` never refuses a
/// Workflow that is otherwise valid. At that real maximum both accept; the rule itself
/// is shown with more jobs than allowed: `MAX_NEEDS` needs leave it silent, one more
/// fires it.
#[test]
fn needs_per_job() {
    const { assert!(MAX_NEEDS >= MAX_JOBS - 1) };
    // `count` jobs, the last needing every other one.
    let needing_all = |count: usize| {
        let names = strings(count - 1, |i| format!("j{i}"));
        let mut jobs: Vec<Value> = names.iter().map(|n| job(n, 1, &[])).collect();
        jobs.push(job("last", 1, &names));
        workflow(json!(jobs))
    };
    let realistic = needing_all(MAX_JOBS);
    assert_eq!(
        schema_refusals("Workflow", &realistic),
        Vec::<String>::new()
    );
    assert_eq!(library_refusals(&realistic), Vec::<String>::new());

    let jobs_detail = format!("must have at most {MAX_JOBS} jobs");
    let at = needing_all(MAX_NEEDS + 1);
    assert_eq!(schema_refusals("Workflow", &at), ["/spec/jobs maxItems"]);
    assert_eq!(
        library_refusals(&at),
        [too_many("spec.jobs", MAX_NEEDS + 1, &jobs_detail)]
    );
    let over = needing_all(MAX_NEEDS + 2);
    assert_eq!(
        schema_refusals("Workflow", &over),
        [
            "/spec/jobs maxItems".to_string(),
            format!("/spec/jobs/{}/needs maxItems", MAX_NEEDS + 1)
        ]
    );
    assert_eq!(
        library_refusals(&over),
        [
            too_many("spec.jobs", MAX_NEEDS + 2, &jobs_detail),
            too_many(
                &format!("spec.jobs[{}].needs", MAX_NEEDS + 1),
                MAX_NEEDS + 1,
                &format!("must have at most {MAX_NEEDS} entries")
            ),
        ]
    );
}

/// `conditions` is written by the controller, not by users: the schema alone bounds it,
/// in the status of every kind.
#[test]
fn conditions_per_status() {
    let conditions = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| {
                json!({"type": format!("Type{i}"), "status": "True", "reason": "Reason",
                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .collect()
    };
    for (kind, object) in [
        ("Run", run(bash(json!({})))),
        ("Runtime", runtime(json!({}))),
        ("Workflow", workflow(json!([job("j", 1, &[])]))),
    ] {
        let with = |count: usize| {
            let mut object = object.clone();
            object["status"] = json!({"conditions": conditions(count)});
            object
        };
        assert_eq!(
            schema_refusals(kind, &with(MAX_CONDITIONS)),
            Vec::<String>::new(),
            "{kind}"
        );
        assert_eq!(
            schema_refusals(kind, &with(MAX_CONDITIONS + 1)),
            ["/status/conditions maxItems"],
            "{kind}"
        );
    }
}

/// `maxOutputBytes` from `MIN_OUTPUT_BYTES` to `MAX_OUTPUT_BYTES`, written as plain
/// integers, integer strings and binary suffixes. The schema only checks the quantity
/// grammar: the bounds are the library's.
#[test]
fn max_output_bytes() {
    let limits = |bytes: Value| runtime(json!({"limits": {"maxOutputBytes": bytes}}));
    let detail = format!("must be between {MIN_OUTPUT_BYTES} and {MAX_OUTPUT_BYTES} bytes");
    let refusal = |shown: String| {
        format!("spec.limits.maxOutputBytes: Invalid value: \"{shown}\" ({detail})")
    };
    for (at, over) in [
        (MIN_OUTPUT_BYTES, MIN_OUTPUT_BYTES - 1),
        (MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES + 1),
    ] {
        boundary(
            "Runtime",
            &limits(json!(at.to_string())),
            &limits(json!(over.to_string())),
            &[refusal(over.to_string())],
            &[],
        );
        boundary(
            "Runtime",
            &limits(json!(at)),
            &limits(json!(over)),
            &[refusal(over.to_string())],
            &[],
        );
    }
    let (min_ki, max_mi) = (MIN_OUTPUT_BYTES / 1024, MAX_OUTPUT_BYTES / (1024 * 1024));
    let over_ki = MAX_OUTPUT_BYTES / 1024 + 1;
    for (at, over) in [
        (format!("{min_ki}Ki"), format!("{}", MIN_OUTPUT_BYTES - 1)),
        (format!("{max_mi}Mi"), format!("{over_ki}Ki")),
    ] {
        boundary(
            "Runtime",
            &limits(json!(at)),
            &limits(json!(over)),
            &[refusal(over.clone())],
            &[],
        );
    }
}

/// The value column of the limits table in `docs/api.md` is each constant's value, every
/// public constant has a row, and every row names its boundary test.
#[test]
fn the_limits_table_matches_the_constants() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text.split("\n## Limits\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let to_u64 = |v: usize| v as u64;
    let constants: Vec<(&str, i128)> = [
        ("MAX_INLINE_SOURCE_BYTES", to_u64(MAX_INLINE_SOURCE_BYTES)),
        ("MAX_FILES", to_u64(MAX_FILES)),
        ("MAX_PATH_BYTES", to_u64(MAX_PATH_BYTES)),
        ("MAX_PATH_SEGMENT_BYTES", to_u64(MAX_PATH_SEGMENT_BYTES)),
        ("MAX_ARGS", to_u64(MAX_ARGS)),
        ("MAX_ARG_BYTES", to_u64(MAX_ARG_BYTES)),
        ("MAX_ENV", to_u64(MAX_ENV)),
        ("MAX_ENV_NAME_BYTES", to_u64(MAX_ENV_NAME_BYTES)),
        ("MAX_ENV_VALUE_BYTES", to_u64(MAX_ENV_VALUE_BYTES)),
        ("MAX_ARTIFACT_PATHS", to_u64(MAX_ARTIFACT_PATHS)),
        ("MAX_URL_BYTES", to_u64(MAX_URL_BYTES)),
        ("MAX_GIT_REF_BYTES", to_u64(MAX_GIT_REF_BYTES)),
        ("MAX_DURATION_BYTES", to_u64(MAX_DURATION_BYTES)),
        ("MIN_TIMEOUT_SECONDS", MIN_TIMEOUT_SECONDS),
        ("MAX_TIMEOUT_SECONDS", MAX_TIMEOUT_SECONDS),
        ("MAX_ALLOWED_HOSTS", to_u64(MAX_ALLOWED_HOSTS)),
        ("MAX_JOBS", to_u64(MAX_JOBS)),
        ("MAX_STEPS_PER_JOB", to_u64(MAX_STEPS_PER_JOB)),
        ("MAX_STEPS_PER_WORKFLOW", to_u64(MAX_STEPS_PER_WORKFLOW)),
        ("MAX_NEEDS", to_u64(MAX_NEEDS)),
        ("MAX_CONDITIONS", to_u64(MAX_CONDITIONS)),
        ("MAX_NAME_BYTES", to_u64(MAX_NAME_BYTES)),
        ("MAX_LABEL_BYTES", to_u64(MAX_LABEL_BYTES)),
        ("MIN_OUTPUT_BYTES", MIN_OUTPUT_BYTES),
        ("MAX_OUTPUT_BYTES", MAX_OUTPUT_BYTES),
    ]
    .into_iter()
    .map(|(name, value)| (name, i128::from(value)))
    .chain([
        (
            "MAX_TTL_SECONDS_AFTER_FINISHED",
            i128::from(MAX_TTL_SECONDS_AFTER_FINISHED),
        ),
        ("MAX_REPLICAS", i128::from(MAX_REPLICAS)),
        ("MAX_CONCURRENCY", i128::from(MAX_CONCURRENCY)),
    ])
    .collect();
    // Not public to this test: each is compared with its documented value by the unit
    // test beside it (MAX_ARGV_ENV_BYTES by `rules.rs` `argv_and_env_size_boundary`'s
    // message), and MAX_MANIFEST_BYTES is krt's, which this crate cannot depend on.
    let checked_elsewhere = [
        "MAX_ARGV_ENV_BYTES",
        "MAX_QUOTED_VALUE_CHARS",
        "MAX_REPORTED_CYCLES",
        "CHILD_NAME_HASH_CHARS",
        "MAX_MANIFEST_BYTES",
    ];
    let mut documented = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let columns: Vec<&str> = row.split(" | ").collect();
        let name = row.split('`').nth(1).unwrap();
        let value: String = columns[1]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let test = columns.last().unwrap();
        assert!(
            !test.contains("not yet tested") && test.contains('`'),
            "{name}: no boundary test named: {test}"
        );
        match constants.iter().find(|(n, _)| *n == name) {
            Some((_, expected)) => assert_eq!(value, expected.to_string(), "{name}"),
            None => assert!(
                checked_elsewhere.contains(&name),
                "{name}: no such constant"
            ),
        }
        documented.push(name);
    }
    for (name, _) in &constants {
        assert!(
            documented.contains(name),
            "{name} has no row in the limits table"
        );
    }
}
