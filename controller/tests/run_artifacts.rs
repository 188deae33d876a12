//! A deleted Run's uploaded artifacts, through the Run reconciler against a mocked API
//! server and a real S3 server (moto): the objects listed in its status are deleted
//! from the recorded store with the credentials of the recorded Secret before its
//! finalizer goes, with no Runtime; a missing object counts as deleted; a missing
//! Secret or bucket holds the finalizer with a condition and one Event; the release
//! annotation lets the Run go and leaves the objects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::Method;
use kruntimes_api::labels::{RELEASE_ARTIFACTS_ANNOTATION, RUN_FINALIZER};
use kruntimes_api::v1alpha1::{ArtifactStore, Run, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::SchemaCache;
use kruntimes_controller::Error;
use kruntimes_controller::artifacts::{Credentials, DELETE_TIMEOUT, build_store};
use kruntimes_controller::dispatch::{Dispatcher, RunKey, StatusSink};
use kruntimes_controller::run::finalizer::artifacts::{ARTIFACTS_CONDITION, retry_delay};
use kruntimes_controller::run::{Context, reconcile, runtimes_ready};
use kruntimes_testkit::apiserver::{self, Answer, ApiServerVerifier, Scenario};
use kruntimes_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

const BUCKET: &str = "results";
const PREFIX: &str = "runs/";
const SECRET: &str = "s3-creds";
const RUN_PATH: &str = "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/hello";
const SECRET_PATH: &str = "/api/v1/namespaces/team-a/secrets/s3-creds";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

struct NoSink;

impl StatusSink for NoSink {
    fn write<'a>(&'a self, _: &'a RunKey, _: &'a RunStatus) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { panic!("nothing is dispatched") })
    }
}

/// A Run context whose Runtime cache is filled and empty: the Runtime is gone.
fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (client, verifier) = apiserver::client();
    let (store, mut writer) = reflector::store::<Runtime>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = Context {
        client,
        dispatcher: Dispatcher::new(Arc::new(NoSink)),
        runtimes: store.clone(),
        runtimes_ready: runtimes_ready(store),
        schemas: SchemaCache::new(),
        default_ttl_seconds_after_finished: None,
    };
    (Arc::new(ctx), verifier)
}

fn store(s3: &S3Server, bucket: &str) -> ArtifactStore {
    serde_json::from_value(json!({
        "endpoint": s3.endpoint(), "bucket": bucket, "prefix": PREFIX,
        "credentialsSecretRef": {"name": SECRET},
    }))
    .unwrap()
}

/// Puts `paths` of Run `uid` as runtimed's sidecar does: `<prefix><uid>/<path>`,
/// path-style, signed with the test credentials.
async fn upload(s3: &S3Server, uid: &str, paths: &[&str]) {
    let client = build_store(
        &store(s3, BUCKET),
        &Credentials::new(ACCESS_KEY, SECRET_KEY),
        DELETE_TIMEOUT,
    )
    .unwrap();
    for path in paths {
        let key = ObjectPath::parse(format!("{PREFIX}{uid}/{path}")).unwrap();
        client
            .put(&key, PutPayload::from(format!("content of {path}")))
            .await
            .unwrap();
    }
}

/// A started S3 server whose bucket holds `paths` of Run `uid-1`.
async fn store_holding(paths: &[&str]) -> S3Server {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    upload(&s3, "uid-1", paths).await;
    s3
}

/// A deleted, finished Run whose status lists `paths` as uploaded to `store`.
fn deleted_run(store: &ArtifactStore, paths: &[&str], annotations: Value) -> Run {
    let artifacts: Vec<Value> = paths
        .iter()
        .map(|p| json!({"path": p, "key": format!("{PREFIX}uid-1/{p}"), "size": 1, "sha256": "00"}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": "uid-1", "generation": 1,
                     "resourceVersion": "7", "annotations": annotations,
                     "deletionTimestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
                     "finalizers": [RUN_FINALIZER]},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "true",
                 "artifacts": {"paths": ["out/**"]}},
        "status": {"phase": "Succeeded", "artifacts": artifacts,
                   "artifactStore": serde_json::to_value(store).unwrap()},
    }))
    .unwrap()
}

fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": SECRET, "namespace": "team-a"},
           "data": {"AWS_ACCESS_KEY_ID": b64(ACCESS_KEY), "AWS_SECRET_ACCESS_KEY": b64(SECRET_KEY)}})
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn keys_of(s3: &S3Server, uid: &str) -> Vec<String> {
    s3.keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}{uid}/")))
        .collect()
}

/// The condition `ARTIFACTS_CONDITION` in a status apply's body.
fn artifacts_condition(apply: &Value) -> Value {
    apply["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ARTIFACTS_CONDITION)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_runs_objects_are_deleted_without_its_runtime_before_its_finalizer_goes() {
    let s3 = store_holding(&["out/a.txt", "out/b.txt"]).await;
    // Another Run's object stays.
    upload(&s3, "uid-2", &["out/a.txt"]).await;
    // out/gone.txt is listed but not in the store: already deleted.
    let run = deleted_run(
        &store(&s3, BUCKET),
        &["out/a.txt", "out/b.txt", "out/gone.txt"],
        json!({}),
    );
    let (ctx, mut api) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run.clone()), ctx.clone()));
    let scenario = Scenario::new("artifacts deleted, then the finalizer removed")
        .then(Method::GET, SECRET_PATH, Answer::Json(200, secret()))
        .then(Method::POST, EVENTS_PATH, Answer::Echo(201))
        .then(
            Method::PATCH,
            RUN_PATH,
            Answer::Json(200, serde_json::to_value(&run).unwrap()),
        );
    let seen = api.run(&scenario).await;
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(keys_of(&s3, "uid-1"), Vec::<String>::new());
    assert_eq!(keys_of(&s3, "uid-2"), ["runs/uid-2/out/a.txt"]);
    assert_eq!(seen[1].body["reason"], "ArtifactsDeleted");
    assert_eq!(seen[1].body["type"], "Normal");
    assert_eq!(
        seen[1].body["note"],
        "deleted 3 artifact object(s) from bucket results"
    );
    assert_eq!(
        seen[2].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    drop(ctx);
    api.no_more_requests().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_holds_the_finalizer_with_a_condition_and_one_event() {
    let s3 = store_holding(&["out/a.txt"]).await;
    let run = deleted_run(&store(&s3, BUCKET), &["out/a.txt"], json!({}));
    let (ctx, mut api) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run.clone()), ctx.clone()));
    let scenario = Scenario::new("no Secret: condition, Event, finalizer kept")
        .then(
            Method::GET,
            SECRET_PATH,
            Answer::Json(404, apiserver::status(404, "NotFound")),
        )
        .then(
            Method::PATCH,
            format!("{RUN_PATH}/status"),
            Answer::Json(200, serde_json::to_value(&run).unwrap()),
        )
        .then(Method::POST, EVENTS_PATH, Answer::Echo(201));
    let seen = api.run(&scenario).await;
    let action = reconciled.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(retry_delay(Duration::ZERO)));
    let condition = artifacts_condition(&seen[1].body);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "ArtifactCredentialsMissing");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("Secret s3-creds") && message.contains("does not exist"),
        "{message}"
    );
    assert!(message.contains(RELEASE_ARTIFACTS_ANNOTATION), "{message}");
    // The rest of the status is kept in the apply (the controller owns all of it).
    assert_eq!(seen[1].body["status"]["phase"], "Succeeded");
    assert_eq!(seen[2].body["reason"], "ArtifactCredentialsMissing");
    assert_eq!(seen[2].body["type"], "Warning");
    assert_eq!(keys_of(&s3, "uid-1"), ["runs/uid-1/out/a.txt"]);

    // Looked at again with that condition written: no new write, no new Event.
    let mut again = run.clone();
    again.status = serde_json::from_value(seen[1].body["status"].clone()).unwrap();
    let reconciled = tokio::spawn(reconcile(Arc::new(again), ctx.clone()));
    api.expect(
        Method::GET,
        SECRET_PATH,
        404,
        apiserver::status(404, "NotFound"),
    )
    .await;
    assert_eq!(
        reconciled.await.unwrap().unwrap(),
        Action::requeue(retry_delay(Duration::ZERO))
    );
    drop(ctx);
    api.no_more_requests().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_release_annotation_lets_the_run_go_and_leaves_its_objects() {
    let s3 = store_holding(&["out/a.txt"]).await;
    let run = deleted_run(
        &store(&s3, BUCKET),
        &["out/a.txt"],
        json!({RELEASE_ARTIFACTS_ANNOTATION: "true"}),
    );
    let (ctx, mut api) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run.clone()), ctx.clone()));
    let scenario = Scenario::new("released: an Event, then the finalizer removed")
        .then(Method::POST, EVENTS_PATH, Answer::Echo(201))
        .then(
            Method::PATCH,
            RUN_PATH,
            Answer::Json(200, serde_json::to_value(&run).unwrap()),
        );
    let seen = api.run(&scenario).await;
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(seen[0].body["reason"], "ArtifactsReleased");
    assert_eq!(seen[0].body["type"], "Warning");
    let note = seen[0].body["note"].as_str().unwrap();
    assert!(note.contains("they stay in bucket results"), "{note}");
    assert_eq!(keys_of(&s3, "uid-1"), ["runs/uid-1/out/a.txt"]);
    drop(ctx);
    api.no_more_requests().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_bucket_holds_the_finalizer_with_its_own_reason() {
    let s3 = S3Server::start();
    let run = deleted_run(&store(&s3, "never-created"), &["out/a.txt"], json!({}));
    let (ctx, mut api) = context();
    let reconciled = tokio::spawn(reconcile(Arc::new(run.clone()), ctx.clone()));
    let scenario = Scenario::new("no bucket: condition and Event, finalizer kept")
        .then(Method::GET, SECRET_PATH, Answer::Json(200, secret()))
        .then(
            Method::PATCH,
            format!("{RUN_PATH}/status"),
            Answer::Json(200, serde_json::to_value(&run).unwrap()),
        )
        .then(Method::POST, EVENTS_PATH, Answer::Echo(201));
    let seen = api.run(&scenario).await;
    assert_eq!(
        reconciled.await.unwrap().unwrap(),
        Action::requeue(retry_delay(Duration::ZERO))
    );
    assert_eq!(
        artifacts_condition(&seen[1].body)["reason"],
        "ArtifactBucketMissing"
    );
    assert_eq!(seen[2].body["reason"], "ArtifactBucketMissing");
    drop(ctx);
    api.no_more_requests().await;
}
