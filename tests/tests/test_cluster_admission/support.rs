//! Helpers of test_cluster_admission: a test CA, the kruntimes webhook started with a
//! certificate for its Service name, deploy/'s configurations, and scripted HTTPS
//! webhooks that record what they are sent.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::serde::Deserialize as _;
use kruntimes_e2e::cluster::admission::{ServiceRef, WebhookAdmission};
use kruntimes_e2e::cluster::contract::{AdmissionInput, Operation, UserInfo};
use kruntimes_pss::Level;
use kruntimes_webhook::admission::Handlers;
use kruntimes_webhook::inject::InjectConfig;
use kruntimes_webhook::server::{Running, ServeConfig, serve};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};

/// A CA for one test and the serving certificates it signs.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// `caBundle`: the CA's PEM, base64 as a configuration carries it.
    pub(crate) fn bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.issuer.pem())
    }

    /// A serving certificate and key (PEM) for `name`.
    pub(crate) fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The kruntimes webhook, standalone, serving `kruntimes-webhook.kruntimes-system.svc`.
pub(crate) async fn kruntimes_webhook(ca: &Ca) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf("kruntimes-webhook.kruntimes-system.svc");
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let handlers = Handlers::standalone(InjectConfig::default(), Level::Baseline);
    let config = ServeConfig::new(&cert_file, &key_file, handlers);
    let https = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    (serve(config, https, admin).await.unwrap(), dir)
}

/// The webhook configurations of deploy/, with `caBundle` set: (mutating, validating).
pub(crate) fn deploy_configurations(ca_bundle: &str) -> (Value, Value) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/webhook-configurations.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut mutating, mut validating) = (None, None);
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(document).unwrap();
        for webhook in value["webhooks"].as_array_mut().unwrap() {
            webhook["clientConfig"]["caBundle"] = json!(ca_bundle);
        }
        match value["kind"].as_str().unwrap() {
            "MutatingWebhookConfiguration" => mutating = Some(value),
            "ValidatingWebhookConfiguration" => validating = Some(value),
            other => panic!("unexpected {other}"),
        }
    }
    (mutating.unwrap(), validating.unwrap())
}

/// A resolver for the given Services.
pub(crate) fn resolver(services: Vec<(ServiceRef, SocketAddr)>) -> WebhookAdmission {
    WebhookAdmission::new(Arc::new(move |wanted: &ServiceRef| {
        services.iter().find(|(s, _)| s == wanted).map(|(_, a)| *a)
    }))
}

pub(crate) fn service(namespace: &str, name: &str) -> ServiceRef {
    ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: 443,
    }
}

/// A review of the kruntimes webhook's own test fixtures (webhook/tests/fixtures).
pub(crate) fn fixture_review(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../webhook/tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The object of fixture `name`'s request.
pub(crate) fn fixture_object(name: &str) -> Value {
    fixture_review(name)["request"]["object"].clone()
}

/// How many reviews the kruntimes webhook has answered, by its own metrics.
pub(crate) async fn reviews_answered(running: &Running) -> u64 {
    let (status, metrics) = kruntimes_testkit::http::get(running.admin_addr, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .filter(|l| l.starts_with("kruntimes_webhook_reviews_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub(crate) fn namespace_labels(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        namespace.to_owned(),
    )])
}

/// A create of `object` (a Pod when `resource` is `pods`, else a kruntimes.io one).
pub(crate) fn create(resource: &str, namespace: &str, object: Value) -> AdmissionInput {
    let (group, version, kind) = match resource {
        "pods" => ("", "v1", "Pod"),
        "runs" => ("kruntimes.io", "v1alpha1", "Run"),
        other => panic!("no kind for {other}"),
    };
    AdmissionInput {
        operation: Operation::Create,
        group: group.to_owned(),
        version: version.to_owned(),
        resource: resource.to_owned(),
        subresource: None,
        kind: kind.to_owned(),
        namespace: Some(namespace.to_owned()),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or("generated-x")
            .to_owned(),
        object: Some(object),
        old_object: None,
        user: UserInfo {
            username: "system:admin".to_owned(),
            groups: vec!["system:masters".to_owned()],
        },
        dry_run: false,
        namespace_labels: namespace_labels(namespace),
        mutating: Vec::new(),
        validating: Vec::new(),
    }
}

/// What a scripted webhook does with a review.
pub(crate) type Script = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// A scripted webhook over TLS: every request (path and query, review) is recorded;
/// `script` gives the response, or `None` to never answer.
pub(crate) struct Scripted {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// TCP connections accepted.
    pub(crate) accepted: Arc<AtomicUsize>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub(crate) async fn start(ca: &Ca, name: &str, script: Script) -> Scripted {
        Scripted::start_with(ca, name, script, true).await
    }

    /// [`Scripted::start`]; without `keep_alive` each connection is closed after its
    /// first answer.
    pub(crate) async fn start_with(
        ca: &Ca,
        name: &str,
        script: Script,
        keep_alive: bool,
    ) -> Scripted {
        let (cert, key) = ca.leaf(name);
        let certs = rustls_pki_types::pem::PemObject::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
            .unwrap();
        let key = <rustls_pki_types::PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (seen, accepted) = (seen.clone(), accepted.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, seen, script) = (acceptor.clone(), seen.clone(), script.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |request| {
                            answer(request, seen.clone(), script.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(keep_alive)
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        Scripted {
            addr,
            seen,
            accepted,
            task,
        }
    }

    pub(crate) fn calls(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Records `request` and answers it as `script` says: a JSON answer, a string sent as
/// it is (padded bodies), or no answer ever.
pub(crate) async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    script: Script,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let uri = request.uri().to_string();
    let body = request.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push((uri, review.clone()));
    let body = match script(&review) {
        Some(Value::String(text)) => text,
        Some(answer) => answer.to_string(),
        None => std::future::pending().await,
    };
    Ok(hyper::Response::new(Full::new(Bytes::from(body))))
}

/// An answer allowing the review, with `patch` (a JSONPatch) when given.
pub(crate) fn allow(review: &Value, patch: Option<Value>) -> Value {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// A webhook configuration of `kind` with one webhook calling Service
/// `example-system/NAME-without-dots` at `/hook`.
pub(crate) fn configuration(kind: &str, name: &str, ca_bundle: &str, extra: Value) -> Value {
    let mut webhook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"caBundle": ca_bundle,
                         "service": {"namespace": "example-system", "name": service_name(name), "path": "/hook"}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
    });
    for (key, value) in extra.as_object().unwrap() {
        webhook[key] = value.clone();
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
           "metadata": {"name": name}, "webhooks": [webhook]})
}

pub(crate) fn service_name(webhook: &str) -> String {
    webhook.split('.').next().unwrap().to_owned()
}

/// The DNS name a scripted webhook for `webhook` serves.
pub(crate) fn host_of(webhook: &str) -> String {
    format!("{}.example-system.svc", service_name(webhook))
}

pub(crate) fn pod(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "team-a", "labels": labels},
           "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
}

/// The kruntimes webhook registered as deploy/ registers it.
pub(crate) async fn deployed() -> (WebhookAdmission, Value, Value, Running, tempfile::TempDir) {
    let ca = Ca::new();
    let (running, dir) = kruntimes_webhook(&ca).await;
    let (mutating, validating) = deploy_configurations(&ca.bundle());
    let admission = resolver(vec![(
        service("kruntimes-system", "kruntimes-webhook"),
        running.addr,
    )]);
    (admission, mutating, validating, running, dir)
}
