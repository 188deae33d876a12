//! What the certificate tests share: times, names, certificate checks, and the mocked
//! API server's Secret and webhook configurations.

pub(crate) use std::net::TcpListener;
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Duration;

pub(crate) use axum::http::Method;
pub(crate) use k8s_openapi::ByteString;
pub(crate) use kruntimes_pss::Level;
pub(crate) use kruntimes_testkit::apiserver::{self, Answer, ApiServerVerifier, Scenario, status};
pub(crate) use kruntimes_webhook::admission::Handlers;
pub(crate) use kruntimes_webhook::certs::{
    Action, CA_CERT_KEY, CA_KEY_KEY, CA_RENEW_BEFORE, CA_VALIDITY, Corruption, MAX_BUNDLE_CAS,
    MAX_LABEL_NAME_LEN, MAX_SECRET_NAME_LEN, NOT_BEFORE_BACKDATE, NameError, NamespacedName,
    RESYNC_INTERVAL, RETRY_BACKOFF_MAX, Reconciler, SERVING_RENEW_BEFORE, SERVING_VALIDITY,
    SecretContents, SelfManagedConfig, ServingReason, TLS_CERT_KEY, TLS_KEY_KEY, backoff,
    ca_bundle_patch, plan, wait_after_success,
};
pub(crate) use kruntimes_webhook::inject::InjectConfig;
pub(crate) use kruntimes_webhook::server::{ReadinessGate, ServeConfig, serve};
pub(crate) use rustls::client::danger::ServerCertVerifier as _;
pub(crate) use rustls::pki_types::pem::PemObject;
pub(crate) use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
pub(crate) use serde_json::{Value, json};
pub(crate) use time::OffsetDateTime;

pub(crate) const NAMESPACE: &str = "kruntimes-system";
pub(crate) const SECRET: &str = "kruntimes-webhook-certs";
pub(crate) const SERVER_NAME: &str = "kruntimes-webhook.kruntimes-system.svc";
/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600;

pub(crate) fn service() -> NamespacedName {
    NamespacedName {
        namespace: NAMESPACE.to_owned(),
        name: "kruntimes-webhook".to_owned(),
    }
}

pub(crate) fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

pub(crate) fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

pub(crate) fn one_cert(pem: &[u8]) -> CertificateDer<'static> {
    let all = certs(pem);
    assert_eq!(all.len(), 1);
    all.into_iter().next().unwrap()
}

/// (notBefore, notAfter) in Unix seconds.
pub(crate) fn validity(der: &CertificateDer<'_>) -> (i64, i64) {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    (
        x509.validity().not_before.timestamp(),
        x509.validity().not_after.timestamp(),
    )
}

pub(crate) fn not_after(der: &CertificateDer<'_>) -> i64 {
    validity(der).1
}

/// What a TLS client does with the served leaf: chain to `roots`, validity at `now`,
/// serverAuth, the API server's name for the Service.
pub(crate) fn verify(
    leaf: &CertificateDer<'_>,
    roots: &[CertificateDer<'static>],
    now: i64,
) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(SERVER_NAME).unwrap(),
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(now.try_into().unwrap())),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The served chain of `contents` verifies against its own bundle at `now`.
pub(crate) fn served_chain_verifies(contents: &SecretContents, now: i64) -> Result<(), String> {
    verify(
        &one_cert(&contents.tls_crt),
        &certs(&contents.ca_bundle),
        now,
    )
}

pub(crate) fn created(now: i64) -> SecretContents {
    let p = plan(at(now), None, &service()).unwrap();
    assert_eq!(p.action, Action::Create);
    p.contents
}

/// Plans at `now` and checks that planning the result again gives `Keep`.
pub(crate) fn step(now: i64, contents: &SecretContents) -> (Action, SecretContents) {
    let p = plan(at(now), Some(contents), &service()).unwrap();
    let again = plan(at(now), Some(&p.contents), &service()).unwrap();
    assert_eq!(again.action, Action::Keep, "planning {:?} again", p.action);
    assert_eq!(again.contents, p.contents);
    (p.action, p.contents)
}

// ---- the cluster part, against a mocked API server ----

pub(crate) type ApiHandle = ApiServerVerifier;

pub(crate) struct Cluster {
    pub(crate) reconciler: Reconciler,
    pub(crate) api: ApiHandle,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn cluster() -> Cluster {
    let (client, api) = apiserver::client();
    let dir = tempfile::tempdir().unwrap();
    let reconciler = Reconciler::new(
        client,
        SelfManagedConfig {
            secret: NamespacedName {
                namespace: NAMESPACE.to_owned(),
                name: SECRET.to_owned(),
            },
            service: service(),
            ca_bundle_selector: "kruntimes.io/ca-bundle=self-managed".to_owned(),
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
        },
    );
    Cluster {
        reconciler,
        api,
        dir,
    }
}

pub(crate) const SECRET_PATH: &str = "/api/v1/namespaces/kruntimes-system/secrets";
pub(crate) const VWC_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
pub(crate) const MWC_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

pub(crate) fn secret_object(contents: &SecretContents, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "resourceVersion": resource_version},
        "type": "kubernetes.io/tls",
        "data": serde_json::to_value(contents.to_data()).unwrap(),
    })
}

pub(crate) fn contents_of(secret: &Value) -> SecretContents {
    let data: std::collections::BTreeMap<String, ByteString> =
        serde_json::from_value(secret["data"].clone()).unwrap();
    SecretContents::from_data(&data)
}

pub(crate) fn b64(bytes: &[u8]) -> Value {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap()
}

pub(crate) fn configuration(kind: &str, name: &str, hooks: &[(&str, Option<&[u8]>)]) -> Value {
    let webhooks: Vec<Value> = hooks
        .iter()
        .map(|(hook, bundle)| {
            let mut client_config = json!({"service": {"name": "kruntimes-webhook", "namespace": NAMESPACE, "path": "/validate"}});
            if let Some(bundle) = bundle {
                client_config["caBundle"] = b64(bundle);
            }
            json!({"name": hook, "clientConfig": client_config, "sideEffects": "None", "admissionReviewVersions": ["v1"]})
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, "resourceVersion": "7", "labels": {"kruntimes.io/ca-bundle": "self-managed"}},
        "webhooks": webhooks,
    })
}

pub(crate) fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "9"}, "items": items})
}

/// Expects the LIST of one configuration kind, by the label selector.
pub(crate) async fn expect_list(api: &mut ApiHandle, path: &str, kind: &str, items: Vec<Value>) {
    let seen = api.expect(Method::GET, path, 200, list(kind, items)).await;
    assert!(
        seen.query.contains(&(
            "labelSelector".to_owned(),
            "kruntimes.io/ca-bundle=self-managed".to_owned()
        )),
        "{:?}",
        seen.query
    );
}

/// Expects a JSON patch of `name` setting `bundle` on the webhooks at `indexes`.
/// The `kruntimes` ValidatingWebhookConfiguration listed with its one webhook holding
/// `listed` as caBundle, then patched to `bundle`; the API answers the patch with
/// `answer`.
pub(crate) async fn expect_validating_patched(
    api: &mut ApiHandle,
    listed: Option<&[u8]>,
    bundle: &[u8],
    answer: Value,
) {
    expect_list(
        api,
        VWC_PATH,
        "ValidatingWebhookConfiguration",
        vec![configuration(
            "ValidatingWebhookConfiguration",
            "kruntimes",
            &[("validate.kruntimes.io", listed)],
        )],
    )
    .await;
    expect_patch(
        api,
        &format!("{VWC_PATH}/kruntimes"),
        &[(0, "validate.kruntimes.io")],
        bundle,
        answer,
    )
    .await;
}

pub(crate) async fn expect_patch(
    api: &mut ApiHandle,
    path: &str,
    hooks: &[(usize, &str)],
    bundle: &[u8],
    answer: Value,
) {
    let seen = api.expect(Method::PATCH, path, 200, answer).await;
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    let mut ops = Vec::new();
    for (index, name) in hooks {
        ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
        ops.push(json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": b64(bundle)}));
    }
    assert_eq!(seen.body, Value::Array(ops));
}

/// Drops the client and checks that no request is left.
pub(crate) async fn no_more_requests(reconciler: Reconciler, api: ApiHandle) {
    drop(reconciler);
    api.no_more_requests().await;
}

/// The contents at `now` with a serving certificate issued just now (so only the CA's
/// state decides the next plan).
pub(crate) fn with_fresh_serving(now: i64, contents: &SecretContents) -> SecretContents {
    let mut stale = contents.clone();
    stale.tls_crt = b"expired on purpose".to_vec();
    let (action, fresh) = step(now, &stale);
    assert!(matches!(action, Action::IssueServing(_)), "{action:?}");
    fresh
}

/// One reconcile round of a replica that finds `stored` in the Secret and both webhook
/// configurations already carrying its bundle: three reads, no write.
pub(crate) fn unchanged_round(stored: &SecretContents) -> Scenario {
    let configuration_list = |kind: &str, hook: &str| {
        let item = configuration(kind, "kruntimes", &[(hook, Some(&stored.ca_bundle))]);
        Answer::Json(200, list(kind, vec![item]))
    };
    Scenario::new("a valid Secret, caBundles matching")
        .then(
            Method::GET,
            format!("{SECRET_PATH}/{SECRET}"),
            Answer::Json(200, secret_object(stored, "41")),
        )
        .then(
            Method::GET,
            VWC_PATH,
            configuration_list("ValidatingWebhookConfiguration", "validate.kruntimes.io"),
        )
        .then(
            Method::GET,
            MWC_PATH,
            configuration_list(
                "MutatingWebhookConfiguration",
                "runtime.inject.kruntimes.io",
            ),
        )
}
