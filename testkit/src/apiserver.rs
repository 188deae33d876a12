//! A mocked Kubernetes API server behind a real `kube::Client`, in the style of
//! controller-rs's `ApiServerVerifier`: the client's requests arrive at an
//! [`ApiServerVerifier`] (tower-test's `mock::pair`), which checks each one against what
//! the test expects and sends the answer. No network, no cluster.
//!
//! A [`Scenario`] is a named list of the exact requests expected, in order, each with
//! its answer; [`ApiServerVerifier::run`] plays it and returns what each request carried
//! for the test to check. Components that watch (reflectors) are served by
//! [`ApiServerVerifier::serve_lists`] instead, whose requests come in any order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// The server side of the mocked client.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long [`ApiServerVerifier::expect`] waits for the next request before failing the
/// test: long enough for a loaded CI machine, short enough that a missing request fails
/// instead of hanging.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// `resourceVersion` given to an echoed object ([`Answer::Echo`]).
pub const ECHO_RESOURCE_VERSION: &str = "100";

/// A `kube::Client` whose requests go to the returned verifier (default namespace
/// `default`).
pub fn client() -> (kube::Client, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        kube::Client::new(service, "default"),
        ApiServerVerifier { handle },
    )
}

/// One request as the API server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Seen {
    /// The value of query parameter `key`, if sent.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The answer to one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status and JSON body.
    Json(u16, Value),
    /// This status and the request's own body, with `metadata.resourceVersion` set to
    /// [`ECHO_RESOURCE_VERSION`]: what the API server answers a create or an update.
    Echo(u16),
}

/// One expected request: method, path (without query) and the answer.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// What the server answers.
    pub answer: Answer,
}

/// A named sequence of the exact requests expected, in order, and their answers.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// What the scenario stands for, shown when it fails.
    pub name: String,
    /// The requests, in order.
    pub steps: Vec<Expected>,
}

impl Scenario {
    /// An empty scenario.
    pub fn new(name: impl Into<String>) -> Scenario {
        Scenario {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Expects `method path` next, answered with `answer`.
    pub fn then(mut self, method: Method, path: impl Into<String>, answer: Answer) -> Scenario {
        self.steps.push(Expected {
            method,
            path: path.into(),
            answer,
        });
        self
    }
}

/// The mocked API server.
#[derive(Debug)]
pub struct ApiServerVerifier {
    handle: Handle,
}

impl ApiServerVerifier {
    /// Takes the next request (failing the test after [`REQUEST_WAIT`]), checks its
    /// method and path, and answers `status` with `answer`; `Value::Null` as the answer
    /// echoes the request's body ([`Answer::Echo`]).
    pub async fn expect(&mut self, method: Method, path: &str, status: u16, answer: Value) -> Seen {
        let answer = if answer.is_null() {
            Answer::Echo(status)
        } else {
            Answer::Json(status, answer)
        };
        self.answer_next(&Expected {
            method,
            path: path.to_owned(),
            answer,
        })
        .await
    }

    /// Plays `scenario`: every request in order, each answered; returns what each one
    /// carried.
    pub async fn run(&mut self, scenario: &Scenario) -> Vec<Seen> {
        let mut seen = Vec::with_capacity(scenario.steps.len());
        for (i, step) in scenario.steps.iter().enumerate() {
            let request = tokio::time::timeout(REQUEST_WAIT, self.answer_next(step))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "scenario {:?}: step {i} ({} {}) not answered within {REQUEST_WAIT:?}",
                        scenario.name, step.method, step.path
                    )
                });
            seen.push(request);
        }
        seen
    }

    /// Checks that the client (every clone of it must be dropped first) sends nothing
    /// more.
    pub async fn no_more_requests(mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!(
                "unexpected extra request {} {}",
                request.method(),
                request.uri()
            );
        }
    }

    /// Serves reflectors: a GET of `path` with `?watch=true` is held open without events
    /// (an API server with no changes), any other GET of a path in `lists` gets that
    /// list; every request is recorded in `log`. Returns when the client is dropped;
    /// any other request fails the test.
    pub async fn serve_lists(mut self, lists: Vec<(String, Value)>, log: RequestLog) {
        let mut watches = Vec::new();
        while let Some((request, send)) = self.handle.next_request().await {
            let seen = read(request).await;
            log.0.lock().unwrap().push(seen.clone());
            assert_eq!(seen.method, Method::GET, "{}", seen.path);
            if seen.query_value("watch") == Some("true") {
                watches.push(send);
                continue;
            }
            let list = lists
                .iter()
                .find(|(path, _)| *path == seen.path)
                .map(|(_, list)| list.clone())
                .unwrap_or_else(|| panic!("unexpected request {} {:?}", seen.path, seen.query));
            send.send_response(json_response(200, &list));
        }
    }

    async fn answer_next(&mut self, expected: &Expected) -> Seen {
        let (method, path) = (&expected.method, &expected.path);
        let (request, respond) = tokio::time::timeout(REQUEST_WAIT, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
            .unwrap_or_else(|| panic!("client gone; expected {method} {path}"));
        let seen = read(request).await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (method, path.as_str()),
            "request {} {:?}",
            seen.path,
            seen.query
        );
        let (status, body) = match &expected.answer {
            Answer::Json(status, body) => (*status, body.clone()),
            Answer::Echo(status) => {
                let mut echo = seen.body.clone();
                echo["metadata"]["resourceVersion"] = json!(ECHO_RESOURCE_VERSION);
                (*status, echo)
            }
        };
        respond.send_response(json_response(status, &body));
        seen
    }
}

/// Every request [`ApiServerVerifier::serve_lists`] saw, shared with the test.
#[derive(Clone, Debug, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Seen>>>);

impl RequestLog {
    /// The requests so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

async fn read(request: Request<Body>) -> Seen {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let (content_type, accept) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (header("content-type"), header("accept"))
    };
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(decode_query).unwrap_or_default(),
        content_type,
        accept,
        body,
    }
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A `metav1.Status` failure, as the API server answers an error.
pub fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (test)"), "reason": reason, "code": code})
}

/// A query string as `(key, value)` pairs, percent- and `+`-decoded.
pub fn decode_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::api::PostParams;

    use super::*;

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            decode_query("labelSelector=kruntimes.io%2Fca-bundle%3Dself-managed&a=b+c&flag"),
            [
                (
                    "labelSelector".to_owned(),
                    "kruntimes.io/ca-bundle=self-managed".to_owned()
                ),
                ("a".to_owned(), "b c".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[tokio::test]
    async fn a_scenario_answers_in_order_and_returns_what_was_sent() {
        let (client, mut api) = client();
        let path = "/api/v1/namespaces/default/configmaps";
        let scenario = Scenario::new("get missing, then create")
            .then(
                Method::GET,
                format!("{path}/c"),
                Answer::Json(404, status(404, "NotFound")),
            )
            .then(Method::POST, path, Answer::Echo(201));
        let server = tokio::spawn(async move {
            let seen = api.run(&scenario).await;
            (api, seen)
        });
        let configmaps: Api<ConfigMap> = Api::default_namespaced(client);
        let missing = configmaps.get("c").await.unwrap_err();
        assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("c".to_owned());
        let created = configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        assert_eq!(
            created.metadata.resource_version.as_deref(),
            Some(ECHO_RESOURCE_VERSION)
        );
        drop(configmaps);
        let (api, seen) = server.await.unwrap();
        assert_eq!(seen[1].body["metadata"]["name"], "c");
        assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
        api.no_more_requests().await;
    }
}
