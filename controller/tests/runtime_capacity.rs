//! `status.capacity.busy` between reconciles, against a mocked API server: a changed
//! count is one merge patch of that field on `/status`; an unchanged one is no request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kruntimes_controller::dispatch::RuntimeKey;
use kruntimes_controller::runtime::capacity::{BUSY_REFRESH_INTERVAL, keep_busy_current};
use kube::client::Body;
use serde_json::json;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn bash() -> RuntimeKey {
    RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    }
}

/// Answers the next request, which must be the merge patch of `bash`'s busy slots, and
/// returns the count it wrote.
async fn expect_busy_patch(handle: &mut Handle) -> serde_json::Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runtimes/bash/status"
    );
    assert_eq!(
        request.headers().get("content-type").unwrap(),
        "application/merge-patch+json"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let answer = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}},
    });
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    patch
}

#[tokio::test(start_paused = true)]
async fn a_changed_busy_count_is_one_patch_and_an_unchanged_one_none() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let busy = Arc::new(Mutex::new(vec![(bash(), 3)]));
    let source = busy.clone();
    let task = tokio::spawn(keep_busy_current(client, move || {
        source.lock().unwrap().clone()
    }));
    assert_eq!(
        expect_busy_patch(&mut handle).await,
        json!({"status": {"capacity": {"busy": 3}}})
    );
    // Three more intervals with the same count: no request; then it drops to 1.
    tokio::time::sleep(BUSY_REFRESH_INTERVAL * 3).await;
    *busy.lock().unwrap() = vec![(bash(), 1)];
    assert_eq!(
        expect_busy_patch(&mut handle).await,
        json!({"status": {"capacity": {"busy": 1}}}),
        "the next request is the changed count, none for the unchanged ones"
    );
    task.abort();
}
