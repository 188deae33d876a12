//! TLS material of the HTTPS port: the certificate resolver (swapped atomically, so a
//! handshake never waits on a reload), reading a certificate/key pair, and the watcher
//! that reloads the files when they change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::metrics::{Metrics, ReloadLabels};

/// How often the certificate files are checked for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The serving certificate, swapped atomically on reload so a handshake never waits.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl CertResolver {
    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Reads and checks a certificate/key pair (the key must match the leaf).
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("cannot read the certificate PEM")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the certificate file");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("cannot read the private key PEM")?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .context("the private key does not match the certificate")
}

/// `notAfter` of an X.509 certificate (DER), in Unix seconds; `None` when unreadable.
pub fn not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

/// The rustls configuration of the HTTPS port: the resolver's certificate, no client
/// authentication, HTTP/2 preferred (the apiserver's client offers both).
pub(super) fn server_config(resolver: Arc<CertResolver>) -> anyhow::Result<rustls::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Polls the certificate files and swaps the served pair when they change.
pub(super) struct Watcher {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    /// The file contents last tried, so a bad pair is counted once, not every poll.
    last: Option<(Vec<u8>, Vec<u8>)>,
    /// `notAfter` of the served leaf, in Unix seconds.
    not_after: Option<i64>,
}

impl Watcher {
    pub(super) fn new(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Watcher {
            cert_file,
            key_file,
            last: None,
            not_after: None,
        }
    }

    /// Reloads the pair if the files changed, and updates the expiry gauge.
    pub(super) fn poll(&mut self, resolver: &CertResolver, metrics: &Metrics) {
        self.reload(resolver, metrics);
        if let Some(not_after) = self.not_after {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            metrics.cert_expiry.set(not_after.saturating_sub(now));
        }
    }

    fn reload(&mut self, resolver: &CertResolver, metrics: &Metrics) {
        let read = std::fs::read(&self.cert_file)
            .and_then(|c| std::fs::read(&self.key_file).map(|k| (c, k)));
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the certificate files; keeping the current pair");
                return;
            }
        };
        if self.last.as_ref() == Some(&(cert.clone(), key.clone())) {
            return;
        }
        let result = match load_pair(&cert, &key) {
            Ok(pair) => {
                self.not_after = pair.cert.first().and_then(|c| not_after(c.as_ref()));
                resolver.current.store(Some(Arc::new(pair)));
                tracing::info!("serving certificate loaded");
                "success"
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "new certificate pair rejected; keeping the current one");
                "error"
            }
        };
        metrics
            .tls_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        self.last = Some((cert, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2030-01-01T00:00:00Z and 2051-06-02T00:00:00Z, as `date -u -d ... +%s` prints them.
    const JAN_2030: i64 = 1_893_456_000;
    const JUN_2051: i64 = 2_569_276_800;

    #[test]
    fn not_after_reads_utc_and_generalized_times() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        // Before 2050 X.509 writes UTCTime, from 2050 on GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(JAN_2030));
        params.not_after = rcgen::date_time_ymd(2051, 6, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(JUN_2051));
        assert_eq!(not_after(b"\x30\x03abc"), None);
        assert_eq!(not_after(&[]), None);
    }
}
