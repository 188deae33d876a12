//! The written files served by the real server over TLS, to a client that trusts only the
//! bundle; the flags of the self-managed mode.

use kruntimes_testkit::http;

use crate::support::*;

/// A TLS handshake with a client that trusts only `roots`, naming the Service as the API
/// server does; returns the certificate presented.
async fn handshake(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Result<CertificateDer<'static>, String> {
    let config = kruntimes_testkit::certs::client_config(roots);
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
    let (code, body) = http::get(running.admin_addr, "/readyz").await;
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
        if http::get(running.admin_addr, "/readyz").await.0 == 200 {
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
