//! Runs that reached the API without the webhook are checked again by the controller
//! with the same library: an invalid one ends `Failed`, reason `Invalid`, every
//! violation in its message, and is never dispatched, whether or not its Runtime
//! exists. Pure (`run::decide`) and against a mocked API server (the exact requests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Request, Response};
use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::SchemaCache;
use kruntimes_controller::Error;
use kruntimes_controller::dispatch::{Dispatcher, RunKey, StatusSink};
use kruntimes_controller::run::{Context, Decision, decide, reconcile, runtimes_ready};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

const NOW: &str = "2026-01-01T00:00:00Z";

struct NothingDispatched;

impl StatusSink for NothingDispatched {
    fn write<'a>(&'a self, _: &'a RunKey, _: &'a RunStatus) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { panic!("an invalid Run is never dispatched") })
    }
}

/// A Run whose name is no DNS-1123 subdomain and whose spec sets two program sources:
/// invalid on its own, Runtime or not.
fn invalid_run() -> Run {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "Hello_World", "namespace": "team-a", "uid": "uid-1",
                     "generation": 1, "creationTimestamp": NOW},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash",
                 "script": "echo hi", "entrypoint": "run.sh"},
    }))
    .unwrap()
}

fn runtime() -> Runtime {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}},
    }))
    .unwrap()
}

fn assert_invalid(status: &RunStatus) {
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("Invalid"));
    let message = status.message.as_deref().unwrap();
    assert!(
        message.contains("metadata.name: Invalid value"),
        "{message}"
    );
    assert!(message.contains("spec.entrypoint: Forbidden"), "{message}");
}

#[test]
fn an_invalid_run_ends_with_every_violation_with_or_without_its_runtime() {
    let schemas = SchemaCache::new();
    for runtime in [None, Some(runtime())] {
        let decision = decide(&invalid_run(), runtime.as_ref(), &schemas, NOW, None);
        let Decision::End(status) = decision else {
            panic!("an invalid Run ends; runtime {runtime:?}: {decision:?}")
        };
        assert_invalid(&status);
        assert_eq!(status.completion_time.as_deref(), Some(NOW));
    }
}

#[test]
fn a_valid_run_without_its_runtime_still_waits_for_it() {
    let mut valid = invalid_run();
    valid.metadata.name = Some("hello".into());
    valid.spec.entrypoint = None;
    let decision = decide(&valid, None, &SchemaCache::new(), NOW, None);
    let Decision::Wait(status) = decision else {
        panic!("it waits: {decision:?}")
    };
    assert_eq!(status.reason.as_deref(), Some("RuntimeNotFound"));
}

#[tokio::test]
async fn an_invalid_run_without_its_runtime_gets_one_status_apply_and_no_finalizer() {
    // An empty, filled Runtime cache: the Runtime does not exist.
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(Context {
        client: kube::Client::new(service, "default"),
        dispatcher: Dispatcher::new(Arc::new(NothingDispatched)),
        runtimes: store.clone(),
        runtimes_ready: runtimes_ready(store),
        schemas: SchemaCache::new(),
        default_ttl_seconds_after_finished: None,
    });
    let invalid = invalid_run();
    let reconciled = tokio::spawn(reconcile(Arc::new(invalid.clone()), ctx.clone()));
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/Hello_World/status"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let status: RunStatus = serde_json::from_value(patch["status"].clone()).unwrap();
    assert_invalid(&status);
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&invalid).unwrap()))
            .unwrap(),
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "no finalizer patch, nothing else"
    );
}
