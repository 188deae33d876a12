//! The floor server of the load benchmark: the webhook's own stack (an axum router,
//! axum-server, rustls with the ring provider, ALPN `h2` + `http/1.1`, the same body
//! limit, a multi-threaded tokio runtime) answering every POST to `/validate` and
//! `/mutate` with one canned AdmissionReview, after reading the body and without
//! looking at it. What the webhook costs beyond this is its own work: decoding the
//! review, the rules, injection, encoding the answer, logging, metrics.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use kruntimes_webhook::admission::MAX_REVIEW_BYTES;
use kruntimes_webhook::server::load_pair;

/// The uid of the canned answer (the floor does not read the request's).
pub(crate) const CANNED_UID: &str = "floor";

/// The one answer the floor gives.
pub(crate) const CANNED_REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"floor","allowed":true}}"#;

async fn canned(body: Bytes) -> impl IntoResponse {
    // The body is read in full (as the webhook does) and then ignored.
    drop(body);
    ([(header::CONTENT_TYPE, "application/json")], CANNED_REVIEW)
}

/// Serves the floor on `bind` until the process is killed.
pub(crate) fn serve(cert_file: &Path, key_file: &Path, bind: SocketAddr) -> anyhow::Result<()> {
    let cert = std::fs::read(cert_file).with_context(|| format!("{}", cert_file.display()))?;
    let key = std::fs::read(key_file).with_context(|| format!("{}", key_file.display()))?;
    let pair = load_pair(&cert, &key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(pair)));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind(bind).with_context(|| format!("cannot bind {bind}"))?;
    listener.set_nonblocking(true)?;
    let app = Router::new()
        .route("/validate", post(canned))
        .route("/mutate", post(canned))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES));
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async move {
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(tls)))?
            .serve(app.into_make_service())
            .await
            .context("floor server")
    })
}
