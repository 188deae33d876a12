//! Drives a Workflow: re-validates it, lists its child Runs, plans, creates and cancels
//! children, writes the status when it changed, and deletes it once its TTL after
//! finishing has passed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kruntimes_api::labels::WORKFLOW_LABEL;
use kruntimes_api::v1alpha1::{Run, Workflow, WorkflowStatus};
use kruntimes_api::validation::Validate;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;

use super::finish::{self, Expiry};
use super::plan::{is_done, plan};
use crate::Error;
use crate::naming::FIELD_MANAGER;

/// What the Workflow reconciler needs.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// `--workflow-ttl-seconds-after-finished`: the TTL of a finished Workflow that
    /// sets none; `None` keeps them.
    pub default_ttl_seconds_after_finished: Option<u64>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("workflow::Context")
    }
}

/// The time left before `workflow`'s timeout (from its creation), if it has one.
fn time_left(workflow: &Workflow) -> Option<Duration> {
    let timeout = kruntimes_api::duration::parse(workflow.spec.timeout.as_deref()?).ok()?;
    let created = workflow.metadata.creation_timestamp.as_ref()?.0;
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(created);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    Some(timeout.saturating_sub(elapsed))
}

/// Reconciles one Workflow.
#[tracing::instrument(skip(workflow, ctx), fields(workflow = %workflow.name_any()))]
pub async fn reconcile(workflow: Arc<Workflow>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = workflow
        .namespace()
        .ok_or(Error::MissingField("Workflow", "namespace"))?;
    let name = workflow.name_any();
    if is_done(workflow.status.as_ref()) {
        return finished(&workflow, &ctx, &namespace).await;
    }
    // The webhook refuses an invalid Workflow; one that reached the API without it
    // (created before the webhook, or under failurePolicy Ignore) fails here, before
    // any child Run exists. A running one was checked before it started, and its spec
    // can no longer change.
    let started = workflow
        .status
        .as_ref()
        .is_some_and(|s| s.phase == Some(kruntimes_api::v1alpha1::WorkflowPhase::Running));
    let violations = if started {
        Vec::new()
    } else {
        workflow.validate()
    };
    if !violations.is_empty() {
        tracing::warn!(
            violations = violations.len(),
            "Workflow fails validation; no step runs"
        );
        let status = finish::invalid(&workflow, &violations, Timestamp::now());
        apply_status(&ctx.client, &namespace, &name, &status).await?;
        // The write is watched: the next reconcile sees it finished (and its TTL).
        return Ok(Action::await_change());
    }
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{WORKFLOW_LABEL}={name}");
    let listed = runs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("list child Runs of Workflow {namespace}/{name}"), e))?;
    // Only the Workflow's own children count: same label and owned by this uid.
    let uid = workflow.uid();
    let children: BTreeMap<String, Run> = listed
        .items
        .into_iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .map(|r| (r.name_any(), r))
        .collect();
    let left = time_left(&workflow);
    let timed_out = left.is_some_and(|l| l.is_zero());
    let planned = match plan(&workflow, &children, timed_out) {
        Ok(planned) => planned,
        Err(e) => {
            // Validation refuses such a Workflow first; one that got past it fails.
            let mut status = workflow.status.clone().unwrap_or_default();
            status.phase = Some(kruntimes_api::v1alpha1::WorkflowPhase::Failed);
            apply_status(&ctx.client, &namespace, &name, &status).await?;
            tracing::warn!(error = %e, "the Workflow cannot be planned");
            return Ok(Action::await_change());
        }
    };
    for child in &planned.create {
        match runs.create(&PostParams::default(), child).await {
            Ok(_) => {}
            // Created by an earlier reconcile whose list did not see it yet.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(
                    format!("create child Run {}", child.name_any()),
                    e,
                ));
            }
        }
    }
    for child in &planned.cancel {
        let patch = serde_json::json!({"spec": {"cancel": true}});
        runs.patch(child, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("cancel child Run {child}"), e))?;
    }
    let status = finish::stamp_completion(planned.status, Timestamp::now());
    if workflow.status.as_ref() != Some(&status) {
        apply_status(&ctx.client, &namespace, &name, &status).await?;
    }
    Ok(match left {
        Some(left) if !left.is_zero() => Action::requeue(left),
        _ => Action::await_change(),
    })
}

/// A finished Workflow: deleted once its TTL passed (only this one: its uid is a
/// precondition; its step Runs go with it by their owner references), else looked at
/// again when the TTL ends.
async fn finished(workflow: &Workflow, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = workflow.name_any();
    let now = Timestamp::now();
    match finish::expiry(workflow, now, ctx.default_ttl_seconds_after_finished) {
        Expiry::Keep => Ok(Action::await_change()),
        Expiry::In(left) => Ok(Action::requeue(left)),
        Expiry::StampCompletion => {
            let mut status = workflow.status.clone().unwrap_or_default();
            status.completion_time = Some(now.to_string());
            apply_status(&ctx.client, namespace, &name, &status).await?;
            Ok(Action::await_change())
        }
        Expiry::Now => {
            let uid = workflow
                .uid()
                .ok_or(Error::MissingField("Workflow", "uid"))?;
            let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                // Already gone (deleted by someone else, or an earlier reconcile).
                Ok(_) => Ok(Action::await_change()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
                Err(e) => Err(Error::kube(
                    format!("delete finished Workflow {namespace}/{name}"),
                    e,
                )),
            }
        }
    }
}

async fn apply_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &WorkflowStatus,
) -> Result<(), Error> {
    let api: Api<Workflow> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": kruntimes_api::labels::API_VERSION,
        "kind": "Workflow",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::kube(format!("apply status of Workflow {namespace}/{name}"), e))
}

/// Retries a failed reconcile with a short delay.
pub fn error_policy(_workflow: Arc<Workflow>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, reason = error.metric_label(), "Workflow reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
