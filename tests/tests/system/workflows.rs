//! Workflows: a DAG whose jobs start only after everything they need completed, a
//! failing job with `failFast`, a step that times out, child Runs labelled and owned
//! by their Workflow, and the Workflow's deletion taking its Runs with it. The order is
//! read from the child Runs' own `startTime` and `completionTime`, as a user sees them.

use std::collections::BTreeMap;

use kruntimes_api::labels::{JOB_LABEL, STEP_LABEL, WORKFLOW_LABEL};
use kruntimes_api::v1alpha1::{JobPhase, Run, RunPhase, Workflow, WorkflowPhase};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::runs::{ready_runtime, runtime};
use crate::support::{Cluster, eventually};

/// A step: its name and its Run's fields.
type StepSpec<'a> = (&'a str, Value);

/// A job: its name, the jobs it needs, its steps.
type JobSpec<'a> = (&'a str, &'a [&'a str], &'a [StepSpec<'a>]);

/// A Workflow `name` of `jobs`, every step a bash Run on Runtime `bash`; `extra` is
/// merged into its spec.
fn workflow(name: &str, jobs: &[JobSpec<'_>], extra: Value) -> Workflow {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|(job, needs, steps)| {
            let steps: Vec<Value> = steps
                .iter()
                .map(|(step, run)| {
                    let mut run = run.clone();
                    run["runtimeRef"] = json!({"name": "bash"});
                    run["interpreter"] = json!("bash");
                    json!({"name": step, "run": run})
                })
                .collect();
            json!({"name": job, "needs": needs, "steps": steps})
        })
        .collect();
    let mut spec = json!({"jobs": jobs});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// A step running `script`.
fn script(script: &str) -> Value {
    json!({"script": script})
}

/// Waits until Workflow `name` is in a terminal phase and returns it.
async fn finished_workflow(workflows: &Api<Workflow>, name: &str) -> Workflow {
    eventually(&format!("Workflow {name} terminal"), || async {
        let workflow = workflows.get(name).await.ok()?;
        let phase = workflow.status.as_ref()?.phase?;
        (!matches!(phase, WorkflowPhase::Pending | WorkflowPhase::Running)).then_some(workflow)
    })
    .await
}

/// The child Runs of Workflow `name`, by `(job, step)` label.
async fn children(runs: &Api<Run>, name: &str) -> BTreeMap<(String, String), Run> {
    let selector = format!("{WORKFLOW_LABEL}={name}");
    runs.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|run| {
            let label = |key: &str| run.labels().get(key).cloned().unwrap_or_default();
            ((label(JOB_LABEL), label(STEP_LABEL)), run)
        })
        .collect()
}

fn time_of(run: &Run, which: &str) -> k8s_openapi::jiff::Timestamp {
    let status = run.status.as_ref().unwrap();
    let text = match which {
        "start" => status.start_time.as_deref(),
        _ => status.completion_time.as_deref(),
    };
    text.unwrap_or_else(|| panic!("{} has no {which} time: {status:?}", run.name_any()))
        .parse()
        .unwrap()
}

/// The phase of each job of `workflow`'s status, by name.
fn job_phases(workflow: &Workflow) -> BTreeMap<String, JobPhase> {
    workflow
        .status
        .as_ref()
        .and_then(|s| s.jobs.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|j| (j.name, j.phase))
        .collect()
}

/// Every child Run Succeeded and is owned by `workflow` (its uid), as its controller,
/// so deleting the Workflow cascades.
fn assert_succeeded_and_owned(all: &BTreeMap<(String, String), Run>, workflow: &Workflow) {
    for ((job, step), run) in all {
        assert_eq!(
            run.status.as_ref().and_then(|s| s.phase),
            Some(RunPhase::Succeeded),
            "{job}/{step}: {:?}",
            run.status
        );
        let owner = run
            .owner_references()
            .iter()
            .find(|o| o.kind == "Workflow")
            .unwrap_or_else(|| panic!("{job}/{step} has no Workflow owner"));
        assert_eq!(
            (owner.name.as_str(), Some(&owner.uid), owner.controller),
            (
                workflow.name_any().as_str(),
                workflow.metadata.uid.as_ref(),
                Some(true)
            )
        );
    }
}

/// In the diamond of `a_workflow_runs_its_dag_in_order_...`: a job starts only after
/// every step of every job it needs completed; a job's steps run one after another.
fn assert_in_dag_order(all: &BTreeMap<(String, String), Run>) {
    let key = |(job, step): (&str, &str)| (job.to_owned(), step.to_owned());
    let after = |later: (&str, &str), earlier: (&str, &str)| {
        let later_run = &all[&key(later)];
        let earlier_run = &all[&key(earlier)];
        assert!(
            time_of(later_run, "start") >= time_of(earlier_run, "completion"),
            "{later:?} started before {earlier:?} completed: {:?} / {:?}",
            later_run.status,
            earlier_run.status
        );
    };
    after(("test", "unit"), ("build", "compile"));
    after(("lint", "check"), ("build", "compile"));
    after(("test", "integration"), ("test", "unit"));
    after(("ship", "publish"), ("test", "integration"));
    after(("ship", "publish"), ("lint", "check"));
}

#[tokio::test]
async fn a_workflow_runs_its_dag_in_order_owns_its_runs_and_takes_them_when_deleted() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("wf-dag").await;
    ready_runtime(&cluster, &ns, runtime("bash", 2, 2)).await;
    let workflows: Api<Workflow> = Api::namespaced(cluster.client.clone(), &ns);
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let step = || script("sleep 1; echo done");
    // A diamond: build, then test and lint side by side, then ship after both; test
    // has two steps in order.
    let dag = workflow(
        "dag",
        &[
            ("build", &[], &[("compile", step())]),
            (
                "test",
                &["build"],
                &[("unit", step()), ("integration", step())],
            ),
            ("lint", &["build"], &[("check", step())]),
            ("ship", &["test", "lint"], &[("publish", step())]),
        ],
        json!({}),
    );
    let created = workflows
        .create(&PostParams::default(), &dag)
        .await
        .unwrap();
    let ended = finished_workflow(&workflows, "dag").await;
    assert_eq!(
        ended.status.as_ref().and_then(|s| s.phase),
        Some(WorkflowPhase::Succeeded),
        "{:?}",
        ended.status
    );
    let all = children(&runs, "dag").await;
    assert_eq!(all.len(), 5, "{:?}", all.keys());
    assert_succeeded_and_owned(&all, &created);
    assert_in_dag_order(&all);
    let key = |job: &str, step: &str| (job.to_owned(), step.to_owned());
    // The status names each step's Run.
    let jobs = ended.status.as_ref().unwrap().jobs.clone().unwrap();
    for job in &jobs {
        assert_eq!(job.phase, JobPhase::Succeeded, "{job:?}");
        for step in &job.steps {
            let run = step.run.as_deref().unwrap_or_default();
            assert_eq!(
                all.get(&key(&job.name, &step.name))
                    .map(ResourceExt::name_any),
                Some(run.to_owned()),
                "{job:?}"
            );
        }
    }

    // Deleting the Workflow takes its Runs (ownerReference garbage collection).
    workflows
        .delete("dag", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Workflow's Runs deleted with it", || async {
        let left = children(&runs, "dag").await;
        let gone = workflows.get_opt("dag").await.ok()?.is_none();
        (gone && left.is_empty()).then_some(())
    })
    .await;
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_failing_job_with_fail_fast_fails_the_workflow_and_its_dependents_never_run() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("wf-failfast").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 2)).await;
    let workflows: Api<Workflow> = Api::namespaced(cluster.client.clone(), &ns);
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    // `broken` fails at once while `slow` still runs; with failFast nothing that has not
    // started starts: neither `deploy` (needs broken) nor `report` (needs slow).
    let failing = workflow(
        "failing",
        &[
            (
                "broken",
                &[],
                &[("run", script("echo failing >&2; exit 3"))],
            ),
            ("slow", &[], &[("run", script("sleep 4"))]),
            ("deploy", &["broken"], &[("run", script("echo deployed"))]),
            ("report", &["slow"], &[("run", script("echo reported"))]),
        ],
        json!({"failFast": true}),
    );
    workflows
        .create(&PostParams::default(), &failing)
        .await
        .unwrap();
    let ended = finished_workflow(&workflows, "failing").await;
    assert_eq!(
        ended.status.as_ref().and_then(|s| s.phase),
        Some(WorkflowPhase::Failed),
        "{:?}",
        ended.status
    );
    let phases = job_phases(&ended);
    assert_eq!(phases.get("broken"), Some(&JobPhase::Failed), "{phases:?}");
    assert_eq!(phases.get("deploy"), Some(&JobPhase::Skipped), "{phases:?}");
    assert_eq!(phases.get("report"), Some(&JobPhase::Skipped), "{phases:?}");
    let all = children(&runs, "failing").await;
    let jobs: Vec<&str> = all.keys().map(|(job, _)| job.as_str()).collect();
    assert!(
        !jobs.contains(&"deploy") && !jobs.contains(&"report"),
        "a dependent ran: {jobs:?}"
    );
    let broken = &all[&("broken".to_owned(), "run".to_owned())];
    assert_eq!(
        broken.status.as_ref().and_then(|s| s.exit_code),
        Some(3),
        "{:?}",
        broken.status
    );
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_step_that_times_out_ends_its_workflow() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("wf-timeout").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 1)).await;
    let workflows: Api<Workflow> = Api::namespaced(cluster.client.clone(), &ns);
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let mut hang = script("sleep 300");
    hang["timeout"] = json!("2s");
    let stuck = workflow(
        "stuck",
        &[
            ("wait", &[], &[("hang", hang)]),
            ("next", &["wait"], &[("run", script("echo next"))]),
        ],
        json!({}),
    );
    workflows
        .create(&PostParams::default(), &stuck)
        .await
        .unwrap();
    let ended = finished_workflow(&workflows, "stuck").await;
    assert_eq!(
        ended.status.as_ref().and_then(|s| s.phase),
        Some(WorkflowPhase::TimedOut),
        "{:?}",
        ended.status
    );
    let phases = job_phases(&ended);
    assert_eq!(phases.get("wait"), Some(&JobPhase::TimedOut), "{phases:?}");
    assert_eq!(phases.get("next"), Some(&JobPhase::Skipped), "{phases:?}");
    let all = children(&runs, "stuck").await;
    let hang = &all[&("wait".to_owned(), "hang".to_owned())];
    assert_eq!(
        hang.status.as_ref().and_then(|s| s.phase),
        Some(RunPhase::TimedOut),
        "{:?}",
        hang.status
    );
    assert_eq!(all.len(), 1, "{:?}", all.keys());
    cluster.delete_namespace(&ns).await;
}
