//! The imperative shell around the renderers: reads the Secret, applies the three
//! objects, writes the status when it changed, and publishes an Event when Ready
//! changes.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kruntimes_api::labels::API_VERSION;
use kruntimes_api::v1alpha1::{Runtime, RuntimeStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt as _, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::credentials::{self, Origin};
use super::render::{self, MANAGED_BY, MANAGED_BY_LABEL, Owner};
use super::revalidate;
use super::status::{self, reason};
use crate::Error;
use crate::naming;

/// Reconcile again after this long even when nothing is watched to change: the busy
/// slots in `status.capacity` come from the dispatcher, not from a watch, and a
/// deleted Secret or NetworkPolicy is put back.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Retry a failed reconcile after this long: short enough that a brief API outage
/// heals quickly, long enough not to hammer a failing API server.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Longest Event note, in bytes: the Events API's own limit.
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;
/// The Event action of every Runtime Event.
pub const EVENT_ACTION: &str = "Reconcile";

/// Reconciles one Runtime: re-validates it, Pod Security of its template included (an
/// invalid one only gets its status), then
/// applies its Secret, Deployment and NetworkPolicy and writes its status.
pub async fn reconcile(runtime: Arc<Runtime>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = Owner::of(&runtime)?;
    let busy = ctx.busy.busy_slots(&owner.namespace, &owner.name);
    let now = credentials::now_in_seconds();
    let violations = revalidate::violations(&runtime, ctx.pod_security_floor);
    if !violations.is_empty() {
        tracing::warn!(
            runtime = %format!("{}/{}", owner.namespace, owner.name),
            violations = violations.len(),
            "Runtime fails validation; nothing applied"
        );
        let new = status::invalid(&runtime, &violations, busy, now);
        write_status(&ctx, &runtime, &owner, new).await?;
        // Only an edit of the Runtime can make it valid, and an edit is watched.
        return Ok(Action::await_change());
    }

    apply_secret(&ctx.client, &runtime, &owner, now).await?;
    let deployment = apply(
        &Api::<Deployment>::namespaced(ctx.client.clone(), &owner.namespace),
        &render::deployment(&runtime)?,
    )
    .await?;
    apply(
        &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &owner.namespace),
        &render::network_policy(&runtime, &ctx.controller_selector)?,
    )
    .await?;
    let new = status::observed(&runtime, &deployment, busy, now);
    write_status(&ctx, &runtime, &owner, new).await?;
    Ok(Action::requeue(RESYNC_INTERVAL))
}

/// After a failed reconcile: log it with its bounded reason, retry later.
pub fn error_policy(runtime: Arc<Runtime>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        runtime = %format!("{}/{}", runtime.namespace().unwrap_or_default(), runtime.name_any()),
        reason = error.metric_label(),
        %error,
        "reconcile failed"
    );
    Action::requeue(ERROR_RETRY_INTERVAL)
}

/// A Controller watching every Runtime and the Deployments the controller rendered
/// (selected by the managed-by label, so other Deployments are neither listed nor
/// cached): a change of a Runtime's Deployment reconciles that Runtime. A Runtime is
/// reconciled when its `metadata.generation` changes, not on status-only changes:
/// nothing rendered depends on its status, and the dispatcher patches
/// `status.capacity.busy` as Runs come and go, which would otherwise re-apply three
/// unchanged objects each time.
pub fn builder(client: &Client, namespace: Option<&str>) -> Controller<Runtime> {
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (runtimes, deployments) = match namespace {
        Some(ns) => (
            Api::<Runtime>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (reader, writer) = reflector::store();
    let spec_changes = watcher(runtimes, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    Controller::for_stream(spec_changes, reader).owns(deployments, owned)
}

/// The item of [`controller`]'s stream: a reconciled Runtime, or why it was not.
pub type Reconciled =
    Result<(ObjectRef<Runtime>, Action), controller::Error<Error, watcher::Error>>;

/// [`builder`] run with [`reconcile`] and [`error_policy`] until `shutdown` completes
/// (reconciles under way are finished first). The stream must be polled to run.
pub fn controller(
    client: Client,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = Reconciled> {
    builder(&client, None)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(naming::FIELD_MANAGER).force()
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let action = || {
        let kind = K::kind(&K::DynamicType::default()).into_owned();
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        format!("apply {kind} {namespace}/{name}")
    };
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|e| Error::kube(action(), e))
}

/// Reads the Secret, keeps its material when usable, and applies it.
async fn apply_secret(
    client: &Client,
    runtime: &Runtime,
    owner: &Owner,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<(), Error> {
    let api = Api::<Secret>::namespaced(client.clone(), &owner.namespace);
    let name = naming::secret_name(&owner.name);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get Secret {}/{name}", owner.namespace), e))?;
    let server_name = naming::server_name(&owner.name, &owner.namespace);
    let (credentials, origin) = credentials::ensure(existing.as_ref(), &server_name, now)?;
    let secret = format!("{}/{name}", owner.namespace);
    match origin {
        Origin::Kept => {}
        Origin::Created => tracing::info!(%secret, "creating runtimed credentials"),
        Origin::Replaced(why) => {
            tracing::info!(%secret, reason = %why, "replacing runtimed credentials");
        }
    }
    apply(&api, &render::secret(runtime, &credentials)?).await?;
    Ok(())
}

/// Applies `new` through the status subresource when it differs from the stored
/// status, then publishes an Event when Ready changed.
async fn write_status(
    ctx: &Context,
    runtime: &Runtime,
    owner: &Owner,
    new: RuntimeStatus,
) -> Result<(), Error> {
    let old = runtime.status.as_ref();
    if !status::changed(old, &new) {
        return Ok(());
    }
    let api = Api::<Runtime>::namespaced(ctx.client.clone(), &owner.namespace);
    let patch = Patch::Apply(serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "Runtime",
        "status": new,
    }));
    api.patch_status(&owner.name, &apply_params(), &patch)
        .await
        .map_err(|e| {
            Error::kube(
                format!("apply status of Runtime {}/{}", owner.namespace, owner.name),
                e,
            )
        })?;
    if let Some(ready) = status::ready_transition(old, &new) {
        let event = Event {
            type_: match ready.reason.as_str() {
                reason::INVALID | reason::TEMPLATE_REJECTED => EventType::Warning,
                _ => EventType::Normal,
            },
            reason: ready.reason.clone(),
            note: Some(status::cut_to(ready.message.clone(), MAX_EVENT_NOTE_BYTES)),
            action: EVENT_ACTION.to_owned(),
            secondary: None,
        };
        // An Event is a notice: the status already says it, so a lost Event does not
        // fail the reconcile (which would write the same status again).
        if let Err(error) = ctx.events.publish(&event, &runtime.object_ref(&())).await {
            tracing::warn!(%error, reason = %event.reason, "cannot publish the Runtime's Event");
        }
    }
    Ok(())
}
