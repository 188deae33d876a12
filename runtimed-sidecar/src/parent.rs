//! `--exit-with-parent`: an agent or sidecar started by a parent that cannot stop it
//! when it dies itself (`krt run --local` killed with SIGKILL) stops as on SIGTERM.
//!
//! The parent watched is the one named by `--parent-pid`, else this process's parent
//! as `main` reads it first thing. It has ended when this process's parent is no longer
//! that one (re-parented to a subreaper or to init), or when that one is init (pid 1)
//! itself: a parent killed between its `fork` and this process's first look has already
//! handed this process to init, and such a parent would otherwise be watched forever.
//! Without `--parent-pid`, a parent that ended that early while a subreaper other than
//! init adopted this process (a `systemd --user` session, say) is not seen; with it,
//! every end is.
//!
//! Not `PR_SET_PDEATHSIG`: that signal comes when the parent *thread* that forked this
//! process ends, which in a multi-threaded parent need not be the process ending. Not
//! a pidfd either: waiting on one through tokio takes an `unsafe` registration, and
//! this crate forbids `unsafe` (the workspace's one is the code between fork and exec,
//! in `kruntimes-preexec`). A check of the parent pid every
//! [`limits::PARENT_POLL_INTERVAL`] is enough for a parent that ends once.

use std::time::Duration;

use crate::limits;

/// The pid of init, which adopts orphans when no subreaper is closer.
const INIT: u32 = 1;

/// The process `--exit-with-parent` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pid: u32,
}

impl Parent {
    /// The parent to watch: `given` (`--parent-pid`), else `at_start`, this process's
    /// parent as read first thing in `main`.
    pub fn new(given: Option<u32>, at_start: u32) -> Self {
        Self {
            pid: given.unwrap_or(at_start),
        }
    }

    /// The watched pid.
    pub fn pid(self) -> u32 {
        self.pid
    }

    /// Whether it has ended, for this process whose parent is now `current`.
    pub fn has_ended(self, current: u32) -> bool {
        current != self.pid || self.pid == INIT
    }

    /// Resolves once it has ended (checked at once, then every
    /// [`limits::PARENT_POLL_INTERVAL`]).
    pub async fn ended(self) {
        self.ended_polling(limits::PARENT_POLL_INTERVAL).await;
    }

    async fn ended_polling(self, interval: Duration) {
        while !self.has_ended(std::os::unix::process::parent_id()) {
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn another_parent_than_the_one_given_means_it_ended() {
        let parent = std::os::unix::process::parent_id();
        tokio::time::timeout(
            Duration::from_secs(10),
            Parent::new(Some(parent + 1), parent).ended(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_living_parent_is_waited_for() {
        let parent = std::os::unix::process::parent_id();
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            Parent::new(None, parent).ended_polling(Duration::from_millis(1)),
        )
        .await;
        assert!(waited.is_err(), "the test's parent is still there");
    }

    #[test]
    fn init_as_the_parent_at_start_means_the_real_one_had_already_ended() {
        assert!(Parent::new(None, INIT).has_ended(INIT));
        assert!(Parent::new(Some(INIT), 4242).has_ended(INIT));
        // A parent given explicitly ended once this process is adopted by anyone.
        assert!(Parent::new(Some(4242), INIT).has_ended(INIT));
        assert!(Parent::new(Some(4242), INIT).has_ended(77));
        assert!(!Parent::new(Some(4242), INIT).has_ended(4242));
        assert!(!Parent::new(None, 4242).has_ended(4242));
    }
}
