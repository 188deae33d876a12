#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use kruntimes_api::v1alpha1::Workflow;
use kruntimes_runtimed_api::proto;
use serde_json::json;

use super::{Ending, ObjectRef, Reason, RunFacts, render};
use crate::commands::run::signals::Interrupt;

fn execution(phase: proto::Phase, exit_code: Option<i32>, signal: Option<i32>) -> proto::Execution {
    proto::Execution {
        phase: phase as i32,
        exit_code,
        signal,
        reason: "NonZeroExit".into(),
        ..proto::Execution::default()
    }
}

/// The rendered document, parsed back.
fn document(ending: &Ending, object: Option<&ObjectRef>, local: bool) -> serde_json::Value {
    serde_json::from_str(&render(ending, object, local)).unwrap()
}

fn object() -> ObjectRef {
    ObjectRef {
        kind: "Run".into(),
        name: "t".into(),
        namespace: None,
    }
}

#[test]
fn a_program_exiting_2_and_krt_refusing_the_input_differ_in_source_and_reason() {
    let program = Ending::of_run(
        RunFacts::of_execution(&execution(proto::Phase::Failed, Some(2), None)),
        None,
    );
    let refused = Ending::invalid("run.yaml: Run/t: spec.script: required");
    assert_eq!((program.status, refused.status), (2, 2));
    let program = document(&program, Some(&object()), true);
    assert_eq!(
        program,
        json!({
            "apiVersion": "krt.kruntimes.io/v1", "kind": "RunResult",
            "krtExitStatus": 2, "source": "program", "reason": "ProgramFailed",
            "message": "the program exited with 2", "local": true,
            "object": {"kind": "Run", "name": "t", "namespace": null},
            "phase": "Failed", "exitCode": 2, "signal": null,
            "run": {"phase": "Failed", "exitCode": 2, "signal": null,
                    "reason": "NonZeroExit", "message": null},
        })
    );
    let refused = document(&refused, None, true);
    assert_eq!(refused["source"], "krt");
    assert_eq!(refused["reason"], "InvalidInput");
    assert_eq!(refused["krtExitStatus"], 2);
    assert_eq!(refused["object"], serde_json::Value::Null);
    assert_eq!(refused["exitCode"], serde_json::Value::Null);
    assert!(refused.get("run").is_none() && refused.get("jobs").is_none());
}

#[test]
fn a_timeout_is_krts_124_and_a_program_exiting_124_is_the_programs() {
    let timed_out = Ending::of_run(
        RunFacts::of_execution(&execution(proto::Phase::TimedOut, None, Some(9))),
        None,
    );
    let exited = Ending::of_run(
        RunFacts::of_execution(&execution(proto::Phase::Failed, Some(124), None)),
        None,
    );
    assert_eq!((timed_out.status, exited.status), (124, 124));
    assert_eq!(timed_out.reason, Reason::TimedOut);
    assert_eq!(document(&timed_out, None, true)["source"], "krt");
    assert_eq!(exited.reason, Reason::ProgramFailed);
    assert_eq!(document(&exited, None, true)["source"], "program");
}

#[test]
fn a_killed_program_reports_its_signal_and_a_cancel_by_a_signal_is_krts() {
    let killed = Ending::of_run(
        RunFacts::of_execution(&execution(proto::Phase::Failed, None, Some(9))),
        None,
    );
    assert_eq!((killed.status, killed.reason), (137, Reason::ProgramFailed));
    assert_eq!(document(&killed, None, true)["signal"], 9);
    let cancelled = RunFacts::of_execution(&execution(proto::Phase::Cancelled, None, Some(9)));
    let by_term = Ending::of_run(cancelled.clone(), Some(Interrupt::Term));
    assert_eq!((by_term.status, by_term.reason), (143, Reason::Interrupted));
    assert!(by_term.message.contains("SIGTERM"), "{}", by_term.message);
    let by_someone = Ending::of_run(cancelled, None);
    assert_eq!(
        (by_someone.status, by_someone.reason),
        (130, Reason::Cancelled)
    );
}

#[test]
fn the_fields_come_in_the_documented_order() {
    let text = render(&Ending::invalid("x"), None, true);
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  \"")?.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "apiVersion",
            "kind",
            "krtExitStatus",
            "source",
            "reason",
            "message",
            "local",
            "object",
            "phase",
            "exitCode",
            "signal",
        ]
    );
    assert!(text.ends_with("}\n"), "{text}");
}

#[test]
fn every_reason_has_its_source() {
    let program = [Reason::Succeeded, Reason::ProgramFailed];
    let krt = [
        Reason::Created,
        Reason::TimedOut,
        Reason::Interrupted,
        Reason::Cancelled,
        Reason::StdoutClosed,
        Reason::InvalidInput,
        Reason::ArtifactsFailed,
        Reason::PlatformError,
    ];
    for reason in program {
        assert_eq!(reason.source(), super::Source::Program, "{reason:?}");
    }
    for reason in krt {
        assert_eq!(reason.source(), super::Source::Krt, "{reason:?}");
    }
}

/// A cluster Workflow whose first job's step failed with 3 and whose second was skipped.
fn failed_workflow() -> Workflow {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "team"},
        "spec": {"jobs": [{"name": "a", "steps": [{"name": "s", "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "exit 3"}}]},
                          {"name": "b", "needs": ["a"], "steps": [{"name": "s", "run": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true"}}]}]},
        "status": {"phase": "Failed", "jobs": [
            {"name": "a", "phase": "Failed", "steps": [{"name": "s", "phase": "Failed", "run": "wf-a-s"}]},
            {"name": "b", "phase": "Skipped", "steps": [{"name": "s"}]}]},
    }))
    .unwrap()
}

#[test]
fn a_cluster_workflow_reports_the_failed_steps_program_and_every_job() {
    let workflow = failed_workflow();
    let mut run = kruntimes_api::v1alpha1::Run::new("wf-a-s", Default::default());
    run.status =
        serde_json::from_value(json!({"phase": "Failed", "exitCode": 3, "reason": "NonZeroExit"}))
            .unwrap();
    let endings = BTreeMap::from([("a/s".to_owned(), crate::cluster::wait::ending_of_run(&run))]);
    let ending = crate::cluster::workflow::ending(&workflow, &endings);
    assert_eq!((ending.status, ending.reason), (3, Reason::ProgramFailed));
    let object = ObjectRef {
        kind: "Workflow".into(),
        name: "wf".into(),
        namespace: Some("team".into()),
    };
    let doc = document(&ending, Some(&object), false);
    assert_eq!(doc["source"], "program");
    assert_eq!(doc["phase"], "Failed");
    assert_eq!(doc["step"], "a/s");
    assert_eq!(doc["exitCode"], 3);
    assert_eq!(doc["message"], "step a/s: the program exited with 3");
    assert!(
        doc.get("run").is_none(),
        "a Workflow's facts are in its jobs"
    );
    assert_eq!(
        doc["jobs"],
        json!([
            {"name": "a", "phase": "Failed", "steps": [{"name": "s", "run": "wf-a-s",
                "phase": "Failed", "exitCode": 3, "signal": null, "reason": "NonZeroExit", "message": null}]},
            {"name": "b", "phase": "Skipped", "steps": [{"name": "s", "run": null,
                "phase": null, "exitCode": null, "signal": null, "reason": null, "message": null}]},
        ])
    );
}

#[test]
fn a_cluster_workflow_that_timed_out_is_krts_124() {
    let mut workflow = failed_workflow();
    let status = workflow.status.as_mut().unwrap();
    status.phase = Some(kruntimes_api::v1alpha1::WorkflowPhase::TimedOut);
    let ending = crate::cluster::workflow::ending(&workflow, &BTreeMap::new());
    assert_eq!((ending.status, ending.reason), (124, Reason::TimedOut));
    let doc = document(&ending, None, false);
    assert_eq!(doc["source"], "krt");
    assert_eq!(doc["phase"], "TimedOut");
    assert_eq!(
        doc["jobs"][0]["steps"][0]["phase"], "Failed",
        "from the Workflow's status"
    );
}
