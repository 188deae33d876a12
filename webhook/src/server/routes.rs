//! The routes: `POST /validate` and `POST /mutate` on the HTTPS port, each review decided
//! under a deadline below the apiserver's `?timeout=`; `/livez`, `/readyz` and
//! `/metrics` on the admin port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tracing::Instrument;

use super::metrics::{DeadlineLabels, InFlight, Metrics, ReviewLabels, kind_label};
use super::tls::CertResolver;
use super::{ReadinessCheck, ReadinessGate};
use crate::admission::{
    AnswerJson, DeadlinePolicy, Endpoint, Handlers, MAX_REVIEW_BYTES, ReviewError,
    deadline_exceeded_answer, parse_review,
};

/// The apiserver's timeout when the request carries no usable `?timeout=`: the default
/// `timeoutSeconds` of admissionregistration.k8s.io/v1.
pub const DEFAULT_APISERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `?timeout=` honoured: the largest `timeoutSeconds` the apiserver accepts.
/// A bigger value is not from an apiserver and is clamped.
pub const MAX_APISERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of the apiserver's timeout the webhook spends deciding, in percent. The other
/// 20% (2 s of the default 10 s, 200 ms of a 1 s timeout) is left for encoding the
/// answer, writing it, and the network back to the apiserver, so that an answer that is
/// late is still the webhook's explicit decision and not the apiserver's timeout error.
pub const DEADLINE_PERCENT: u32 = 80;

/// Largest review body decided on the async worker that received it rather than on the
/// blocking pool (64 KiB): the decision is then a bounded pure function (decoding, the
/// rules, injection) of well under a millisecond, cheaper than the hand-off; larger
/// objects, up to the 7 MiB body limit, take the blocking pool and its deadline.
pub const INLINE_DECISION_MAX_BYTES: usize = 64 * 1024;

/// How much of a body above [`MAX_REVIEW_BYTES`] is read and thrown away before the 413
/// is sent (16 MiB). Over HTTP/2 an answer sent while the client is still sending the
/// body ends with a reset of the stream, and clients that are still uploading (curl, for
/// one) then report a stream error instead of the 413; read to its end, the request is
/// complete and the 413 with its JSON body arrives as on HTTP/1.1 (where the connection
/// then stays open). A body larger still is answered 413 without reading the rest: it
/// is not a review, and reading it would cost more than the client's error.
pub const MAX_DRAINED_BYTES: usize = 16 * 1024 * 1024;

/// The decision deadline for a request with `query` (the raw query string): 80% of its
/// `timeout` parameter (a Go duration such as `10s`, `9.5s` or `800ms`: the apiserver
/// sends the lesser of `timeoutSeconds` and what is left of its own request deadline).
/// A missing, unreadable or zero `timeout` gives 80% of [`DEFAULT_APISERVER_TIMEOUT`]
/// rather than an error: the parameter is advisory, and refusing the review would turn
/// a cosmetic problem into a failed write under `failurePolicy: Fail`.
pub fn decision_deadline(query: Option<&str>) -> Duration {
    let timeout = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|value| match kruntimes_api::duration::parse(value) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                tracing::debug!(timeout = value, "unusable ?timeout=; using the default");
                None
            }
        })
        .unwrap_or(DEFAULT_APISERVER_TIMEOUT)
        .min(MAX_APISERVER_TIMEOUT);
    timeout * DEADLINE_PERCENT / 100
}

/// What every route reads.
pub(super) struct AppState {
    pub(super) handlers: Handlers,
    pub(super) metrics: Metrics,
    pub(super) resolver: Arc<CertResolver>,
    pub(super) readiness: Option<Arc<dyn ReadinessCheck>>,
    pub(super) deadline_exceeded_policy: DeadlinePolicy,
    pub(super) gates: Vec<ReadinessGate>,
}

pub(super) fn review_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .with_state(state)
}

pub(super) fn admin_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// The `/validate` and `/mutate` routes alone, on `handlers`, without TLS or metrics
/// export, denying reviews that miss their deadline: for in-process tests
/// (`Router::oneshot`).
pub fn review_router(handlers: Handlers) -> Router {
    review_routes(Arc::new(AppState {
        handlers,
        metrics: Metrics::new(),
        resolver: Arc::new(CertResolver::default()),
        readiness: None,
        deadline_exceeded_policy: DeadlinePolicy::Deny,
        gates: Vec::new(),
    }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut missing = Vec::new();
    if !state.resolver.is_loaded() {
        missing.push("no serving certificate loaded".to_owned());
    }
    if let Some(why) = state.readiness.as_ref().and_then(|r| r.not_ready()) {
        missing.push(why);
    }
    for gate in state.gates.iter().filter(|g| !*g.ready.borrow()) {
        missing.push(format!("waiting for {}", gate.name));
    }
    if missing.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", missing.join("; ")),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(out) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn validate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    answer(state, Endpoint::Validate, query, body).await
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    answer(state, Endpoint::Mutate, query, body).await
}

fn json_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({"code": status.as_u16(), "error": message});
    (status, axum::Json(body)).into_response()
}

/// A request body that is not a review to decide.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    /// Above [`MAX_REVIEW_BYTES`]; `drained` says whether it was read to its end.
    TooLarge { drained: bool },
    /// The body could not be read (the client went away, a broken frame).
    Read(String),
    /// The client was still sending when the deadline passed.
    Deadline,
}

impl BodyError {
    fn into_response(self) -> Response {
        match self {
            BodyError::TooLarge { .. } => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the review body is larger than the webhook's limit of {MAX_REVIEW_BYTES} bytes"
                ),
            ),
            BodyError::Read(e) => json_error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ),
            BodyError::Deadline => json_error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the decision deadline".to_owned(),
            ),
        }
    }
}

/// Reads a review body of at most `limit` bytes by `deadline`. A larger body is read
/// on and discarded up to `drain` bytes more (see [`MAX_DRAINED_BYTES`]) before it is
/// refused, so that the client has finished sending when the 413 is answered.
async fn read_body(
    mut body: Body,
    limit: usize,
    drain: usize,
    deadline: Instant,
) -> Result<Bytes, BodyError> {
    let mut kept = Vec::new();
    let mut excess = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(BodyError::Deadline),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| BodyError::Read(e.to_string()))?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if excess == 0 && kept.len() + data.len() <= limit {
            kept.extend_from_slice(&data);
            continue;
        }
        if excess == 0 {
            kept = Vec::new(); // refused: the part read is not needed
            excess = data.len();
        } else {
            excess = excess.saturating_add(data.len());
        }
        if excess > drain {
            return Err(BodyError::TooLarge { drained: false });
        }
    }
    if excess > 0 {
        return Err(BodyError::TooLarge { drained: true });
    }
    Ok(Bytes::from(kept))
}

async fn answer(
    state: Arc<AppState>,
    endpoint: Endpoint,
    query: Option<String>,
    body: Body,
) -> Response {
    let deadline = decision_deadline(query.as_deref());
    // The body gets the decision's deadline from its arrival; the decision (and the
    // latency metric) start once it is read, as they always have.
    let body = read_body(
        body,
        MAX_REVIEW_BYTES,
        MAX_DRAINED_BYTES,
        Instant::now() + deadline,
    )
    .await;
    let started = Instant::now();
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    let mut labels = ReviewLabels {
        endpoint: endpoint.as_str(),
        kind: "unknown",
        operation: "unknown",
        decision: "error",
    };
    let response = decide(&state, endpoint, started, deadline, body, &mut labels).await;
    state.metrics.reviews.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn decide(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    started: Instant,
    deadline: Duration,
    body: Result<Bytes, BodyError>,
    labels: &mut ReviewLabels,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(error = ?e, "unreadable review body");
            return e.into_response();
        }
    };
    let review = match parse_review(&body) {
        Ok(r) => r,
        Err(e) => return bad_review(&e),
    };
    let body_len = body.len();
    drop(body);
    let uid = review
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .unwrap_or_default();
    if let Some(req) = &review.request {
        labels.kind = kind_label(&req.kind.kind);
        labels.operation = match req.operation {
            kube::core::admission::Operation::Create => "CREATE",
            kube::core::admission::Operation::Update => "UPDATE",
            kube::core::admission::Operation::Delete => "DELETE",
            kube::core::admission::Operation::Connect => "CONNECT",
        };
    }
    let span = tracing::info_span!(
        "review",
        uid = uid.as_str(),
        endpoint = endpoint.as_str(),
        kind = labels.kind,
        operation = labels.operation,
    );
    // A decision that reads the Runtime cache (and may compile or evaluate an input
    // schema), or that is about a large object, runs on a blocking thread so that the
    // deadline can fire whatever it does; one that comes too late is dropped. The
    // others (Pods, Runtimes, and everything in standalone mode, under
    // INLINE_DECISION_MAX_BYTES) are pure functions of a bounded input, decided right
    // here: the two thread hand-offs of the blocking pool cost more than they do.
    let inline = body_len <= INLINE_DECISION_MAX_BYTES && !state.handlers.may_block(&review);
    let outcome = if inline {
        Ok(Ok(span.in_scope(|| state.handlers.review(endpoint, review))))
    } else {
        let decision = tokio::task::spawn_blocking({
            let state = state.clone();
            let span = span.clone();
            move || span.in_scope(|| state.handlers.review(endpoint, review))
        });
        tokio::time::timeout_at((started + deadline).into(), decision)
            .instrument(span.clone())
            .await
    };
    let _enter = span.enter();
    let out = match outcome {
        Ok(Ok(Ok(out))) => out,
        Ok(Ok(Err(e))) => return bad_review(&e),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the decision task failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the webhook failed to decide".to_owned(),
            );
        }
        Err(_) => {
            let policy = state.deadline_exceeded_policy;
            state
                .metrics
                .deadline_exceeded
                .get_or_create(&DeadlineLabels {
                    endpoint: endpoint.as_str(),
                    action: policy.as_str(),
                })
                .inc();
            tracing::warn!(
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                action = policy.as_str(),
                "no decision within the deadline"
            );
            deadline_exceeded_answer(&uid, endpoint, policy, deadline)
        }
    };
    let allowed = out.response.as_ref().is_some_and(|r| r.allowed);
    labels.decision = if allowed { "allowed" } else { "denied" };
    tracing::info!(allowed, "answered");
    axum::Json(AnswerJson(&out)).into_response()
}

fn bad_review(e: &ReviewError) -> Response {
    tracing::info!(error = e.metric_label(), "bad review");
    json_error(StatusCode::BAD_REQUEST, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `len` bytes in frames of at most `frame` bytes.
    fn body(len: usize, frame: usize) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> = (0..len)
            .step_by(frame)
            .map(|start| Ok(Bytes::from(vec![b'x'; frame.min(len - start)])))
            .collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    async fn read(len: usize, limit: usize, drain: usize) -> Result<usize, BodyError> {
        let later = Instant::now() + Duration::from_secs(10);
        read_body(body(len, 1000), limit, drain, later)
            .await
            .map(|b| b.len())
    }

    #[tokio::test]
    async fn bodies_are_kept_up_to_the_limit_and_drained_up_to_the_drain_limit() {
        assert_eq!(read(0, 10_000, 5_000).await, Ok(0));
        assert_eq!(read(10_000, 10_000, 5_000).await, Ok(10_000));
        let too_large = |drained| Err(BodyError::TooLarge { drained });
        assert_eq!(read(10_001, 10_000, 5_000).await, too_large(true));
        // Read to its end at exactly the drain limit past the limit, not one byte more.
        assert_eq!(read(15_000, 10_000, 5_000).await, too_large(true));
        assert_eq!(read(15_001, 10_000, 5_000).await, too_large(false));
        // The constants themselves: the drain covers a body twice the limit.
        assert_eq!(
            read(2 * MAX_REVIEW_BYTES, MAX_REVIEW_BYTES, MAX_DRAINED_BYTES).await,
            too_large(true)
        );
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_meets_the_deadline() {
        let stalled =
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            read_body(stalled, 10, 10, soon).await,
            Err(BodyError::Deadline)
        );
        let failing = Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("reset by peer"),
        )]));
        let later = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            read_body(failing, 10, 10, later).await,
            Err(BodyError::Read(e)) if e.contains("reset by peer")
        ));
    }

    #[test]
    fn the_deadline_is_80_percent_of_the_apiserver_timeout() {
        let d = |q: Option<&str>| decision_deadline(q);
        assert_eq!(d(Some("timeout=10s")), Duration::from_secs(8));
        assert_eq!(d(Some("timeout=1s")), Duration::from_millis(800));
        assert_eq!(d(Some("a=b&timeout=9.5s")), Duration::from_millis(7600));
        assert_eq!(d(Some("timeout=500ms")), Duration::from_millis(400));
        // Absent, unreadable or zero: the default 10 s.
        for q in [
            None,
            Some(""),
            Some("timeout=soon"),
            Some("timeout=0s"),
            Some("timeout=-1s"),
        ] {
            assert_eq!(d(q), Duration::from_secs(8), "{q:?}");
        }
        // At the largest timeoutSeconds, and one over: clamped.
        assert_eq!(d(Some("timeout=30s")), Duration::from_secs(24));
        assert_eq!(d(Some("timeout=31s")), Duration::from_secs(24));
    }
}
