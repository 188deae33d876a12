//! Rules between a Run (or a Workflow step's run) and the Runtime it names: `timeout`
//! within `spec.limits.maxTimeout`, `input` valid against `spec.inputSchema`, git
//! sources only from `spec.git.allowedHosts`. Pure: the caller finds the Runtime (the
//! webhook in its cache, the controller in its store, `krt run --local` in a file) and
//! passes it in.
//!
//! Compiling an input schema costs far more than validating one input against it, so
//! compiled schemas can be kept in a [`SchemaCache`] keyed by the Runtime's uid and
//! `metadata.generation` (a new generation is a new spec, so a stale entry is never
//! used).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jsonschema::Draft;
use kube::ResourceExt;
use serde_json::Value;

use super::git::git_url_host;
use super::{FieldPath, Reason, Violation};
use crate::v1alpha1::{GitSource, RunSpec, Runtime, RuntimeSpec, WorkflowSpec};

/// Most input-schema errors listed for one `input`; the rest are counted in a last
/// line. Each error becomes a line of the denial and a `status.details.causes` entry;
/// past a few dozen they stop helping and only make the response large.
pub const MAX_INPUT_ERRORS: usize = 20;

/// Longest single schema error message kept (characters). jsonschema quotes the
/// offending value in its messages, and an `input` can be hundreds of KiB.
pub const MAX_SCHEMA_ERROR_CHARS: usize = 200;

/// Most compiled input schemas a [`SchemaCache`] keeps. One entry per Runtime
/// generation in use: clusters are expected to have tens to a few hundred Runtimes with
/// an input schema; a compiled schema is a few KiB to a few hundred KiB, so 256 entries
/// bound the cache to tens of MiB at worst. An evicted entry costs one recompilation.
pub const MAX_CACHED_SCHEMAS: usize = 256;

/// A Runtime's `inputSchema`, compiled, or why it cannot be.
#[derive(Debug)]
pub enum CompiledSchema {
    /// A usable validator.
    Valid(Box<jsonschema::Validator>),
    /// Every problem found with the schema itself.
    Invalid(Vec<String>),
}

/// Compiles an input schema (JSON Schema 2020-12 unless its `$schema` names another
/// draft jsonschema knows). Every meta-schema violation is listed. References outside
/// the schema are never fetched: a `$ref` to another document is an error.
pub fn compile_input_schema(schema: &Value) -> CompiledSchema {
    if !(schema.is_object() || schema.is_boolean()) {
        return CompiledSchema::Invalid(vec![
            "must be a JSON Schema: an object or a boolean".into(),
        ]);
    }
    let draft = Draft::Draft202012.detect(schema);
    if draft == Draft::Unknown {
        // jsonschema would try to fetch an unknown meta-schema; admission does no I/O.
        return CompiledSchema::Invalid(vec![format!(
            "$schema {} is not a JSON Schema draft this webhook knows (use https://json-schema.org/draft/2020-12/schema or leave it out)",
            schema.get("$schema").unwrap_or(&Value::Null)
        )]);
    }
    match jsonschema::meta::validator_for(schema) {
        Ok(meta) => {
            let problems: Vec<String> = meta
                .iter_errors(schema)
                .map(|e| located(e.instance_path().as_str(), &e.to_string()))
                .collect();
            if !problems.is_empty() {
                return CompiledSchema::Invalid(problems);
            }
        }
        Err(e) => return CompiledSchema::Invalid(vec![cut(&e.to_string())]),
    }
    match jsonschema::options().with_draft(draft).build(schema) {
        Ok(validator) => CompiledSchema::Valid(Box::new(validator)),
        Err(e) => {
            CompiledSchema::Invalid(vec![located(e.instance_path().as_str(), &e.to_string())])
        }
    }
}

/// `at /a/0: message`, with the root shown as `/`, cut to [`MAX_SCHEMA_ERROR_CHARS`].
fn located(pointer: &str, message: &str) -> String {
    let pointer = if pointer.is_empty() { "/" } else { pointer };
    cut(&format!("at {pointer}: {message}"))
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_SCHEMA_ERROR_CHARS {
        return s.to_owned();
    }
    let kept: String = s.chars().take(MAX_SCHEMA_ERROR_CHARS - 3).collect();
    format!("{kept}...")
}

/// The Runtime's own `inputSchema`, checked when the Runtime is validated, so a schema
/// that cannot be compiled is refused on the Runtime instead of on every Run.
/// A schema that is not an object or a boolean is reported by the Runtime spec rules.
pub fn check_input_schema(spec: &RuntimeSpec, path: &FieldPath) -> Vec<Violation> {
    let Some(schema) = &spec.input_schema else {
        return Vec::new();
    };
    if !(schema.is_object() || schema.is_boolean()) {
        return Vec::new();
    }
    match compile_input_schema(schema) {
        CompiledSchema::Valid(_) => Vec::new(),
        CompiledSchema::Invalid(problems) => problems
            .into_iter()
            .map(|p| {
                Violation::new(
                    path.child("inputSchema"),
                    Reason::Invalid,
                    format!("not a valid JSON Schema: {p}"),
                )
            })
            .collect(),
    }
}

type CacheKey = (String, i64);

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<CacheKey, Arc<CompiledSchema>>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<CacheKey>,
}

/// Compiled input schemas by (Runtime uid, `metadata.generation`), at most
/// [`MAX_CACHED_SCHEMAS`] of them (the oldest insertion is evicted first). Shared
/// between threads.
#[derive(Debug)]
pub struct SchemaCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

impl Default for SchemaCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaCache {
    /// An empty cache of [`MAX_CACHED_SCHEMAS`] entries.
    pub fn new() -> Self {
        Self::with_capacity(MAX_CACHED_SCHEMAS)
    }

    /// An empty cache of `capacity` entries (at least 1), for callers with other needs.
    pub fn with_capacity(capacity: usize) -> Self {
        SchemaCache {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether (uid, generation) is cached.
    pub fn contains(&self, uid: &str, generation: i64) -> bool {
        self.lock()
            .entries
            .contains_key(&(uid.to_owned(), generation))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map stays consistent even if a holder panicked: every change is one insert
        // or one remove.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The compiled `inputSchema` of `runtime`, or `None` when it has none. Runtimes
    /// without a uid or generation (read from a file) are compiled and not cached.
    pub fn get(&self, runtime: &Runtime) -> Option<Arc<CompiledSchema>> {
        let schema = runtime.spec.input_schema.as_ref()?;
        let key = match (runtime.uid(), runtime.metadata.generation) {
            (Some(uid), Some(generation)) => (uid, generation),
            _ => return Some(Arc::new(compile_input_schema(schema))),
        };
        if let Some(found) = self.lock().entries.get(&key) {
            return Some(found.clone());
        }
        // Compiled without the lock: other lookups go on meanwhile. Two threads may
        // compile the same schema once each; both results are equal.
        let compiled = Arc::new(compile_input_schema(schema));
        let mut inner = self.lock();
        if !inner.entries.contains_key(&key) {
            while inner.entries.len() >= self.capacity {
                match inner.order.pop_front() {
                    Some(oldest) => {
                        inner.entries.remove(&oldest);
                    }
                    None => break,
                }
            }
            inner.order.push_back(key.clone());
            inner.entries.insert(key, compiled.clone());
        }
        Some(compiled)
    }
}

/// What checking a RunSpec against its Runtime found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgainstRuntime {
    /// Denials: the Run does not fit the Runtime.
    pub violations: Vec<Violation>,
    /// Things that could not be checked (each under 120 characters).
    pub warnings: Vec<String>,
}

/// Checks one RunSpec at `path` (`spec`, or `spec.jobs[i].steps[j].run`) against the
/// Runtime it names. `runtime` must be the one named by `spec.runtimeRef`, in the same
/// namespace.
pub fn check_run_against_runtime(
    spec: &RunSpec,
    path: &FieldPath,
    runtime: &Runtime,
    schemas: &SchemaCache,
) -> AgainstRuntime {
    let mut out = AgainstRuntime::default();
    let runtime_name = runtime.name_any();
    if let Some(v) = check_timeout_within(spec.timeout.as_deref(), &runtime.spec, path) {
        out.violations.push(v);
    }
    if let Some(v) = check_git_host(spec.git.as_ref(), &runtime_name, &runtime.spec, path) {
        out.violations.push(v);
    }
    if let Some(input) = &spec.input
        && let Some(compiled) = schemas.get(runtime)
    {
        match compiled.as_ref() {
            CompiledSchema::Valid(validator) => {
                out.violations
                    .extend(check_input(input, validator, &path.child("input")));
            }
            CompiledSchema::Invalid(_) => out.warnings.push(format!(
                "Runtime {runtime_name:?} has an invalid inputSchema; input not checked"
            )),
        }
    }
    out
}

/// `timeout` at most the Runtime's `limits.maxTimeout`. Nothing to check when either is
/// unset or unreadable (the spec rules report unreadable durations).
pub fn check_timeout_within(
    timeout: Option<&str>,
    runtime: &RuntimeSpec,
    path: &FieldPath,
) -> Option<Violation> {
    let timeout = timeout?;
    let max = runtime.limits.as_ref()?.max_timeout.as_deref()?;
    let (t, m) = (
        crate::duration::parse(timeout).ok()?,
        crate::duration::parse(max).ok()?,
    );
    (t > m).then(|| {
        Violation::with_value(
            path.child("timeout"),
            Reason::Invalid,
            timeout,
            format!("must not exceed the Runtime's limits.maxTimeout ({max})"),
        )
    })
}

/// `host` or `host:port` of an https URL, lowercased, the default port (443) left out,
/// so `https://h:443/x` and `https://h/x` both give `h`.
pub fn git_host_key(url: &str) -> Option<String> {
    let host = git_url_host(url)?;
    let port = url::Url::parse(url).ok()?.port();
    Some(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// An `allowedHosts` entry in the same form as [`git_host_key`].
fn allowed_host_key(entry: &str) -> String {
    let entry = entry.to_ascii_lowercase();
    match entry.strip_suffix(":443") {
        Some(host) => host.to_owned(),
        None => entry,
    }
}

/// A git source must come from a host the Runtime allows; a Runtime without a `git`
/// section allows no git sources at all. The port counts: `example.com:8443` allows
/// only that port, `example.com` only the default one.
pub fn check_git_host(
    git: Option<&GitSource>,
    runtime_name: &str,
    runtime: &RuntimeSpec,
    path: &FieldPath,
) -> Option<Violation> {
    let git = git?;
    let field = path.child("git").child("url");
    let Some(allowed) = &runtime.git else {
        return Some(Violation::new(
            field,
            Reason::Forbidden,
            format!("Runtime {runtime_name:?} has no git section, so it accepts no git sources"),
        ));
    };
    // An unreadable URL is reported by the spec rules.
    let host = git_host_key(&git.url)?;
    if allowed
        .allowed_hosts
        .iter()
        .any(|a| allowed_host_key(a) == host)
    {
        return None;
    }
    Some(Violation::with_value(
        field,
        Reason::Forbidden,
        &host,
        format!(
            "host not in Runtime {runtime_name:?}'s git.allowedHosts ({})",
            allowed.allowed_hosts.join(", ")
        ),
    ))
}

/// Every error of `input` against `validator`, at `path` (normally `spec.input`), each
/// naming the instance path inside the input; at most [`MAX_INPUT_ERRORS`] listed.
pub fn check_input(
    input: &Value,
    validator: &jsonschema::Validator,
    path: &FieldPath,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(input) {
        if out.len() < MAX_INPUT_ERRORS {
            out.push(Violation::new(
                path,
                Reason::Invalid,
                format!(
                    "does not match the Runtime's inputSchema: {}",
                    located(error.instance_path().as_str(), &error.to_string())
                ),
            ));
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(Violation::new(
            path,
            Reason::Invalid,
            format!("and {more} more inputSchema errors"),
        ));
    }
    out
}

/// Every RunSpec of a Workflow with its field path (`spec.jobs[i].steps[j].run`), in
/// order, for the caller to look their Runtimes up.
pub fn workflow_run_specs<'a>(
    spec: &'a WorkflowSpec,
    path: &FieldPath,
) -> Vec<(FieldPath, &'a RunSpec)> {
    let jobs = path.child("jobs");
    spec.jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| {
            let jobs = &jobs;
            job.steps.iter().enumerate().filter_map(move |(s, step)| {
                step.run
                    .as_ref()
                    .map(|run| (jobs.index(j).child("steps").index(s).child("run"), run))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::v1alpha1::{Job, RuntimeGit, RuntimeLimits, Step};
    use serde_json::json;

    fn runtime(max_timeout: Option<&str>) -> Runtime {
        let mut r = Runtime::new("py", RuntimeSpec::default());
        r.metadata.namespace = Some("team".into());
        r.spec.limits = max_timeout.map(|m| RuntimeLimits {
            max_timeout: Some(m.into()),
            ..RuntimeLimits::default()
        });
        r
    }

    fn run(timeout: Option<&str>) -> RunSpec {
        RunSpec {
            timeout: timeout.map(str::to_owned),
            script: Some("echo".into()),
            ..RunSpec::default()
        }
    }

    fn spec() -> FieldPath {
        FieldPath::root("spec")
    }

    #[test]
    fn timeout_at_max_passes_one_second_more_fails() {
        let rt = runtime(Some("10m"));
        let cache = SchemaCache::new();
        assert!(
            check_run_against_runtime(&run(Some("10m")), &spec(), &rt, &cache)
                .violations
                .is_empty()
        );
        assert!(
            check_run_against_runtime(&run(Some("600s")), &spec(), &rt, &cache)
                .violations
                .is_empty()
        );
        let v = check_run_against_runtime(&run(Some("601s")), &spec(), &rt, &cache).violations;
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "spec.timeout");
        assert_eq!(
            v[0].to_string(),
            "spec.timeout: Invalid value: \"601s\" (must not exceed the Runtime's limits.maxTimeout (10m))"
        );
        // No maxTimeout, or no timeout: nothing to compare.
        assert!(check_timeout_within(Some("23h"), &runtime(None).spec, &spec()).is_none());
        assert!(check_timeout_within(None, &rt.spec, &spec()).is_none());
    }

    #[test]
    fn workflow_steps_are_checked_at_their_paths() {
        let wf = WorkflowSpec {
            jobs: vec![
                Job {
                    name: "a".into(),
                    steps: vec![Step {
                        name: "one".into(),
                        run: Some(run(Some("1h"))),
                        uses: None,
                    }],
                    ..Job::default()
                },
                Job {
                    name: "b".into(),
                    steps: vec![
                        Step {
                            name: "x".into(),
                            uses: Some("org/a@v1".into()),
                            run: None,
                        },
                        Step {
                            name: "two".into(),
                            run: Some(run(Some("2h"))),
                            uses: None,
                        },
                    ],
                    ..Job::default()
                },
            ],
            ..WorkflowSpec::default()
        };
        let rt = runtime(Some("1h"));
        let cache = SchemaCache::new();
        let specs = workflow_run_specs(&wf, &spec());
        let paths: Vec<&str> = specs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.jobs[0].steps[0].run", "spec.jobs[1].steps[1].run"]
        );
        let fields: Vec<String> = specs
            .iter()
            .flat_map(|(p, r)| check_run_against_runtime(r, p, &rt, &cache).violations)
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["spec.jobs[1].steps[1].run.timeout"]);
    }

    fn schema_runtime(schema: Value) -> Runtime {
        let mut r = runtime(None);
        r.spec.input_schema = Some(schema);
        r.metadata.uid = Some("uid-1".into());
        r.metadata.generation = Some(1);
        r
    }

    #[test]
    fn every_input_error_is_reported_with_its_instance_path() {
        let rt = schema_runtime(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "items": {"type": "array", "items": {"type": "integer"}},
            },
            "additionalProperties": false,
        }));
        let cache = SchemaCache::new();
        let mut r = run(None);
        r.input = Some(json!({"items": [1, "two", 3, "four"], "extra": true}));
        let out = check_run_against_runtime(&r, &spec(), &rt, &cache);
        let messages: Vec<String> = out.violations.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages.iter().all(|m| m.starts_with("spec.input: ")));
        let text = messages.join("\n");
        assert!(
            text.contains("at /items/1: \"two\" is not of type \"integer\""),
            "{text}"
        );
        assert!(text.contains("at /items/3: \"four\""), "{text}");
        assert!(
            text.contains("at /: \"name\" is a required property"),
            "{text}"
        );
        assert!(text.contains("extra"), "{text}");
        r.input = Some(json!({"name": "x", "items": [1]}));
        assert!(
            check_run_against_runtime(&r, &spec(), &rt, &cache)
                .violations
                .is_empty()
        );
        // No input: nothing to check, even with a schema.
        r.input = None;
        assert!(
            check_run_against_runtime(&r, &spec(), &rt, &cache)
                .violations
                .is_empty()
        );
    }

    #[test]
    fn input_errors_are_listed_up_to_the_limit() {
        let rt = schema_runtime(json!({"type": "array", "items": {"type": "integer"}}));
        let cache = SchemaCache::new();
        let mut r = run(None);
        r.input = Some(Value::Array(vec![json!("x"); MAX_INPUT_ERRORS]));
        let v = check_run_against_runtime(&r, &spec(), &rt, &cache).violations;
        assert_eq!(v.len(), MAX_INPUT_ERRORS);
        assert!(v.iter().all(|v| v.detail.contains("is not of type")));
        r.input = Some(Value::Array(vec![json!("x"); MAX_INPUT_ERRORS + 1]));
        let v = check_run_against_runtime(&r, &spec(), &rt, &cache).violations;
        assert_eq!(v.len(), MAX_INPUT_ERRORS + 1);
        assert_eq!(v[MAX_INPUT_ERRORS].detail, "and 1 more inputSchema errors");
    }

    #[test]
    fn long_schema_errors_are_cut_at_the_limit() {
        let exact = "x".repeat(MAX_SCHEMA_ERROR_CHARS);
        assert_eq!(cut(&exact), exact);
        let over = "x".repeat(MAX_SCHEMA_ERROR_CHARS + 1);
        let got = cut(&over);
        assert_eq!(got.chars().count(), MAX_SCHEMA_ERROR_CHARS);
        assert!(got.ends_with("..."));
        // A real message quoting a big value is cut too.
        let rt = schema_runtime(json!({"type": "integer"}));
        let mut r = run(None);
        r.input = Some(Value::String("y".repeat(10_000)));
        let v = check_run_against_runtime(&r, &spec(), &rt, &SchemaCache::new()).violations;
        assert_eq!(v.len(), 1);
        assert!(
            v[0].detail.len() < MAX_SCHEMA_ERROR_CHARS + 100,
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn an_invalid_input_schema_is_reported_on_the_runtime() {
        let path = spec();
        let mut rt = runtime(None);
        rt.spec.input_schema = Some(json!({"type": "strnig", "minLength": -1}));
        let v = check_input_schema(&rt.spec, &path);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(v.iter().all(|v| v.field == "spec.inputSchema"));
        let text: String = v.iter().map(|v| v.detail.clone()).collect();
        assert!(text.contains("at /type"), "{text}");
        assert!(text.contains("at /minLength"), "{text}");

        rt.spec.input_schema = Some(json!({"$ref": "https://example.com/schema.json"}));
        let v = check_input_schema(&rt.spec, &path);
        assert_eq!(v.len(), 1, "{v:#?}");

        rt.spec.input_schema = Some(json!({"$schema": "https://example.com/meta"}));
        let v = check_input_schema(&rt.spec, &path);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].detail.contains("not a JSON Schema draft"), "{v:#?}");

        for good in [
            json!(true),
            json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}),
            json!({"$defs": {"n": {"type": "integer"}}, "items": {"$ref": "#/$defs/n"}}),
        ] {
            rt.spec.input_schema = Some(good.clone());
            assert!(check_input_schema(&rt.spec, &path).is_empty(), "{good}");
        }
        // Not an object: left to the Runtime spec rules, reported once.
        rt.spec.input_schema = Some(json!(3));
        assert!(check_input_schema(&rt.spec, &path).is_empty());

        // A Run against a Runtime with a broken schema: a warning, not a denial.
        let rt = schema_runtime(json!({"type": 12}));
        let mut r = run(None);
        r.input = Some(json!(1));
        let out = check_run_against_runtime(&r, &path, &rt, &SchemaCache::new());
        assert!(out.violations.is_empty());
        assert_eq!(out.warnings.len(), 1);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_keys_by_generation() {
        let cache = SchemaCache::new();
        let mut rt = schema_runtime(json!({"type": "integer"}));
        for i in 0..MAX_CACHED_SCHEMAS {
            rt.metadata.uid = Some(format!("uid-{i}"));
            assert!(cache.get(&rt).is_some());
        }
        assert_eq!(cache.len(), MAX_CACHED_SCHEMAS);
        assert!(cache.contains("uid-0", 1));
        rt.metadata.uid = Some("one-more".into());
        cache.get(&rt);
        assert_eq!(cache.len(), MAX_CACHED_SCHEMAS);
        assert!(!cache.contains("uid-0", 1), "the oldest is evicted");
        assert!(cache.contains("uid-1", 1));
        assert!(cache.contains("one-more", 1));

        // A new generation is a new entry, compiled from the new schema.
        let small = SchemaCache::with_capacity(4);
        let mut rt = schema_runtime(json!({"type": "integer"}));
        let mut r = run(None);
        r.input = Some(json!("text"));
        assert_eq!(
            check_run_against_runtime(&r, &spec(), &rt, &small)
                .violations
                .len(),
            1
        );
        rt.spec.input_schema = Some(json!({"type": "string"}));
        rt.metadata.generation = Some(2);
        assert!(
            check_run_against_runtime(&r, &spec(), &rt, &small)
                .violations
                .is_empty()
        );
        assert!(small.contains("uid-1", 1) && small.contains("uid-1", 2));
        // Without uid or generation (a Runtime from a file): compiled, not cached.
        let mut local = schema_runtime(json!({"type": "integer"}));
        local.metadata.uid = None;
        assert!(SchemaCache::new().get(&local).is_some());
        let empty = SchemaCache::new();
        empty.get(&local);
        assert!(empty.is_empty());
    }

    fn git_runtime(hosts: Option<&[&str]>) -> RuntimeSpec {
        RuntimeSpec {
            git: hosts.map(|h| RuntimeGit {
                allowed_hosts: h.iter().map(|s| (*s).to_owned()).collect(),
                ..RuntimeGit::default()
            }),
            ..RuntimeSpec::default()
        }
    }

    fn git(url: &str) -> GitSource {
        GitSource {
            url: url.into(),
            ..GitSource::default()
        }
    }

    #[test]
    fn git_hosts_are_allow_listed_with_their_port() {
        let rt = git_runtime(Some(&["github.com", "git.example.com:8443"]));
        let ok = |url: &str| check_git_host(Some(&git(url)), "py", &rt, &spec()).is_none();
        assert!(ok("https://github.com/org/repo"));
        assert!(ok("https://GitHub.com/org/repo"));
        assert!(ok("https://github.com:443/org/repo"));
        assert!(ok("https://git.example.com:8443/org/repo"));
        assert!(!ok("https://github.com:8443/org/repo"));
        assert!(!ok("https://git.example.com/org/repo"));
        assert!(!ok("https://gitlab.com/org/repo"));
        assert!(!ok("https://github.com.evil.example/org/repo"));
        let v = check_git_host(Some(&git("https://gitlab.com/x")), "py", &rt, &spec()).unwrap();
        assert_eq!(v.field, "spec.git.url");
        assert_eq!(v.reason, Reason::Forbidden);
        assert!(v.detail.contains("github.com, git.example.com:8443"), "{v}");

        let with_443 = git_runtime(Some(&["github.com:443"]));
        assert!(
            check_git_host(Some(&git("https://github.com/x")), "py", &with_443, &spec()).is_none()
        );

        let none = git_runtime(None);
        let v = check_git_host(Some(&git("https://github.com/x")), "py", &none, &spec()).unwrap();
        assert!(v.detail.contains("no git section"), "{v}");
        assert!(check_git_host(None, "py", &none, &spec()).is_none());
    }
}
