//! `krt describe run|runtime|workflow NAME`: the object's spec in brief, its status
//! and conditions, a Workflow as a tree of jobs and steps with their phases and child
//! Runs, and the recent Events about it.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Event;
use kruntimes_api::v1alpha1::{Condition, Run, Runtime, Workflow};
use kube::api::{Api, ListParams};

use super::error::Request;
use super::get::{age, between, phase_text};
use super::{Cluster, ClusterArgs, ClusterError, wait, workflow};

/// The kinds `krt describe` describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A Run.
    #[value(alias = "runs", alias = "krun")]
    Run,
    /// A Runtime.
    #[value(alias = "runtimes")]
    Runtime,
    /// A Workflow.
    #[value(alias = "workflows")]
    Workflow,
}

/// Arguments of `krt describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe.
    #[arg(value_enum)]
    kind: Kind,
    /// Its name.
    name: String,
    /// Cluster access.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Events shown at most, the most recent ones.
pub const MAX_EVENTS: usize = 20;

/// Runs `krt describe`.
pub fn run(args: DescribeArgs) -> i32 {
    let access = args.cluster.clone();
    super::block_on("describe", &access, |cluster| async move {
        let text = describe(&cluster, args.kind, &args.name).await?;
        print!("{text}");
        Ok(0)
    })
}

/// The description of `kind` `name`.
pub async fn describe(cluster: &Cluster, kind: Kind, name: &str) -> Result<String, ClusterError> {
    let (mut text, uid) = match kind {
        Kind::Run => {
            let run = wait::get_run(cluster, name).await?;
            (describe_run(&run), run.metadata.uid.clone())
        }
        Kind::Workflow => {
            let workflow = workflow::get_workflow(cluster, name).await?;
            (describe_workflow(&workflow), workflow.metadata.uid.clone())
        }
        Kind::Runtime => {
            let api: Api<Runtime> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
            let runtime = api.get(name).await.map_err(|e| {
                cluster.error(
                    &Request {
                        verb: "get",
                        resource: "runtimes.kruntimes.io",
                        kind: "Runtime",
                        name: Some(name),
                        namespace: Some(&cluster.namespace),
                    },
                    e,
                )
            })?;
            (describe_runtime(&runtime), runtime.metadata.uid.clone())
        }
    };
    text.push_str(&events(cluster, name, uid.as_deref()).await);
    Ok(text)
}

fn line(text: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(text, "{:<16}{value}", format!("{label}:"));
}

/// The Name and Namespace lines.
fn identity(text: &mut String, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    line(text, "Name", opt(meta.name.as_ref()));
    line(text, "Namespace", opt(meta.namespace.as_ref()));
}

fn opt(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "<none>".to_owned(), |v| v.to_string())
}

fn describe_run(run: &Run) -> String {
    let mut text = String::new();
    let status = run.status.clone().unwrap_or_default();
    identity(&mut text, &run.metadata);
    line(&mut text, "Runtime", &run.spec.runtime_ref.name);
    line(
        &mut text,
        "Interpreter",
        format!("{:?}", run.spec.interpreter).to_lowercase(),
    );
    if let Some(command) = &run.spec.command {
        line(&mut text, "Command", command.join(" "));
    }
    line(&mut text, "Timeout", opt(run.spec.timeout.as_ref()));
    line(&mut text, "Cancel", run.spec.cancel.unwrap_or(false));
    line(
        &mut text,
        "Age",
        age(run.metadata.creation_timestamp.as_ref()),
    );
    line(&mut text, "Phase", phase_text(status.phase));
    line(&mut text, "Exit Code", opt(status.exit_code));
    line(&mut text, "Reason", opt(status.reason.as_ref()));
    line(&mut text, "Message", opt(status.message.as_ref()));
    line(&mut text, "Pod", opt(status.pod.as_ref()));
    line(&mut text, "Execution", opt(status.execution_id.as_ref()));
    line(
        &mut text,
        "Queued",
        between(status.queued_at.as_deref(), status.start_time.as_deref()),
    );
    line(
        &mut text,
        "Duration",
        between(
            status.start_time.as_deref(),
            status.completion_time.as_deref(),
        ),
    );
    if let Some(output) = &status.output {
        line(&mut text, "Truncated", output.truncated);
        for (name, tail) in [
            ("Stdout tail", &output.stdout_tail),
            ("Stderr tail", &output.stderr_tail),
        ] {
            let _ = writeln!(text, "{name}:");
            for l in tail.lines() {
                let _ = writeln!(text, "  {l}");
            }
        }
    }
    for artifact in status.artifacts.iter().flatten() {
        line(
            &mut text,
            "Artifact",
            format!(
                "{} -> {} ({} bytes)",
                artifact.path, artifact.key, artifact.size
            ),
        );
    }
    conditions(&mut text, status.conditions.as_deref());
    text
}

fn describe_runtime(runtime: &Runtime) -> String {
    let mut text = String::new();
    let status = runtime.status.clone().unwrap_or_default();
    let capacity = status.capacity.clone().unwrap_or_default();
    identity(&mut text, &runtime.metadata);
    line(
        &mut text,
        "Replicas",
        format!(
            "{} ready / {} desired",
            status.ready_replicas.unwrap_or(0),
            runtime.spec.replicas
        ),
    );
    line(&mut text, "Concurrency", runtime.spec.concurrency);
    line(
        &mut text,
        "Capacity",
        format!("{} busy / {} slots", capacity.busy, capacity.total),
    );
    line(&mut text, "Container", opt(runtime.spec.container.as_ref()));
    line(&mut text, "Selector", opt(status.selector.as_ref()));
    line(
        &mut text,
        "Age",
        age(runtime.metadata.creation_timestamp.as_ref()),
    );
    conditions(&mut text, status.conditions.as_deref());
    text
}

fn describe_workflow(workflow: &Workflow) -> String {
    let mut text = String::new();
    let status = workflow.status.clone().unwrap_or_default();
    identity(&mut text, &workflow.metadata);
    line(&mut text, "Phase", phase_text(status.phase));
    line(&mut text, "Timeout", opt(workflow.spec.timeout.as_ref()));
    line(
        &mut text,
        "Age",
        age(workflow.metadata.creation_timestamp.as_ref()),
    );
    let _ = writeln!(text, "Jobs:");
    let jobs = status.jobs.unwrap_or_default();
    for spec_job in &workflow.spec.jobs {
        let job = jobs.iter().find(|j| j.name == spec_job.name);
        let phase = job.map_or("Pending".to_owned(), |j| format!("{:?}", j.phase));
        let needs = &spec_job.needs;
        let needs = if needs.is_empty() {
            String::new()
        } else {
            format!(" (needs {})", needs.join(", "))
        };
        let _ = writeln!(text, "  {} {phase}{needs}", spec_job.name);
        for (i, spec_step) in spec_job.steps.iter().enumerate() {
            let step = job.and_then(|j| j.steps.iter().find(|s| s.name == spec_step.name));
            let phase = step
                .and_then(|s| s.phase)
                .map_or("Pending".to_owned(), |p| format!("{p:?}"));
            let run = step
                .and_then(|s| s.run.as_deref())
                .map(|r| format!("  run/{r}"))
                .unwrap_or_default();
            let branch = if i + 1 == spec_job.steps.len() {
                "└─"
            } else {
                "├─"
            };
            let _ = writeln!(text, "    {branch} {} {phase}{run}", spec_step.name);
        }
    }
    conditions(&mut text, status.conditions.as_deref());
    text
}

fn conditions(text: &mut String, conditions: Option<&[Condition]>) {
    let _ = writeln!(text, "Conditions:");
    let conditions = conditions.unwrap_or_default();
    if conditions.is_empty() {
        let _ = writeln!(text, "  <none>");
    }
    for c in conditions {
        let _ = writeln!(
            text,
            "  {:<12}{:<8}{:<24}{}",
            c.type_, c.status, c.reason, c.message
        );
    }
}

/// The recent Events about the object (by uid, else by name), or why there are none.
async fn events(cluster: &Cluster, name: &str, uid: Option<&str>) -> String {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let mut text = String::from("Events:\n");
    let mut list = match api.list(&params).await {
        Ok(list) => list.items,
        // Events are advisory: a user who may not list them still gets the rest.
        Err(e) => {
            let _ = writeln!(text, "  <cannot list events: {}>", super::error::chain(&e));
            return text;
        }
    };
    list.retain(|e| {
        e.involved_object.name.as_deref() == Some(name)
            && uid.is_none_or(|u| e.involved_object.uid.as_deref().is_none_or(|v| v == u))
    });
    list.sort_by_key(|e| {
        e.last_timestamp
            .clone()
            .or(e.first_timestamp.clone())
            .map(|t| t.0)
    });
    if list.is_empty() {
        text.push_str("  <none>\n");
    }
    let skip = list.len().saturating_sub(MAX_EVENTS);
    for event in &list[skip..] {
        let when = age(event
            .last_timestamp
            .as_ref()
            .or(event.first_timestamp.as_ref()));
        let _ = writeln!(
            text,
            "  {:<8}{:<24}{:<8}{}",
            event.type_.as_deref().unwrap_or(""),
            event.reason.as_deref().unwrap_or(""),
            when,
            event.message.as_deref().unwrap_or("")
        );
    }
    text
}
