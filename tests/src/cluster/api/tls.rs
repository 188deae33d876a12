//! The server's certificates: a CA made for each server and a serving certificate it
//! signs for `localhost`, `127.0.0.1` and the address pods reach the server at, if any.
//! Clients trust the CA through the kubeconfig (pods: their ServiceAccount's `ca.crt`).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters.
    #[error("making the API server's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("configuring TLS for the API server: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The CA certificate (PEM) and the serving configuration.
#[derive(Debug)]
pub(crate) struct ServerTls {
    /// PEM of the CA that signed the serving certificate.
    pub(crate) ca_pem: String,
    /// rustls configuration with the serving certificate, HTTP/1.1 only (watches are
    /// chunked responses; kube-rs speaks HTTP/1.1 and kubectl falls back to it).
    pub(crate) config: Arc<rustls::ServerConfig>,
}

/// A new CA and a serving certificate for loopback and `extra_ips`.
pub(crate) fn generate(extra_ips: &[std::net::IpAddr]) -> Result<ServerTls, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kruntimes-test-cluster CA");
    let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    for ip in extra_ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone(), issuer.der().clone()], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        ca_pem: issuer.pem(),
        config: Arc::new(config),
    })
}
