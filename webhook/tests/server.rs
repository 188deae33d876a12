//! The server for real: TLS on loopback with rcgen certificates, a rustls client that
//! trusts only the test CA, body limits, broken bodies, certificate rotation, HTTP/2
//! through ALPN, and the decision deadline with a Runtime lookup that does not return.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kruntimes_pss::Level;
use kruntimes_testkit::certs::TestCa;
use kruntimes_testkit::{fixtures, http};
use kruntimes_webhook::admission::{DeadlinePolicy, Handlers, Lookup, MAX_REVIEW_BYTES, Runtimes};
use kruntimes_webhook::inject::InjectConfig;
use kruntimes_webhook::server::{Running, ServeConfig, serve};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

struct Server {
    running: Running,
    _dir: tempfile::TempDir,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    client: tokio_rustls::TlsConnector,
    client_config: Arc<rustls::ClientConfig>,
}

/// Drains the server; a hang becomes a failure instead of a stuck test.
async fn stop(s: Server) {
    tokio::time::timeout(
        Duration::from_secs(30),
        s.running.shutdown(Duration::from_secs(5)),
    )
    .await
    .expect("shutdown within 30 s")
    .unwrap();
}

async fn server(ca: &TestCa) -> Server {
    server_with(ca, None, DeadlinePolicy::Deny).await
}

/// A server on `handlers` (standalone ones when `None`).
async fn server_with(ca: &TestCa, handlers: Option<Handlers>, policy: DeadlinePolicy) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = ca.leaf().write_to(dir.path());
    let handlers =
        handlers.unwrap_or_else(|| Handlers::standalone(InjectConfig::default(), Level::Baseline));
    let config = ServeConfig::new(&cert_file, &key_file, handlers)
        .with_reload_interval(Duration::from_millis(50))
        .with_deadline_exceeded_policy(policy);
    let https = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let running = serve(config, https, admin).await.unwrap();
    let client = ca.client_config();
    let client_config = Arc::new(client);
    Server {
        running,
        _dir: dir,
        cert_file,
        key_file,
        client: tokio_rustls::TlsConnector::from(client_config.clone()),
        client_config,
    }
}

/// One HTTPS POST on a fresh connection (so every request is a new handshake).
/// Returns the status, the body, and the certificate the server presented.
async fn post(
    s: &Server,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>, CertificateDer<'static>), String> {
    let tcp = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = s
        .client
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body, peer))
}

/// A valid review padded with trailing whitespace to exactly `len` bytes.
fn padded_review(len: usize) -> Vec<u8> {
    fixtures::padded("run-create.json", len)
}

#[tokio::test]
async fn a_review_round_trips_over_tls() {
    let ca = TestCa::new();
    let s = server(&ca).await;
    let (status, body, _) = post(
        &s,
        "/validate",
        fixtures::bytes("workflow-create-invalid.json"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        review["response"]["uid"],
        "4b4c6a2e-0c1f-4f6e-9f3b-000000000001"
    );
    assert_eq!(review["response"]["allowed"], false);
    let (status, body, _) = post(&s, "/mutate", fixtures::bytes("pod-create-runtime.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["patchType"], "JSONPatch");

    assert_eq!(http::get(s.running.admin_addr, "/livez").await.0, 200);
    assert_eq!(http::get(s.running.admin_addr, "/readyz").await.0, 200);
    let (status, metrics) = http::get(s.running.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "kruntimes_webhook_reviews_total{endpoint=\"validate\",kind=\"Workflow\",operation=\"CREATE\",decision=\"denied\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("kruntimes_webhook_review_duration_seconds_count 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kruntimes_webhook_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kruntimes_webhook_tls_certificate_expiry_seconds "))
        .unwrap_or_else(|| panic!("no expiry gauge: {metrics}"))
        .parse()
        .unwrap();
    assert!(
        expiry > 365 * 86_400,
        "rcgen's default notAfter is far away: {expiry}"
    );
    stop(s).await;
}

#[tokio::test]
async fn bodies_above_7_mib_get_413_and_just_under_get_200() {
    let ca = TestCa::new();
    let s = server(&ca).await;
    let (status, body, _) = post(&s, "/validate", padded_review(MAX_REVIEW_BYTES))
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body, _) = post(&s, "/validate", padded_review(MAX_REVIEW_BYTES + 1))
        .await
        .unwrap();
    assert_eq!(status, 413);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], 413);
    stop(s).await;
}

/// A request body sent in 64 KiB frames that records whether the client got to send
/// all of it: a server that answers early and resets the stream (HTTP/2) or closes the
/// connection (HTTP/1.1) stops the client before the end.
struct TrackedBody {
    frames: std::collections::VecDeque<Bytes>,
    sent_whole: Arc<AtomicBool>,
}

impl TrackedBody {
    fn new(body: Vec<u8>) -> (TrackedBody, Arc<AtomicBool>) {
        let sent_whole = Arc::new(AtomicBool::new(false));
        let frames = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
        let tracked = TrackedBody {
            frames,
            sent_whole: sent_whole.clone(),
        };
        (tracked, sent_whole)
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = self.frames.pop_front();
        if next.is_none() {
            self.sent_whole.store(true, Ordering::SeqCst);
        }
        std::task::Poll::Ready(next.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
}

/// Posts each body in turn on ONE connection of `protocol`; for each: the status, the
/// JSON answer, and whether the whole body was sent.
async fn post_all(s: &Server, protocol: Protocol, bodies: Vec<Vec<u8>>) -> Vec<(u16, Value, bool)> {
    let alpn: &[u8] = match protocol {
        Protocol::Http1 => b"http/1.1",
        Protocol::Http2 => b"h2",
    };
    let mut config = (*s.client_config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let io = TokioIo::new(tls);
    let mut h1 = None;
    let mut h2 = None;
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            h1 = Some(sender);
        }
        Protocol::Http2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            h2 = Some(sender);
        }
    }
    let mut answers = Vec::new();
    for body in bodies {
        let (body, sent_whole) = TrackedBody::new(body);
        let request = hyper::Request::post("https://localhost/validate?timeout=10s")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = match (&mut h1, &mut h2) {
            (Some(sender), _) => sender.send_request(request).await,
            (_, Some(sender)) => sender.send_request(request).await,
            _ => unreachable!(),
        }
        .unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{protocol:?} {status}: not JSON ({e}): {bytes:?}"));
        answers.push((status, json, sent_whole.load(Ordering::SeqCst)));
    }
    answers
}

/// The apiserver talks HTTP/2: there as over HTTP/1.1, exactly the limit is decided and
/// one byte over is a 413 with the JSON error body, and so are 8 and 12 MiB bodies, read
/// to their end so that the client finishes sending (no stream reset, the connection
/// kept).
#[tokio::test]
async fn the_body_limit_is_a_json_413_on_http2_and_http1() {
    let ca = TestCa::new();
    let s = server(&ca).await;
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let bodies = vec![
            padded_review(MAX_REVIEW_BYTES),
            padded_review(MAX_REVIEW_BYTES + 1),
            padded_review(8 * 1024 * 1024),
            // Past what the client can send ahead of the server's reading (the limit
            // plus one flow-control window of 1 MiB): only a server that reads to the
            // end lets it finish.
            padded_review(12 * 1024 * 1024),
            fixtures::bytes("run-create.json"),
        ];
        let answers = post_all(&s, protocol, bodies).await;
        let (status, review, sent_whole) = &answers[0];
        assert_eq!(*status, 200, "{protocol:?}: {review}");
        assert_eq!(review["response"]["allowed"], true, "{protocol:?}");
        assert!(sent_whole, "{protocol:?}");
        for (status, error, sent_whole) in &answers[1..4] {
            assert_eq!(*status, 413, "{protocol:?}: {error}");
            assert_eq!(error["code"], 413, "{protocol:?}");
            assert_eq!(
                error["error"],
                format!(
                    "the review body is larger than the webhook's limit of {MAX_REVIEW_BYTES} bytes"
                ),
                "{protocol:?}"
            );
            assert!(
                sent_whole,
                "{protocol:?}: the client was stopped before the end of its body"
            );
        }
        // The same connection still answers.
        let (status, review, _) = &answers[4];
        assert_eq!(*status, 200, "{protocol:?}: {review}");
    }
    stop(s).await;
}

#[tokio::test]
async fn broken_reviews_get_400_with_a_json_error() {
    let ca = TestCa::new();
    let s = server(&ca).await;
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes();
    let mut no_uid: Value = serde_json::from_slice(&fixtures::bytes("run-create.json")).unwrap();
    no_uid["request"]["uid"] = Value::String(String::new());
    for body in [
        b"garbage".to_vec(),
        Vec::new(),
        deep,
        serde_json::to_vec(&no_uid).unwrap(),
    ] {
        for path in ["/validate", "/mutate"] {
            let (status, body, _) = post(&s, path, body.clone()).await.unwrap();
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
            let error: Value = serde_json::from_slice(&body).unwrap();
            assert!(error["error"].is_string());
        }
    }
    stop(s).await;
}

#[tokio::test]
async fn rotating_the_certificate_files_fails_no_request() {
    let ca = TestCa::new();
    let s = Arc::new(server(&ca).await);
    let (_, _, first) = post(&s, "/validate", fixtures::bytes("run-create.json"))
        .await
        .unwrap();

    let load = {
        let s = s.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            for _ in 0..150 {
                match post(&s, "/validate", fixtures::bytes("run-create.json")).await {
                    Ok((200, _, _)) => ok += 1,
                    Ok((status, body, _)) => {
                        failed.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };
    // Rotate twice, writing the files one after the other (not atomically), so the
    // watcher may see a new certificate with the old key in between.
    let mut last = first.clone();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let pair = ca.leaf();
        std::fs::write(&s.cert_file, pair.cert_pem).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        std::fs::write(&s.key_file, pair.key_pem).unwrap();
        last = pair.der;
    }
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "failed requests during rotation: {failed:?}"
    );
    assert_eq!(ok, 150);
    // The new pair is served once the watcher has seen it.
    let mut served = None;
    for _ in 0..50 {
        let (_, _, peer) = post(&s, "/validate", fixtures::bytes("run-create.json"))
            .await
            .unwrap();
        if peer == last {
            served = Some(peer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served.as_ref(), Some(&last));
    assert_ne!(first, last);

    // A broken pair is refused: the current one stays, the error is counted.
    std::fs::write(&s.key_file, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, peer) = post(&s, "/validate", fixtures::bytes("run-create.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(peer, last);
    let (_, metrics) = http::get(s.running.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("kruntimes_webhook_tls_reloads_total{result=\"success\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kruntimes_webhook_tls_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
    assert_eq!(http::get(s.running.admin_addr, "/readyz").await.0, 200);
}

#[tokio::test]
async fn http2_is_negotiated_with_alpn_and_answers_reviews() {
    let ca = TestCa::new();
    let s = server(&ca).await;
    let mut config = ca.client_config();
    // What the apiserver's Go client offers.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Two reviews on the one HTTP/2 connection, as concurrent streams.
    let send = |path: &'static str, body: Vec<u8>| {
        let mut sender = sender.clone();
        async move {
            let request = hyper::Request::post(format!("https://localhost{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let version = response.version();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                version,
                status,
                serde_json::from_slice::<Value>(&body).unwrap(),
            )
        }
    };
    let (validate, mutate) = tokio::join!(
        send(
            "/validate?timeout=10s",
            fixtures::bytes("workflow-create-invalid.json")
        ),
        send(
            "/mutate?timeout=10s",
            fixtures::bytes("pod-create-runtime.json")
        ),
    );
    let (version, status, review) = validate;
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(
        review["response"]["uid"],
        "4b4c6a2e-0c1f-4f6e-9f3b-000000000001"
    );
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 422);
    let (version, status, review) = mutate;
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    stop(s).await;
}

/// A Runtime lookup that does not return until released (at most 60 s, so a broken
/// test cannot hang forever): stands for a cache or API that stalls.
#[derive(Default)]
struct Stalled {
    released: AtomicBool,
    calls: AtomicUsize,
}

impl Runtimes for Stalled {
    fn lookup(&self, _namespace: &str, _name: &str) -> Lookup {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        while !self.released.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Lookup::NotFound
    }
}

async fn deadline_case(policy: DeadlinePolicy) -> (Value, String) {
    let ca = TestCa::new();
    let stalled = Arc::new(Stalled::default());
    let handlers = Handlers::standalone(InjectConfig::default(), Level::Baseline)
        .with_runtimes(stalled.clone());
    let s = server_with(&ca, Some(handlers), policy).await;
    let (status, body, _) = post(
        &s,
        "/validate?timeout=1s",
        fixtures::bytes("run-create.json"),
    )
    .await
    .unwrap();
    // The answer came while the lookup was still blocked: the deadline decided it.
    assert_eq!(stalled.calls.load(Ordering::SeqCst), 1);
    assert!(!stalled.released.load(Ordering::SeqCst));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let review: Value = serde_json::from_slice(&body).unwrap();
    let (_, metrics) = http::get(s.running.admin_addr, "/metrics").await;
    stalled.released.store(true, Ordering::SeqCst);
    stop(s).await;
    assert_eq!(
        review["response"]["uid"], "4b4c6a2e-0c1f-4f6e-9f3b-000000000004",
        "{review}"
    );
    (review["response"].clone(), metrics)
}

#[tokio::test]
async fn a_review_past_its_deadline_is_denied_by_default() {
    let (response, metrics) = deadline_case(DeadlinePolicy::Deny).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 504);
    assert_eq!(response["status"]["reason"], "Timeout");
    let message = response["status"]["message"].as_str().unwrap();
    // ?timeout=1s: 80% of it.
    assert!(message.contains("within its 800 ms deadline"), "{message}");
    assert!(
        metrics.contains(
            "kruntimes_webhook_deadline_exceeded_total{endpoint=\"validate\",action=\"deny\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kruntimes_webhook_reviews_total{endpoint=\"validate\",kind=\"Run\",operation=\"CREATE\",decision=\"denied\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_review_past_its_deadline_can_be_allowed_with_a_warning() {
    let (response, metrics) = deadline_case(DeadlinePolicy::Allow).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(warning.contains("allowed unchecked"), "{warning}");
    assert!(
        metrics.contains(
            "kruntimes_webhook_deadline_exceeded_total{endpoint=\"validate\",action=\"allow\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("action=\"deny\""), "{metrics}");
}
