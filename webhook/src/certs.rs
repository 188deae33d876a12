//! Serving certificates of the webhook, in two modes (`--cert-mode`):
//!
//! - `files` (the default, and the cert-manager mode): serve `--tls-cert-file` and
//!   `--tls-private-key-file` as they are; the server reloads them when they change.
//! - `self-managed`: the webhook keeps its own CA and a short-lived serving certificate in
//!   one Secret, writes the serving pair to those two files (so the same reloader serves
//!   it), and keeps `clientConfig.caBundle` of the webhook configurations it owns (found by
//!   label) equal to its CA bundle.
//!
//! The decision is pure ([`plan`]: time passed in, nothing read or written); the cluster
//! part ([`Reconciler`]) reads and writes the Secret, the files and the configurations, and
//! [`run`] repeats it. See `docs/webhook-certificates.md` for the timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

/// Lifetime of a generated CA: a year, so rotations are rare enough to watch, and a leaked
/// `ca.key` stops being useful within a year.
pub const CA_VALIDITY: Duration = Duration::days(365);
/// A CA is replaced once it has this much validity left (a third of [`CA_VALIDITY`]). The
/// old CA stays in the bundle until it expires, so the two overlap this long, and a webhook
/// that was down for weeks still finds a valid CA when it comes back.
pub const CA_RENEW_BEFORE: Duration = Duration::days(122);
/// Lifetime of a serving certificate: a week, so a leaked `tls.key` expires soon, yet an
/// API server outage of days (renewal needs the API) does not let it lapse.
pub const SERVING_VALIDITY: Duration = Duration::days(7);
/// A serving certificate is renewed once it has this much validity left (a third of
/// [`SERVING_VALIDITY`]): two days and more to retry a failing renewal.
pub const SERVING_RENEW_BEFORE: Duration = Duration::hours(56);
/// `notBefore` is set this far in the past, so a client whose clock runs behind accepts a
/// certificate made a moment ago (client-go's self-signed certificates do the same).
pub const NOT_BEFORE_BACKDATE: Duration = Duration::hours(1);
/// At most this many CAs in `ca-bundle.crt`. Rotation needs two (current and previous); a
/// recreation from a corrupt Secret carries over the old ones still valid. More means
/// something else wrote the Secret: the current CA and those that expire last are kept.
pub const MAX_BUNDLE_CAS: usize = 8;
/// Cluster DNS domain of the longest name in the serving certificate (the API server itself
/// calls `<service>.<namespace>.svc`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How often the Secret, the files and the caBundles are checked when nothing is due
/// sooner: another replica's renewal is picked up, and a caBundle emptied by a re-applied
/// manifest (Helm upgrade, GitOps sync) restored, within a minute.
pub const RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// First wait after a failed reconcile; doubled after each further failure.
pub const RETRY_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait between retries, so an API outage is retried at least once a minute.
pub const RETRY_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Write conflicts (409) on the Secret tolerated in one reconcile before it fails (and is
/// retried with backoff): each conflict means another replica wrote the Secret, whose
/// contents the next read normally accepts as they are.
pub const MAX_WRITE_ATTEMPTS: usize = 5;
/// Label selector of the webhook configurations whose caBundle is managed.
pub const DEFAULT_CA_BUNDLE_SELECTOR: &str = "kruntimes.io/ca-bundle=self-managed";
/// Longest namespace or Service name: a DNS-1123 label (Kubernetes' own limit).
pub const MAX_LABEL_NAME_LEN: usize = 63;
/// Longest Secret name: a DNS-1123 subdomain (Kubernetes' own limit).
pub const MAX_SECRET_NAME_LEN: usize = 253;

/// Secret key of the current CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the current CA private key (PKCS#8 PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM, the leaf alone).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving private key (PKCS#8 PEM).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the CA bundle written to `caBundle` (PEM, current CA first).
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// Type of a Secret the webhook creates: `kubernetes.io/tls`, whose `tls.crt`/`tls.key`
/// the API server requires, so tools that read TLS Secrets understand it.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";

/// Where the serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    /// Serve the certificate files as they are (mounted from a Secret, e.g. cert-manager's).
    Files,
    /// Generate a CA and serving certificates, keep them in a Secret, patch caBundles.
    SelfManaged,
}

/// Flags of the certificate modes (flattened into the server's flags).
#[derive(Clone, Debug, clap::Args)]
pub struct CertArgs {
    /// Where the serving certificate comes from: `files` (the files as they are; also the
    /// cert-manager mode) or `self-managed` (own CA in a Secret, caBundle patched).
    #[arg(long, env = "KRUNTIMES_WEBHOOK_CERT_MODE", value_enum, default_value_t = CertMode::Files)]
    pub cert_mode: CertMode,
    /// The Secret holding the self-managed CA and serving certificate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_SELF_MANAGED_SECRET",
        value_name = "NAMESPACE/NAME",
        value_parser = NamespacedName::parse_secret,
        required_if_eq("cert_mode", "self-managed")
    )]
    pub self_managed_secret: Option<NamespacedName>,
    /// The Service the API server calls the webhook through: its DNS names go into the
    /// self-managed serving certificate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_SELF_MANAGED_SERVICE",
        value_name = "NAMESPACE/NAME",
        value_parser = NamespacedName::parse_service,
        required_if_eq("cert_mode", "self-managed")
    )]
    pub self_managed_service: Option<NamespacedName>,
    /// Label selector of the Validating/MutatingWebhookConfigurations whose caBundle the
    /// self-managed mode keeps up to date.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_CA_BUNDLE_SELECTOR", default_value = DEFAULT_CA_BUNDLE_SELECTOR)]
    pub ca_bundle_selector: String,
}

/// A flag value that is not a usable `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not two parts separated by one `/`.
    #[error("expected NAMESPACE/NAME, got {0:?}")]
    Shape(String),
    /// A part longer than Kubernetes allows.
    #[error("{what} {value:?} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// The part.
        value: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A part with characters Kubernetes does not allow.
    #[error(
        "{what} {value:?} is not a DNS-1123 name: lowercase letters, digits and '-'{dots}, starting and ending with a letter or digit"
    )]
    Invalid {
        /// Which part.
        what: &'static str,
        /// The part.
        value: String,
        /// `" and '.'"` for a subdomain, empty for a label.
        dots: &'static str,
    },
}

/// `NAMESPACE/NAME` of a Secret or a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacedName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn check_dns(
    what: &'static str,
    value: &str,
    max: usize,
    subdomain: bool,
) -> Result<(), NameError> {
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            len: value.len(),
            max,
        });
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    let ok = if subdomain {
        value.split('.').all(label_ok)
    } else {
        label_ok(value)
    };
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            value: value.to_owned(),
            dots: if subdomain { " and '.'" } else { "" },
        })
    }
}

impl NamespacedName {
    fn split(value: &str) -> Result<(&str, &str), NameError> {
        match value.split_once('/') {
            Some((namespace, name)) if !name.contains('/') => Ok((namespace, name)),
            _ => Err(NameError::Shape(value.to_owned())),
        }
    }

    /// Parses `NAMESPACE/NAME` of a Secret (namespace: DNS-1123 label; name: subdomain).
    pub fn parse_secret(value: &str) -> Result<Self, NameError> {
        let (namespace, name) = Self::split(value)?;
        check_dns("namespace", namespace, MAX_LABEL_NAME_LEN, false)?;
        check_dns("Secret name", name, MAX_SECRET_NAME_LEN, true)?;
        Ok(NamespacedName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `NAMESPACE/NAME` of a Service (both DNS-1123 labels).
    pub fn parse_service(value: &str) -> Result<Self, NameError> {
        let (namespace, name) = Self::split(value)?;
        check_dns("namespace", namespace, MAX_LABEL_NAME_LEN, false)?;
        check_dns("Service name", name, MAX_LABEL_NAME_LEN, false)?;
        Ok(NamespacedName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The DNS names of this Service: `<name>`, `<name>.<namespace>`,
    /// `<name>.<namespace>.svc`, `<name>.<namespace>.svc.cluster.local`.
    pub fn service_dns_names(&self) -> Vec<String> {
        let short = format!("{}.{}", self.name, self.namespace);
        vec![
            self.name.clone(),
            short.clone(),
            format!("{short}.svc"),
            format!("{short}.svc.{CLUSTER_DOMAIN}"),
        ]
    }

    /// The name the API server verifies when it calls the Service: `<name>.<namespace>.svc`.
    pub fn service_server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// The five values of the Secret, as PEM bytes; a missing key is empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretContents {
    /// `ca.crt`: the current CA, the one new serving certificates are signed with.
    pub ca_crt: Vec<u8>,
    /// `ca.key`: its private key.
    pub ca_key: Vec<u8>,
    /// `tls.crt`: the serving certificate.
    pub tls_crt: Vec<u8>,
    /// `tls.key`: its private key.
    pub tls_key: Vec<u8>,
    /// `ca-bundle.crt`: what goes into `caBundle`: the current CA, then older CAs that are
    /// still valid.
    pub ca_bundle: Vec<u8>,
}

/// Private keys stay out of logs.
impl fmt::Debug for SecretContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretContents")
            .field("ca_crt", &String::from_utf8_lossy(&self.ca_crt))
            .field("ca_key", &format_args!("<{} bytes>", self.ca_key.len()))
            .field("tls_crt", &String::from_utf8_lossy(&self.tls_crt))
            .field("tls_key", &format_args!("<{} bytes>", self.tls_key.len()))
            .field("ca_bundle", &String::from_utf8_lossy(&self.ca_bundle))
            .finish()
    }
}

impl SecretContents {
    /// Reads a Secret's `data` (missing keys become empty values).
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Self {
        let get = |key: &str| data.get(key).map(|v| v.0.clone()).unwrap_or_default();
        SecretContents {
            ca_crt: get(CA_CERT_KEY),
            ca_key: get(CA_KEY_KEY),
            tls_crt: get(TLS_CERT_KEY),
            tls_key: get(TLS_KEY_KEY),
            ca_bundle: get(CA_BUNDLE_KEY),
        }
    }

    /// The five keys as Secret `data`.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT_KEY, &self.ca_crt),
            (CA_KEY_KEY, &self.ca_key),
            (TLS_CERT_KEY, &self.tls_crt),
            (TLS_KEY_KEY, &self.tls_key),
            (CA_BUNDLE_KEY, &self.ca_bundle),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone())))
        .collect()
    }
}

/// Why the stored CA cannot be used (the Secret is then recreated).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// A key is missing or empty.
    #[error("{key} is missing or empty")]
    Missing {
        /// The Secret key.
        key: &'static str,
    },
    /// A value is not what it should be.
    #[error("{key} cannot be read: {reason}")]
    Unreadable {
        /// The Secret key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `ca.crt` is not a CA certificate.
    #[error("ca.crt is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotCa,
    /// `ca.key` does not belong to `ca.crt`.
    #[error("ca.key is not the private key of ca.crt")]
    KeyMismatch,
}

/// Why a new serving certificate is issued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServingReason {
    /// `tls.crt` or `tls.key` is missing or unreadable.
    #[error("{key} cannot be read: {reason}")]
    Unreadable {
        /// The Secret key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `tls.key` does not belong to `tls.crt`.
    #[error("tls.key is not the private key of tls.crt")]
    KeyMismatch,
    /// The certificate is for other names (the Service changed).
    #[error("its DNS names are {found:?}, expected {expected:?}")]
    NamesChanged {
        /// Names in the certificate.
        found: Vec<String>,
        /// Names of the configured Service.
        expected: Vec<String>,
    },
    /// The certificate does not verify against the bundle (expired, or signed by a CA
    /// that is not in the bundle).
    #[error("it does not verify against the CA bundle: {0}")]
    NotTrusted(String),
    /// It is within [`SERVING_RENEW_BEFORE`] of its expiry.
    #[error("it expires at {not_after} (Unix seconds), within the renewal window")]
    RenewalDue {
        /// `notAfter`, Unix seconds.
        not_after: i64,
    },
}

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Everything is in order: nothing to write.
    Keep,
    /// Only the bundle changes (an expired CA is dropped, or the current CA was missing).
    UpdateBundle,
    /// A new serving certificate from the current CA.
    IssueServing(ServingReason),
    /// A new CA, with the old one kept in the bundle until it expires. The serving
    /// certificate is re-issued by the old CA (by the new one only if the old one has
    /// expired), so a serving certificate signed by the new CA is only served at the next
    /// renewal, once the new CA has been in every caBundle for days.
    RotateCa {
        /// The old CA had already expired (nothing of it is kept).
        expired: bool,
    },
    /// No Secret yet: a new CA and serving certificate.
    Create,
    /// The stored CA is unusable: a new CA and serving certificate; old CAs that can
    /// still be read and are valid stay in the bundle.
    Recreate(Corruption),
}

impl Action {
    /// Whether the Secret must be written.
    pub fn writes_secret(&self) -> bool {
        !matches!(self, Action::Keep)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Keep => f.write_str("keep"),
            Action::UpdateBundle => f.write_str("update the CA bundle"),
            Action::IssueServing(reason) => write!(f, "issue a serving certificate: {reason}"),
            Action::RotateCa { expired: false } => f.write_str("rotate the CA: renewal due"),
            Action::RotateCa { expired: true } => f.write_str("rotate the CA: it expired"),
            Action::Create => f.write_str("create the Secret"),
            Action::Recreate(reason) => write!(f, "recreate the Secret: {reason}"),
        }
    }
}

/// The decision and the Secret contents after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What changes.
    pub action: Action,
    /// The contents to store (the current ones for [`Action::Keep`]).
    pub contents: SecretContents,
    /// When something will be due (a renewal, or an old CA leaving the bundle).
    pub next_due: OffsetDateTime,
}

/// Generating or signing failed (not expected with ECDSA P-256 and valid times).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Key pair generation.
    #[error("cannot generate a key pair: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Certificate signing.
    #[error("cannot sign the {what} certificate: {source}")]
    Signing {
        /// `CA` or `serving`.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A time outside what X.509 and the time crate can represent.
    #[error("time {0} (Unix seconds) is out of range")]
    TimeOutOfRange(i64),
    /// A certificate just generated cannot be read back.
    #[error("a generated certificate cannot be read back: {0}")]
    Unreadable(String),
}

/// What the planner needs of one certificate.
#[derive(Clone, Debug)]
struct Cert {
    der: CertificateDer<'static>,
    not_after: i64,
    is_ca: bool,
    dns_names: BTreeSet<String>,
    public_key: Vec<u8>,
}

fn parse_cert(der: CertificateDer<'static>) -> Result<Cert, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let is_ca = x509
        .basic_constraints()
        .map_err(|e| e.to_string())?
        .is_some_and(|bc| bc.value.ca);
    let dns_names = match x509.subject_alternative_name().map_err(|e| e.to_string())? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        None => BTreeSet::new(),
    };
    let not_after = x509.validity().not_after.timestamp();
    let public_key = x509.public_key().subject_public_key.data.to_vec();
    Ok(Cert {
        der: der.clone(),
        not_after,
        is_ca,
        dns_names,
        public_key,
    })
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".to_owned());
    }
    Ok(certs)
}

fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    pem_certs(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| "no CERTIFICATE block".to_owned())
}

/// PEM blocks one after the other, LF line endings, no blank line between them.
fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a Cert>) -> Vec<u8> {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs
        .into_iter()
        .map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.der.to_vec()), config))
        .collect::<String>()
        .into_bytes()
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::TimeOutOfRange(unix))
}

fn parse_ca(current: &SecretContents) -> Result<(Cert, KeyPair), Corruption> {
    if current.ca_crt.is_empty() {
        return Err(Corruption::Missing { key: CA_CERT_KEY });
    }
    if current.ca_key.is_empty() {
        return Err(Corruption::Missing { key: CA_KEY_KEY });
    }
    let unreadable = |key, reason| Corruption::Unreadable { key, reason };
    let der = first_cert(&current.ca_crt).map_err(|r| unreadable(CA_CERT_KEY, r))?;
    let cert = parse_cert(der).map_err(|r| unreadable(CA_CERT_KEY, r))?;
    if !cert.is_ca {
        return Err(Corruption::NotCa);
    }
    let key_pem = std::str::from_utf8(&current.ca_key)
        .map_err(|_| unreadable(CA_KEY_KEY, "not UTF-8 text".to_owned()))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| unreadable(CA_KEY_KEY, e.to_string()))?;
    if key.public_key_raw() != cert.public_key.as_slice() {
        return Err(Corruption::KeyMismatch);
    }
    Ok((cert, key))
}

/// The CAs of `pem` that can be read, are CAs and have not expired at `now`.
fn valid_cas(pem: &[u8], now: i64) -> Vec<Cert> {
    pem_certs(pem)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|der| parse_cert(der).ok())
        .filter(|c| c.is_ca && now <= c.not_after)
        .collect()
}

/// The bundle: `current` first, then the others, without duplicates, those expiring last
/// first, at most [`MAX_BUNDLE_CAS`] in all.
fn bundle(current: &Cert, others: Vec<Cert>) -> Vec<Cert> {
    let mut seen = BTreeSet::from([current.der.to_vec()]);
    let mut others: Vec<Cert> = others
        .into_iter()
        .filter(|c| seen.insert(c.der.to_vec()))
        .collect();
    others.sort_by_key(|c| std::cmp::Reverse(c.not_after));
    others.truncate(MAX_BUNDLE_CAS - 1);
    let mut all = vec![current.clone()];
    all.extend(others);
    all
}

fn new_ca(now: i64) -> Result<(Cert, KeyPair), CertError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::KeyGeneration)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kruntimes");
    // Each CA gets its own name, so the two CAs of a rotation are told apart in logs and
    // chain building.
    dn.push(DnType::CommonName, format!("kruntimes-webhook-ca@{now}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = datetime(now.saturating_sub(NOT_BEFORE_BACKDATE.whole_seconds()))?;
    params.not_after = datetime(now.saturating_add(CA_VALIDITY.whole_seconds()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Signing { what: "CA", source })?;
    let cert = parse_cert(cert.der().clone()).map_err(CertError::Unreadable)?;
    Ok((cert, key))
}

/// A serving certificate signed by `ca`, never outliving it: (cert, key PEM).
fn issue_serving(
    now: i64,
    ca: &Cert,
    ca_key: &KeyPair,
    service: &NamespacedName,
) -> Result<(Cert, String), CertError> {
    let signing = |source| CertError::Signing {
        what: "serving",
        source,
    };
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CertError::KeyGeneration)?;
    let mut params = CertificateParams::new(service.service_dns_names()).map_err(signing)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, service.service_server_name());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = datetime(now.saturating_sub(NOT_BEFORE_BACKDATE.whole_seconds()))?;
    params.not_after = datetime(
        now.saturating_add(SERVING_VALIDITY.whole_seconds())
            .min(ca.not_after),
    )?;
    let issuer = Issuer::from_ca_cert_der(&ca.der, ca_key).map_err(signing)?;
    let cert = params.signed_by(&key, &issuer).map_err(signing)?;
    let cert = parse_cert(cert.der().clone()).map_err(CertError::Unreadable)?;
    Ok((cert, key.serialize_pem()))
}

/// Verifies a serving certificate the way a TLS client does: chain to one of `roots`,
/// validity at `now`, `serverAuth`, and `server_name` among its names.
fn verify_serving(
    leaf: &CertificateDer<'_>,
    roots: &[Cert],
    server_name: &str,
    now: i64,
) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.der.clone()).map_err(|e| e.to_string())?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    verifier
        .verify_server_cert(leaf, &[], &name, &[], now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The stored serving certificate if it can stay, or why not.
fn check_serving(
    current: &SecretContents,
    bundle: &[Cert],
    service: &NamespacedName,
    now: i64,
) -> Result<Cert, ServingReason> {
    let unreadable = |key, reason| ServingReason::Unreadable { key, reason };
    let der = first_cert(&current.tls_crt).map_err(|r| unreadable(TLS_CERT_KEY, r))?;
    let key = PrivateKeyDer::from_pem_slice(&current.tls_key)
        .map_err(|e| unreadable(TLS_KEY_KEY, e.to_string()))?;
    rustls::sign::CertifiedKey::from_der(
        vec![der.clone()],
        key,
        &rustls::crypto::ring::default_provider(),
    )
    .map_err(|_| ServingReason::KeyMismatch)?;
    let leaf = parse_cert(der).map_err(|r| unreadable(TLS_CERT_KEY, r))?;
    let expected: BTreeSet<String> = service.service_dns_names().into_iter().collect();
    if leaf.dns_names != expected {
        return Err(ServingReason::NamesChanged {
            found: leaf.dns_names.iter().cloned().collect(),
            expected: expected.into_iter().collect(),
        });
    }
    verify_serving(&leaf.der, bundle, &service.service_server_name(), now)
        .map_err(ServingReason::NotTrusted)?;
    if now
        >= leaf
            .not_after
            .saturating_sub(SERVING_RENEW_BEFORE.whole_seconds())
    {
        return Err(ServingReason::RenewalDue {
            not_after: leaf.not_after,
        });
    }
    Ok(leaf)
}

fn assemble(
    action: Action,
    ca: &Cert,
    ca_key: &KeyPair,
    leaf: &Cert,
    leaf_key: Vec<u8>,
    bundle: &[Cert],
) -> Result<Plan, CertError> {
    // Due: the CA's renewal, the serving certificate's renewal, or an older CA's expiry
    // (one second after, when it leaves the bundle).
    let due = bundle
        .iter()
        .skip(1)
        .map(|c| c.not_after.saturating_add(1))
        .chain([
            ca.not_after.saturating_sub(CA_RENEW_BEFORE.whole_seconds()),
            leaf.not_after
                .saturating_sub(SERVING_RENEW_BEFORE.whole_seconds()),
        ])
        .min()
        .unwrap_or(ca.not_after);
    Ok(Plan {
        action,
        contents: SecretContents {
            ca_crt: encode_certs([ca]),
            ca_key: ca_key.serialize_pem().into_bytes(),
            tls_crt: encode_certs([leaf]),
            tls_key: leaf_key,
            ca_bundle: encode_certs(bundle),
        },
        next_due: datetime(due)?,
    })
}

/// A new CA and serving certificate; `carried` CAs stay in the bundle.
fn fresh(
    now: i64,
    action: Action,
    carried: Vec<Cert>,
    service: &NamespacedName,
) -> Result<Plan, CertError> {
    let (ca, ca_key) = new_ca(now)?;
    let (leaf, leaf_key) = issue_serving(now, &ca, &ca_key, service)?;
    let bundle = bundle(&ca, carried);
    assemble(action, &ca, &ca_key, &leaf, leaf_key.into_bytes(), &bundle)
}

/// Decides what the Secret should hold at `now`, given what it holds (`None`: no Secret).
///
/// - no Secret: [`Action::Create`];
/// - a CA that cannot be used: [`Action::Recreate`] with the reason;
/// - a CA within [`CA_RENEW_BEFORE`] of its expiry: [`Action::RotateCa`];
/// - a serving certificate that cannot be read, does not match its key or the Service,
///   does not verify against the bundle, or is within [`SERVING_RENEW_BEFORE`] of its
///   expiry: [`Action::IssueServing`];
/// - a bundle that is not the current CA followed by the other valid CAs:
///   [`Action::UpdateBundle`];
/// - else [`Action::Keep`].
///
/// The bundle never drops a CA before it expires, so a serving certificate signed by any
/// CA in the bundle stays trusted for its whole life. Planning the result again at the
/// same time gives [`Action::Keep`].
pub fn plan(
    now: OffsetDateTime,
    current: Option<&SecretContents>,
    service: &NamespacedName,
) -> Result<Plan, CertError> {
    let now = now.unix_timestamp();
    let Some(current) = current else {
        return fresh(now, Action::Create, Vec::new(), service);
    };
    let (ca, ca_key) = match parse_ca(current) {
        Ok(ca) => ca,
        Err(corruption) => {
            let mut carried = valid_cas(&current.ca_bundle, now);
            carried.extend(valid_cas(&current.ca_crt, now));
            return fresh(now, Action::Recreate(corruption), carried, service);
        }
    };
    let others = valid_cas(&current.ca_bundle, now);

    if now >= ca.not_after.saturating_sub(CA_RENEW_BEFORE.whole_seconds()) {
        let expired = now > ca.not_after;
        let (new_ca, new_key) = new_ca(now)?;
        let mut olds = others;
        if !expired {
            olds.push(ca.clone());
        }
        let bundle = bundle(&new_ca, olds);
        // Signed by the old CA, which every caBundle already trusts: the new CA gets a
        // whole serving lifetime to reach every caBundle before a certificate it signed
        // is served.
        let (leaf, leaf_key) = if expired {
            issue_serving(now, &new_ca, &new_key, service)?
        } else {
            issue_serving(now, &ca, &ca_key, service)?
        };
        return assemble(
            Action::RotateCa { expired },
            &new_ca,
            &new_key,
            &leaf,
            leaf_key.into_bytes(),
            &bundle,
        );
    }

    let bundle = bundle(&ca, others);
    match check_serving(current, &bundle, service, now) {
        Err(reason) => {
            let (leaf, leaf_key) = issue_serving(now, &ca, &ca_key, service)?;
            assemble(
                Action::IssueServing(reason),
                &ca,
                &ca_key,
                &leaf,
                leaf_key.into_bytes(),
                &bundle,
            )
        }
        Ok(leaf) => {
            let action = if encode_certs(&bundle) == current.ca_bundle {
                Action::Keep
            } else {
                Action::UpdateBundle
            };
            let mut plan = assemble(
                action,
                &ca,
                &ca_key,
                &leaf,
                current.tls_key.clone(),
                &bundle,
            )?;
            // Keep the stored bytes of what does not change (a key serialized again could
            // differ in encoding details and be taken for a change).
            plan.contents.ca_crt.clone_from(&current.ca_crt);
            plan.contents.ca_key.clone_from(&current.ca_key);
            plan.contents.tls_crt.clone_from(&current.tls_crt);
            Ok(plan)
        }
    }
}

/// The JSON patch that sets `caBundle` of every webhook whose value differs from `bundle`,
/// or `None` when all match. `webhooks` are (name, current caBundle) in list order.
///
/// Each change is guarded by a `test` of the webhook's name at that index: if the list
/// changed between our read and the patch, the API server refuses the patch (422) instead
/// of writing into another webhook, and the next round reads it again. No resourceVersion
/// is sent, so edits of other fields (labels, rules) by other tools do not conflict.
pub fn ca_bundle_patch(
    webhooks: &[(String, Option<Vec<u8>>)],
    bundle: &[u8],
) -> Result<Option<json_patch::Patch>, serde_json::Error> {
    let encoded = serde_json::to_value(ByteString(bundle.to_vec()))?;
    let mut ops = Vec::new();
    for (index, (name, current)) in webhooks.iter().enumerate() {
        if current.as_deref() == Some(bundle) {
            continue;
        }
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
        // `add` sets the member whether or not it exists (RFC 6902 4.1).
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}));
    }
    if ops.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::Array(ops)).map(Some)
}

/// What the cluster part works on.
#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    /// The Secret.
    pub secret: NamespacedName,
    /// The Service (names of the serving certificate).
    pub service: NamespacedName,
    /// Label selector of the webhook configurations to patch.
    pub ca_bundle_selector: String,
    /// Where the serving certificate is written (`--tls-cert-file`).
    pub cert_file: PathBuf,
    /// Where its key is written (`--tls-private-key-file`).
    pub key_file: PathBuf,
}

/// A failed step of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the Secret.
    #[error("cannot read Secret {secret}: {source}")]
    ReadSecret {
        /// The Secret.
        secret: NamespacedName,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Creating or updating the Secret.
    #[error("cannot write Secret {secret}: {source}")]
    WriteSecret {
        /// The Secret.
        secret: NamespacedName,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Every write attempt met a conflict.
    #[error("Secret {secret} changed under every one of {attempts} writes")]
    Conflicts {
        /// The Secret.
        secret: NamespacedName,
        /// Attempts made.
        attempts: usize,
    },
    /// Generating or signing.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// Writing a certificate file.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Listing webhook configurations.
    #[error("cannot list {kind}s with labels {selector:?}: {source}")]
    ListConfigurations {
        /// The kind.
        kind: &'static str,
        /// The selector.
        selector: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Patching a caBundle.
    #[error("cannot patch caBundle of {kind} {name}: {source}")]
    PatchCaBundle {
        /// The kind.
        kind: &'static str,
        /// The configuration.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Building the patch (never expected: the patch is made of strings).
    #[error("cannot build the caBundle patch: {0}")]
    BuildPatch(#[from] serde_json::Error),
}

impl ReconcileError {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::ReadSecret { .. } => "read_secret",
            ReconcileError::WriteSecret { .. } => "write_secret",
            ReconcileError::Conflicts { .. } => "conflicts",
            ReconcileError::Certificate(_) => "certificate",
            ReconcileError::WriteFile { .. } => "write_file",
            ReconcileError::ListConfigurations { .. } => "list_configurations",
            ReconcileError::PatchCaBundle { .. } => "patch_ca_bundle",
            ReconcileError::BuildPatch(_) => "build_patch",
        }
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The decision taken on the Secret (after conflicts, the last one).
    pub action: Action,
    /// Whether the certificate files were (re)written.
    pub files_written: bool,
    /// `Kind/name` of each configuration patched.
    pub patched: Vec<String>,
    /// When something is due next.
    pub next_due: OffsetDateTime,
}

/// Reads and writes the Secret, the files and the webhook configurations.
#[derive(Clone)]
pub struct Reconciler {
    client: kube::Client,
    config: SelfManagedConfig,
}

impl fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconciler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory and a
/// rename, so a reader sees the old or the new file, never a part. Unchanged content is
/// not written. Returns whether it wrote.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().map_or_else(
        || "certificate".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{file_name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    Ok(true)
}

impl Reconciler {
    /// A reconciler on `client`.
    pub fn new(client: kube::Client, config: SelfManagedConfig) -> Self {
        Reconciler { client, config }
    }

    /// One round at `now`: converge the Secret, patch the caBundles that differ, then write
    /// the files (patching first, so a new CA is trusted before anything it signed is
    /// served).
    pub async fn reconcile(&self, now: OffsetDateTime) -> Result<Outcome, ReconcileError> {
        let plan = self.converge_secret(now).await?;
        let (mut patched, validating) = self
            .patch_kind::<ValidatingWebhookConfiguration>(
                "ValidatingWebhookConfiguration",
                &plan.contents.ca_bundle,
                |c| {
                    named_bundles(
                        c.webhooks
                            .iter()
                            .flatten()
                            .map(|w| (&w.name, w.client_config.ca_bundle.as_ref())),
                    )
                },
            )
            .await?;
        let (mutating_patched, mutating) = self
            .patch_kind::<MutatingWebhookConfiguration>(
                "MutatingWebhookConfiguration",
                &plan.contents.ca_bundle,
                |c| {
                    named_bundles(
                        c.webhooks
                            .iter()
                            .flatten()
                            .map(|w| (&w.name, w.client_config.ca_bundle.as_ref())),
                    )
                },
            )
            .await?;
        patched.extend(mutating_patched);
        if validating + mutating == 0 {
            tracing::warn!(selector = %self.config.ca_bundle_selector, "no webhook configuration carries the caBundle label: the API server cannot trust this webhook until one does");
        }
        // The key first: until the certificate follows, the server sees a pair that does
        // not match, refuses it and keeps serving the old one.
        let key_written = self.write_file(&self.config.key_file, &plan.contents.tls_key, 0o600)?;
        let cert_written =
            self.write_file(&self.config.cert_file, &plan.contents.tls_crt, 0o644)?;
        Ok(Outcome {
            action: plan.action,
            files_written: key_written || cert_written,
            patched,
            next_due: plan.next_due,
        })
    }

    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<bool, ReconcileError> {
        write_atomically(path, contents, mode).map_err(|source| ReconcileError::WriteFile {
            path: path.to_owned(),
            source,
        })
    }

    async fn converge_secret(&self, now: OffsetDateTime) -> Result<Plan, ReconcileError> {
        let secret = &self.config.secret;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let existing =
                api.get_opt(&secret.name)
                    .await
                    .map_err(|source| ReconcileError::ReadSecret {
                        secret: secret.clone(),
                        source,
                    })?;
            let current = existing
                .as_ref()
                .map(|s| SecretContents::from_data(&s.data.clone().unwrap_or_default()));
            let plan = plan(now, current.as_ref(), &self.config.service)?;
            if !plan.action.writes_secret() {
                return Ok(plan);
            }
            tracing::info!(secret = %secret, action = %plan.action, "writing the certificate Secret");
            let written = match existing {
                None => api
                    .create(&PostParams::default(), &self.new_secret(&plan.contents))
                    .await
                    .map(drop),
                Some(mut stored) => {
                    // Other keys, labels and the type stay; resourceVersion makes this
                    // write fail if another replica wrote since our read.
                    let mut data = stored.data.take().unwrap_or_default();
                    data.extend(plan.contents.to_data());
                    stored.data = Some(data);
                    api.replace(&secret.name, &PostParams::default(), &stored)
                        .await
                        .map(drop)
                }
            };
            match written {
                Ok(()) => return Ok(plan),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(secret = %secret, "another replica wrote the Secret first; reading it again");
                }
                Err(source) => {
                    return Err(ReconcileError::WriteSecret {
                        secret: secret.clone(),
                        source,
                    });
                }
            }
        }
        Err(ReconcileError::Conflicts {
            secret: secret.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    fn new_secret(&self, contents: &SecretContents) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.config.secret.name.clone()),
                namespace: Some(self.config.secret.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "kruntimes-webhook".to_owned(),
                    ),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "kruntimes-webhook".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(contents.to_data()),
            ..Secret::default()
        }
    }

    /// Patches the configurations of one kind that differ: (patched, found).
    async fn patch_kind<K>(
        &self,
        kind: &'static str,
        bundle: &[u8],
        webhooks: impl Fn(&K) -> Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(Vec<String>, usize), ReconcileError>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope>
            + Clone
            + fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let selector = &self.config.ca_bundle_selector;
        let api: Api<K> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| ReconcileError::ListConfigurations {
                kind,
                selector: selector.clone(),
                source,
            })?;
        let mut patched = Vec::new();
        for config in &list.items {
            let Some(patch) = ca_bundle_patch(&webhooks(config), bundle)? else {
                continue;
            };
            let name = config.meta().name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(|source| ReconcileError::PatchCaBundle {
                    kind,
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(kind, name = %name, "caBundle patched");
            patched.push(format!("{kind}/{name}"));
        }
        Ok((patched, list.items.len()))
    }
}

/// How long to sleep after a successful round: until `next_due`, at least a second, at
/// most [`RESYNC_INTERVAL`].
pub fn wait_after_success(now: OffsetDateTime, next_due: OffsetDateTime) -> std::time::Duration {
    let seconds = u64::try_from((next_due - now).whole_seconds()).unwrap_or(0);
    std::time::Duration::from_secs(seconds.max(1)).min(RESYNC_INTERVAL)
}

/// The wait after `failures` failed rounds in a row (1 for the first): doubling from
/// [`RETRY_BACKOFF_INITIAL`] up to [`RETRY_BACKOFF_MAX`].
pub fn backoff(failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(RETRY_BACKOFF_MAX)
}

/// Reconciles forever: after a success, again when something is due or after
/// [`RESYNC_INTERVAL`]; after a failure, with [`backoff`]. `ready` turns true after the
/// first success (certificate written and caBundles patched) and stays true: a later API
/// outage does not take serving replicas out, since what they serve stays valid for days.
pub async fn run(reconciler: Reconciler, ready: tokio::sync::watch::Sender<bool>) {
    let mut failures = 0u32;
    loop {
        let now = OffsetDateTime::now_utc();
        let wait = match reconciler.reconcile(now).await {
            Ok(outcome) => {
                failures = 0;
                if outcome.action.writes_secret()
                    || outcome.files_written
                    || !outcome.patched.is_empty()
                {
                    tracing::info!(action = %outcome.action, files_written = outcome.files_written, patched = ?outcome.patched, "certificates reconciled");
                }
                if !ready.send_replace(true) {
                    tracing::info!("self-managed certificate in place: ready");
                }
                wait_after_success(now, outcome.next_due)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::warn!(error = %error, step = error.metric_label(), retry_in = ?wait, "certificate reconcile failed");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Why the self-managed mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag the mode needs is missing.
    #[error("{0} is required with --cert-mode self-managed")]
    MissingFlag(&'static str),
}

/// The running self-managed mode.
#[derive(Debug)]
pub struct SelfManaged {
    /// True once the certificate is written and the caBundles patched.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The loop; abort it to stop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts [`run`] with the in-cluster (or KUBECONFIG) client, writing to the given files.
pub async fn start_self_managed(
    client: kube::Client,
    args: &CertArgs,
    cert_file: &Path,
    key_file: &Path,
) -> Result<SelfManaged, StartError> {
    let secret = args
        .self_managed_secret
        .clone()
        .ok_or(StartError::MissingFlag("--self-managed-secret"))?;
    let service = args
        .self_managed_service
        .clone()
        .ok_or(StartError::MissingFlag("--self-managed-service"))?;
    let reconciler = Reconciler::new(
        client,
        SelfManagedConfig {
            secret,
            service,
            ca_bundle_selector: args.ca_bundle_selector.clone(),
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
        },
    );
    let (sender, ready) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(reconciler, sender));
    Ok(SelfManaged { ready, task })
}

/// Each webhook's name and current caBundle, as [`ca_bundle_patch`] compares them.
fn named_bundles<'a>(
    webhooks: impl Iterator<Item = (&'a String, Option<&'a k8s_openapi::ByteString>)>,
) -> Vec<(String, Option<Vec<u8>>)> {
    webhooks
        .map(|(name, bundle)| (name.clone(), bundle.map(|b| b.0.clone())))
        .collect()
}
