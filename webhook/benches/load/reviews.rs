//! The reviews the load benchmark sends: a CREATE of a 50-step Workflow to `/validate`
//! and a CREATE of a Pod to inject to `/mutate`, each with a fresh uid per request.

use super::*;

/// One kind of review: a template with the uid left out, the path it goes to, and what
/// a correct answer looks like.
pub(super) struct Review {
    pub(super) label: &'static str,
    pub(super) path: &'static str,
    pub(super) prefix: String,
    pub(super) suffix: String,
    /// A correct webhook answer carries a JSONPatch (the Pod) or none (the Workflow).
    pub(super) expect_patch: bool,
}

impl Review {
    pub(super) fn new(
        label: &'static str,
        path: &'static str,
        mut review: Value,
        expect_patch: bool,
    ) -> anyhow::Result<Review> {
        review["request"]["uid"] = Value::String(UID_PLACEHOLDER.to_owned());
        let text = serde_json::to_string(&review)?;
        let (prefix, suffix) = text
            .split_once(&format!("\"{UID_PLACEHOLDER}\""))
            .context("uid placeholder not found")?;
        Ok(Review {
            label,
            path,
            prefix: format!("{prefix}\""),
            suffix: format!("\"{suffix}"),
            expect_patch,
        })
    }

    pub(super) fn body(&self, uid: &str) -> Bytes {
        let mut body = String::with_capacity(self.prefix.len() + uid.len() + self.suffix.len());
        body.push_str(&self.prefix);
        body.push_str(uid);
        body.push_str(&self.suffix);
        Bytes::from(body)
    }

    pub(super) fn len(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }
}

/// The apiserver's envelope around `object`.
pub(super) fn envelope(
    group: &str,
    version: &str,
    kind: &str,
    resource: &str,
    object: Value,
) -> Value {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "uid": "aws-iam-authenticator:123456789012:AROAEXAMPLE",
                "groups": ["system:masters", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {
                "kind": "CreateOptions",
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-client-side-apply",
                "fieldValidation": "Strict"
            }
        }
    })
}

/// A valid Workflow of 10 jobs x 5 steps = 50 steps: a fan-out/fan-in DAG, bash and
/// python steps with multi-line scripts, env, files, timeouts, as `kubectl apply` sends
/// it (managedFields included).
pub(super) fn workflow_review() -> anyhow::Result<Review> {
    let mut jobs = Vec::new();
    for j in 0..10 {
        let needs: Vec<String> = match j {
            0 => vec![],
            1..=4 => vec!["job-0".to_owned()],
            5..=8 => vec![format!("job-{}", j - 4), format!("job-{}", j - 3)],
            _ => (5..=8).map(|n| format!("job-{n}")).collect(),
        };
        let steps: Vec<Value> = (0..5)
            .map(|s| {
                if s % 2 == 0 {
                    json!({
                        "name": format!("step-{s}"),
                        "run": {
                            "runtimeRef": {"name": "bash"},
                            "interpreter": "bash",
                            "script": format!(
                                "set -euo pipefail\necho \"job {j} step {s}\"\nfor f in src/*.c; do\n  gcc -c \"$f\" -o \"${{f%.c}}.o\"\ndone\nmake -j2 test\n"
                            ),
                            "env": [
                                {"name": "JOB", "value": format!("job-{j}")},
                                {"name": "STEP", "value": format!("{s}")}
                            ],
                            "timeout": "10m"
                        }
                    })
                } else {
                    json!({
                        "name": format!("step-{s}"),
                        "run": {
                            "runtimeRef": {"name": "python"},
                            "interpreter": "python",
                            "entrypoint": "main.py",
                            "files": {
                                "main.py": format!("import json, sys\nfrom helper import summarize\nprint(json.dumps(summarize({j}, {s})))\n"),
                                "helper.py": "def summarize(job, step):\n    return {\"job\": job, \"step\": step, \"ok\": True}\n"
                            },
                            "args": ["--job", format!("{j}"), "--verbose"]
                        }
                    })
                }
            })
            .collect();
        let mut job = json!({"name": format!("job-{j}"), "steps": steps});
        if !needs.is_empty() {
            job["needs"] = json!(needs);
        }
        jobs.push(job);
    }
    let object = json!({
        "apiVersion": "kruntimes.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "release-pipeline",
            "namespace": "team-a",
            "uid": "5f0c6c1e-64f4-4a38-9a43-58a1d1a0a001",
            "generation": 1,
            "creationTimestamp": "2026-11-27T10:00:00Z",
            "labels": {"app.kubernetes.io/part-of": "release"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "kruntimes.io/v1alpha1",
                "time": "2026-11-27T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:jobs": {}, "f:timeout": {}, "f:failFast": {}}}
            }]
        },
        "spec": {"timeout": "2h", "failFast": true, "jobs": jobs}
    });
    let steps: usize = object["spec"]["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|j| j["steps"].as_array().map(Vec::len))
                .sum()
        })
        .unwrap_or(0);
    if steps != 50 {
        bail!("the Workflow has {steps} steps, not 50");
    }
    Review::new(
        "Workflow, 50 steps -> /validate",
        "/validate",
        envelope("kruntimes.io", "v1alpha1", "Workflow", "workflows", object),
        false,
    )
}

/// The Pod a ReplicaSet of a Runtime creates (the webhook's own test fixture): labelled
/// for injection, so the answer carries a JSONPatch.
pub(super) fn pod_review() -> anyhow::Result<Review> {
    let review: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/pod-create-runtime.json"))?;
    Review::new("Pod to inject -> /mutate", "/mutate", review, true)
}
