//! A Run, and the Runtime it names, as runtimed's `ExecuteRequest`: what `krt run
//! --local` sends to its local sidecar and what the controller sends to a warm pod.
//! Pure: the Run is validated before it gets here; what can still be wrong is the
//! Runtime (missing, no `git` or `artifacts` section, a malformed limit).

use kruntimes_api::v1alpha1::{Interpreter, RunSpec, RuntimeSpec};
use kruntimes_api::{duration, quantity};

use crate::proto;

/// Longest `run_uid` runtimed accepts (a Kubernetes uid is 36 characters; the bound
/// keeps workspace paths and state small). Letters, digits, `-`, `_` and `.` only.
pub const MAX_RUN_UID_BYTES: usize = 128;

/// Why a Run could not become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The Run uses a part of its Runtime (git, artifacts) and the Runtime is not known.
    #[error("{field} needs Runtime {runtime:?} ({why})")]
    RuntimeUnknown {
        /// The Run's field that needs it: `spec.git` or `spec.artifacts`.
        field: &'static str,
        /// The Runtime's name.
        runtime: String,
        /// What the Runtime supplies.
        why: &'static str,
    },
    /// The Runtime has no section for what the Run asks.
    #[error("{field}: Runtime {runtime:?} has no {field} section, so {consequence}")]
    SectionMissing {
        /// `spec.git` or `spec.artifacts` (the same name in Run and Runtime).
        field: &'static str,
        /// The Runtime's name.
        runtime: String,
        /// What follows from its absence.
        consequence: &'static str,
    },
    /// A field of the Runtime does not parse.
    #[error("Runtime {runtime:?}: {field}: {reason}")]
    RuntimeField {
        /// The Runtime's name.
        runtime: String,
        /// Its field path.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A field of the Run does not parse.
    #[error("{field}: {reason}")]
    RunField {
        /// The Run's field path.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The Runtime a Run names, as far as it is known: `spec` is `None` when no Runtime of
/// that name exists (a Run that needs none of it still becomes a request).
#[derive(Debug, Clone, Copy)]
pub struct RuntimeRef<'a> {
    /// `spec.runtimeRef.name` of the Run.
    pub name: &'a str,
    /// The Runtime's spec, when it exists.
    pub spec: Option<&'a RuntimeSpec>,
}

/// The request that executes `spec` as the execution `run_uid`. The Runtime supplies
/// the default timeout, the git policy (allowed hosts, limits) and the artifact store.
pub fn execute_request(
    spec: &RunSpec,
    run_uid: String,
    runtime: Option<&RuntimeSpec>,
) -> Result<proto::ExecuteRequest, RequestError> {
    let runtime = RuntimeRef {
        name: &spec.runtime_ref.name,
        spec: runtime,
    };
    let input = spec
        .input
        .as_ref()
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| RequestError::RunField {
            field: "spec.input",
            reason: e.to_string(),
        })?;
    Ok(proto::ExecuteRequest {
        run_uid,
        interpreter: interpreter(spec.interpreter) as i32,
        script: spec.script.clone(),
        files: spec
            .files
            .iter()
            .flatten()
            .map(|(path, content)| proto::File {
                path: path.clone(),
                content: content.clone().into_bytes(),
                executable: false,
            })
            .collect(),
        entrypoint: spec.entrypoint.clone(),
        command: spec.command.clone().unwrap_or_default(),
        args: spec.args.clone().unwrap_or_default(),
        env: spec
            .env
            .iter()
            .flatten()
            .map(|e| proto::EnvVar {
                name: e.name.clone(),
                value: e.value.clone(),
            })
            .collect(),
        input,
        timeout_ms: timeout_ms(spec, runtime)?,
        keep_workspace: false,
        artifacts: artifact_request(spec, runtime)?,
        git: git_request(spec, runtime)?,
    })
}

fn interpreter(interpreter: Interpreter) -> proto::Interpreter {
    match interpreter {
        Interpreter::Bash => proto::Interpreter::Bash,
        Interpreter::Python => proto::Interpreter::Python,
        Interpreter::Exec => proto::Interpreter::Exec,
    }
}

/// The Run's own timeout, else its Runtime's `limits.defaultTimeout`, else 0 (the
/// agent's default).
fn timeout_ms(spec: &RunSpec, runtime: RuntimeRef<'_>) -> Result<u64, RequestError> {
    if let Some(t) = &spec.timeout {
        return duration::parse(t)
            .map(|d| millis(d.as_millis()))
            .map_err(|e| RequestError::RunField {
                field: "spec.timeout",
                reason: e.to_string(),
            });
    }
    let default = runtime
        .spec
        .and_then(|s| s.limits.as_ref())
        .and_then(|l| l.default_timeout.as_deref());
    match default {
        Some(t) => duration::parse(t)
            .map(|d| millis(d.as_millis()))
            .map_err(|e| runtime_field(runtime, "spec.limits.defaultTimeout", e)),
        None => Ok(0),
    }
}

fn millis(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn runtime_field(runtime: RuntimeRef<'_>, field: &'static str, e: impl ToString) -> RequestError {
    RequestError::RuntimeField {
        runtime: runtime.name.to_owned(),
        field,
        reason: e.to_string(),
    }
}

/// A Run's git source with the allowed hosts and limits of its Runtime, which must have
/// a `git` section.
fn git_request(
    spec: &RunSpec,
    runtime: RuntimeRef<'_>,
) -> Result<Option<proto::GitSource>, RequestError> {
    let Some(git) = &spec.git else {
        return Ok(None);
    };
    let Some(runtime_spec) = runtime.spec else {
        return Err(RequestError::RuntimeUnknown {
            field: "spec.git",
            runtime: runtime.name.to_owned(),
            why: "its spec.git.allowedHosts allows the host",
        });
    };
    let Some(policy) = &runtime_spec.git else {
        return Err(RequestError::SectionMissing {
            field: "spec.git",
            runtime: runtime.name.to_owned(),
            consequence: "git sources are refused",
        });
    };
    let max_bytes = match &policy.max_bytes {
        Some(q) => quantity::parse_bytes(&q.0)
            .map_err(|e| runtime_field(runtime, "spec.git.maxBytes", e))?,
        None => 0,
    };
    let timeout_ms = match &policy.timeout {
        Some(t) => millis(
            duration::parse(t)
                .map_err(|e| runtime_field(runtime, "spec.git.timeout", e))?
                .as_millis(),
        ),
        None => 0,
    };
    Ok(Some(proto::GitSource {
        url: git.url.clone(),
        r#ref: git.git_ref.clone().unwrap_or_default(),
        path: git.path.clone().unwrap_or_default(),
        allowed_hosts: policy.allowed_hosts.clone(),
        max_bytes,
        timeout_ms,
    }))
}

/// A Run's artifacts with the store and limit of its Runtime, which must have an
/// `artifacts` section. The credentials are the sidecar's (in a cluster, from the
/// Runtime's `credentialsSecretRef`); they are never part of a request.
fn artifact_request(
    spec: &RunSpec,
    runtime: RuntimeRef<'_>,
) -> Result<Option<proto::ArtifactRequest>, RequestError> {
    let Some(artifacts) = &spec.artifacts else {
        return Ok(None);
    };
    let Some(runtime_spec) = runtime.spec else {
        return Err(RequestError::RuntimeUnknown {
            field: "spec.artifacts",
            runtime: runtime.name.to_owned(),
            why: "its spec.artifacts.s3 says where to upload",
        });
    };
    let Some(config) = &runtime_spec.artifacts else {
        return Err(RequestError::SectionMissing {
            field: "spec.artifacts",
            runtime: runtime.name.to_owned(),
            consequence: "there is nowhere to upload",
        });
    };
    let max_bytes = match &config.max_bytes {
        Some(q) => quantity::parse_bytes(&q.0)
            .map_err(|e| runtime_field(runtime, "spec.artifacts.maxBytes", e))?,
        None => 0,
    };
    Ok(Some(proto::ArtifactRequest {
        paths: artifacts.paths.clone(),
        max_bytes,
        store: Some(proto::S3Store {
            endpoint: config.s3.endpoint.clone(),
            region: config.s3.region.clone().unwrap_or_default(),
            bucket: config.s3.bucket.clone(),
            prefix: config.s3.prefix.clone().unwrap_or_default(),
        }),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    fn run_spec(extra: serde_json::Value) -> RunSpec {
        let mut spec = json!({
            "runtimeRef": {"name": "bash"},
            "interpreter": "bash",
            "script": "mkdir out; echo hi > out/a.txt",
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(spec).unwrap()
    }

    fn runtime(extra: serde_json::Value) -> RuntimeSpec {
        let mut spec =
            json!({"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(spec).unwrap()
    }

    fn store() -> serde_json::Value {
        json!({
            "maxBytes": "1Mi",
            "s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "runs", "prefix": "team-a/"},
        })
    }

    fn artifacts() -> serde_json::Value {
        json!({"artifacts": {"paths": ["out/**"]}})
    }

    #[test]
    fn a_plain_run_maps_every_field_and_needs_no_runtime() {
        let spec = run_spec(json!({
            "args": ["a", "b"],
            "env": [{"name": "MODE", "value": "dev"}],
            "files": {"lib/x.sh": "echo x\n"},
            "input": {"q": 1},
            "timeout": "90s",
        }));
        let request = execute_request(&spec, "uid-1".into(), None).unwrap();
        assert_eq!(request.run_uid, "uid-1");
        assert_eq!(request.interpreter, proto::Interpreter::Bash as i32);
        assert_eq!(
            request.script.as_deref(),
            Some("mkdir out; echo hi > out/a.txt")
        );
        assert_eq!(request.args, ["a", "b"]);
        assert_eq!(request.env[0].name, "MODE");
        assert_eq!(request.env[0].value, "dev");
        assert_eq!(request.files[0].path, "lib/x.sh");
        assert_eq!(request.files[0].content, b"echo x\n");
        assert_eq!(request.input.as_deref(), Some(&br#"{"q":1}"#[..]));
        assert_eq!(request.timeout_ms, 90_000);
        assert_eq!(request.git, None);
        assert_eq!(request.artifacts, None);
    }

    #[test]
    fn the_runtime_default_timeout_applies_when_the_run_sets_none() {
        let rt = runtime(json!({"limits": {"defaultTimeout": "2m"}}));
        let request = execute_request(&run_spec(json!({})), "u".into(), Some(&rt)).unwrap();
        assert_eq!(request.timeout_ms, 120_000);
        let own = run_spec(json!({"timeout": "5s"}));
        let request = execute_request(&own, "u".into(), Some(&rt)).unwrap();
        assert_eq!(request.timeout_ms, 5_000, "the Run's own timeout wins");
        let request = execute_request(&run_spec(json!({})), "u".into(), None).unwrap();
        assert_eq!(request.timeout_ms, 0, "0: the agent's default");
    }

    #[test]
    fn artifacts_take_the_store_and_limit_of_the_runtime() {
        let rt = runtime(json!({"artifacts": store()}));
        let request = execute_request(&run_spec(artifacts()), "u".into(), Some(&rt)).unwrap();
        let request = request.artifacts.unwrap();
        assert_eq!(request.paths, ["out/**"]);
        assert_eq!(request.max_bytes, 1 << 20);
        let store = request.store.unwrap();
        assert_eq!(store.endpoint, "http://127.0.0.1:9000");
        assert_eq!(store.bucket, "runs");
        assert_eq!(store.prefix, "team-a/");
        assert_eq!(store.region, "", "empty: the sidecar's default region");
    }

    #[test]
    fn artifacts_without_a_runtime_or_its_section_are_refused() {
        let spec = run_spec(artifacts());
        let missing = execute_request(&spec, "u".into(), None).unwrap_err();
        assert_eq!(
            missing,
            RequestError::RuntimeUnknown {
                field: "spec.artifacts",
                runtime: "bash".into(),
                why: "its spec.artifacts.s3 says where to upload",
            }
        );
        let no_section = execute_request(&spec, "u".into(), Some(&runtime(json!({})))).unwrap_err();
        assert_eq!(
            no_section.to_string(),
            "spec.artifacts: Runtime \"bash\" has no spec.artifacts section, so there is nowhere to upload"
        );
    }

    #[test]
    fn a_bad_limit_on_the_runtime_names_the_runtime_and_the_field() {
        let mut config = store();
        config["maxBytes"] = json!("lots");
        let rt = runtime(json!({"artifacts": config}));
        let error = execute_request(&run_spec(artifacts()), "u".into(), Some(&rt)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Runtime \"bash\": spec.artifacts.maxBytes:"),
            "{error}"
        );
    }

    #[test]
    fn git_takes_the_allowed_hosts_and_limits_of_the_runtime() {
        let spec = run_spec(json!({"script": null, "entrypoint": "run.sh",
            "git": {"url": "https://example.com/r", "ref": "main", "path": "tools"}}));
        let rt = runtime(
            json!({"git": {"allowedHosts": ["example.com"], "maxBytes": "1Ki", "timeout": "3s"}}),
        );
        let git = execute_request(&spec, "u".into(), Some(&rt))
            .unwrap()
            .git
            .unwrap();
        assert_eq!(git.url, "https://example.com/r");
        assert_eq!(git.r#ref, "main");
        assert_eq!(git.path, "tools");
        assert_eq!(git.allowed_hosts, ["example.com"]);
        assert_eq!(git.max_bytes, 1024);
        assert_eq!(git.timeout_ms, 3000);
        let refused = execute_request(&spec, "u".into(), Some(&runtime(json!({})))).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "spec.git: Runtime \"bash\" has no spec.git section, so git sources are refused"
        );
    }
}
