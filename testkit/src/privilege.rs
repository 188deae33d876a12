//! Tests that need root.
//!
//! Such tests live in modules named `needs_root` (or in test binaries listed beside
//! them), which `.config/nextest.toml`'s default profile leaves out: `cargo nextest run`
//! reports them as skipped for everyone, and `--profile full` (as root, as `.ci/run`
//! does) runs them. [`require_root`] is their first line, so one started without root
//! fails and says why instead of passing without checking anything.

/// Whether this process's effective uid is 0 (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Fails the calling test unless it runs as root; `why` says what needs root.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "needs root: {why}. Run it as root with `cargo nextest run --profile full`; \
         the default profile leaves the tests that need root out"
    );
}
