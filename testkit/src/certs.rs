//! Certificates for tests: a CA, serving certificates it signs for `localhost` and
//! `127.0.0.1`, self-signed ones, and a rustls client that trusts only the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::CertificateDer;

/// A serving certificate and its key.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER (what a TLS client sees as the peer certificate).
    pub der: CertificateDer<'static>,
}

impl Pair {
    /// Writes the pair to `tls.crt` and `tls.key` in `dir`; returns both paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A certificate authority for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    /// A new self-signed CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// A new serving pair for `localhost` and `127.0.0.1`, signed by this CA.
    pub fn leaf(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A rustls client configuration trusting only this CA ([`client_config`]).
    pub fn client_config(&self) -> rustls::ClientConfig {
        client_config(std::slice::from_ref(self.der()))
    }
}

/// A rustls client configuration trusting only `roots`, with the ring provider and
/// without session resumption (a resumed session reports the certificate of the session
/// it resumes, which would hide which certificate is served now).
pub fn client_config(roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// A self-signed serving pair for `localhost`.
pub fn self_signed() -> Pair {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_new_and_written_where_asked() {
        let ca = TestCa::new();
        let (a, b) = (ca.leaf(), ca.leaf());
        assert_ne!(a.der, b.der);
        let dir = std::env::temp_dir().join(format!("testkit-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = a.write_to(&dir);
        assert_eq!(std::fs::read_to_string(cert).unwrap(), a.cert_pem);
        assert_eq!(std::fs::read_to_string(key).unwrap(), a.key_pem);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            self_signed()
                .cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}
