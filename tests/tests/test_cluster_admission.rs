//! The emulated cluster's webhook admission against real HTTPS webhooks on loopback:
//! the kruntimes webhook itself (webhook/src/server) registered as deploy/ registers
//! it, and small scripted webhooks that record what they are sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kruntimes_e2e::cluster::contract::{Admission, AdmissionInput};
use serde_json::{Value, json};

#[path = "test_cluster_admission/support.rs"]
mod support;

use support::*;

#[tokio::test]
async fn a_runtime_pod_gets_runtimed_injected_by_the_real_webhook() {
    let (admission, mutating, validating, running, _dir) = deployed().await;
    let mut input = create("pods", "team-a", fixture_object("pod-create-runtime.json"));
    input.mutating = vec![mutating];
    input.validating = vec![validating];
    let mutated = admission
        .mutate(&input)
        .await
        .unwrap()
        .expect("the webhook changes a Runtime pod");
    let names = |field: &str| -> Vec<String> {
        mutated["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let containers: Vec<String> = [names("initContainers"), names("containers")].concat();
    assert!(
        containers.iter().any(|n| n == "runtimed"),
        "no runtimed container: {containers:?}"
    );
    // Pods the matchConditions leave out are never sent: nothing changes.
    let mut plain = create("pods", "team-a", pod(json!({"app": "web"})));
    plain.mutating = input.mutating.clone();
    assert_eq!(admission.mutate(&plain).await.unwrap(), None);
    // Namespaces the namespaceSelector excludes are not sent either.
    let mut excluded = create(
        "pods",
        "kube-system",
        fixture_object("pod-create-runtime.json"),
    );
    excluded.mutating = input.mutating.clone();
    assert_eq!(admission.mutate(&excluded).await.unwrap(), None);
    // The validating configuration is for kruntimes.io kinds only: a Pod passes.
    admission.validate(&input).await.unwrap();
    // The webhook's own count: one review, the Runtime pod's.
    assert_eq!(reviews_answered(&running).await, 1);
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_run_with_an_escaping_entrypoint_is_denied_with_the_webhooks_message() {
    let (admission, mutating, validating, running, _dir) = deployed().await;
    let mut run = fixture_object("run-create.json");
    admission
        .validate(&AdmissionInput {
            validating: vec![validating.clone()],
            ..create("runs", "team-a", run.clone())
        })
        .await
        .unwrap();
    let spec = run["spec"].as_object_mut().unwrap();
    spec.remove("script");
    spec.insert("entrypoint".to_owned(), json!("../../etc/passwd"));
    spec.insert("files".to_owned(), json!({"main.sh": "echo hi"}));
    let input = AdmissionInput {
        mutating: vec![mutating],
        validating: vec![validating],
        ..create("runs", "team-a", run)
    };
    // No mutating webhook is for Runs.
    assert_eq!(admission.mutate(&input).await.unwrap(), None);
    let denial = admission.validate(&input).await.unwrap_err();
    assert_eq!(denial.code, 422, "{denial:?}");
    assert_eq!(denial.reason, "Invalid");
    assert!(
        denial.message.starts_with(
            "admission webhook \"validate.kruntimes.io\" denied the request: Run \"hello\" is invalid:"
        ),
        "{}",
        denial.message
    );
    assert!(
        denial.message.contains("must not contain '..' segments"),
        "{}",
        denial.message
    );
    assert!(
        denial
            .causes
            .iter()
            .any(|c| c["field"] == "spec.entrypoint"),
        "{:?}",
        denial.causes
    );
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_closed_or_is_ignored_by_its_policy() {
    let ca = Ca::new();
    let admission = resolver(vec![(service("example-system", "down"), closed_port())]);
    let mut input = create("pods", "team-a", pod(json!({})));
    input.mutating = vec![configuration(
        "MutatingWebhookConfiguration",
        "down.example.com",
        &ca.bundle(),
        json!({"failurePolicy": "Fail"}),
    )];
    let denial = admission.mutate(&input).await.unwrap_err();
    assert_eq!(denial.code, 500);
    assert_eq!(denial.reason, "InternalError");
    assert!(
        denial.message.starts_with(
            "Internal error occurred: failed calling webhook \"down.example.com\": failed to call webhook: \
             Post \"https://down.example-system.svc:443/hook?timeout=10s\": dial tcp"
        ),
        "{}",
        denial.message
    );
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "down.example.com",
        &ca.bundle(),
        json!({}),
    )];
    input.mutating.clear();
    // failurePolicy defaults to Fail.
    assert_eq!(admission.validate(&input).await.unwrap_err().code, 500);
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "down.example.com",
        &ca.bundle(),
        json!({"failurePolicy": "Ignore"}),
    )];
    admission.validate(&input).await.unwrap();
    input.mutating = vec![configuration(
        "MutatingWebhookConfiguration",
        "down.example.com",
        &ca.bundle(),
        json!({"failurePolicy": "Ignore"}),
    )];
    assert_eq!(admission.mutate(&input).await.unwrap(), None);
    // A Service that does not exist is a failed call too.
    let nowhere = resolver(Vec::new());
    input.mutating = vec![configuration(
        "MutatingWebhookConfiguration",
        "down.example.com",
        &ca.bundle(),
        json!({}),
    )];
    let denial = nowhere.mutate(&input).await.unwrap_err();
    assert!(
        denial
            .message
            .contains("service \"example-system/down\" not found"),
        "{}",
        denial.message
    );
}

#[tokio::test]
async fn selectors_that_do_not_match_keep_the_webhook_from_being_called() {
    let ca = Ca::new();
    let hook = Scripted::start(
        &ca,
        &host_of("sel.example.com"),
        Arc::new(|r| Some(allow(r, None))),
    )
    .await;
    let admission = resolver(vec![(service("example-system", "sel"), hook.addr)]);
    let selected = |extra: Value, labels: Value| {
        let mut input = create("pods", "team-a", pod(labels));
        input.validating = vec![configuration(
            "ValidatingWebhookConfiguration",
            "sel.example.com",
            &ca.bundle(),
            extra,
        )];
        input
    };
    let by_namespace = json!({"namespaceSelector": {"matchLabels": {"team": "a"}}});
    admission
        .validate(&selected(by_namespace.clone(), json!({})))
        .await
        .unwrap();
    let by_object = json!({"objectSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}});
    admission
        .validate(&selected(by_object.clone(), json!({"app": "db"})))
        .await
        .unwrap();
    let other_resource = json!({"rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/status"]}]});
    admission
        .validate(&selected(other_resource, json!({})))
        .await
        .unwrap();
    let other_operation = json!({"rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["*"]}]});
    admission
        .validate(&selected(other_operation, json!({})))
        .await
        .unwrap();
    assert_eq!(hook.calls().len(), 0, "{:?}", hook.calls());

    // The same selectors, matching: one call each, with the full review.
    let mut input = selected(by_namespace, json!({}));
    input
        .namespace_labels
        .insert("team".to_owned(), "a".to_owned());
    admission.validate(&input).await.unwrap();
    admission
        .validate(&selected(by_object, json!({"app": "web"})))
        .await
        .unwrap();
    let calls = hook.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (uri, review) = &calls[0];
    assert_eq!(uri, "/hook?timeout=10s");
    let request = &review["request"];
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        request["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(request["requestKind"], request["kind"]);
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["namespace"], "team-a");
    assert_eq!(request["name"], "p");
    assert_eq!(request["userInfo"]["username"], "system:admin");
    assert_eq!(
        request["options"],
        json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"})
    );
    assert_eq!(request["dryRun"], false);
    assert_eq!(request["object"]["metadata"]["name"], "p");
    assert_eq!(request["oldObject"], Value::Null);
    assert_ne!(request["uid"], calls[1].1["request"]["uid"]);
}

#[tokio::test]
async fn a_webhook_that_never_answers_is_cut_off_at_its_timeout() {
    let ca = Ca::new();
    let hook = Scripted::start(&ca, &host_of("slow.example.com"), Arc::new(|_| None)).await;
    let admission = resolver(vec![(service("example-system", "slow"), hook.addr)]);
    let mut input = create("pods", "team-a", pod(json!({})));
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "slow.example.com",
        &ca.bundle(),
        json!({"timeoutSeconds": 1}),
    )];
    let started = Instant::now();
    let denial = admission.validate(&input).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(denial.code, 500);
    assert_eq!(
        denial.message,
        "Internal error occurred: failed calling webhook \"slow.example.com\": failed to call webhook: \
         Post \"https://slow.example-system.svc:443/hook?timeout=1s\": context deadline exceeded"
    );
    assert_eq!(hook.calls()[0].0, "/hook?timeout=1s");
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "slow.example.com",
        &ca.bundle(),
        json!({"timeoutSeconds": 1, "failurePolicy": "Ignore"}),
    )];
    admission.validate(&input).await.unwrap();
}

#[tokio::test]
async fn connections_are_kept_alive_per_target_and_a_closed_one_is_replaced() {
    let ca = Ca::new();
    let keeps = Scripted::start(
        &ca,
        &host_of("keeps.example.com"),
        Arc::new(|r| Some(allow(r, None))),
    )
    .await;
    let closes = Scripted::start_with(
        &ca,
        &host_of("closes.example.com"),
        Arc::new(|r| Some(allow(r, None))),
        false,
    )
    .await;
    let admission = resolver(vec![
        (service("example-system", "keeps"), keeps.addr),
        (service("example-system", "closes"), closes.addr),
    ]);
    let mut input = create("pods", "team-a", pod(json!({})));
    for name in ["keeps.example.com", "closes.example.com"] {
        input.validating.push(configuration(
            "ValidatingWebhookConfiguration",
            name,
            &ca.bundle(),
            json!({}),
        ));
    }
    for _ in 0..3 {
        admission.validate(&input).await.unwrap();
    }
    assert_eq!((keeps.calls().len(), keeps.connections()), (3, 1));
    // The webhook closes each connection after its answer: every call still succeeds,
    // each on a new connection.
    assert_eq!((closes.calls().len(), closes.connections()), (3, 3));

    // Calls at once open connections of their own; at most MAX_IDLE_PER_TARGET stay.
    let calls = (0..4).map(|_| admission.validate(&input));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(keeps.calls().len(), 7);
    assert!(
        (1..=4).contains(&(keeps.connections() - 1)),
        "{}",
        keeps.connections()
    );
    const { assert!(kruntimes_e2e::cluster::admission::MAX_IDLE_PER_TARGET >= 4) };
    for _ in 0..4 {
        admission.validate(&input).await.unwrap();
    }
    let after_burst = keeps.connections();
    admission.validate(&input).await.unwrap();
    assert_eq!(
        keeps.connections(),
        after_burst,
        "an idle connection is reused"
    );
}

#[tokio::test]
async fn patches_apply_in_order_and_if_needed_webhooks_are_reinvoked_once() {
    let ca = Ca::new();
    let label = |key: &'static str| -> Script {
        Arc::new(move |review: &Value| {
            let labels = &review["request"]["object"]["metadata"]["labels"];
            let patch = (labels[key] != "yes")
                .then(|| json!([{"op": "add", "path": format!("/metadata/labels/{key}"), "value": "yes"}]));
            Some(allow(review, patch))
        })
    };
    let first = Scripted::start(&ca, &host_of("first.example.com"), label("first")).await;
    let second = Scripted::start(&ca, &host_of("second.example.com"), label("second")).await;
    let admission = resolver(vec![
        (service("example-system", "first"), first.addr),
        (service("example-system", "second"), second.addr),
    ]);
    let mut input = create("pods", "team-a", pod(json!({"app": "web"})));
    input.mutating = vec![
        configuration(
            "MutatingWebhookConfiguration",
            "first.example.com",
            &ca.bundle(),
            json!({"reinvocationPolicy": "IfNeeded"}),
        ),
        configuration(
            "MutatingWebhookConfiguration",
            "second.example.com",
            &ca.bundle(),
            json!({"reinvocationPolicy": "IfNeeded"}),
        ),
    ];
    let mutated = admission.mutate(&input).await.unwrap().unwrap();
    assert_eq!(
        mutated["metadata"]["labels"],
        json!({"app": "web", "first": "yes", "second": "yes"})
    );
    // first ran before second changed the object: called again, and saw second's label.
    let calls = first.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[1].1["request"]["object"]["metadata"]["labels"]["second"],
        "yes"
    );
    // second changed nothing after itself: called once.
    assert_eq!(second.calls().len(), 1);
    assert_eq!(
        second.calls()[0].1["request"]["object"]["metadata"]["labels"]["first"],
        "yes"
    );

    // Without IfNeeded there is no second call.
    input.mutating[0]["webhooks"][0]["reinvocationPolicy"] = json!("Never");
    admission.mutate(&input).await.unwrap().unwrap();
    assert_eq!(first.calls().len(), 3);
}

#[tokio::test]
async fn denials_carry_the_webhooks_status_and_dry_runs_need_no_side_effects() {
    let ca = Ca::new();
    let hook = Scripted::start(
        &ca,
        &host_of("deny.example.com"),
        Arc::new(|review: &Value| {
            Some(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": review["request"]["uid"], "allowed": false, "warnings": ["careful"],
                "status": {"code": 422, "reason": "Invalid", "message": "spec.x is wrong",
                           "details": {"causes": [{"field": "spec.x", "message": "wrong", "reason": "FieldValueInvalid"}]}}}}))
        }),
    )
    .await;
    let admission = resolver(vec![(service("example-system", "deny"), hook.addr)]);
    let mut input = create("pods", "team-a", pod(json!({})));
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "deny.example.com",
        &ca.bundle(),
        json!({}),
    )];
    let denial = admission.validate(&input).await.unwrap_err();
    assert_eq!(denial.code, 422);
    assert_eq!(denial.reason, "Invalid");
    assert_eq!(
        denial.message,
        "admission webhook \"deny.example.com\" denied the request: spec.x is wrong"
    );
    assert_eq!(
        denial.causes,
        vec![json!({"field": "spec.x", "message": "wrong", "reason": "FieldValueInvalid"})]
    );

    input.dry_run = true;
    input.validating[0]["webhooks"][0]["sideEffects"] = json!("Some");
    let denial = admission.validate(&input).await.unwrap_err();
    assert_eq!(denial.code, 400);
    assert_eq!(
        denial.message,
        "admission webhook \"deny.example.com\" does not support dry run"
    );
    assert_eq!(
        hook.calls().len(),
        1,
        "a dry run is not sent to a webhook with side effects"
    );
    input.validating[0]["webhooks"][0]["sideEffects"] = json!("NoneOnDryRun");
    assert_eq!(admission.validate(&input).await.unwrap_err().code, 422);
    assert_eq!(hook.calls()[1].1["request"]["dryRun"], true);
}

#[tokio::test]
async fn only_the_ca_bundle_is_trusted_and_the_service_name_is_checked() {
    let (ca, other_ca) = (Ca::new(), Ca::new());
    let wrong_name = Scripted::start(
        &ca,
        "elsewhere.example-system.svc",
        Arc::new(|r| Some(allow(r, None))),
    )
    .await;
    let right = Scripted::start(
        &ca,
        &host_of("tls.example.com"),
        Arc::new(|r| Some(allow(r, None))),
    )
    .await;
    let mut input = create("pods", "team-a", pod(json!({})));
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "tls.example.com",
        &ca.bundle(),
        json!({}),
    )];
    let admission = resolver(vec![(service("example-system", "tls"), wrong_name.addr)]);
    let denial = admission.validate(&input).await.unwrap_err();
    assert!(denial.message.contains("tls: "), "{}", denial.message);
    let admission = resolver(vec![(service("example-system", "tls"), right.addr)]);
    admission.validate(&input).await.unwrap();
    input.validating[0]["webhooks"][0]["clientConfig"]["caBundle"] = json!(other_ca.bundle());
    let denial = admission.validate(&input).await.unwrap_err();
    assert!(denial.message.contains("tls: "), "{}", denial.message);
    assert!(wrong_name.calls().is_empty());
    assert_eq!(right.calls().len(), 1);

    // clientConfig.url: the URL's host is the name checked.
    let url = format!("https://localhost:{}/by-url", right.addr.port());
    let by_url = Scripted::start(&ca, "localhost", Arc::new(|r| Some(allow(r, None)))).await;
    let url_ok = format!("https://localhost:{}/by-url", by_url.addr.port());
    for (address, ok) in [(url, false), (url_ok, true)] {
        input.validating[0]["webhooks"][0]["clientConfig"] =
            json!({"caBundle": ca.bundle(), "url": address});
        assert_eq!(admission.validate(&input).await.is_ok(), ok, "{address}");
    }
    assert_eq!(by_url.calls()[0].0, "/by-url?timeout=10s");
}

#[tokio::test]
async fn answers_up_to_the_response_limit_are_read_and_longer_ones_fail_the_call() {
    use kruntimes_e2e::cluster::admission::MAX_RESPONSE_BYTES;
    let ca = Ca::new();
    let padded = |len: usize| -> Script {
        Arc::new(move |review: &Value| {
            let mut text = allow(review, None).to_string();
            text.push_str(&" ".repeat(len - text.len()));
            // serde_json reads trailing whitespace; the length is exactly `len`.
            Some(Value::String(text))
        })
    };
    let at_limit =
        Scripted::start(&ca, &host_of("big.example.com"), padded(MAX_RESPONSE_BYTES)).await;
    let over = Scripted::start(
        &ca,
        &host_of("bigger.example.com"),
        padded(MAX_RESPONSE_BYTES + 1),
    )
    .await;
    let admission = resolver(vec![
        (service("example-system", "big"), at_limit.addr),
        (service("example-system", "bigger"), over.addr),
    ]);
    let mut input = create("pods", "team-a", pod(json!({})));
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "big.example.com",
        &ca.bundle(),
        json!({}),
    )];
    admission.validate(&input).await.unwrap();
    input.validating = vec![configuration(
        "ValidatingWebhookConfiguration",
        "bigger.example.com",
        &ca.bundle(),
        json!({}),
    )];
    let denial = admission.validate(&input).await.unwrap_err();
    assert_eq!(denial.code, 500);
    assert!(
        denial.message.contains("reading the answer"),
        "{}",
        denial.message
    );
}

#[tokio::test]
async fn match_conditions_skip_the_webhook_when_false_and_follow_the_policy_when_broken() {
    let ca = Ca::new();
    let hook = Scripted::start(
        &ca,
        &host_of("cond.example.com"),
        Arc::new(|r| Some(allow(r, None))),
    )
    .await;
    let admission = resolver(vec![(service("example-system", "cond"), hook.addr)]);
    let with = |expression: &str, policy: &str| {
        let mut input = create("pods", "team-a", pod(json!({"app": "web"})));
        input.validating = vec![configuration(
            "ValidatingWebhookConfiguration",
            "cond.example.com",
            &ca.bundle(),
            json!({"failurePolicy": policy, "matchConditions": [{"name": "c", "expression": expression}]}),
        )];
        input
    };
    admission
        .validate(&with("object.metadata.labels['app'] == 'db'", "Fail"))
        .await
        .unwrap();
    assert_eq!(hook.calls().len(), 0);
    admission
        .validate(&with("object.metadata.labels['app'] == 'web'", "Fail"))
        .await
        .unwrap();
    assert_eq!(hook.calls().len(), 1);
    // A condition that cannot be evaluated (no such label) is a failed call.
    let broken = "object.metadata.labels['missing'] == 'x'";
    let denial = admission.validate(&with(broken, "Fail")).await.unwrap_err();
    assert_eq!(denial.code, 500);
    assert!(
        denial.message.starts_with(
            "Internal error occurred: failed calling webhook \"cond.example.com\": failed to evaluate match conditions: matchCondition \"c\":"
        ),
        "{}",
        denial.message
    );
    admission.validate(&with(broken, "Ignore")).await.unwrap();
    assert_eq!(
        hook.calls().len(),
        1,
        "a broken condition never calls the webhook"
    );
}

/// The review request of a webhook fixture as an update input: its object, old object
/// and subresource.
fn update_from_fixture(name: &str, validating: Value) -> AdmissionInput {
    let review = fixture_review(name);
    let request = &review["request"];
    let mut input = create("runs", "team-a", request["object"].clone());
    input.operation = kruntimes_e2e::cluster::contract::Operation::Update;
    input.old_object = Some(request["oldObject"].clone());
    input.subresource = request["subResource"].as_str().map(str::to_owned);
    input.validating = vec![validating];
    input
}

#[tokio::test]
async fn updates_carry_the_old_object_and_status_writes_are_not_sent() {
    let (admission, _, validating, running, _dir) = deployed().await;
    let edited = update_from_fixture("run-update-script.json", validating.clone());
    let denial = admission.validate(&edited).await.unwrap_err();
    let fields: Vec<&str> = denial
        .causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.script", "spec.timeout"], "{denial:?}");
    admission
        .validate(&update_from_fixture(
            "run-update-cancel.json",
            validating.clone(),
        ))
        .await
        .unwrap();
    // runs/status is not in the rules (`runs` only): the write is never sent.
    let status = update_from_fixture("run-update-status.json", validating);
    assert_eq!(status.subresource.as_deref(), Some("status"));
    admission.validate(&status).await.unwrap();
    assert_eq!(reviews_answered(&running).await, 2);
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}
