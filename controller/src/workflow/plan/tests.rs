#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use kruntimes_api::v1alpha1::JobPhase;
use serde_json::json;

fn workflow(extra: serde_json::Value) -> Workflow {
    let step = |name: &str| json!({"name": name, "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}});
    let mut wf = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "release", "namespace": "ns", "uid": "wf-uid", "generation": 2},
        "spec": {"jobs": [
            {"name": "fetch", "steps": [step("get")]},
            {"name": "test", "needs": ["fetch"], "steps": [step("unit"), step("e2e")]},
            {"name": "lint", "needs": ["fetch"], "steps": [step("clippy")]},
        ]},
    });
    for (k, v) in extra.as_object().unwrap() {
        wf["spec"][k] = v.clone();
    }
    serde_json::from_value(wf).unwrap()
}

fn child(name: &str, phase: Option<&str>, ended_ms: i64) -> (String, Run) {
    let mut run = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"},
    });
    if let Some(phase) = phase {
        let t = k8s_openapi::jiff::Timestamp::from_millisecond(ended_ms).unwrap();
        run["status"] = json!({"phase": phase, "completionTime": t.to_string()});
    }
    (name.to_owned(), serde_json::from_value(run).unwrap())
}

fn names(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|r| r.name_any()).collect()
}

#[test]
fn the_first_job_becomes_a_labelled_owned_child_run() {
    let planned = super::plan(&workflow(json!({})), &BTreeMap::new(), false).unwrap();
    assert_eq!(names(&planned.create), ["release-fetch-get"]);
    let run = &planned.create[0];
    let labels = run.metadata.labels.clone().unwrap();
    assert_eq!(labels[WORKFLOW_LABEL], "release");
    assert_eq!(labels[JOB_LABEL], "fetch");
    assert_eq!(labels[STEP_LABEL], "get");
    let owner = &run.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Workflow", "release", "wf-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(run.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(planned.status.phase, Some(WorkflowPhase::Pending));
    assert_eq!(planned.status.observed_generation, Some(2));
}

#[test]
fn dependents_start_together_once_their_need_succeeded_and_steps_go_in_order() {
    let children = BTreeMap::from([child("release-fetch-get", Some("Succeeded"), 1)]);
    let planned = super::plan(&workflow(json!({})), &children, false).unwrap();
    assert_eq!(
        names(&planned.create),
        ["release-test-unit", "release-lint-clippy"]
    );
    let children = BTreeMap::from([
        child("release-fetch-get", Some("Succeeded"), 1),
        child("release-test-unit", Some("Succeeded"), 2),
        child("release-lint-clippy", None, 0),
    ]);
    let planned = super::plan(&workflow(json!({})), &children, false).unwrap();
    assert_eq!(names(&planned.create), ["release-test-e2e"]);
    assert_eq!(planned.status.phase, Some(WorkflowPhase::Running));
    let jobs = planned.status.jobs.unwrap();
    assert_eq!(jobs[0].phase, JobPhase::Succeeded);
    assert_eq!(jobs[1].steps[0].run.as_deref(), Some("release-test-unit"));
    assert_eq!(jobs[1].steps[1].run, None, "not created yet");
}

#[test]
fn a_failed_child_fails_the_workflow_and_skips_its_dependents() {
    let children = BTreeMap::from([child("release-fetch-get", Some("Error"), 1)]);
    let planned = super::plan(&workflow(json!({})), &children, false).unwrap();
    assert!(planned.create.is_empty());
    assert_eq!(planned.status.phase, Some(WorkflowPhase::Failed));
    let jobs = planned.status.jobs.unwrap();
    assert_eq!(jobs[0].phase, JobPhase::Failed);
    assert_eq!(
        (jobs[1].phase, jobs[2].phase),
        (JobPhase::Skipped, JobPhase::Skipped)
    );
}

#[test]
fn cancel_and_timeout_cancel_running_children_and_start_nothing() {
    let children = BTreeMap::from([
        child("release-fetch-get", Some("Succeeded"), 1),
        child("release-test-unit", None, 0),
        child("release-lint-clippy", Some("Running"), 0),
    ]);
    for (extra, timed_out, phase) in [
        (json!({"cancel": true}), false, WorkflowPhase::Cancelled),
        (json!({}), true, WorkflowPhase::TimedOut),
    ] {
        let planned = super::plan(&workflow(extra), &children, timed_out).unwrap();
        assert!(planned.create.is_empty());
        assert_eq!(
            planned.cancel,
            ["release-test-unit", "release-lint-clippy"],
            "in the order of the spec"
        );
        assert_eq!(
            planned.status.phase,
            Some(WorkflowPhase::Running),
            "until the children end"
        );
        let mut ended = children.clone();
        ended.insert(
            "release-test-unit".into(),
            child("release-test-unit", Some("Cancelled"), 5).1,
        );
        ended.insert(
            "release-lint-clippy".into(),
            child("release-lint-clippy", Some("Cancelled"), 6).1,
        );
        let planned = super::plan(
            &workflow(if phase == WorkflowPhase::Cancelled {
                json!({"cancel": true})
            } else {
                json!({})
            }),
            &ended,
            timed_out,
        )
        .unwrap();
        assert_eq!(planned.status.phase, Some(phase));
        assert!(planned.cancel.is_empty());
    }
}

#[test]
fn a_long_name_gets_the_stable_child_name() {
    let mut wf = workflow(json!({}));
    wf.metadata.name = Some("w".repeat(60));
    let planned = super::plan(&wf, &BTreeMap::new(), false).unwrap();
    let name = planned.create[0].name_any();
    assert!(name.len() <= 63, "{name}");
    assert_eq!(name, child_run_name(&"w".repeat(60), "fetch", "get"));
}
