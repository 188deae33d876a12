//! The Workflow reconciler against a mocked API server: the exact requests for a
//! finished Workflow's TTL (a delete with its uid as precondition, or nothing yet), for
//! one that fails re-validation (one status apply, no child Run), and the
//! `completionTime` written with the terminal phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http::{Request, Response};
use kruntimes_api::v1alpha1::Workflow;
use kruntimes_controller::workflow::{Context, reconcile};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/apis/kruntimes.io/v1alpha1/namespaces/team-a/workflows/release";

fn workflow(ttl: Option<i64>, status: Value) -> Workflow {
    let mut wf = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "release", "namespace": "team-a", "uid": "wf-uid",
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"jobs": [{"name": "build", "steps": [{"name": "make", "run":
            {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "make"}}]}]},
        "status": status,
    });
    if let Some(ttl) = ttl {
        wf["spec"]["ttlSecondsAfterFinished"] = json!(ttl);
    }
    serde_json::from_value(wf).unwrap()
}

fn context(default_ttl: Option<u64>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context {
        client: kube::Client::new(service, "default"),
        default_ttl_seconds_after_finished: default_ttl,
    };
    (Arc::new(ctx), handle)
}

/// Answers the next request with `answer` and returns its method, path and body.
async fn answer(handle: &mut Handle, answer: &Value) -> (http::Method, String, Value) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect_bytes().await.unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(answer).unwrap()))
            .unwrap(),
    );
    (method, path, body)
}

/// Expects no more requests once the reconciler's client is dropped.
async fn no_more_requests(ctx: Arc<Context>, mut handle: Handle) {
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "an unexpected request"
    );
}

#[tokio::test]
async fn a_finished_workflow_past_its_ttl_is_deleted_with_its_uid_as_precondition() {
    let (ctx, mut handle) = context(None);
    let finished = workflow(
        Some(60),
        json!({"phase": "Succeeded", "completionTime": "2026-01-01T00:10:00Z"}),
    );
    let reconciled = tokio::spawn(reconcile(Arc::new(finished.clone()), ctx.clone()));
    let (method, path, params) =
        answer(&mut handle, &serde_json::to_value(&finished).unwrap()).await;
    assert_eq!((method, path.as_str()), (http::Method::DELETE, PATH));
    assert_eq!(params["preconditions"]["uid"], "wf-uid", "{params}");
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn a_workflow_already_deleted_by_someone_else_is_not_an_error() {
    let (ctx, mut handle) = context(Some(0));
    let finished = workflow(
        None,
        json!({"phase": "Failed", "completionTime": "2026-01-01T00:10:00Z"}),
    );
    let reconciled = tokio::spawn(reconcile(Arc::new(finished), ctx.clone()));
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "workflows \"release\" not found"});
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::DELETE);
    send.send_response(
        Response::builder()
            .status(404)
            .body(Body::from(serde_json::to_vec(&not_found).unwrap()))
            .unwrap(),
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn a_finished_workflow_within_its_ttl_or_without_one_is_left_alone() {
    let ended = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"phase": "Succeeded", "completionTime": ended});
    // Within its TTL: looked at again when it ends, nothing written.
    let (ctx, handle) = context(None);
    let action = reconcile(Arc::new(workflow(Some(3600), status.clone())), ctx.clone())
        .await
        .unwrap();
    assert_ne!(action, Action::await_change());
    no_more_requests(ctx, handle).await;
    // No TTL and no default: kept.
    let (ctx, handle) = context(None);
    let action = reconcile(Arc::new(workflow(None, status)), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn the_controller_default_ttl_applies_to_a_workflow_without_one() {
    let (ctx, mut handle) = context(Some(30));
    let finished = workflow(
        None,
        json!({"phase": "Cancelled", "completionTime": "2026-01-01T00:10:00Z"}),
    );
    let reconciled = tokio::spawn(reconcile(Arc::new(finished.clone()), ctx.clone()));
    let (method, path, _) = answer(&mut handle, &serde_json::to_value(&finished).unwrap()).await;
    assert_eq!((method, path.as_str()), (http::Method::DELETE, PATH));
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn a_finished_workflow_without_a_completion_time_gets_one_before_its_ttl_counts() {
    let (ctx, mut handle) = context(None);
    let finished = workflow(Some(0), json!({"phase": "Succeeded"}));
    let reconciled = tokio::spawn(reconcile(Arc::new(finished.clone()), ctx.clone()));
    let (method, path, patch) =
        answer(&mut handle, &serde_json::to_value(&finished).unwrap()).await;
    assert_eq!(
        (method, path.as_str()),
        (http::Method::PATCH, format!("{PATH}/status").as_str())
    );
    assert_eq!(patch["status"]["phase"], "Succeeded");
    assert!(patch["status"]["completionTime"].is_string(), "{patch}");
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn an_invalid_workflow_fails_with_every_violation_and_creates_no_run() {
    let (ctx, mut handle) = context(None);
    // It reached the API without the webhook: its job needs itself, and its step's
    // Run sets `cancel`, which belongs to the Workflow.
    let mut invalid = workflow(None, json!(null));
    invalid.spec.jobs[0].needs = vec!["build".into()];
    invalid.spec.jobs[0].steps[0].run.as_mut().unwrap().cancel = Some(false);
    let reconciled = tokio::spawn(reconcile(Arc::new(invalid.clone()), ctx.clone()));
    // One request: the status. No list of children, no child created.
    let (method, path, patch) = answer(&mut handle, &serde_json::to_value(&invalid).unwrap()).await;
    assert_eq!(
        (method, path.as_str()),
        (http::Method::PATCH, format!("{PATH}/status").as_str())
    );
    let status = &patch["status"];
    assert_eq!(status["phase"], "Failed");
    assert!(status["completionTime"].is_string(), "{patch}");
    let condition = &status["conditions"][0];
    assert_eq!(condition["type"], "Valid");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Invalid");
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains("spec.jobs[0].needs[0]"), "{message}");
    assert!(
        message.contains("spec.jobs[0].steps[0].run.cancel: Forbidden"),
        "{message}"
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(ctx, handle).await;
}

#[tokio::test]
async fn the_terminal_phase_is_written_with_its_completion_time() {
    let (ctx, mut handle) = context(None);
    let running = workflow(
        None,
        json!({"phase": "Running", "jobs": [{"name": "build", "phase": "Running",
            "steps": [{"name": "make", "phase": "Running", "run": "release-build-make"}]}]}),
    );
    let reconciled = tokio::spawn(reconcile(Arc::new(running.clone()), ctx.clone()));
    // The list of children: the one step's Run, finished.
    let child = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "release-build-make", "namespace": "team-a",
            "labels": {"kruntimes.io/workflow": "release"},
            "ownerReferences": [{"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow",
                "name": "release", "uid": "wf-uid", "controller": true}]},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "make"},
        "status": {"phase": "Succeeded", "completionTime": "2026-01-01T00:05:00Z"},
    });
    let list = json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "RunList",
        "metadata": {"resourceVersion": "9"}, "items": [child]});
    let (method, path, _) = answer(&mut handle, &list).await;
    assert_eq!(
        (method, path.as_str()),
        (
            http::Method::GET,
            "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs"
        )
    );
    let (method, path, patch) = answer(&mut handle, &serde_json::to_value(&running).unwrap()).await;
    assert_eq!(
        (method, path.as_str()),
        (http::Method::PATCH, format!("{PATH}/status").as_str())
    );
    assert_eq!(patch["status"]["phase"], "Succeeded");
    assert!(patch["status"]["completionTime"].is_string(), "{patch}");
    reconciled.await.unwrap().unwrap();
    no_more_requests(ctx, handle).await;
}
