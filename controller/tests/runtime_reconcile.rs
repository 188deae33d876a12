//! The Runtime reconciler against a mocked API server: the exact requests, in order,
//! for a new Runtime, an unchanged one, its pods becoming ready, an invalid one, and
//! failures of the API.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod runtime_apiserver;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use kruntimes_api::v1alpha1::Runtime;
use kruntimes_controller::runtime::reconcile::{ERROR_RETRY_INTERVAL, RESYNC_INTERVAL};
use kruntimes_controller::runtime::{Context, ControllerSelector, error_policy, reconcile};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use runtime_apiserver::{ApiServerVerifier, pair};
use serde_json::{Value, json};

const SECRET: &str = "/api/v1/namespaces/team-a/secrets/python-runtimed";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/team-a/deployments/python";
const NETWORK_POLICY: &str =
    "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/python-runtimed";
const STATUS: &str = "/apis/kruntimes.io/v1alpha1/namespaces/team-a/runtimes/python/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// Busy slots the fake dispatcher reports for every Runtime.
const BUSY: u32 = 1;

fn runtime_json() -> Value {
    json!({
        "apiVersion": "kruntimes.io/v1alpha1",
        "kind": "Runtime",
        "metadata": {"name": "python", "namespace": "team-a", "uid": "uid-1", "generation": 2},
        "spec": {
            "replicas": 2,
            "concurrency": 4,
            "template": {"spec": {"containers": [{"name": "main", "image": "python:3.13-slim"}]}},
        },
    })
}

fn runtime(value: Value) -> Runtime {
    serde_json::from_value(value).unwrap()
}

fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (client, verifier) = pair();
    let labels = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    let ctx = Context {
        events: Arc::new(Recorder::new(
            client.clone(),
            Reporter::from("kruntimes-controller"),
        )),
        client,
        controller_selector: ControllerSelector::new(
            labels("app.kubernetes.io/name", "kruntimes-controller"),
            Some(labels("kubernetes.io/metadata.name", "kruntimes-system")),
        )
        .unwrap(),
        busy: Arc::new(|_: &str, _: &str| BUSY),
        pod_security_floor: kruntimes_pss::Policy::new(
            kruntimes_pss::Level::Baseline,
            kruntimes_pss::Version::Latest,
        ),
    };
    (Arc::new(ctx), verifier)
}

/// Runs `reconcile` while `server` answers; then fails on any further request (the
/// mocked client is dropped with the context when the reconcile ends).
async fn run<F>(
    rt: Runtime,
    server: impl FnOnce(ApiServerVerifier) -> F,
) -> Result<Action, kruntimes_controller::Error>
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    let (ctx, verifier) = context();
    let server = tokio::spawn(server(verifier));
    let reconciling = tokio::spawn(reconcile(Arc::new(rt), ctx));
    let verifier = server.await.unwrap();
    verifier.no_more_requests().await;
    reconciling.await.unwrap()
}

fn conditions(status: &Value) -> Vec<(String, String, String)> {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("type"), s("status"), s("reason"))
        })
        .collect()
}

/// `err` has the bounded `reason` and says first what was being done.
fn assert_error(err: &kruntimes_controller::Error, reason: &str, action: &str) {
    assert_eq!(err.metric_label(), reason, "{err}");
    assert!(err.to_string().starts_with(action), "{err}");
}

fn triple(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

/// What one pass of a valid Runtime sent.
struct Pass {
    secret: Value,
    deployment: Value,
    network_policy: Value,
    status: Option<Value>,
    event: Option<Value>,
}

/// What the mocked API server answers, and what it expects after the NetworkPolicy.
struct Answers {
    /// The stored Runtime (the status apply is answered with it and the new status).
    runtime: Value,
    /// The Secret GET's answer; `None`: 404.
    secret: Option<Value>,
    /// The `status` of the Deployment returned by its apply.
    deployment_status: Value,
    /// Whether a status apply comes.
    status_write: bool,
    /// Whether an Event comes.
    event: bool,
}

/// The requests of a valid Runtime, in order: Secret get, Secret apply, Deployment
/// apply, NetworkPolicy apply, then the status apply and the Event as `answers` say.
async fn valid_pass(mut api: ApiServerVerifier, answers: Answers) -> (ApiServerVerifier, Pass) {
    let get = api.next(Method::GET, SECRET).await;
    match answers.secret {
        Some(s) => get.reply(200, &s),
        None => get.fail(404, "NotFound", "secrets \"python-runtimed\" not found"),
    };
    let exchange = api.next(Method::PATCH, SECRET).await;
    exchange.applied();
    let secret = exchange.echo();

    let exchange = api.next(Method::PATCH, DEPLOYMENT).await;
    let mut answer = exchange.applied().clone();
    answer["metadata"]["generation"] = json!(1);
    answer["status"] = answers.deployment_status;
    let deployment = exchange.reply(200, &answer);

    let exchange = api.next(Method::PATCH, NETWORK_POLICY).await;
    exchange.applied();
    let network_policy = exchange.echo();

    let mut pass = Pass {
        secret,
        deployment,
        network_policy,
        status: None,
        event: None,
    };
    if answers.status_write {
        let exchange = api.next(Method::PATCH, STATUS).await;
        let applied = exchange.applied().clone();
        let mut stored = answers.runtime.clone();
        stored["status"] = applied["status"].clone();
        exchange.reply(200, &stored);
        pass.status = Some(applied);
    }
    if answers.event {
        pass.event = Some(api.next(Method::POST, EVENTS).await.echo());
    }
    (api, pass)
}

/// One reconcile of `rt` against `answers`; the requests it made.
async fn reconcile_valid(rt: Value, answers: Answers) -> (Action, Pass) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let action = run(runtime(rt), |api| async move {
        let (api, pass) = valid_pass(api, answers).await;
        tx.send(pass).ok();
        api
    })
    .await
    .unwrap();
    (action, rx.await.unwrap())
}

fn deployment_status(ready: i32) -> Value {
    json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": ready, "availableReplicas": ready})
}

fn first_pass_answers() -> Answers {
    Answers {
        runtime: runtime_json(),
        secret: None,
        deployment_status: json!({}),
        status_write: true,
        event: true,
    }
}

#[tokio::test]
async fn a_new_runtime_gets_its_secret_deployment_policy_status_and_an_event() {
    let (action, pass) = reconcile_valid(runtime_json(), first_pass_answers()).await;
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));

    let secret = &pass.secret;
    assert_eq!(
        (secret["kind"].as_str(), secret["type"].as_str()),
        (Some("Secret"), Some("Opaque"))
    );
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["tls.crt", "tls.key", "token"]);
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-1");

    let deployment = &pass.deployment;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(
        deployment["spec"]["selector"],
        json!({"matchLabels": {"kruntimes.io/runtime": "python"}})
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["kruntimes.io/runtimed-token-secret"],
        "python-runtimed"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );

    let policy = &pass.network_policy;
    assert_eq!(policy["kind"], "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        json!([{"port": 9440, "protocol": "TCP"}])
    );

    let applied = pass.status.unwrap();
    assert_eq!(
        (applied["apiVersion"].as_str(), applied["kind"].as_str()),
        (Some("kruntimes.io/v1alpha1"), Some("Runtime"))
    );
    let status = &applied["status"];
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["selector"], "kruntimes.io/runtime=python");
    assert_eq!(status["capacity"], json!({"total": 0, "busy": BUSY}));
    assert_eq!(
        conditions(status),
        [
            triple("Ready", "False", "PodsNotReady"),
            triple("Progressing", "True", "RollingOut"),
            triple("Degraded", "False", "NoFailure"),
        ]
    );

    let event = pass.event.unwrap();
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("PodsNotReady"))
    );
    assert_eq!(event["note"], "0 of 2 pods ready");
    assert_eq!(event["regarding"]["kind"], "Runtime");
    assert_eq!(event["regarding"]["name"], "python");
}

#[tokio::test]
async fn an_unchanged_runtime_keeps_its_credentials_and_writes_no_status() {
    let (_, first) = reconcile_valid(runtime_json(), first_pass_answers()).await;
    let mut stored = runtime_json();
    stored["status"] = first.status.unwrap()["status"].clone();

    // The watch brings the Runtime back with the status just written.
    let (action, second) = reconcile_valid(
        stored.clone(),
        Answers {
            runtime: stored.clone(),
            secret: Some(first.secret.clone()),
            deployment_status: json!({}),
            status_write: false,
            event: false,
        },
    )
    .await;
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
    assert_eq!(
        second.secret["data"], first.secret["data"],
        "the token and certificate are kept"
    );

    // The pods become ready: the status is written and Ready's change is announced.
    let (_, third) = reconcile_valid(
        stored.clone(),
        Answers {
            runtime: stored,
            secret: Some(first.secret.clone()),
            deployment_status: deployment_status(2),
            status_write: true,
            event: true,
        },
    )
    .await;
    let status = &third.status.unwrap()["status"];
    assert_eq!(status["capacity"], json!({"total": 8, "busy": BUSY}));
    assert_eq!(conditions(status)[0], triple("Ready", "True", "PodsReady"));
    assert_eq!(third.event.unwrap()["reason"], "PodsReady");
}

fn invalid_json() -> Value {
    let mut rt = runtime_json();
    rt["spec"]["concurrency"] = json!(0);
    rt["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["python"]);
    rt
}

/// The only requests for an invalid Runtime: the status apply, then, when Ready
/// changed, the Event.
async fn invalid_pass(rt: Value, event: bool) -> (Action, Value, Option<Value>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stored = rt.clone();
    let action = run(runtime(rt), |mut api| async move {
        let exchange = api.next(Method::PATCH, STATUS).await;
        let applied = exchange.applied().clone();
        let mut answer = stored;
        answer["status"] = applied["status"].clone();
        exchange.reply(200, &answer);
        let event = if event {
            Some(api.next(Method::POST, EVENTS).await.echo())
        } else {
            None
        };
        tx.send((applied, event)).ok();
        api
    })
    .await
    .unwrap();
    let (applied, event) = rx.await.unwrap();
    (action, applied, event)
}

/// The message of a status whose every condition says `Invalid`.
fn invalid_message(status: &Value) -> &str {
    assert_eq!(
        conditions(status),
        [
            triple("Ready", "False", "Invalid"),
            triple("Progressing", "False", "Invalid"),
            triple("Degraded", "True", "Invalid"),
        ]
    );
    status["conditions"][0]["message"].as_str().unwrap()
}

/// A template that slipped past the webhook and fails the Pod Security floor: nothing
/// applied, the status names the failing field in the webhook's words.
#[tokio::test]
async fn a_template_failing_the_pod_security_floor_gets_only_its_status() {
    let mut rt = runtime_json();
    rt["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let (action, applied, event) = invalid_pass(rt, true).await;
    assert_eq!(action, Action::await_change());
    let status = &applied["status"];
    let message = invalid_message(status);
    assert!(
        message.contains(
            "spec.template.spec.hostNetwork: Forbidden: violates PodSecurity \"baseline:latest\""
        ),
        "{message}"
    );
    assert_eq!(event.unwrap()["reason"], "Invalid");
}

#[tokio::test]
async fn an_invalid_runtime_gets_only_its_status_with_every_violation() {
    let (action, applied, event) = invalid_pass(invalid_json(), true).await;
    assert_eq!(action, Action::await_change());
    let status = &applied["status"];
    let message = invalid_message(status);
    assert!(
        message.contains("spec.concurrency: Invalid value: 0"),
        "{message}"
    );
    assert!(
        message.contains("spec.template.spec.containers[0].command: Forbidden"),
        "{message}"
    );
    let event = event.unwrap();
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("Invalid"))
    );

    // Still invalid, with one more violation: the status is written, no new Event.
    let mut still = invalid_json();
    still["status"] = status.clone();
    still["spec"]["replicas"] = json!(-1);
    let (_, applied, _) = invalid_pass(still, false).await;
    let message = applied["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("spec.replicas: Invalid value: -1"),
        "{message}"
    );
}

#[tokio::test]
async fn an_api_error_stops_the_reconcile_with_its_reason() {
    let result = run(runtime(runtime_json()), |mut api| async move {
        api.next(Method::GET, SECRET).await.fail(
            404,
            "NotFound",
            "secrets \"python-runtimed\" not found",
        );
        api.next(Method::PATCH, SECRET).await.echo();
        api.next(Method::PATCH, DEPLOYMENT).await.fail(
            403,
            "Forbidden",
            "deployments.apps \"python\" is forbidden: User cannot patch resource",
        );
        api
    })
    .await;
    let err = result.unwrap_err();
    assert_error(&err, "Forbidden", "apply Deployment team-a/python: ");

    let (ctx, _api) = context();
    let action = error_policy(Arc::new(runtime(runtime_json())), &err, ctx);
    assert_eq!(action, Action::requeue(ERROR_RETRY_INTERVAL));
}

#[tokio::test]
async fn a_failed_status_write_is_an_error() {
    let result = run(runtime(invalid_json()), |mut api| async move {
        api.next(Method::PATCH, STATUS)
            .await
            .fail(409, "Conflict", "the object has been modified");
        api
    })
    .await;
    let err = result.unwrap_err();
    assert_error(&err, "Conflict", "apply status of Runtime team-a/python: ");
}

#[tokio::test]
async fn an_unreachable_api_server_is_its_own_reason() {
    let (ctx, api) = context();
    drop(api);
    let err = reconcile(Arc::new(runtime(runtime_json())), ctx)
        .await
        .unwrap_err();
    assert_error(
        &err,
        "ApiUnreachable",
        "get Secret team-a/python-runtimed: ",
    );
}

#[tokio::test]
async fn a_runtime_without_uid_is_refused_before_any_request() {
    let mut rt = runtime_json();
    rt["metadata"].as_object_mut().unwrap().remove("uid");
    let err = run(runtime(rt), |api| async move { api })
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "MissingField");
}

#[tokio::test]
async fn the_controller_watches_runtimes_and_only_the_deployments_it_rendered() {
    use futures::StreamExt;
    let (ctx, mut api) = context();
    let client = ctx.client.clone();
    let running = tokio::spawn(
        kruntimes_controller::runtime::controller(client, ctx, std::future::pending())
            .for_each(|_| async {}),
    );
    // The two initial lists come in either order.
    let mut lists = Vec::new();
    for _ in 0..2 {
        lists.push(api.next_any().await);
    }
    running.abort();
    lists.sort_by(|a, b| a.0.cmp(&b.0));
    let (deployments, runtimes) = (&lists[0], &lists[1]);
    assert_eq!(deployments.0, "/apis/apps/v1/deployments");
    let selector = deployments
        .1
        .iter()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        selector,
        Some("app.kubernetes.io/managed-by=kruntimes-controller")
    );
    assert_eq!(runtimes.0, "/apis/kruntimes.io/v1alpha1/runtimes");
    assert!(
        runtimes.1.iter().all(|(k, _)| k != "labelSelector"),
        "every Runtime: {:?}",
        runtimes.1
    );
}
