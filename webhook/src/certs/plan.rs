//! The pure part: what the Secret should hold at a given time ([`plan`]) and the
//! caBundle patch ([`ca_bundle_patch`]). Time is passed in; nothing is read or written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;

use super::{
    CA_BUNDLE_KEY, CA_CERT_KEY, CA_KEY_KEY, CA_RENEW_BEFORE, CA_VALIDITY, MAX_BUNDLE_CAS,
    NOT_BEFORE_BACKDATE, NamespacedName, SERVING_RENEW_BEFORE, SERVING_VALIDITY, TLS_CERT_KEY,
    TLS_KEY_KEY,
};

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
