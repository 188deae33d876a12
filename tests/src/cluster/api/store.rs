//! The object store: every object as JSON under one mutex, one monotonic
//! `resourceVersion` counter stamped on each write (as etcd's revision), and a bounded
//! history of change events that watches replay from a `resourceVersion` and then
//! follow live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

/// How many change events are kept for watches starting from an older
/// `resourceVersion`; a watch from before the oldest kept one gets `410 Gone` (as from a
/// compacted etcd). Large enough for every test's watches, small enough to bound memory.
pub const DEFAULT_HISTORY: usize = 10_000;

/// How many live events a slow watcher may fall behind before it is ended with `410`
/// (it then relists, as a real client does after a compaction): the memory a stalled
/// watch may hold is bounded, and a test's bursts fit.
pub const WATCH_LAG_LIMIT: usize = 4_096;

/// Where an object lives: group, plural, namespace (`""` for cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(group: &str, resource: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The `WatchEvent.type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, at `resource_version`.
#[derive(Clone, Debug)]
pub struct Change {
    /// The counter value of this write.
    pub resource_version: u64,
    /// What happened.
    pub event: EventType,
    /// Where.
    pub key: ObjectKey,
    /// The object after the change (before it, for a deletion, with the deletion's
    /// `resourceVersion`).
    pub object: Value,
    /// The object before the change (`None` on creation): a watch with a selector sends
    /// `DELETED` for an object that stops matching and `ADDED` for one that starts.
    pub previous: Option<Value>,
}

/// The store. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Arc<Change>>,
}

#[derive(Debug)]
struct Inner {
    revision: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
}

/// A watch's start: the changes after the asked `resourceVersion`, then live ones.
#[derive(Debug)]
pub struct Subscription {
    /// Kept changes after the start, oldest first.
    pub backlog: Vec<Arc<Change>>,
    /// Live changes from then on.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// The `resourceVersion` the subscription starts after.
    pub position: u64,
}

/// A watch asked for a `resourceVersion` older than the kept history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest `resourceVersion` a watch may start from.
    pub oldest: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(DEFAULT_HISTORY)
    }
}

impl Store {
    /// An empty store keeping `history_limit` change events.
    pub fn new(history_limit: usize) -> Store {
        let (live, _) = broadcast::channel(WATCH_LAG_LIMIT);
        Store {
            inner: Arc::new(Mutex::new(Inner {
                revision: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
            })),
            live,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written object: every
        // write is a single insert or remove.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current counter value (a list's `resourceVersion`).
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of a resource (in `namespace`, or all when `None`), in key order,
    /// with the counter value they were read at.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let objects = inner
            .objects
            .iter()
            .filter(|(k, _)| k.group == group && k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (objects, inner.revision)
    }

    /// What `read` makes of every stored object, read in place under the store's lock
    /// (no object is copied unless `read` copies it): the garbage collector's view of
    /// a store of thousands of objects, taken on every change.
    pub fn inspect<R>(&self, read: impl FnOnce(&BTreeMap<ObjectKey, Value>) -> R) -> R {
        read(&self.lock().objects)
    }

    /// Every stored key, for the garbage collector and namespace deletion.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Writes `object` under `key` if the stored one still has `expected` as its
    /// `resourceVersion` (`None`: there must be none stored). Stamps the new
    /// `resourceVersion` and returns the stored object, or the current one on a
    /// mismatch.
    pub fn put(
        &self,
        key: &ObjectKey,
        mut object: Value,
        expected: Option<&str>,
    ) -> Result<Value, Option<Value>> {
        let mut inner = self.lock();
        let current = inner.objects.get(key);
        let current_rv = current
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str);
        if current_rv != expected || current.is_some() != expected.is_some() {
            return Err(current.cloned());
        }
        inner.revision += 1;
        let revision = inner.revision;
        object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
        let event = if expected.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let previous = inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, event, key, object.clone(), previous);
        Ok(object)
    }

    /// Removes `key` if its `resourceVersion` is still `expected`; returns the removed
    /// object (stamped with the deletion's `resourceVersion`), or the current one (if
    /// any) on a mismatch.
    pub fn remove(&self, key: &ObjectKey, expected: &str) -> Result<Value, Option<Value>> {
        let mut inner = self.lock();
        let current = inner.objects.get(key);
        let current_rv = current
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str);
        if current_rv != Some(expected) {
            return Err(current.cloned());
        }
        let Some(mut object) = inner.objects.remove(key) else {
            return Err(None);
        };
        inner.revision += 1;
        object["metadata"]["resourceVersion"] = Value::String(inner.revision.to_string());
        self.record(&mut inner, EventType::Deleted, key, object.clone(), None);
        Ok(object)
    }

    fn record(
        &self,
        inner: &mut Inner,
        event: EventType,
        key: &ObjectKey,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            resource_version: inner.revision,
            event,
            key: key.clone(),
            object,
            previous,
        });
        if inner.history.len() >= inner.history_limit {
            inner.history.pop_front();
        }
        inner.history.push_back(change.clone());
        // No receiver is not an error: nobody watches.
        let _ = self.live.send(change);
    }

    /// Every object of a resource (as [`Store::list`]) and a subscription to the changes
    /// after them, taken together so that none is missed or seen twice.
    pub fn snapshot_and_subscribe(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> (Vec<Value>, Subscription) {
        let inner = self.lock();
        let live = self.live.subscribe();
        let objects = inner
            .objects
            .iter()
            .filter(|(k, _)| k.group == group && k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        let position = inner.revision;
        (
            objects,
            Subscription {
                backlog: Vec::new(),
                live,
                position,
            },
        )
    }

    /// Every change from now on (for the in-process controllers).
    pub fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.live.subscribe()
    }

    /// Subscribes to changes after `from` (kept ones first, then live ones), or `TooOld`
    /// when changes after `from` were already dropped from the history.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, TooOld> {
        let inner = self.lock();
        let live = self.live.subscribe();
        let oldest_kept = inner
            .history
            .front()
            .map_or(inner.revision + 1, |c| c.resource_version);
        // Changes from..oldest_kept are lost unless `from` is at or after oldest_kept - 1.
        if from + 1 < oldest_kept {
            return Err(TooOld {
                oldest: oldest_kept.saturating_sub(1),
            });
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.resource_version > from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live,
            position: from,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_watch_may_start_at_the_oldest_kept_change_and_not_before() {
        let store = Store::new(3);
        for name in ["a", "b", "c", "d"] {
            let key = ObjectKey::new("", "configmaps", "default", name);
            assert!(
                store
                    .put(&key, json!({"metadata": {"name": name}}), None)
                    .is_ok()
            );
        }
        // Revisions 2..=5 were written; 3, 4 and 5 are kept.
        assert_eq!(store.revision(), 5);
        let from_oldest = store.subscribe(2).map(|s| s.backlog.len());
        assert_eq!(from_oldest, Ok(3));
        assert_eq!(store.subscribe(1).err(), Some(TooOld { oldest: 2 }));
        assert_eq!(store.subscribe(5).map(|s| s.backlog.len()), Ok(0));
    }

    #[test]
    fn a_subscriber_may_lag_by_the_limit_and_not_more() {
        let write = |store: &Store, n: usize| {
            for i in 0..n {
                let key = ObjectKey::new("", "configmaps", "default", &format!("c{i}"));
                assert!(store.put(&key, json!({"metadata": {}}), None).is_ok());
            }
        };
        let store = Store::default();
        let mut at_limit = store.changes();
        write(&store, WATCH_LAG_LIMIT);
        assert!(at_limit.try_recv().is_ok(), "nothing lost at the limit");
        let store = Store::default();
        let mut over = store.changes();
        write(&store, WATCH_LAG_LIMIT + 1);
        assert!(matches!(
            over.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }

    #[test]
    fn writes_check_the_expected_resource_version() {
        let store = Store::default();
        let key = ObjectKey::new("", "configmaps", "default", "a");
        let first = store
            .put(&key, json!({"metadata": {"name": "a"}}), None)
            .ok();
        let rv = first
            .as_ref()
            .and_then(|o| o["metadata"]["resourceVersion"].as_str())
            .map(str::to_owned);
        assert_eq!(rv.as_deref(), Some("2"));
        assert!(
            store.put(&key, json!({"metadata": {}}), None).is_err(),
            "create over an existing object"
        );
        assert!(
            store.put(&key, json!({"metadata": {}}), Some("1")).is_err(),
            "stale resourceVersion"
        );
        assert!(store.put(&key, json!({"metadata": {}}), Some("2")).is_ok());
        assert!(store.remove(&key, "2").is_err());
        assert!(store.remove(&key, "3").is_ok());
    }
}
