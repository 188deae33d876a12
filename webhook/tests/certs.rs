//! Self-managed certificates: the planner with times at the boundaries and the served
//! chain checked against the bundle by rustls' WebPKI verifier; the reconciler against a
//! mocked API server (the exact requests, in order); the written files served by the real
//! server over TLS to a client that trusts only the bundle.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use k8s_openapi::ByteString;
use kruntimes_pss::Level;
use kruntimes_testkit::apiserver::{self, ApiServerVerifier, status};
use kruntimes_webhook::admission::Handlers;
use kruntimes_webhook::certs::{
    Action, CA_CERT_KEY, CA_KEY_KEY, CA_RENEW_BEFORE, CA_VALIDITY, Corruption, MAX_BUNDLE_CAS,
    MAX_LABEL_NAME_LEN, MAX_SECRET_NAME_LEN, NOT_BEFORE_BACKDATE, NameError, NamespacedName,
    RESYNC_INTERVAL, RETRY_BACKOFF_MAX, Reconciler, SERVING_RENEW_BEFORE, SERVING_VALIDITY,
    SecretContents, SelfManagedConfig, ServingReason, TLS_CERT_KEY, TLS_KEY_KEY, backoff,
    ca_bundle_patch, plan, wait_after_success,
};
use kruntimes_webhook::inject::InjectConfig;
use kruntimes_webhook::server::{ReadinessGate, ServeConfig, serve};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use time::OffsetDateTime;

const NAMESPACE: &str = "kruntimes-system";
const SECRET: &str = "kruntimes-webhook-certs";
const SERVER_NAME: &str = "kruntimes-webhook.kruntimes-system.svc";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn service() -> NamespacedName {
    NamespacedName {
        namespace: NAMESPACE.to_owned(),
        name: "kruntimes-webhook".to_owned(),
    }
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn one_cert(pem: &[u8]) -> CertificateDer<'static> {
    let all = certs(pem);
    assert_eq!(all.len(), 1);
    all.into_iter().next().unwrap()
}

/// (notBefore, notAfter) in Unix seconds.
fn validity(der: &CertificateDer<'_>) -> (i64, i64) {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    (
        x509.validity().not_before.timestamp(),
        x509.validity().not_after.timestamp(),
    )
}

fn not_after(der: &CertificateDer<'_>) -> i64 {
    validity(der).1
}

/// What a TLS client does with the served leaf: chain to `roots`, validity at `now`,
/// serverAuth, the API server's name for the Service.
fn verify(
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
fn served_chain_verifies(contents: &SecretContents, now: i64) -> Result<(), String> {
    verify(
        &one_cert(&contents.tls_crt),
        &certs(&contents.ca_bundle),
        now,
    )
}

fn created(now: i64) -> SecretContents {
    let p = plan(at(now), None, &service()).unwrap();
    assert_eq!(p.action, Action::Create);
    p.contents
}

/// Plans at `now` and checks that planning the result again gives `Keep`.
fn step(now: i64, contents: &SecretContents) -> (Action, SecretContents) {
    let p = plan(at(now), Some(contents), &service()).unwrap();
    let again = plan(at(now), Some(&p.contents), &service()).unwrap();
    assert_eq!(again.action, Action::Keep, "planning {:?} again", p.action);
    assert_eq!(again.contents, p.contents);
    (p.action, p.contents)
}

#[test]
fn create_makes_a_p256_ca_and_a_serving_certificate_for_the_service_names() {
    let contents = created(T0);
    let ca = one_cert(&contents.ca_crt);
    assert_eq!(certs(&contents.ca_bundle), vec![ca.clone()]);
    let (_, x509) = x509_parser::parse_x509_certificate(ca.as_ref()).unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap().value.clone();
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    // id-ecPublicKey with prime256v1.
    let spki = &x509.public_key().algorithm;
    assert_eq!(spki.algorithm.to_id_string(), "1.2.840.10045.2.1");
    assert_eq!(
        spki.parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap()
            .to_id_string(),
        "1.2.840.10045.3.1.7"
    );
    assert_eq!(
        validity(&ca),
        (
            T0 - NOT_BEFORE_BACKDATE.whole_seconds(),
            T0 + CA_VALIDITY.whole_seconds()
        )
    );

    let leaf = one_cert(&contents.tls_crt);
    assert_eq!(
        validity(&leaf),
        (
            T0 - NOT_BEFORE_BACKDATE.whole_seconds(),
            T0 + SERVING_VALIDITY.whole_seconds()
        )
    );
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let mut names: Vec<String> = x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "DNSName(kruntimes-webhook)",
            "DNSName(kruntimes-webhook.kruntimes-system)",
            "DNSName(kruntimes-webhook.kruntimes-system.svc)",
            "DNSName(kruntimes-webhook.kruntimes-system.svc.cluster.local)",
        ]
    );
    assert!(!x509.is_ca());
    served_chain_verifies(&contents, T0).unwrap();
    // The check can fail: another name, or a CA that is not the bundle's.
    let mut store = rustls::RootCertStore::empty();
    store.add(ca).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    assert!(
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("other.kruntimes-system.svc").unwrap(),
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(T0 as u64)),
            )
            .is_err()
    );
    let foreign = created(T0);
    assert!(verify(&leaf, &certs(&foreign.ca_bundle), T0).is_err());

    assert_eq!(step(T0, &contents).0, Action::Keep);
}

#[test]
fn the_serving_certificate_is_renewed_exactly_at_the_threshold_and_not_one_second_before() {
    let contents = created(T0);
    let threshold = not_after(&one_cert(&contents.tls_crt)) - SERVING_RENEW_BEFORE.whole_seconds();

    let (action, kept) = step(threshold - 1, &contents);
    assert_eq!(action, Action::Keep);
    assert_eq!(kept, contents);

    let (action, renewed) = step(threshold, &contents);
    assert!(
        matches!(
            action,
            Action::IssueServing(ServingReason::RenewalDue { .. })
        ),
        "{action:?}"
    );
    assert_eq!(renewed.ca_crt, contents.ca_crt);
    assert_eq!(renewed.ca_key, contents.ca_key);
    assert_eq!(renewed.ca_bundle, contents.ca_bundle);
    assert_ne!(renewed.tls_crt, contents.tls_crt);
    assert_ne!(renewed.tls_key, contents.tls_key);
    served_chain_verifies(&renewed, threshold).unwrap();
    assert_eq!(
        not_after(&one_cert(&renewed.tls_crt)),
        threshold + SERVING_VALIDITY.whole_seconds()
    );
}

/// The contents at `now` with a serving certificate issued just now (so only the CA's
/// state decides the next plan).
fn with_fresh_serving(now: i64, contents: &SecretContents) -> SecretContents {
    let mut stale = contents.clone();
    stale.tls_crt = b"expired on purpose".to_vec();
    let (action, fresh) = step(now, &stale);
    assert!(matches!(action, Action::IssueServing(_)), "{action:?}");
    fresh
}

#[test]
fn the_ca_is_rotated_exactly_at_the_threshold_and_the_old_ca_stays_in_the_bundle() {
    let original = created(T0);
    let old_ca = one_cert(&original.ca_crt);
    let threshold = not_after(&old_ca) - CA_RENEW_BEFORE.whole_seconds();

    let before = with_fresh_serving(threshold - 1, &original);
    assert_eq!(step(threshold - 1, &before).0, Action::Keep);

    let (action, rotated) = step(threshold, &before);
    assert_eq!(action, Action::RotateCa { expired: false });
    let new_ca = one_cert(&rotated.ca_crt);
    assert_ne!(new_ca, old_ca);
    assert_eq!(
        certs(&rotated.ca_bundle),
        vec![new_ca.clone(), old_ca.clone()]
    );
    assert_ne!(rotated.ca_key, original.ca_key);
    // The serving certificate is re-issued by the old CA, which every caBundle trusts
    // already; the new CA signs only from the next renewal on.
    let leaf = one_cert(&rotated.tls_crt);
    verify(&leaf, std::slice::from_ref(&old_ca), threshold).unwrap();
    assert!(verify(&leaf, std::slice::from_ref(&new_ca), threshold).is_err());
    served_chain_verifies(&rotated, threshold).unwrap();

    let renewal = not_after(&leaf) - SERVING_RENEW_BEFORE.whole_seconds();
    assert_eq!(step(renewal - 1, &rotated).0, Action::Keep);
    let (action, renewed) = step(renewal, &rotated);
    assert!(matches!(
        action,
        Action::IssueServing(ServingReason::RenewalDue { .. })
    ));
    verify(
        &one_cert(&renewed.tls_crt),
        std::slice::from_ref(&new_ca),
        renewal,
    )
    .unwrap();
    assert_eq!(renewed.ca_bundle, rotated.ca_bundle);

    // The old CA stays until it expires, and leaves one second after.
    let old_expiry = not_after(&old_ca);
    let late = with_fresh_serving(old_expiry, &renewed);
    assert_eq!(certs(&late.ca_bundle), vec![new_ca.clone(), old_ca.clone()]);
    assert_eq!(step(old_expiry, &late).0, Action::Keep);
    let (action, pruned) = step(old_expiry + 1, &late);
    assert_eq!(action, Action::UpdateBundle);
    assert_eq!(certs(&pruned.ca_bundle), vec![new_ca]);
    assert_eq!(pruned.tls_crt, late.tls_crt);
    served_chain_verifies(&pruned, old_expiry + 1).unwrap();
}

#[test]
fn an_expired_ca_is_replaced_and_signs_the_new_serving_certificate() {
    let original = created(T0);
    let expiry = not_after(&one_cert(&original.ca_crt));
    let (action, replaced) = step(expiry + 1, &original);
    assert_eq!(action, Action::RotateCa { expired: true });
    let new_ca = one_cert(&replaced.ca_crt);
    assert_eq!(certs(&replaced.ca_bundle), vec![new_ca.clone()]);
    verify(&one_cert(&replaced.tls_crt), &[new_ca], expiry + 1).unwrap();
}

/// Two years in twelve-hour steps, as the loop would run: at every step the served
/// certificate verifies against the bundle published one step earlier (a new CA is in
/// every caBundle before anything it signed is served) and against the new bundle (no CA
/// leaves while a certificate it signed is served).
#[test]
fn over_two_years_every_served_certificate_is_trusted_before_and_after_each_change() {
    let mut contents = created(T0);
    let mut rotations = 0;
    let mut renewals = 0;
    let mut prunes = 0;
    let mut now = T0;
    while now < T0 + 2 * 365 * 86_400 {
        now += 12 * 3_600;
        let (action, next) = step(now, &contents);
        match &action {
            Action::Keep => assert_eq!(next, contents),
            Action::RotateCa { expired: false } => rotations += 1,
            Action::IssueServing(ServingReason::RenewalDue { .. }) => renewals += 1,
            Action::UpdateBundle => prunes += 1,
            other => panic!("unexpected {other:?} at {now}"),
        }
        let leaf = one_cert(&next.tls_crt);
        verify(&leaf, &certs(&contents.ca_bundle), now).unwrap_or_else(|e| {
            panic!("{action:?} at {now}: not trusted by the previous bundle: {e}")
        });
        verify(&leaf, &certs(&next.ca_bundle), now)
            .unwrap_or_else(|e| panic!("{action:?} at {now}: not trusted by the new bundle: {e}"));
        // The certificate served before the change stays trusted by the new bundle while
        // it is valid (another replica may still serve it).
        let previous_leaf = one_cert(&contents.tls_crt);
        if now <= not_after(&previous_leaf) {
            verify(&previous_leaf, &certs(&next.ca_bundle), now).unwrap_or_else(|e| {
                panic!("{action:?} at {now}: the previous certificate lost trust: {e}")
            });
        }
        assert!(certs(&next.ca_bundle).len() <= 2);
        contents = next;
    }
    // 365 days with rotation at 122 days left: rotations at days 243, 486 and 729; CA1
    // and CA2 expire (days 365 and 608) and leave the bundle.
    assert_eq!(rotations, 3);
    assert_eq!(prunes, 2);
    // A renewal every 112 hours (7 days - 56 hours), about 150 in two years.
    assert!(renewals > 140, "{renewals}");
}

#[test]
fn an_unusable_ca_is_recreated_with_the_reason_and_valid_old_cas_kept() {
    let good = created(T0);
    let other = created(T0);
    let old_ca = one_cert(&good.ca_crt);
    let cases: Vec<(SecretContents, Corruption, bool)> = vec![
        (
            SecretContents {
                ca_key: Vec::new(),
                ..good.clone()
            },
            Corruption::Missing { key: CA_KEY_KEY },
            true,
        ),
        (
            SecretContents {
                ca_crt: Vec::new(),
                ..good.clone()
            },
            Corruption::Missing { key: CA_CERT_KEY },
            true,
        ),
        (
            SecretContents {
                ca_key: other.ca_key.clone(),
                ..good.clone()
            },
            Corruption::KeyMismatch,
            true,
        ),
        (
            SecretContents {
                ca_crt: good.tls_crt.clone(),
                ca_key: good.tls_key.clone(),
                ..good.clone()
            },
            Corruption::NotCa,
            true,
        ),
        (
            SecretContents {
                ca_key: b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
                ca_bundle: b"garbage".to_vec(),
                ..good.clone()
            },
            Corruption::Unreadable {
                key: CA_KEY_KEY,
                reason: String::new(),
            },
            // ca.crt still reads, so the old CA is carried over from it.
            true,
        ),
    ];
    for (corrupt, expected, carries_old) in cases {
        let p = plan(at(T0 + 60), Some(&corrupt), &service()).unwrap();
        match (&p.action, &expected) {
            (
                Action::Recreate(Corruption::Unreadable { key, reason }),
                Corruption::Unreadable { key: want, .. },
            ) => {
                assert_eq!(key, want);
                assert!(!reason.is_empty());
            }
            (Action::Recreate(c), _) => assert_eq!(c, &expected),
            (other, _) => panic!("{expected:?}: {other:?}"),
        }
        assert!(!p.action.to_string().is_empty());
        let new_ca = one_cert(&p.contents.ca_crt);
        assert_ne!(new_ca, old_ca);
        let bundle = certs(&p.contents.ca_bundle);
        assert_eq!(bundle[0], new_ca);
        assert_eq!(bundle.contains(&old_ca), carries_old, "{expected:?}");
        verify(&one_cert(&p.contents.tls_crt), &[new_ca], T0 + 60).unwrap();
        assert_eq!(
            plan(at(T0 + 60), Some(&p.contents), &service())
                .unwrap()
                .action,
            Action::Keep
        );
    }
    // Nothing readable at all: a fresh start with only the new CA.
    let p = plan(at(T0), Some(&SecretContents::default()), &service()).unwrap();
    assert_eq!(
        p.action,
        Action::Recreate(Corruption::Missing { key: CA_CERT_KEY })
    );
    assert_eq!(certs(&p.contents.ca_bundle).len(), 1);
}

#[test]
fn a_bad_serving_certificate_is_reissued_by_the_same_ca_with_the_reason() {
    let good = created(T0);
    let foreign = created(T0);
    let now = T0 + 60;
    let check = |contents: SecretContents, expect: &dyn Fn(&ServingReason) -> bool| {
        let (action, fixed) = step(now, &contents);
        match &action {
            Action::IssueServing(reason) => assert!(expect(reason), "{reason:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fixed.ca_crt, good.ca_crt);
        assert_eq!(fixed.ca_bundle, good.ca_bundle);
        served_chain_verifies(&fixed, now).unwrap();
    };
    check(
        SecretContents {
            tls_key: foreign.tls_key.clone(),
            ..good.clone()
        },
        &|r| *r == ServingReason::KeyMismatch,
    );
    check(
        SecretContents {
            tls_crt: foreign.tls_crt.clone(),
            tls_key: foreign.tls_key.clone(),
            ..good.clone()
        },
        &|r| matches!(r, ServingReason::NotTrusted(_)),
    );
    check(
        SecretContents {
            tls_crt: Vec::new(),
            ..good.clone()
        },
        &|r| matches!(r, ServingReason::Unreadable { key, .. } if *key == TLS_CERT_KEY),
    );
    check(
        SecretContents {
            tls_key: b"nope".to_vec(),
            ..good.clone()
        },
        &|r| matches!(r, ServingReason::Unreadable { key, .. } if *key == TLS_KEY_KEY),
    );
    // The Service was renamed: the old certificate's names no longer fit.
    let renamed = NamespacedName {
        namespace: NAMESPACE.to_owned(),
        name: "webhook".to_owned(),
    };
    let p = plan(at(now), Some(&good), &renamed).unwrap();
    assert!(
        matches!(&p.action, Action::IssueServing(ServingReason::NamesChanged { expected, .. }) if expected.contains(&"webhook.kruntimes-system.svc".to_owned())),
        "{:?}",
        p.action
    );
}

#[test]
fn the_bundle_keeps_at_most_max_bundle_cas_and_drops_the_one_expiring_first() {
    let current = created(T0 + 10 * 86_400);
    // Older CAs created a day apart: the first expires first.
    let olds: Vec<CertificateDer<'static>> = (0..MAX_BUNDLE_CAS as i64)
        .map(|day| one_cert(&created(T0 + day * 86_400).ca_crt))
        .collect();
    let pem_of = |ders: &[CertificateDer<'static>]| -> Vec<u8> {
        ders.iter()
            .map(|d| {
                pem::encode_config(
                    &pem::Pem::new("CERTIFICATE", d.to_vec()),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect::<String>()
            .into_bytes()
    };
    let current_ca = one_cert(&current.ca_crt);
    let now = T0 + 11 * 86_400;

    // At the limit: the current CA and MAX_BUNDLE_CAS - 1 others, newest first.
    let mut at_limit: Vec<_> = vec![current_ca.clone()];
    at_limit.extend(olds[1..].iter().rev().cloned());
    assert_eq!(at_limit.len(), MAX_BUNDLE_CAS);
    let contents = SecretContents {
        ca_bundle: pem_of(&at_limit),
        ..current.clone()
    };
    let p = plan(at(now), Some(&contents), &service()).unwrap();
    assert_eq!(p.action, Action::Keep);
    assert_eq!(certs(&p.contents.ca_bundle), at_limit);

    // One over: the CA expiring first is dropped.
    let mut over = at_limit.clone();
    over.push(olds[0].clone());
    let contents = SecretContents {
        ca_bundle: pem_of(&over),
        ..current.clone()
    };
    let p = plan(at(now), Some(&contents), &service()).unwrap();
    assert_eq!(p.action, Action::UpdateBundle);
    assert_eq!(certs(&p.contents.ca_bundle), at_limit);
}

#[test]
fn names_at_the_kubernetes_limits_pass_and_one_over_fails() {
    let label = "a".repeat(MAX_LABEL_NAME_LEN);
    let long_label = "a".repeat(MAX_LABEL_NAME_LEN + 1);
    // A subdomain of exactly 253 characters: three 63-character labels and a 61-character
    // one, joined by dots.
    let subdomain = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(subdomain.len(), MAX_SECRET_NAME_LEN);
    assert!(NamespacedName::parse_secret(&format!("{label}/{subdomain}")).is_ok());
    assert!(matches!(
        NamespacedName::parse_secret(&format!("{label}/{subdomain}b")),
        Err(NameError::TooLong {
            what: "Secret name",
            len: 254,
            max: 253,
            ..
        })
    ));
    assert!(matches!(
        NamespacedName::parse_secret(&format!("{long_label}/x")),
        Err(NameError::TooLong {
            what: "namespace",
            len: 64,
            ..
        })
    ));
    assert!(NamespacedName::parse_service(&format!("{label}/{label}")).is_ok());
    assert!(matches!(
        NamespacedName::parse_service(&format!("ns/{long_label}")),
        Err(NameError::TooLong {
            what: "Service name",
            ..
        })
    ));
    for bad in ["nonamespace", "a/b/c", "/name", "ns/"] {
        assert!(
            NamespacedName::parse_secret(bad).is_err(),
            "{bad} should be refused"
        );
    }
    let err = NamespacedName::parse_service("ns/Web_Hook").unwrap_err();
    assert!(err.to_string().contains("\"Web_Hook\""), "{err}");
    assert!(NamespacedName::parse_service("ns/a.b").is_err());
    assert!(NamespacedName::parse_secret("ns/a.b").is_ok());
    assert_eq!(
        NamespacedName::parse_secret("kruntimes-system/certs").unwrap(),
        NamespacedName {
            namespace: "kruntimes-system".to_owned(),
            name: "certs".to_owned()
        }
    );
}

#[test]
fn the_patch_sets_only_the_differing_ca_bundles_each_guarded_by_its_name() {
    let bundle = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_vec();
    let hooks = vec![
        ("a.kruntimes.io".to_owned(), Some(bundle.clone())),
        ("b.kruntimes.io".to_owned(), None),
        ("c.kruntimes.io".to_owned(), Some(b"old".to_vec())),
    ];
    let patch = ca_bundle_patch(&hooks, &bundle).unwrap().unwrap();
    let encoded = serde_json::to_value(ByteString(bundle.clone())).unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "test", "path": "/webhooks/1/name", "value": "b.kruntimes.io"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": encoded},
            {"op": "test", "path": "/webhooks/2/name", "value": "c.kruntimes.io"},
            {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": encoded},
        ])
    );
    // Applied to a configuration, it sets the bundle and fails if the list moved.
    let mut config = json!({"webhooks": [
        {"name": "a.kruntimes.io", "clientConfig": {"caBundle": encoded}},
        {"name": "b.kruntimes.io", "clientConfig": {}},
        {"name": "c.kruntimes.io", "clientConfig": {"caBundle": "b2xk"}},
    ]});
    let mut moved = config.clone();
    moved["webhooks"].as_array_mut().unwrap().swap(1, 2);
    json_patch::patch(&mut config, &patch).unwrap();
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(hook["clientConfig"]["caBundle"], encoded);
    }
    assert!(json_patch::patch(&mut moved, &patch).is_err());

    let all_set: Vec<_> = hooks
        .iter()
        .map(|(name, _)| (name.clone(), Some(bundle.clone())))
        .collect();
    assert!(ca_bundle_patch(&all_set, &bundle).unwrap().is_none());
}

#[test]
fn waits_double_up_to_the_cap_and_successes_wait_until_due() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(6), Duration::from_secs(32));
    assert_eq!(backoff(7), RETRY_BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX), RETRY_BACKOFF_MAX);
    assert_eq!(
        wait_after_success(at(T0), at(T0 + 10)),
        Duration::from_secs(10)
    );
    assert_eq!(
        wait_after_success(at(T0), at(T0 - 10)),
        Duration::from_secs(1)
    );
    assert_eq!(wait_after_success(at(T0), at(T0 + 86_400)), RESYNC_INTERVAL);
}

// ---- the cluster part, against a mocked API server ----

type ApiHandle = ApiServerVerifier;

struct Cluster {
    reconciler: Reconciler,
    api: ApiHandle,
    dir: tempfile::TempDir,
}

fn cluster() -> Cluster {
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

const SECRET_PATH: &str = "/api/v1/namespaces/kruntimes-system/secrets";
const VWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn secret_object(contents: &SecretContents, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "resourceVersion": resource_version},
        "type": "kubernetes.io/tls",
        "data": serde_json::to_value(contents.to_data()).unwrap(),
    })
}

fn contents_of(secret: &Value) -> SecretContents {
    let data: std::collections::BTreeMap<String, ByteString> =
        serde_json::from_value(secret["data"].clone()).unwrap();
    SecretContents::from_data(&data)
}

fn b64(bytes: &[u8]) -> Value {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap()
}

fn configuration(kind: &str, name: &str, hooks: &[(&str, Option<&[u8]>)]) -> Value {
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

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "9"}, "items": items})
}

/// Expects the LIST of one configuration kind, by the label selector.
async fn expect_list(api: &mut ApiHandle, path: &str, kind: &str, items: Vec<Value>) {
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
async fn expect_validating_patched(
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

async fn expect_patch(
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
async fn no_more_requests(reconciler: Reconciler, api: ApiHandle) {
    drop(reconciler);
    api.no_more_requests().await;
}

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
    assert_eq!(
        std::fs::read(c_dir.join("tls.crt")).unwrap(),
        contents.tls_crt
    );
    assert_eq!(
        std::fs::read(c_dir.join("tls.key")).unwrap(),
        contents.tls_key
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(c_dir.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // No temporary file is left next to them.
    let mut names: Vec<_> = std::fs::read_dir(&c_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["tls.crt", "tls.key"]);
    no_more_requests(reconciler, api).await;
    drop(dir);
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
    let answer = stored.clone();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            api.expect(
                Method::GET,
                &format!("{SECRET_PATH}/{SECRET}"),
                200,
                secret_object(&answer, "41"),
            )
            .await;
            expect_list(
                &mut api,
                VWC_PATH,
                "ValidatingWebhookConfiguration",
                vec![configuration(
                    "ValidatingWebhookConfiguration",
                    "kruntimes",
                    &[("validate.kruntimes.io", Some(&answer.ca_bundle))],
                )],
            )
            .await;
            expect_list(
                &mut api,
                MWC_PATH,
                "MutatingWebhookConfiguration",
                vec![configuration(
                    "MutatingWebhookConfiguration",
                    "kruntimes",
                    &[("runtime.inject.kruntimes.io", Some(&answer.ca_bundle))],
                )],
            )
            .await;
        }
        api
    });
    let first = reconciler.reconcile(at(now)).await.unwrap();
    assert_eq!(first.action, Action::Keep);
    assert!(first.patched.is_empty());
    assert!(first.files_written, "a new pod has no files yet");
    // A second round finds the files in place.
    let second = reconciler.reconcile(at(now + 60)).await.unwrap();
    assert_eq!(second.action, Action::Keep);
    assert!(!second.files_written);
    let api = server.await.unwrap();
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

// ---- the written files served by the real server ----

async fn admin_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// A TLS handshake with a client that trusts only `roots`, naming the Service as the API
/// server does; returns the certificate presented.
async fn handshake(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Result<CertificateDer<'static>, String> {
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
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

#[tokio::test]
async fn the_loop_makes_the_server_ready_and_a_client_trusting_only_the_bundle_connects() {
    let Cluster {
        reconciler,
        mut api,
        dir,
    } = cluster();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let handlers = Handlers::standalone(InjectConfig::default(), Level::Baseline);
    let config = ServeConfig::new(
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        handlers,
    )
    .with_reload_interval(Duration::from_millis(50))
    .with_gate(ReadinessGate {
        name: "self-managed certificates",
        ready: ready_rx,
    });
    let running = serve(
        config,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let (code, body) = admin_status(running.admin_addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.contains("waiting for self-managed certificates"),
        "{body}"
    );

    let loop_task = tokio::spawn(kruntimes_webhook::certs::run(reconciler, ready_tx));
    // The API server of a first start, with no configuration carrying the label yet.
    let created = {
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
        expect_list(&mut api, VWC_PATH, "ValidatingWebhookConfiguration", vec![]).await;
        expect_list(&mut api, MWC_PATH, "MutatingWebhookConfiguration", vec![]).await;
        contents_of(&created.body)
    };
    let mut ready = false;
    for _ in 0..200 {
        if admin_status(running.admin_addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "/readyz never turned 200");

    let bundle = certs(&created.ca_bundle);
    let presented = handshake(running.addr, &bundle).await.unwrap();
    assert_eq!(presented, one_cert(&created.tls_crt));
    // A client trusting another CA refuses the same server.
    let other = certs(
        &plan(OffsetDateTime::now_utc(), None, &service())
            .unwrap()
            .contents
            .ca_bundle,
    );
    let refused = handshake(running.addr, &other).await.unwrap_err();
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("invalid peer certificate"),
        "{refused}"
    );

    loop_task.abort();
    tokio::time::timeout(
        Duration::from_secs(30),
        running.shutdown(Duration::from_secs(5)),
    )
    .await
    .expect("shutdown within 30 s")
    .unwrap();
    drop(api);
}

#[test]
fn self_managed_mode_needs_the_secret_and_the_service_flags() {
    use clap::Parser as _;
    use kruntimes_webhook::certs::CertMode;
    use kruntimes_webhook::server::Args;
    let base = [
        "kruntimes-webhook",
        "--tls-cert-file=a",
        "--tls-private-key-file=b",
    ];
    let args = Args::try_parse_from(base).unwrap();
    assert_eq!(args.certs.cert_mode, CertMode::Files);
    assert_eq!(
        args.certs.ca_bundle_selector,
        "kruntimes.io/ca-bundle=self-managed"
    );

    let error = Args::try_parse_from(base.iter().chain(&["--cert-mode=self-managed"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("--self-managed-secret"), "{error}");
    let error = Args::try_parse_from(base.iter().chain(&[
        "--cert-mode=self-managed",
        "--self-managed-secret=kruntimes-system/certs",
        "--self-managed-service=kruntimes-system/Bad_Name",
    ]))
    .unwrap_err()
    .to_string();
    assert!(error.contains("Service name \"Bad_Name\""), "{error}");
    let args = Args::try_parse_from(base.iter().chain(&[
        "--cert-mode=self-managed",
        "--self-managed-secret=kruntimes-system/certs",
        "--self-managed-service=kruntimes-system/kruntimes-webhook",
        "--ca-bundle-selector=app=x",
    ]))
    .unwrap();
    assert_eq!(args.certs.cert_mode, CertMode::SelfManaged);
    assert_eq!(args.certs.self_managed_secret.unwrap().name, "certs");
    assert_eq!(args.certs.ca_bundle_selector, "app=x");
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
