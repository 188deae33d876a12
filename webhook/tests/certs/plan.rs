//! The planner, with times at the boundaries; the names of the flags; the caBundle patch
//! and the waits.

use crate::support::*;

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
