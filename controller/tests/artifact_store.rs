//! The artifact deletion's S3 client against stores that misbehave, each a small HTTP
//! server on loopback that counts what it is sent: one that refuses connections, one
//! that never answers (bounded by the delete timeout), one that answers 503 (retried
//! `MAX_RETRIES` times, then transient), one that refuses a key inside its answer, and
//! one that counts the requests a Run's objects take (one `DeleteObjects` for them all).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kruntimes_api::v1alpha1::ArtifactStore;
use kruntimes_controller::artifacts::{
    Credentials, DELETE_TIMEOUT, DeleteOutcome, MAX_RETRIES, build_store, delete_objects,
};
use object_store::ObjectStore;
use serde_json::json;

fn client_for(port: u16) -> Arc<dyn ObjectStore> {
    let store: ArtifactStore = serde_json::from_value(json!({
        "endpoint": format!("http://127.0.0.1:{port}"), "bucket": "results",
    }))
    .unwrap();
    Arc::new(build_store(&store, &Credentials::new("id", "secret"), DELETE_TIMEOUT).unwrap())
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("runs/uid-1/out/{i}.txt")).collect()
}

/// What a [`CountingStore`] saw.
#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
}

/// A store that answers every request with `status` and `body` after `delay`, one
/// thread per connection, closing each connection after its answer.
struct CountingStore {
    port: u16,
    counts: Arc<Counts>,
}

impl CountingStore {
    fn start(status: &'static str, body: &'static str, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let seen = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counts = seen.clone();
                std::thread::spawn(move || answer(stream, (status, body), delay, &counts));
            }
        });
        Self { port, counts }
    }
}

fn answer(mut stream: TcpStream, (status, body): (&str, &str), delay: Duration, counts: &Counts) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    // The request's body (the DeleteObjects XML), read so that closing does not reset.
    let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut request_body = vec![0u8; length];
    if stream.read_exact(&mut request_body).is_err() {
        return;
    }
    counts.requests.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(delay);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_refusing_connections_is_transient() {
    // A port with nothing listening: connection refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = delete_objects(client_for(port), &keys(1), DELETE_TIMEOUT).await;
    let DeleteOutcome::Transient(message) = outcome else {
        panic!("transient: {outcome:?}");
    };
    assert!(
        message.starts_with("delete: ") && message.contains("Connection refused"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_never_answers_fails_at_the_delete_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = delete_objects(client_for(port), &keys(1), timeout).await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome,
        DeleteOutcome::Transient("delete 1 object(s): no answer within 0.3s".into())
    );
    assert!(elapsed >= timeout, "{elapsed:?}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_is_retried_max_retries_times_then_transient() {
    let store = CountingStore::start("503 Service Unavailable", "", Duration::ZERO);
    let outcome = delete_objects(client_for(store.port), &keys(1), DELETE_TIMEOUT).await;
    let DeleteOutcome::Transient(message) = outcome else {
        panic!("transient: {outcome:?}");
    };
    assert!(message.contains("503"), "{message}");
    assert_eq!(
        store.counts.requests.load(Ordering::SeqCst),
        1 + MAX_RETRIES
    );
}

/// An S3 `DeleteObjects` answer with no error: every key deleted (or never there;
/// object_store reads only the errors).
const ALL_DELETED: &str = r#"<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>runs/uid-1/out/0.txt</Key></Deleted></DeleteResult>"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_runs_objects_are_deleted_in_one_request() {
    let store = CountingStore::start("200 OK", ALL_DELETED, Duration::ZERO);
    // runtimed uploads 256 files per Run at most.
    let outcome = delete_objects(client_for(store.port), &keys(256), DELETE_TIMEOUT).await;
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert_eq!(store.counts.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_refused_inside_the_answer_is_access_denied() {
    const DENIED: &str = r#"<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error><Key>runs/uid-1/out/0.txt</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>"#;
    let store = CountingStore::start("200 OK", DENIED, Duration::ZERO);
    let outcome = delete_objects(client_for(store.port), &keys(2), DELETE_TIMEOUT).await;
    let DeleteOutcome::AccessDenied(message) = outcome else {
        panic!("access denied: {outcome:?}");
    };
    assert!(message.contains("runs/uid-1/out/0.txt"), "{message}");
}

#[tokio::test]
async fn a_key_that_is_not_an_object_path_is_refused_before_any_request() {
    let store = CountingStore::start("200 OK", ALL_DELETED, Duration::ZERO);
    let outcome = delete_objects(
        client_for(store.port),
        &["runs//a".to_owned()],
        DELETE_TIMEOUT,
    )
    .await;
    assert!(
        matches!(outcome, DeleteOutcome::KeyInvalid(ref m) if m.contains("runs//a")),
        "{outcome:?}"
    );
    assert_eq!(store.counts.requests.load(Ordering::SeqCst), 0);
}
