//! The HTTP layer in-process (`Router::oneshot`, no TLS): status codes, JSON error
//! bodies, the body limit at its boundary, and the patch applied to the object.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use kruntimes_pss::Level;
use kruntimes_testkit::fixtures;
use kruntimes_webhook::admission::{Handlers, MAX_REVIEW_BYTES};
use kruntimes_webhook::inject::{InjectConfig, inject_pod};
use kruntimes_webhook::server::review_router;
use serde_json::Value;
use tower::ServiceExt;

async fn post(path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let router = review_router(Handlers::standalone(
        InjectConfig::default(),
        Level::Baseline,
    ));
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

#[tokio::test]
async fn mutate_answers_with_a_patch_that_yields_the_injected_pod() {
    let body = fixtures::bytes("pod-create-runtime.json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let (status, review) = post("/mutate", body).await;
    assert_eq!(status, StatusCode::OK);
    let response = &review["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["patchType"], "JSONPatch");
    // base64, as the apiserver's Go encoder writes []byte.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let expected = inject_pod(&request["request"]["object"], &InjectConfig::default()).unwrap();
    assert_eq!(object, expected);
}

#[tokio::test]
async fn validate_denies_with_http_200() {
    let (status, review) = post("/validate", fixtures::bytes("workflow-create-invalid.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], false);
}

#[tokio::test]
async fn the_body_limit_is_7_mib() {
    let mut body = fixtures::padded("run-create.json", MAX_REVIEW_BYTES);
    let (status, review) = post("/validate", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], true);
    body.push(b' ');
    let (status, error) = post("/validate", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["code"], 413);
}

#[tokio::test]
async fn hostile_bodies_get_400_with_a_json_error() {
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let mut wrong_types: Value =
        serde_json::from_slice(&fixtures::bytes("run-create.json")).unwrap();
    wrong_types["request"]["operation"] = Value::from(7);
    let mut bad_object: Value =
        serde_json::from_slice(&fixtures::bytes("run-create.json")).unwrap();
    bad_object["request"]["object"]["metadata"] = Value::from("not a map");
    for body in [
        b"\xff\xfe".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        deep_object.into_bytes(),
        serde_json::to_vec(&wrong_types).unwrap(),
    ] {
        for path in ["/validate", "/mutate"] {
            let (status, error) = post(path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
            assert!(error["error"].is_string());
        }
    }
    // A well-formed review whose object is broken is answered with a decision that
    // names the field (the apiserver never sends one: it checks metadata first).
    let (status, review) = post("/validate", serde_json::to_vec(&bad_object).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &review["response"];
    assert_eq!(response["allowed"], false, "{review}");
    assert_eq!(response["status"]["code"], 422, "{review}");
    assert_eq!(
        response["status"]["details"]["causes"][0]["field"], "metadata",
        "{review}"
    );
}

/// A Pod whose author wrote a made-up injection status, listing its own init container,
/// PVC volume and mount as injected and a made-up original command (issue #19): the
/// webhook must not strip them for it.
#[tokio::test]
async fn mutate_refuses_a_forged_injection_status() {
    let pod = fixtures::pod_with_forged_injection_status();
    let review = fixtures::pod_create_review("forged-1", "team-a", pod);
    let (status, answer) = post("/mutate", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 403, "{answer}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "kruntimes.io/injection-status]: Invalid value: not written by this injector: it lists the init container \"setup\""
        ),
        "{message}"
    );
    assert!(response.get("patch").is_none(), "{answer}");
}
