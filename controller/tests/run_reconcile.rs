//! The Run reconciler against a mocked API server: the exact requests a reconcile makes
//! (one status apply for a new Run, none for a Run whose status already says it all),
//! and what reaches the dispatcher.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Request, Response};
use kruntimes_api::labels::RUN_FINALIZER;
use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::SchemaCache;
use kruntimes_controller::Error;
use kruntimes_controller::dispatch::{
    Dispatcher, PENDING_WRITE_DELAY, RunKey, RuntimeKey, StatusSink,
};
use kruntimes_controller::run::finalizer::{CLEANUP_RECHECK, CLEANUP_TIMEOUT};
use kruntimes_controller::run::{Context, WAIT_REQUEUE, reconcile, runtimes_ready};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::json;

/// The dispatcher's status writes: only the delayed `Pending` of a queued Run, as the
/// pools have no pod.
#[derive(Default)]
struct Writes(std::sync::Mutex<Vec<RunStatus>>);

impl StatusSink for Writes {
    fn write<'a>(
        &'a self,
        _: &'a RunKey,
        status: &'a RunStatus,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.0.lock().unwrap().push(status.clone());
        Box::pin(async { Ok(()) })
    }
}

impl Writes {
    fn taken(&self) -> Vec<RunStatus> {
        self.0.lock().unwrap().clone()
    }
}

fn run(status: Option<serde_json::Value>) -> Run {
    let mut run = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": "uid-1", "generation": 1,
                     "resourceVersion": "7",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"},
    });
    if let Some(status) = status {
        run["status"] = status;
        // Every Run with a status was given the finalizer before it.
        run["metadata"]["finalizers"] = json!([RUN_FINALIZER]);
    }
    serde_json::from_value(run).unwrap()
}

/// `run`, deleted at `at` (its finalizer holds it).
fn deleted(mut run: Run, at: &str) -> Run {
    run.metadata.finalizers = Some(vec![RUN_FINALIZER.into()]);
    run.metadata.deletion_timestamp = Some(serde_json::from_value(json!(at)).unwrap());
    run
}

/// Answers the next request, a JSON patch of the Run's finalizers, and returns it.
async fn expect_finalizer_patch(handle: &mut Handle, answer: &Run) -> serde_json::Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/hello"
    );
    assert_eq!(
        request.headers().get("content-type").unwrap(),
        "application/json-patch+json"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(answer).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&body).unwrap()
}

fn runtime() -> Runtime {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}},
    }))
    .unwrap()
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn context() -> (Arc<Context>, Handle) {
    let (store, mut writer) = reflector::store::<Runtime>();
    // Filled as a reflector's first list fills it.
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(runtime()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    context_on(store)
}

/// A context reading Runtimes from `store`, with nothing in its pools.
fn context_on(store: reflector::Store<Runtime>) -> (Arc<Context>, Handle) {
    context_writing_to(store, Arc::new(Writes::default()))
}

/// As [`context_on`], its dispatcher writing to `writes`.
fn context_writing_to(
    store: reflector::Store<Runtime>,
    writes: Arc<Writes>,
) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context {
        client: kube::Client::new(service, "default"),
        dispatcher: Dispatcher::new(writes),
        runtimes: store.clone(),
        runtimes_ready: runtimes_ready(store),
        schemas: SchemaCache::new(),
        default_ttl_seconds_after_finished: None,
    };
    (Arc::new(ctx), handle)
}

/// Answers the next request after checking it, as the API server would.
async fn expect_status_apply(handle: &mut Handle, answer: &Run) -> serde_json::Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/hello/status"
    );
    let query = request.uri().query().unwrap_or_default();
    assert!(
        query.contains("fieldManager=kruntimes-controller"),
        "{query}"
    );
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        request.headers().get("content-type").unwrap(),
        "application/apply-patch+yaml"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(answer).unwrap()))
            .unwrap(),
    );
    patch
}

#[tokio::test]
async fn a_new_run_gets_its_finalizer_and_is_queued_its_pending_written_only_once_it_waits() {
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(runtime()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let writes = Arc::new(Writes::default());
    let (ctx, mut handle) = context_writing_to(store, writes.clone());
    let new = run(None);
    let reconciled = tokio::spawn(reconcile(Arc::new(new.clone()), ctx.clone()));
    let finalizer = expect_finalizer_patch(&mut handle, &new).await;
    assert_eq!(
        finalizer,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
            {"op": "add", "path": "/metadata/finalizers", "value": [RUN_FINALIZER]},
        ])
    );
    reconciled.await.unwrap().unwrap();
    let runtime = RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    };
    assert_eq!(ctx.dispatcher.queued(&runtime), 1, "queued for a pod");
    assert!(
        writes.taken().is_empty(),
        "no status write before it waited PENDING_WRITE_DELAY"
    );
    // No pod takes it: past the delay, the dispatcher says it waits, once.
    tokio::time::sleep(PENDING_WRITE_DELAY * 3).await;
    let taken = writes.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].phase, Some(RunPhase::Pending));
    assert_eq!(taken[0].reason.as_deref(), Some("WaitingForCapacity"));
    assert!(taken[0].queued_at.is_some(), "{:?}", taken[0]);
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "the reconciler wrote nothing but the finalizer"
    );
}

#[tokio::test]
async fn a_run_whose_runtime_is_missing_is_written_pending_at_once_and_looked_at_again() {
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (ctx, mut handle) = context_on(store);
    let new = run(None);
    let reconciled = tokio::spawn(reconcile(Arc::new(new.clone()), ctx.clone()));
    expect_finalizer_patch(&mut handle, &new).await;
    let patch = expect_status_apply(&mut handle, &new).await;
    assert_eq!(patch["status"]["phase"], "Pending", "{patch}");
    assert_eq!(patch["status"]["reason"], "RuntimeNotFound", "{patch}");
    assert!(patch["status"]["queuedAt"].is_string(), "{patch}");
    let action = reconciled.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(WAIT_REQUEUE));
    assert_eq!(ctx.dispatcher.queued(&bash()), 0, "nothing to queue it for");
}

#[tokio::test]
async fn a_pending_run_is_submitted_without_any_request() {
    let (ctx, mut handle) = context();
    let pending = run(Some(json!({
        "phase": "Pending", "reason": "WaitingForCapacity",
        "queuedAt": "2026-01-01T00:00:01Z", "observedGeneration": 1,
    })));
    reconcile(Arc::new(pending), ctx.clone()).await.unwrap();
    let runtime = RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    };
    assert_eq!(ctx.dispatcher.queued(&runtime), 1);
    // A second reconcile of the same Run changes nothing and asks nothing.
    let again = run(Some(
        json!({"phase": "Pending", "reason": "WaitingForCapacity",
        "queuedAt": "2026-01-01T00:00:01Z", "observedGeneration": 1}),
    ));
    reconcile(Arc::new(again), ctx.clone()).await.unwrap();
    assert_eq!(ctx.dispatcher.queued(&runtime), 1, "submitted once");
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "no request for a Run whose status says it all"
    );
}

#[tokio::test]
async fn an_api_error_is_returned_with_a_bounded_label() {
    let (ctx, mut handle) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run(None)), ctx));
    let (_request, send) = handle.next_request().await.unwrap();
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "forbidden", "reason": "Forbidden", "code": 403});
    send.send_response(
        Response::builder()
            .status(403)
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
    let error = reconciled.await.unwrap().unwrap_err();
    assert_eq!(error.metric_label(), "Forbidden", "{error}");
}

fn bash() -> RuntimeKey {
    RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    }
}

#[tokio::test]
async fn a_deleted_queued_run_leaves_its_queue_and_only_its_finalizer_is_removed() {
    let (ctx, mut handle) = context();
    let pending = run(Some(json!({
        "phase": "Pending", "reason": "WaitingForCapacity",
        "queuedAt": "2026-01-01T00:00:01Z", "observedGeneration": 1,
    })));
    reconcile(Arc::new(pending.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(ctx.dispatcher.queued(&bash()), 1);
    let gone = deleted(pending, "2026-01-01T00:00:02Z");
    let reconciled = tokio::spawn(reconcile(Arc::new(gone.clone()), ctx.clone()));
    let patch = expect_finalizer_patch(&mut handle, &gone).await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": RUN_FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(ctx.dispatcher.queued(&bash()), 0, "never dispatched");
}

#[tokio::test]
async fn a_deleted_running_run_whose_runtime_is_gone_is_released_at_once() {
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (ctx, mut handle) = context_on(store);
    let running = run(Some(
        json!({"phase": "Running", "pod": "p0", "executionId": "uid-1"}),
    ));
    let gone = deleted(running, "2026-01-01T00:00:02Z");
    let reconciled = tokio::spawn(reconcile(Arc::new(gone.clone()), ctx));
    let patch = expect_finalizer_patch(&mut handle, &gone).await;
    assert_eq!(
        patch[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    reconciled.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_deleted_running_run_on_an_unknown_pod_waits_then_is_released_past_the_bound() {
    let (ctx, mut handle) = context();
    let running = run(Some(
        json!({"phase": "Running", "pod": "p0", "executionId": "uid-1"}),
    ));
    // Deleted just now: its pod may not be known yet (the pool not fed): it waits,
    // asking nothing.
    let now = k8s_openapi::jiff::Timestamp::now();
    let recent = deleted(running.clone(), &now.to_string());
    let action = reconcile(Arc::new(recent), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(CLEANUP_RECHECK));
    // Deleted longer ago than the bound: released.
    let old = now - k8s_openapi::jiff::SignedDuration::from_secs(CLEANUP_TIMEOUT.as_secs() as i64);
    let stale = deleted(running, &old.to_string());
    let reconciled = tokio::spawn(reconcile(Arc::new(stale.clone()), ctx.clone()));
    let patch = expect_finalizer_patch(&mut handle, &stale).await;
    assert_eq!(patch[1]["op"], "remove");
    reconciled.await.unwrap().unwrap();
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "nothing else was asked"
    );
}

#[tokio::test]
async fn a_finished_run_past_its_ttl_is_deleted_with_its_uid_as_precondition() {
    let (ctx, mut handle) = context();
    let mut finished = run(Some(json!({
        "phase": "Succeeded", "completionTime": "2026-01-01T00:00:00Z",
    })));
    finished.spec.ttl_seconds_after_finished = Some(60);
    let reconciled = tokio::spawn(reconcile(Arc::new(finished.clone()), ctx.clone()));
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::DELETE);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/hello"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let params: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(params["preconditions"]["uid"], "uid-1", "{params}");
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&finished).unwrap()))
            .unwrap(),
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_finished_run_within_its_ttl_is_looked_at_again_when_it_ends() {
    let (ctx, mut handle) = context();
    let completed = k8s_openapi::jiff::Timestamp::now();
    let mut finished = run(Some(json!({
        "phase": "Failed", "completionTime": completed.to_string(),
    })));
    finished.spec.ttl_seconds_after_finished = Some(3600);
    let action = reconcile(Arc::new(finished), ctx.clone()).await.unwrap();
    // Requeued for when its TTL ends (the exact time is `run::decide`'s, tested there).
    assert_ne!(action, Action::await_change());
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "nothing is deleted yet"
    );
}

#[tokio::test]
async fn a_running_run_is_decided_only_once_the_runtime_cache_is_filled() {
    // A new controller: its Runtime cache is not filled yet when the first Runs come.
    let (store, mut writer) = reflector::store::<Runtime>();
    let (ctx, mut handle) = context_on(store);
    let running = run(Some(
        json!({"phase": "Running", "pod": "p0", "executionId": "uid-1",
               "startTime": "2026-01-01T00:00:01Z"}),
    ));
    // Several wait at once, as the readiness probe and the reconciles do: every one
    // goes on once the cache is filled.
    let reconciled = tokio::spawn(reconcile(Arc::new(running.clone()), ctx.clone()));
    let again = tokio::spawn(reconcile(Arc::new(running), ctx.clone()));
    let mut probe = ctx.runtimes_ready.clone();
    let probed = tokio::spawn(async move { probe.wait_for(|ready| *ready).await.is_ok() });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !reconciled.is_finished() && !again.is_finished() && !probed.is_finished(),
        "decided before the Runtime cache was filled"
    );
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(runtime()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    // Its Runtime is found, and the Run is re-attached to its pod once the pool knows
    // the pod (not dropped until a change that never comes).
    let wait = std::time::Duration::from_secs(10);
    let action = tokio::time::timeout(wait, reconciled).await.unwrap();
    assert_eq!(
        action.unwrap().unwrap(),
        Action::requeue(kruntimes_controller::dispatch::ADOPTION_RETRY)
    );
    let action = tokio::time::timeout(wait, again).await.unwrap();
    assert_eq!(
        action.unwrap().unwrap(),
        Action::requeue(kruntimes_controller::dispatch::ADOPTION_RETRY)
    );
    assert!(tokio::time::timeout(wait, probed).await.unwrap().unwrap());
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "nothing was written");
}

#[tokio::test]
async fn a_running_run_whose_runtime_is_gone_is_still_followed_to_its_end() {
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (ctx, mut handle) = context_on(store);
    let running = run(Some(
        json!({"phase": "Running", "pod": "p0", "executionId": "uid-1"}),
    ));
    // Submitted to be followed on its pod (which, with the pool gone, ends it `Error`
    // after the adoption wait), instead of waiting for a change.
    let action = reconcile(Arc::new(running), ctx.clone()).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(kruntimes_controller::dispatch::ADOPTION_RETRY)
    );
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "nothing was written");
}

/// Answers the next request with a 404 Status, as for a Run deleted meanwhile.
async fn answer_not_found(handle: &mut Handle) {
    let (_request, send) = handle.next_request().await.expect("a request");
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "runs.kruntimes.io \"hello\" not found", "reason": "NotFound", "code": 404});
    send.send_response(
        Response::builder()
            .status(404)
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
}

#[tokio::test]
async fn a_new_run_is_queued_while_its_finalizer_patch_is_in_flight() {
    let (ctx, mut handle) = context();
    let new = run(None);
    let reconciled = tokio::spawn(reconcile(Arc::new(new.clone()), ctx.clone()));
    let (request, send) = handle.next_request().await.expect("the finalizer patch");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        ctx.dispatcher.queued(&bash()),
        1,
        "submitted before the finalizer patch was answered"
    );
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&new).unwrap()))
            .unwrap(),
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(ctx.dispatcher.queued(&bash()), 1);
}

#[tokio::test]
async fn a_new_run_deleted_before_its_finalizer_landed_leaves_its_queue() {
    let (ctx, mut handle) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run(None)), ctx.clone()));
    answer_not_found(&mut handle).await;
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(ctx.dispatcher.queued(&bash()), 0, "it never starts");
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "nothing written");
}

#[tokio::test]
async fn a_queued_run_cancelled_leaves_its_queue_and_is_written_cancelled() {
    let (ctx, mut handle) = context();
    let pending = run(Some(json!({
        "phase": "Pending", "reason": "WaitingForCapacity",
        "queuedAt": "2026-01-01T00:00:01Z", "observedGeneration": 1,
    })));
    reconcile(Arc::new(pending.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(ctx.dispatcher.queued(&bash()), 1);
    let mut cancelled = pending;
    cancelled.spec.cancel = Some(true);
    let reconciled = tokio::spawn(reconcile(Arc::new(cancelled.clone()), ctx.clone()));
    let patch = expect_status_apply(&mut handle, &cancelled).await;
    assert_eq!(patch["status"]["phase"], "Cancelled", "{patch}");
    assert_eq!(patch["status"]["reason"], "CancelledBeforeStart", "{patch}");
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(
        ctx.dispatcher.queued(&bash()),
        0,
        "a cancelled Run never starts later"
    );
}
