//! The reconciler and its loop against a mocked API server: the exact requests, in order.

use crate::support::*;

#[tokio::test]
async fn first_start_creates_the_secret_patches_the_ca_bundles_and_writes_the_files() {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let c_dir = dir.path().to_owned();
    let now = T0;
    let server = tokio::spawn(async move {
        api.expect(
            Method::GET,
            &format!("{SECRET_PATH}/{SECRET}"),
            404,
            status(404, "NotFound"),
        )
        .await;
        let created = api
            .expect(Method::POST, SECRET_PATH, 201, Value::Null)
            .await;
        assert_eq!(created.body["metadata"]["name"], SECRET);
        assert_eq!(created.body["metadata"]["namespace"], NAMESPACE);
        assert_eq!(created.body["type"], "kubernetes.io/tls");
        let keys: Vec<&String> = created.body["data"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["ca-bundle.crt", "ca.crt", "ca.key", "tls.crt", "tls.key"]
        );
        let contents = contents_of(&created.body);
        served_chain_verifies(&contents, now).unwrap();
        expect_validating_patched(
            &mut api,
            None,
            &contents.ca_bundle,
            configuration(
                "ValidatingWebhookConfiguration",
                "kruntimes",
                &[("validate.kruntimes.io", Some(&contents.ca_bundle))],
            ),
        )
        .await;
        expect_list(
            &mut api,
            MWC_PATH,
            "MutatingWebhookConfiguration",
            vec![configuration(
                "MutatingWebhookConfiguration",
                "kruntimes",
                &[
                    ("runtime.inject.kruntimes.io", Some(b"stale")),
                    ("optin.inject.kruntimes.io", None),
                ],
            )],
        )
        .await;
        expect_patch(
            &mut api,
            &format!("{MWC_PATH}/kruntimes"),
            &[
                (0, "runtime.inject.kruntimes.io"),
                (1, "optin.inject.kruntimes.io"),
            ],
            &contents.ca_bundle,
            configuration("MutatingWebhookConfiguration", "kruntimes", &[]),
        )
        .await;
        (api, created.method, contents)
    });
    let outcome = reconciler.reconcile(at(now)).await.unwrap();
    let (api, method, contents) = server.await.unwrap();
    assert_eq!(method, Method::POST);
    assert_eq!(outcome.action, Action::Create);
    assert!(outcome.files_written);
    assert_eq!(
        outcome.patched,
        [
            "ValidatingWebhookConfiguration/kruntimes",
            "MutatingWebhookConfiguration/kruntimes"
        ]
    );
    files_hold_exactly(&c_dir, &contents);
    no_more_requests(reconciler, api).await;
    drop(dir);
}

/// `dir` holds the served certificate and key (the key 0600) and nothing else: no
/// temporary file is left next to them.
fn files_hold_exactly(dir: &std::path::Path, contents: &SecretContents) {
    assert_eq!(
        std::fs::read(dir.join("tls.crt")).unwrap(),
        contents.tls_crt
    );
    assert_eq!(
        std::fs::read(dir.join("tls.key")).unwrap(),
        contents.tls_key
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(dir.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // No temporary file is left next to them.
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["tls.crt", "tls.key"]);
}

#[tokio::test]
async fn a_restart_with_a_valid_secret_writes_nothing_to_the_api_when_ca_bundles_match() {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let stored = created(T0);
    let now = T0 + 3_600;
    let round = unchanged_round(&stored);
    let server = tokio::spawn(async move {
        let mut seen = api.run(&round).await;
        seen.extend(api.run(&round).await);
        (api, seen)
    });
    let first = reconciler.reconcile(at(now)).await.unwrap();
    assert_eq!(first.action, Action::Keep);
    assert!(first.patched.is_empty());
    assert!(first.files_written, "a new pod has no files yet");
    // A second round finds the files in place.
    let second = reconciler.reconcile(at(now + 60)).await.unwrap();
    assert_eq!(second.action, Action::Keep);
    assert!(!second.files_written);
    let (api, seen) = server.await.unwrap();
    // Both rounds list the configurations by the label, and nothing else.
    for list in seen
        .iter()
        .filter(|r| r.path != format!("{SECRET_PATH}/{SECRET}"))
    {
        assert_eq!(
            list.query_value("labelSelector"),
            Some("kruntimes.io/ca-bundle=self-managed"),
            "{list:?}"
        );
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        stored.tls_crt
    );
    assert_eq!(
        std::fs::read(dir.path().join("tls.key")).unwrap(),
        stored.tls_key
    );
    no_more_requests(reconciler, api).await;
}

#[tokio::test]
async fn a_create_conflict_rereads_and_uses_the_other_replicas_ca() {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let theirs = created(T0);
    let now = T0 + 1;
    let answer = theirs.clone();
    let server = tokio::spawn(async move {
        let path = format!("{SECRET_PATH}/{SECRET}");
        api.expect(Method::GET, &path, 404, status(404, "NotFound"))
            .await;
        let ours = api
            .expect(Method::POST, SECRET_PATH, 409, status(409, "AlreadyExists"))
            .await;
        api.expect(Method::GET, &path, 200, secret_object(&answer, "5"))
            .await;
        expect_validating_patched(
            &mut api,
            None,
            &answer.ca_bundle,
            configuration("ValidatingWebhookConfiguration", "kruntimes", &[]),
        )
        .await;
        expect_list(&mut api, MWC_PATH, "MutatingWebhookConfiguration", vec![]).await;
        (api, contents_of(&ours.body))
    });
    let outcome = reconciler.reconcile(at(now)).await.unwrap();
    let (api, ours) = server.await.unwrap();
    assert_ne!(ours.ca_crt, theirs.ca_crt, "our own attempt had its own CA");
    assert_eq!(outcome.action, Action::Keep);
    assert_eq!(
        outcome.patched,
        ["ValidatingWebhookConfiguration/kruntimes"]
    );
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        theirs.tls_crt
    );
    assert_eq!(
        std::fs::read(dir.path().join("tls.key")).unwrap(),
        theirs.tls_key
    );
    no_more_requests(reconciler, api).await;
}

#[tokio::test]
async fn ca_rotation_updates_the_secret_with_its_resource_version_and_keeps_the_old_ca_in_the_bundle()
 {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let original = created(T0);
    let old_ca = one_cert(&original.ca_crt);
    let threshold = not_after(&old_ca) - CA_RENEW_BEFORE.whole_seconds();
    let stored = with_fresh_serving(threshold - 1, &original);
    let answer = stored.clone();
    let server = tokio::spawn(async move {
        let path = format!("{SECRET_PATH}/{SECRET}");
        api.expect(Method::GET, &path, 200, secret_object(&answer, "41"))
            .await;
        // A concurrent write by another replica: the update is refused, read again.
        let refused = api
            .expect(Method::PUT, &path, 409, status(409, "Conflict"))
            .await;
        assert_eq!(refused.body["metadata"]["resourceVersion"], "41");
        api.expect(Method::GET, &path, 200, secret_object(&answer, "42"))
            .await;
        let updated = api.expect(Method::PUT, &path, 200, Value::Null).await;
        assert_eq!(updated.body["metadata"]["resourceVersion"], "42");
        assert_eq!(updated.body["type"], "kubernetes.io/tls");
        let rotated = contents_of(&updated.body);
        expect_validating_patched(
            &mut api,
            Some(&answer.ca_bundle),
            &rotated.ca_bundle,
            configuration("ValidatingWebhookConfiguration", "kruntimes", &[]),
        )
        .await;
        expect_list(&mut api, MWC_PATH, "MutatingWebhookConfiguration", vec![]).await;
        (api, rotated)
    });
    let outcome = reconciler.reconcile(at(threshold)).await.unwrap();
    let (api, rotated) = server.await.unwrap();
    assert_eq!(outcome.action, Action::RotateCa { expired: false });
    let new_ca = one_cert(&rotated.ca_crt);
    assert_eq!(certs(&rotated.ca_bundle), vec![new_ca, old_ca.clone()]);
    // What is served now was signed by the old CA, trusted before and after the patch.
    let served = std::fs::read(dir.path().join("tls.crt")).unwrap();
    assert_eq!(served, rotated.tls_crt);
    verify(&one_cert(&served), &certs(&stored.ca_bundle), threshold).unwrap();
    verify(&one_cert(&served), &certs(&rotated.ca_bundle), threshold).unwrap();
    no_more_requests(reconciler, api).await;
}

#[tokio::test]
async fn api_errors_are_typed_and_name_the_step() {
    let Cluster {
        reconciler,
        mut api,
        dir: _dir,
    } = cluster();
    let server = tokio::spawn(async move {
        api.expect(
            Method::GET,
            &format!("{SECRET_PATH}/{SECRET}"),
            403,
            status(403, "Forbidden"),
        )
        .await;
        api
    });
    let error = reconciler.reconcile(at(T0)).await.unwrap_err();
    let api = server.await.unwrap();
    assert_eq!(error.metric_label(), "read_secret");
    assert!(
        error
            .to_string()
            .contains("cannot read Secret kruntimes-system/kruntimes-webhook-certs"),
        "{error}"
    );
    no_more_requests(reconciler, api).await;
}

#[tokio::test]
async fn the_loop_retries_after_a_failure_and_becomes_ready_only_after_a_success() {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(kruntimes_webhook::certs::run(reconciler, ready_tx));
    let path = format!("{SECRET_PATH}/{SECRET}");
    api.expect(Method::GET, &path, 500, status(500, "InternalError"))
        .await;
    // The retry (after RETRY_BACKOFF_INITIAL) starts over with a read of the Secret; until
    // it has succeeded, the loop cannot be ready.
    let created = {
        api.expect(Method::GET, &path, 404, status(404, "NotFound"))
            .await;
        assert!(!*ready_rx.borrow(), "ready before any success");
        let created = api
            .expect(Method::POST, SECRET_PATH, 201, Value::Null)
            .await;
        expect_list(&mut api, VWC_PATH, "ValidatingWebhookConfiguration", vec![]).await;
        expect_list(&mut api, MWC_PATH, "MutatingWebhookConfiguration", vec![]).await;
        contents_of(&created.body)
    };
    tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|ready| *ready))
        .await
        .expect("ready within 10 s")
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        created.tls_crt
    );
    loop_task.abort();
}

/// `MAX_WRITE_ATTEMPTS` conflicting writes in a round: the last one may succeed; one
/// more conflict fails the round (typed), with no further request.
#[tokio::test]
async fn write_conflicts_up_to_max_write_attempts_then_the_round_fails() {
    use kruntimes_webhook::certs::{MAX_WRITE_ATTEMPTS, ReconcileError};
    let path = format!("{SECRET_PATH}/{SECRET}");

    // MAX_WRITE_ATTEMPTS - 1 conflicts, then the create goes through.
    let Cluster {
        reconciler,
        mut api,
        dir: _dir,
    } = cluster();
    let server = {
        let path = path.clone();
        tokio::spawn(async move {
            for _ in 1..MAX_WRITE_ATTEMPTS {
                api.expect(Method::GET, &path, 404, status(404, "NotFound"))
                    .await;
                api.expect(Method::POST, SECRET_PATH, 409, status(409, "AlreadyExists"))
                    .await;
            }
            api.expect(Method::GET, &path, 404, status(404, "NotFound"))
                .await;
            api.expect(Method::POST, SECRET_PATH, 201, Value::Null)
                .await;
            expect_list(&mut api, VWC_PATH, "ValidatingWebhookConfiguration", vec![]).await;
            expect_list(&mut api, MWC_PATH, "MutatingWebhookConfiguration", vec![]).await;
            api
        })
    };
    let outcome = reconciler.reconcile(at(T0)).await.unwrap();
    assert_eq!(outcome.action, Action::Create);
    no_more_requests(reconciler, server.await.unwrap()).await;

    // MAX_WRITE_ATTEMPTS conflicts: the round fails.
    let Cluster {
        reconciler,
        mut api,
        dir: _dir,
    } = cluster();
    let server = tokio::spawn(async move {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            api.expect(Method::GET, &path, 404, status(404, "NotFound"))
                .await;
            api.expect(Method::POST, SECRET_PATH, 409, status(409, "AlreadyExists"))
                .await;
        }
        api
    });
    let error = reconciler.reconcile(at(T0)).await.unwrap_err();
    assert!(
        matches!(error, ReconcileError::Conflicts { attempts, .. } if attempts == MAX_WRITE_ATTEMPTS),
        "{error}"
    );
    assert_eq!(error.metric_label(), "conflicts");
    no_more_requests(reconciler, server.await.unwrap()).await;
}
