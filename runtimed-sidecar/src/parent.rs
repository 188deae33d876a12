//! `--exit-with-parent`: an agent or sidecar started by a parent that cannot stop it
//! when it dies itself (`krt run --local` killed with SIGKILL) stops as on SIGTERM.
//!
//! Not `PR_SET_PDEATHSIG`: that signal comes when the parent *thread* that forked this
//! process ends, which in a multi-threaded parent need not be the process ending. Not
//! a pidfd either: waiting on one through tokio takes an `unsafe` registration, and
//! this crate forbids `unsafe` (the workspace's one is the code between fork and exec,
//! in `kruntimes-preexec`). A check of
//! the parent pid every [`limits::PARENT_POLL_INTERVAL`] is enough for a parent that
//! ends once.

use std::time::Duration;

use crate::limits;

/// Resolves once the process `parent` (this process's parent when it started, as
/// `std::os::unix::process::parent_id` returned it then) has ended: this process has
/// then been re-parented to a subreaper or to init.
pub async fn exited(parent: u32) {
    exited_polling(parent, limits::PARENT_POLL_INTERVAL).await;
}

async fn exited_polling(parent: u32, interval: Duration) {
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn another_parent_than_the_one_given_means_it_ended() {
        let parent = std::os::unix::process::parent_id();
        tokio::time::timeout(Duration::from_secs(10), exited(parent + 1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_living_parent_is_waited_for() {
        let parent = std::os::unix::process::parent_id();
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            exited_polling(parent, Duration::from_millis(1)),
        )
        .await;
        assert!(waited.is_err(), "the test's parent is still there");
    }
}
