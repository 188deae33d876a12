//! How many requests each user made, by kind: what a benchmark reads to tell how many
//! API writes one Run costs the controller.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::Method;

/// One user's requests since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GETs that are not watches (get and list).
    pub reads: u64,
    /// Watches opened.
    pub watches: u64,
    /// POST, PUT, PATCH and DELETE.
    pub writes: u64,
}

/// The counts of every user, by username; and their writes by resource (plural name),
/// of the requests that got as far as naming one (a faulted request does not).
#[derive(Debug, Default)]
pub(crate) struct RequestLog(
    Mutex<BTreeMap<String, RequestCounts>>,
    Mutex<BTreeMap<(String, String), u64>>,
);

impl RequestLog {
    /// Counts one authenticated request (faulted ones too: the client made them).
    pub(crate) fn record(&self, username: &str, method: &Method, watch: bool) {
        let Ok(mut counts) = self.0.lock() else {
            return;
        };
        let entry = counts.entry(username.to_owned()).or_default();
        match *method {
            Method::GET if watch => entry.watches += 1,
            Method::GET | Method::HEAD => entry.reads += 1,
            _ => entry.writes += 1,
        }
    }

    /// Counts one write of `username` to `resource` (a plural such as `runs`).
    pub(crate) fn record_write_to(&self, username: &str, resource: &str) {
        let Ok(mut writes) = self.1.lock() else {
            return;
        };
        *writes
            .entry((username.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }

    /// `username`'s writes by resource, any subresource included.
    pub(crate) fn writes_by_resource(&self, username: &str) -> BTreeMap<String, u64> {
        let Ok(writes) = self.1.lock() else {
            return BTreeMap::new();
        };
        writes
            .iter()
            .filter(|((user, _), _)| user == username)
            .map(|((_, resource), n)| (resource.clone(), *n))
            .collect()
    }

    /// `username`'s counts (zero when it made no request).
    pub(crate) fn of(&self, username: &str) -> RequestCounts {
        self.0
            .lock()
            .ok()
            .and_then(|counts| counts.get(username).copied())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_watches_and_writes_are_counted_apart_per_user() {
        let log = RequestLog::default();
        log.record("a", &Method::GET, false);
        log.record("a", &Method::GET, true);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            log.record("a", &method, false);
        }
        log.record("b", &Method::GET, false);
        assert_eq!(
            log.of("a"),
            RequestCounts {
                reads: 1,
                watches: 1,
                writes: 4
            }
        );
        assert_eq!(log.of("b").reads, 1);
        log.record_write_to("a", "runs");
        log.record_write_to("a", "runs");
        log.record_write_to("a", "runtimes");
        assert_eq!(
            log.writes_by_resource("a"),
            BTreeMap::from([("runs".to_owned(), 2), ("runtimes".to_owned(), 1)])
        );
        assert!(log.writes_by_resource("b").is_empty());
        assert_eq!(log.of("nobody"), RequestCounts::default());
    }
}
