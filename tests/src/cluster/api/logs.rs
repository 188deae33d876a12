//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log as the node wrote
//! it (`<pod dir>/logs/<container>.log`, through [`PodRunner::log_file`]), whole or
//! followed. Query parameters, as the apiserver takes them:
//!
//! - `container`: required when the Pod has more than one container (init containers
//!   count), else `400` naming the choices, as the apiserver answers;
//! - `follow`: stream what is appended until the container has terminated or the Pod is
//!   deleted (or replaced by one with another uid);
//! - `tailLines`: only the last N lines (applied before following);
//! - `limitBytes`: at most N bytes in all;
//! - `sinceTime` / `sinceSeconds`: checked (RFC 3339 / a number) and otherwise
//!   ignored: the node's log file has no timestamps, so the whole log is served (a
//!   superset of what a kubelet would send);
//! - `timestamps`: ignored for the same reason (lines come without the timestamp);
//! - `previous=true`: `400`, the node never restarts a container.
//!
//! Authorized like every request: `get` on `pods/log` in the Pod's namespace (see
//! `rbac.rs`).
//!
//! [`PodRunner::log_file`]: crate::cluster::contract::PodRunner::log_file

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::Server;
use super::error::{ApiError, Subject};
use super::http::Request;
use super::store::ObjectKey;

/// How often a followed log file and its Pod are looked at. A kubelet reacts to file
/// changes at once (inotify); polling at this period keeps a line's delay well under
/// the 100 ms a `krt run --wait` reader is promised, at a negligible cost.
pub const LOG_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Bytes read from the log file at most per read (and sent per message).
const READ_BYTES: usize = 64 * 1024;

/// Messages buffered towards a slow client before the follower waits for it.
const STREAM_BUFFER: usize = 16;

/// The parameters of a log request.
#[derive(Debug, Default)]
struct LogQuery {
    container: Option<String>,
    follow: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
}

impl LogQuery {
    fn parse(raw: Option<&str>) -> Result<LogQuery, ApiError> {
        let mut q = LogQuery::default();
        let number = |key: &str, value: &str| {
            value.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("{key}: {value:?} is not a non-negative integer"))
            })
        };
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let truthy = value == "true" || value == "1";
            match key.as_ref() {
                "container" if !value.is_empty() => q.container = Some(value.into_owned()),
                "follow" => q.follow = truthy,
                "tailLines" => q.tail_lines = Some(number("tailLines", &value)?),
                "limitBytes" => q.limit_bytes = Some(number("limitBytes", &value)?),
                "sinceSeconds" => {
                    number("sinceSeconds", &value)?;
                }
                "sinceTime" => {
                    value.parse::<k8s_openapi::jiff::Timestamp>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "sinceTime: {value:?} is not an RFC 3339 time"
                        ))
                    })?;
                }
                "previous" if truthy => {
                    return Err(ApiError::bad_request(
                        "previous: the test cluster's node never restarts a container, so there is no previous log",
                    ));
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Answers a `pods/log` request.
pub(crate) fn serve(
    server: &Arc<Server>,
    request: &Request,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    let query = LogQuery::parse(raw_query)?;
    let namespace = request.target.namespace.clone().unwrap_or_default();
    let name = request.target.name.clone().unwrap_or_default();
    let key = ObjectKey::new("", "pods", &namespace, &name);
    let pod = server.store.get(&key).ok_or_else(|| {
        ApiError::not_found(Subject {
            group: "",
            resource: "pods",
            name: &name,
        })
    })?;
    let container = choose_container(&pod, &name, query.container.as_deref())?;
    let node = server
        .node
        .as_ref()
        .ok_or_else(not_running(&container, &name))?;
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone())
        .map_err(|e| ApiError::internal(format!("pod {name}: {e}")))?;
    let path = node
        .log_file(&typed, &container)
        .filter(|p| p.exists())
        .ok_or_else(not_running(&container, &name))?;
    let mut file = std::fs::File::open(&path)
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?;
    let start = match query.tail_lines {
        Some(lines) => tail_start(&mut file, lines)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?,
        None => 0,
    };
    let budget = query.limit_bytes.unwrap_or(u64::MAX);
    let text =
        |body: Body| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    if !query.follow {
        let data = read_range(&path, start, budget)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?;
        return Ok(text(Body::from(data)));
    }
    let uid = super::meta::meta_str(&pod, "uid").unwrap_or("").to_owned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER);
    let follow = Follow {
        server: server.clone(),
        key,
        uid,
        container,
        path,
        position: start,
        budget,
    };
    tokio::spawn(follow.run(tx));
    Ok(text(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

fn not_running(container: &str, pod: &str) -> impl FnOnce() -> ApiError {
    let message = format!(
        "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
    );
    move || ApiError::bad_request(message)
}

/// The container whose log is asked for: the one named, or the Pod's only one.
fn choose_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<String> = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match asked {
        Some(asked) if names.iter().any(|n| n == asked) => Ok(asked.to_owned()),
        Some(asked) => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The offset where the last `lines` lines of the file start (a last line without a
/// newline counts as a line, as the kubelet counts it).
fn tail_start(file: &mut std::fs::File, lines: u64) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut data)?;
    // A final newline ends the last line; it does not start another.
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(usize::try_from(lines - 1).unwrap_or(usize::MAX))
        .map_or(0, |(i, _)| i + 1);
    Ok(start as u64)
}

/// Up to `budget` bytes of the file from `start`.
fn read_range(path: &Path, start: u64, budget: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    file.take(budget).read_to_end(&mut data)?;
    Ok(data)
}

/// One followed log.
struct Follow {
    server: Arc<Server>,
    key: ObjectKey,
    uid: String,
    container: String,
    path: PathBuf,
    position: u64,
    budget: u64,
}

impl Follow {
    /// Sends what the file gets until the container ends, the Pod goes, the budget is
    /// spent or the client leaves.
    async fn run(mut self, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
        let mut ticker = tokio::time::interval(LOG_POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Looked at before reading: a container that ended has written everything,
            // so what the read below finds is its last output.
            let ended = self.container_ended();
            loop {
                let data = match read_range(&self.path, self.position, READ_BYTES as u64) {
                    Ok(data) => data,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if data.is_empty() {
                    break;
                }
                let take = data
                    .len()
                    .min(usize::try_from(self.budget).unwrap_or(usize::MAX));
                self.position += take as u64;
                self.budget -= take as u64;
                let mut data = data;
                data.truncate(take);
                if tx.send(Ok(Bytes::from(data))).await.is_err() || self.budget == 0 {
                    return;
                }
            }
            if ended || tx.is_closed() {
                return;
            }
        }
    }

    /// Whether the container has terminated or its Pod is gone.
    fn container_ended(&self) -> bool {
        let Some(pod) = self.server.store.get(&self.key) else {
            return true;
        };
        if super::meta::meta_str(&pod, "uid") != Some(self.uid.as_str()) {
            return true;
        }
        ["/status/initContainerStatuses", "/status/containerStatuses"]
            .iter()
            .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter(|s| s.get("name").and_then(Value::as_str) == Some(self.container.as_str()))
            .any(|s| s.pointer("/state/terminated").is_some())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{LogQuery, choose_container, tail_start};

    #[test]
    fn the_container_is_required_when_there_are_several() {
        let pod = json!({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        let err = choose_container(&pod, "p", None).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(choose_container(&pod, "p", Some("init")).unwrap(), "init");
        let err = choose_container(&pod, "p", Some("c")).unwrap_err();
        assert_eq!(err.message, "container c is not valid for pod p");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&single, "p", None).unwrap(), "only");
    }

    #[test]
    fn parameters_are_checked() {
        assert!(LogQuery::parse(Some("previous=true")).is_err());
        assert!(LogQuery::parse(Some("tailLines=x")).is_err());
        assert!(LogQuery::parse(Some("sinceTime=yesterday")).is_err());
        let q = LogQuery::parse(Some(
            "container=c&follow=true&tailLines=3&sinceTime=2026-01-02T03:04:05Z&timestamps=true&previous=false",
        ))
        .unwrap();
        assert_eq!(q.container.as_deref(), Some("c"));
        assert!(q.follow);
        assert_eq!(q.tail_lines, Some(3));
        assert!(LogQuery::parse(Some("sinceTime=2026-01-02T03:04:05.5%2B01:00")).is_ok());
    }

    #[test]
    fn tail_lines_counts_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert_eq!(tail_start(&mut file, 1).unwrap(), 8);
        assert_eq!(tail_start(&mut file, 2).unwrap(), 4);
        assert_eq!(tail_start(&mut file, 3).unwrap(), 0);
        assert_eq!(tail_start(&mut file, 10).unwrap(), 0);
        assert_eq!(tail_start(&mut file, 0).unwrap(), 14);
        std::fs::write(&path, "one\ntwo").unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert_eq!(tail_start(&mut file, 1).unwrap(), 4);
    }
}
