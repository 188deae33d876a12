//! Deleting a running Run, through the Run reconciler against a mocked API server and a
//! real runtimed pod on loopback (TLS, token): the Run is cancelled in runtimed while
//! its finalizer holds it, forgotten there once it ended, and only then released.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use kruntimes_api::labels::RUN_FINALIZER;
use kruntimes_api::v1alpha1::{Run, RunPhase, RunStatus, Runtime};
use kruntimes_api::validation::against_runtime::SchemaCache;
use kruntimes_controller::Error;
use kruntimes_controller::dispatch::{
    Credentials, Dispatcher, PodTarget, PoolSpec, RunKey, RuntimeKey, StatusSink, Submission,
    WriteOrder,
};
use kruntimes_controller::run::finalizer::CLEANUP_RECHECK;
use kruntimes_controller::run::{Context, reconcile, runtimes_ready};
use kruntimes_runtimed_api::client::{TlsTarget, connect_tls};
use kruntimes_runtimed_api::proto;
use kruntimes_testkit::runtimed::Pod;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use serde_json::json;

#[derive(Default)]
struct Recorder {
    writes: Mutex<Vec<RunStatus>>,
}

impl StatusSink for Recorder {
    fn write<'a>(
        &'a self,
        _: &'a RunKey,
        status: &'a RunStatus,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.writes.lock().unwrap().push(status.clone());
            Ok(())
        })
    }
}

impl Recorder {
    /// Waits (30 s at most) for a status with `phase`.
    async fn until(&self, done: impl Fn(&RunStatus) -> bool) -> RunStatus {
        for _ in 0..3000 {
            if let Some(found) = self.writes.lock().unwrap().iter().find(|s| done(s)) {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such status: {:?}", self.writes.lock().unwrap());
    }
}

fn runtime_key() -> RuntimeKey {
    RuntimeKey {
        namespace: "team-a".into(),
        name: "bash".into(),
    }
}

fn credentials(pod: &Pod) -> Credentials {
    Credentials {
        token: pod.token.clone(),
        certificate_pem: pod.certificate_pem.clone().into_bytes(),
        server_name: pod.server_name.clone(),
        port: pod.addr.port(),
    }
}

fn deleted_run(status: serde_json::Value) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "hello", "namespace": "team-a", "uid": "uid-1", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "deletionTimestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
                     "finalizers": [RUN_FINALIZER]},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "sleep 100"},
        "status": status,
    }))
    .unwrap()
}

async fn execution_status(pod: &Pod) -> Result<proto::Execution, tonic::Status> {
    let target = TlsTarget {
        authority: pod.addr.to_string(),
        server_name: pod.server_name.clone(),
        certificate_pem: pod.certificate_pem.clone().into_bytes(),
        token: pod.token.clone(),
    };
    let mut client = connect_tls(&target, Duration::from_secs(5)).await.unwrap();
    client
        .status(proto::StatusRequest {
            execution_id: "uid-1".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_run_cancels_and_forgets_it_before_its_finalizer_goes() {
    let pod = Pod::start(&["--grace-ms", "100"]);
    let sink = Arc::new(Recorder::default());
    let dispatcher = Dispatcher::new(sink.clone());
    dispatcher.set_pool(
        &runtime_key(),
        PoolSpec {
            concurrency: 1,
            pods: vec![PodTarget {
                name: "p0".into(),
                ip: pod.addr.ip().to_string(),
                ready: true,
                terminating: false,
            }],
            credentials: Some(credentials(&pod)),
        },
    );
    dispatcher.submit(
        &runtime_key(),
        Submission {
            key: RunKey {
                namespace: "team-a".into(),
                name: "hello".into(),
                uid: "uid-1".into(),
            },
            created: 1,
            request: proto::ExecuteRequest {
                run_uid: "uid-1".into(),
                interpreter: proto::Interpreter::Bash as i32,
                script: Some("sleep 100".into()),
                ..Default::default()
            },
            status: RunStatus {
                phase: Some(RunPhase::Pending),
                ..Default::default()
            },
            status_written: true,
            write_order: WriteOrder::default(),
            running_on: None,
            attempts: 0,
        },
    );
    let running = sink.until(|s| s.phase == Some(RunPhase::Running)).await;

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (store, mut writer) = reflector::store::<Runtime>();
    let runtime: Runtime = serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "bash", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}},
    }))
    .unwrap();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(runtime));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = Arc::new(Context {
        client: kube::Client::new(service, "default"),
        dispatcher,
        runtimes: store.clone(),
        runtimes_ready: runtimes_ready(store.clone()),
        schemas: SchemaCache::new(),
        default_ttl_seconds_after_finished: None,
    });

    // Deleted while it runs: cancelled in runtimed, the finalizer kept, nothing asked
    // of the API server.
    let deleting = deleted_run(serde_json::to_value(&running).unwrap());
    let action = reconcile(Arc::new(deleting), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(CLEANUP_RECHECK));
    let end = sink
        .until(|s| s.phase.is_some_and(RunPhase::is_terminal))
        .await;
    assert_eq!(end.phase, Some(RunPhase::Cancelled), "{end:?}");
    let in_runtimed = execution_status(&pod).await.unwrap();
    assert_eq!(in_runtimed.phase, proto::Phase::Cancelled as i32);

    // Its end written: forgotten in runtimed, then the finalizer removed.
    let ended = deleted_run(serde_json::to_value(&end).unwrap());
    let reconciled = tokio::spawn(reconcile(Arc::new(ended.clone()), ctx.clone()));
    let (request, send) = handle
        .next_request()
        .await
        .expect("the finalizer's removal");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(
        request.uri().path(),
        "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runs/hello"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        patch[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&ended).unwrap()))
            .unwrap(),
    );
    assert_eq!(reconciled.await.unwrap().unwrap(), Action::await_change());
    let forgotten = execution_status(&pod).await.unwrap_err();
    assert_eq!(forgotten.code(), tonic::Code::NotFound, "{forgotten:?}");
}
