//! `watch=true`: newline-delimited `WatchEvent` JSON, from the asked `resourceVersion`
//! (replayed from the store's history; older than it kept: one `ERROR` event with a
//! 410 `Status`), or, without one, `ADDED` for every existing object first. Bookmarks
//! carry the current `resourceVersion` when asked for; `timeoutSeconds` ends the stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Server;
use super::error::ApiError;
use super::http::{Request, Target};
use super::read::present;
use super::selector::Selectors;
use super::store::{Change, EventType, Subscription};
use super::table::{self, IncludeObject};

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a watch lasts without `timeoutSeconds` (the apiserver picks 30-60 minutes).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Events buffered for a slow reader before the watch stops reading the store.
const STREAM_BUFFER: usize = 64;

struct Filter {
    target: Target,
    selectors: Selectors,
    /// Events carry one-row Tables (`kubectl get -w`), with what of the object.
    table: Option<IncludeObject>,
}

impl Filter {
    fn selects(&self, object: &Value) -> bool {
        let ns_ok = self.target.namespace.as_deref().is_none_or(|ns| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                == Some(ns)
        });
        let name_ok =
            self.target.name.as_deref().is_none_or(|n| {
                object.pointer("/metadata/name").and_then(Value::as_str) == Some(n)
            });
        ns_ok && name_ok && self.selectors.matches(object)
    }

    /// The event a watcher sees for `change`, if any: a selector turns a change into
    /// `ADDED` (starts matching) or `DELETED` (stops matching).
    fn event(&self, change: &Change) -> Option<Value> {
        let rtype = &self.target.rtype;
        if change.key.group != rtype.group || change.key.resource != rtype.plural {
            return None;
        }
        let now = self.selects(&change.object);
        let before = change.previous.as_ref().is_some_and(|p| self.selects(p));
        let kind = match (change.event, before, now) {
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(json!({"type": kind, "object": self.shape(change.object.clone())}))
    }

    /// The object as the watcher asked for it.
    fn shape(&self, object: Value) -> Value {
        let rtype = &self.target.rtype;
        let object = present(rtype, object);
        match self.table {
            Some(include) => {
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                table::table(rtype, &[object], &rv, include)
            }
            None => object,
        }
    }
}

/// Starts a watch; the body streams until the timeout, the client leaves or the server
/// stops.
pub(crate) fn serve(server: Arc<Server>, request: Request) -> Result<Body, ApiError> {
    let filter = Filter {
        target: request.target.clone(),
        selectors: request.query.selectors.clone(),
        table: request
            .wants_table()
            .then_some(request.query.include_object),
    };
    let rtype = &filter.target.rtype;
    let from = match request.query.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: {rv:?} is not a resourceVersion of this server"
            ))
        })?),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(STREAM_BUFFER);
    let mut initial = Vec::new();
    let subscription = match from {
        None => {
            let (objects, sub) = server.store.snapshot_and_subscribe(
                &rtype.group,
                &rtype.plural,
                filter.target.namespace.as_deref(),
            );
            initial = objects
                .into_iter()
                .filter(|o| filter.selects(o))
                .map(|o| json!({"type": "ADDED", "object": filter.shape(o)}))
                .collect();
            Ok(sub)
        }
        Some(from) => server
            .store
            .subscribe(from)
            .map_err(|too_old| (from, too_old.oldest)),
    };
    let timeout = request
        .query
        .timeout_seconds
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let bookmarks = request.query.bookmarks;
    server.open_watches.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _open = OpenWatch(server.clone());
        let stream = async {
            match subscription {
                Err((from, oldest)) => {
                    let status = ApiError::gone(from, oldest).status();
                    send(&tx, &json!({"type": "ERROR", "object": status})).await;
                }
                Ok(sub) => follow(&filter, sub, initial, bookmarks, &tx).await,
            }
        };
        // The end of the timeout ends the stream; the client re-watches.
        let _ = tokio::time::timeout(timeout, stream).await;
    });
    Ok(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// Counts a watch as open while it lives.
struct OpenWatch(Arc<Server>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send(tx: &mpsc::Sender<Result<Bytes, std::convert::Infallible>>, event: &Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    tx.send(Ok(Bytes::from(line))).await.is_ok()
}

async fn follow(
    filter: &Filter,
    sub: Subscription,
    initial: Vec<Value>,
    bookmarks: bool,
    tx: &mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
) {
    for event in initial {
        if !send(tx, &event).await {
            return;
        }
    }
    // The last resourceVersion this watch has passed: bookmarks carry it, so that a
    // client resuming from a bookmark misses nothing still in flight.
    let mut position = sub.position;
    for change in &sub.backlog {
        position = change.resource_version;
        if let Some(event) = filter.event(change)
            && !send(tx, &event).await
        {
            return;
        }
    }
    let mut live = sub.live;
    let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(change) if change.resource_version <= position => {}
                Ok(change) => {
                    position = change.resource_version;
                    if let Some(event) = filter.event(&change) && !send(tx, &event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let status = ApiError::new(410, "Expired", "the watch fell too far behind; list again").status();
                    send(tx, &json!({"type": "ERROR", "object": status})).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                let rtype = &filter.target.rtype;
                let bookmark = json!({"type": "BOOKMARK", "object": {
                    "apiVersion": rtype.api_version(), "kind": rtype.kind,
                    "metadata": {"resourceVersion": position.to_string()},
                }});
                if !send(tx, &bookmark).await {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}
