//! runtimed's credentials for one Runtime: a random bearer token and a self-signed
//! certificate for [`crate::naming::server_name`]. The dispatcher trusts exactly that
//! certificate for the Runtime's pods, so there is no CA to run.
//!
//! Material already in the Runtime's Secret is kept while it is usable ([`ensure`]), so
//! reconciles are idempotent; it is replaced when a key is missing or unreadable, the
//! certificate names another server or does not match the key, or less than
//! 1/[`ROTATE_REMAINING_DIVISOR`] of its lifetime is left.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;
use crate::naming::{TLS_CERT_KEY, TLS_KEY_KEY, TOKEN_KEY};

/// Random bytes in a token: 256 bits cannot be guessed. The token is their lowercase
/// hex, which runtimed accepts (visible ASCII, at least 32 bytes).
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Lifetime of a certificate: a year, so a rotation (which briefly fails calls to pods
/// whose mounted Secret is not updated yet) is rare, and a leaked key stops being
/// useful within a year.
pub const CERT_VALIDITY: SignedDuration = SignedDuration::from_hours(365 * 24);
/// A certificate is replaced once less than 1/this of its lifetime is left: with
/// [`CERT_VALIDITY`], about four months ahead, time enough for a controller that was
/// down for weeks to rotate before anything expires.
pub const ROTATE_REMAINING_DIVISOR: i32 = 3;
/// `notBefore` is set this far in the past, so a client whose clock runs behind accepts
/// a certificate made a moment ago.
pub const NOT_BEFORE_BACKDATE: SignedDuration = SignedDuration::from_hours(1);

/// The token and the certificate with its key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    token: String,
    certificate_pem: String,
    private_key_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token and the key are secrets: never in a log line.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Why the Secret's material is not kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// A key is missing from the Secret's data.
    #[error("data[{0}] is missing")]
    Missing(&'static str),
    /// A value is not UTF-8 text.
    #[error("data[{0}] is not text")]
    NotText(&'static str),
    /// The token is not one the controller makes.
    #[error("data[{TOKEN_KEY}] is not {} lowercase hex characters", 2 * TOKEN_RANDOM_BYTES)]
    Token,
    /// The certificate cannot be read.
    #[error("data[{TLS_CERT_KEY}] cannot be read: {0}")]
    Certificate(String),
    /// The key cannot be read, or is not the certificate's.
    #[error("data[{TLS_KEY_KEY}] is not the certificate's private key: {0}")]
    Key(String),
    /// The certificate is for other names.
    #[error("the certificate is for {found:?}, not {wanted:?}")]
    WrongName {
        /// DNS names in the certificate.
        found: Vec<String>,
        /// The name it must hold.
        wanted: String,
    },
    /// The certificate expires soon, or has expired.
    #[error(
        "the certificate expires at {not_after}: less than 1/{ROTATE_REMAINING_DIVISOR} of its lifetime is left"
    )]
    Expiring {
        /// Its `notAfter`.
        not_after: Timestamp,
    },
}

/// Where [`ensure`]'s credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The Secret's own material, kept.
    Kept,
    /// New material: there was no Secret.
    Created,
    /// New material replacing the Secret's, for this reason.
    Replaced(Unusable),
}

/// The Secret's credentials when they are usable at `now` for `server_name`, new ones
/// otherwise, and which of the three it was.
pub fn ensure(
    existing: Option<&Secret>,
    server_name: &str,
    now: Timestamp,
) -> Result<(Credentials, Origin), Error> {
    let origin = match existing.map(|s| Credentials::from_secret(s, server_name, now)) {
        Some(Ok(credentials)) => return Ok((credentials, Origin::Kept)),
        Some(Err(why)) => Origin::Replaced(why),
        None => Origin::Created,
    };
    Ok((Credentials::generate(server_name, now)?, origin))
}

/// The current time in whole seconds: what the API server and X.509 store.
pub fn now_in_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

impl Credentials {
    /// New material: a random token, and a P-256 key with a self-signed certificate for
    /// `server_name` valid from `now` - [`NOT_BEFORE_BACKDATE`] for [`CERT_VALIDITY`].
    pub fn generate(server_name: &str, now: Timestamp) -> Result<Self, Error> {
        let failed = |what: &str, e: &dyn fmt::Display| Error::Credentials(format!("{what}: {e}"));
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(|e| failed("reading the OS random generator", &e))?;
        let token = random.iter().map(|b| format!("{b:02x}")).collect();

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| failed("generating a key", &e))?;
        let mut params = CertificateParams::new(vec![server_name.to_owned()])
            .map_err(|e| failed("the certificate's name", &e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, server_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = x509_time(now.checked_sub(NOT_BEFORE_BACKDATE))?;
        params.not_after = x509_time(now.checked_add(CERT_VALIDITY))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("signing the certificate", &e))?;
        Ok(Self {
            token,
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }

    /// The Secret's material, if it is usable at `now` for `server_name`.
    pub fn from_secret(
        secret: &Secret,
        server_name: &str,
        now: Timestamp,
    ) -> Result<Self, Unusable> {
        let text = |key: &'static str| -> Result<String, Unusable> {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or(Unusable::Missing(key))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| Unusable::NotText(key))
        };
        let token = text(TOKEN_KEY)?;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if token.len() != 2 * TOKEN_RANDOM_BYTES || !token.chars().all(hex) {
            return Err(Unusable::Token);
        }
        let certificate_pem = text(TLS_CERT_KEY)?;
        let private_key_pem = text(TLS_KEY_KEY)?;
        check_certificate(&certificate_pem, &private_key_pem, server_name, now)?;
        Ok(Self {
            token,
            certificate_pem,
            private_key_pem,
        })
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn private_key_pem(&self) -> &str {
        &self.private_key_pem
    }
}

fn check_certificate(
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
    now: Timestamp,
) -> Result<(), Unusable> {
    let unreadable = |e: &dyn fmt::Display| Unusable::Certificate(e.to_string());
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| unreadable(&e))?;
    if pem.label != "CERTIFICATE" {
        return Err(Unusable::Certificate(format!(
            "a {} PEM block, not a CERTIFICATE",
            pem.label
        )));
    }
    let cert = pem.parse_x509().map_err(|e| unreadable(&e))?;
    let found: Vec<String> = match cert
        .subject_alternative_name()
        .map_err(|e| unreadable(&e))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    if found != [server_name] {
        return Err(Unusable::WrongName {
            found,
            wanted: server_name.to_owned(),
        });
    }
    let key = KeyPair::from_pem(key_pem).map_err(|e| Unusable::Key(e.to_string()))?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(Unusable::Key(
            "it does not match the certificate's public key".to_owned(),
        ));
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let lifetime = not_after.saturating_sub(not_before);
    let remaining = not_after.saturating_sub(now.as_second());
    if remaining.saturating_mul(i64::from(ROTATE_REMAINING_DIVISOR)) < lifetime || remaining <= 0 {
        return Err(Unusable::Expiring {
            not_after: Timestamp::from_second(not_after).unwrap_or(Timestamp::UNIX_EPOCH),
        });
    }
    Ok(())
}

fn x509_time(
    t: Result<Timestamp, k8s_openapi::jiff::Error>,
) -> Result<time::OffsetDateTime, Error> {
    let out_of_range = |e: &dyn fmt::Display| {
        Error::Credentials(format!("a certificate time is out of range: {e}"))
    };
    let t = t.map_err(|e| out_of_range(&e))?;
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| out_of_range(&e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    const NAME: &str = "python.team-a.runtimed.kruntimes.io";

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn secret_of(c: &Credentials) -> Secret {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        Secret {
            data: Some(BTreeMap::from([
                (TOKEN_KEY.to_owned(), b(c.token())),
                (TLS_CERT_KEY.to_owned(), b(c.certificate_pem())),
                (TLS_KEY_KEY.to_owned(), b(c.private_key_pem())),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_token_is_32_random_bytes_in_hex() {
        let a = Credentials::generate(NAME, t0()).unwrap();
        let b = Credentials::generate(NAME, t0()).unwrap();
        assert_eq!(a.token().len(), 64);
        assert!(
            a.token()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a.token(), b.token(), "two tokens from the OS generator");
        assert_ne!(a.private_key_pem(), b.private_key_pem());
    }

    #[test]
    fn the_certificate_is_trusted_for_the_server_name_by_a_client_pinning_it() {
        let creds = Credentials::generate(NAME, t0()).unwrap();
        let der = CertificateDer::from_pem_slice(creds.certificate_pem().as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let at = |t: Timestamp| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.as_second() as u64))
        };
        let verify = |name: &str, t: Timestamp| {
            verifier.verify_server_cert(
                &der,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                at(t),
            )
        };
        verify(NAME, t0()).unwrap();
        assert!(verify("other.team-a.runtimed.kruntimes.io", t0()).is_err());
        let second = SignedDuration::from_secs(1);
        verify(NAME, t0() + CERT_VALIDITY - second).unwrap();
        assert!(verify(NAME, t0() + CERT_VALIDITY + second).is_err());
        verify(NAME, t0() - NOT_BEFORE_BACKDATE + second).unwrap();
        assert!(verify(NAME, t0() - NOT_BEFORE_BACKDATE - second).is_err());
    }

    #[test]
    fn usable_material_is_kept() {
        let creds = Credentials::generate(NAME, t0()).unwrap();
        let (got, origin) = ensure(Some(&secret_of(&creds)), NAME, t0()).unwrap();
        assert_eq!(origin, Origin::Kept);
        assert_eq!(got, creds);
    }

    #[test]
    fn no_secret_means_new_material() {
        let (got, origin) = ensure(None, NAME, t0()).unwrap();
        assert_eq!(origin, Origin::Created);
        Credentials::from_secret(&secret_of(&got), NAME, t0()).unwrap();
    }

    #[test]
    fn rotation_starts_when_a_third_of_the_lifetime_is_left() {
        let creds = Credentials::generate(NAME, t0()).unwrap();
        let secret = secret_of(&creds);
        // Lifetime is CERT_VALIDITY plus the backdate; a third of it is left at:
        let lifetime = CERT_VALIDITY + NOT_BEFORE_BACKDATE;
        let not_after = t0() + CERT_VALIDITY;
        let boundary = not_after - lifetime / ROTATE_REMAINING_DIVISOR;
        let (_, origin) = ensure(Some(&secret), NAME, boundary).unwrap();
        assert_eq!(origin, Origin::Kept, "exactly a third left: kept");
        let late = boundary + SignedDuration::from_secs(1);
        let (rotated, origin) = ensure(Some(&secret), NAME, late).unwrap();
        assert!(matches!(
            origin,
            Origin::Replaced(Unusable::Expiring { .. })
        ));
        assert_ne!(rotated, creds);
        let expired = not_after + SignedDuration::from_secs(1);
        assert!(matches!(
            Credentials::from_secret(&secret, NAME, expired),
            Err(Unusable::Expiring { .. })
        ));
    }

    #[test]
    fn a_certificate_for_another_runtime_is_replaced() {
        let creds = Credentials::generate("java.team-a.runtimed.kruntimes.io", t0()).unwrap();
        let err = Credentials::from_secret(&secret_of(&creds), NAME, t0()).unwrap_err();
        assert_eq!(
            err,
            Unusable::WrongName {
                found: vec!["java.team-a.runtimed.kruntimes.io".into()],
                wanted: NAME.into()
            }
        );
    }

    #[test]
    fn broken_or_mismatched_material_is_replaced_with_the_reason() {
        let creds = Credentials::generate(NAME, t0()).unwrap();
        let other = Credentials::generate(NAME, t0()).unwrap();
        let check = |edit: &dyn Fn(&mut BTreeMap<String, ByteString>)| {
            let mut s = secret_of(&creds);
            edit(s.data.as_mut().unwrap());
            Credentials::from_secret(&s, NAME, t0()).unwrap_err()
        };
        let put = |k: &str, v: &[u8]| {
            let (k, v) = (k.to_owned(), ByteString(v.to_vec()));
            move |d: &mut BTreeMap<String, ByteString>| {
                d.insert(k.clone(), v.clone());
            }
        };
        assert_eq!(
            check(&|d| drop(d.remove(TOKEN_KEY))),
            Unusable::Missing(TOKEN_KEY)
        );
        assert_eq!(check(&put(TOKEN_KEY, b"short")), Unusable::Token);
        assert_eq!(
            check(&put(TOKEN_KEY, &[b'A'; 64])),
            Unusable::Token,
            "uppercase"
        );
        assert_eq!(
            check(&put(TLS_CERT_KEY, &[0xff, 0xfe])),
            Unusable::NotText(TLS_CERT_KEY)
        );
        assert!(matches!(
            check(&put(TLS_CERT_KEY, b"not pem")),
            Unusable::Certificate(_)
        ));
        let key_block = creds.private_key_pem().as_bytes().to_vec();
        assert!(matches!(
            check(&put(TLS_CERT_KEY, &key_block)),
            Unusable::Certificate(_)
        ));
        let other_key = other.private_key_pem().as_bytes().to_vec();
        assert!(matches!(
            check(&put(TLS_KEY_KEY, &other_key)),
            Unusable::Key(_)
        ));
        assert!(matches!(
            check(&put(TLS_KEY_KEY, b"garbage")),
            Unusable::Key(_)
        ));
        assert!(
            check(&|d| drop(d.remove(TLS_KEY_KEY)))
                .to_string()
                .contains("data[tls.key] is missing")
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let creds = Credentials::generate(NAME, t0()).unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains(creds.token()));
        assert!(!shown.contains("PRIVATE KEY"));
    }
}
