//! A mocked API server for the Runtime reconciler's tests, in the style of kube-rs's
//! controller-rs `ApiServerVerifier`: the test client talks to a tower-test
//! `mock::pair`, and the verifier takes each request in turn, checks it, and answers.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// How long the verifier waits for the next request before failing the test.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// The API server side of a mocked client.
pub(crate) struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// A mocked client and its verifier.
pub(crate) fn pair() -> (kube::Client, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        kube::Client::new(service, "default"),
        ApiServerVerifier(handle),
    )
}

/// One request as the API server saw it, waiting for its answer.
pub(crate) struct Exchange {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// The query string, decoded into pairs.
    pub(crate) query: Vec<(String, String)>,
    pub(crate) content_type: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub(crate) body: Value,
    respond: SendResponse<Response<Body>>,
}

impl ApiServerVerifier {
    /// The next request, which must be `method` on `path`.
    pub(crate) async fn next(&mut self, method: Method, path: &str) -> Exchange {
        let (request, respond) = tokio::time::timeout(REQUEST_WAIT, self.0.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!("no request within {REQUEST_WAIT:?}; expected {method} {path}")
            })
            .unwrap_or_else(|| panic!("the client is gone; expected {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&method, path),
            "unexpected request {} {}",
            parts.method,
            parts.uri
        );
        Exchange {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(decode_query).unwrap_or_default(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned()),
            body,
            respond,
        }
    }

    /// The next GET, whatever its path (for requests whose order is not fixed, such as
    /// a controller's initial lists): its path and query; it is left unanswered.
    pub(crate) async fn next_any(&mut self) -> (String, Vec<(String, String)>) {
        let (request, _respond) = tokio::time::timeout(REQUEST_WAIT, self.0.next_request())
            .await
            .expect("no request")
            .expect("the client is gone");
        assert_eq!(request.method(), Method::GET, "{}", request.uri());
        let uri = request.uri();
        (
            uri.path().to_owned(),
            uri.query().map(decode_query).unwrap_or_default(),
        )
    }

    /// Fails if any request comes before every client is dropped.
    pub(crate) async fn no_more_requests(mut self) {
        let next = tokio::time::timeout(REQUEST_WAIT, self.0.next_request())
            .await
            .expect("the client was not dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

impl Exchange {
    /// Checks that this is a server-side apply by the controller's field manager, with
    /// force, and returns the applied object.
    pub(crate) fn applied(&self) -> &Value {
        assert_eq!(self.method, Method::PATCH, "{}", self.path);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}",
            self.path
        );
        assert!(
            self.query
                .contains(&("fieldManager".into(), "kruntimes-controller".into())),
            "{}: {:?}",
            self.path,
            self.query
        );
        assert!(
            self.query.contains(&("force".into(), "true".into())),
            "{}: {:?}",
            self.path,
            self.query
        );
        &self.body
    }

    /// Answers `status` with `body`; returns what was sent.
    pub(crate) fn reply(self, status: u16, body: &Value) -> Value {
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
        self.body
    }

    /// Answers 200 with what was sent, as the API server does for an apply of an object
    /// it then stores as given; returns what was sent.
    pub(crate) fn echo(self) -> Value {
        let mut answer = self.body.clone();
        answer["metadata"]["resourceVersion"] = json!("1");
        self.reply(200, &answer)
    }

    /// Answers with a `Status` failure.
    pub(crate) fn fail(self, code: u16, reason: &str, message: &str) -> Value {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "message": message, "code": code,
        });
        self.reply(code, &status)
    }
}

fn decode_query(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
