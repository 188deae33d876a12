//! The workspace size limit (`--workspace-size-limit`): all running workspaces
//! together, the largest failing first.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::lock;

/// The last measured workspace size of every running Run (shared by their drivers), so
/// that each can tell whether all workspaces together exceed the limit and whether it
/// is the one to fail.
#[derive(Debug, Default)]
pub(super) struct WorkspaceUsage {
    sizes: Mutex<HashMap<String, u64>>,
}

impl WorkspaceUsage {
    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.sizes)
    }

    /// Records `uid`'s size; a message when `uid` has to fail (see [`over_limit`]).
    pub(super) fn record(&self, uid: &str, size: u64, limit: u64) -> Option<String> {
        let mut sizes = self.sizes();
        sizes.insert(uid.to_owned(), size);
        let (offender, total) = over_limit(&sizes, limit)?;
        (offender == uid).then(|| {
            format!(
                "the workspace holds {size} bytes; all running workspaces together {total} bytes, over the workspace size limit of {limit} bytes"
            )
        })
    }

    pub(super) fn remove(&self, uid: &str) {
        self.sizes().remove(uid);
    }
}

/// When the workspaces together hold more than `limit` bytes: the Run to fail (the
/// largest; ties broken by uid) and the total. At exactly `limit` nothing fails.
pub fn over_limit(sizes: &HashMap<String, u64>, limit: u64) -> Option<(&str, u64)> {
    let total = sizes.values().fold(0u64, |a, b| a.saturating_add(*b));
    if total <= limit {
        return None;
    }
    sizes
        .iter()
        .max_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
        .map(|(uid, _)| (uid.as_str(), total))
}
