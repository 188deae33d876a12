//! The deletion costs of a draining pool against a mocked API server: the exact pod
//! writes (one JSON merge patch of the annotation per changed pod, none for the
//! others), computed from the pods as the pool feeder's reflector holds them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kruntimes_api::v1alpha1::Runtime;
use kruntimes_controller::pool::drain::{POD_DELETION_COST_ANNOTATION, cost_changes};
use kruntimes_controller::pool::write_costs;
use kube::client::Body;
use serde_json::{Value, json};

fn runtime() -> Runtime {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "py", "namespace": "team-a"},
        "spec": {"replicas": 2, "concurrency": 4,
                 "template": {"spec": {"containers": [{"name": "main", "image": "python"}]}}},
    }))
    .unwrap()
}

fn pod(name: &str, hash: &str, cost: Option<&str>) -> Pod {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a",
            "labels": {"kruntimes.io/runtime": "py", "pod-template-hash": hash}}});
    if let Some(cost) = cost {
        pod["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: cost});
    }
    serde_json::from_value(pod).unwrap()
}

#[tokio::test]
async fn a_rollout_writes_the_busy_pods_costs_and_nothing_else() {
    // A template change: old pods a (2 Runs, already annotated 2) and b (1 Run), the
    // new pod c (idle, carrying a stale cost).
    let pods = [
        pod("a", "old", Some("2")),
        pod("b", "old", None),
        pod("c", "new", Some("5")),
    ];
    let busy = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let changes = cost_changes(&runtime(), &pods, &busy);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let writing = tokio::spawn(async move { write_costs(&client, "team-a", &changes).await });
    let mut seen = Vec::new();
    for answer in [&pods[1], &pods[2]] {
        let (request, send) = handle.next_request().await.expect("a pod write");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.headers().get("content-type").unwrap(),
            "application/merge-patch+json"
        );
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(
            query.contains("fieldManager=kruntimes-controller"),
            "{query}"
        );
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        seen.push((path, body));
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(answer).unwrap()))
                .unwrap(),
        );
    }
    assert_eq!(writing.await.unwrap(), 2);
    assert_eq!(
        seen,
        [
            (
                "/api/v1/namespaces/team-a/pods/b".to_owned(),
                json!({"metadata": {"annotations": {POD_DELETION_COST_ANNOTATION: "1"}}})
            ),
            (
                "/api/v1/namespaces/team-a/pods/c".to_owned(),
                json!({"metadata": {"annotations": {POD_DELETION_COST_ANNOTATION: null}}})
            ),
        ]
    );
    assert!(handle.next_request().await.is_none(), "a: already right");
}

#[tokio::test]
async fn a_pod_gone_meanwhile_is_not_a_failure_and_a_refused_write_is_not_counted() {
    let pods = [
        pod("a", "old", None),
        pod("b", "old", None),
        pod("c", "new", None),
    ];
    let busy = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 3)]);
    let changes = cost_changes(&runtime(), &pods, &busy);
    assert_eq!(changes.len(), 2);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let writing = tokio::spawn(async move { write_costs(&client, "team-a", &changes).await });
    for (code, reason) in [(404, "NotFound"), (403, "Forbidden")] {
        let (_, send) = handle.next_request().await.expect("a pod write");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": reason});
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
    }
    assert_eq!(writing.await.unwrap(), 0);
}
