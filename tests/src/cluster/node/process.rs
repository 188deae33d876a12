//! Helper programs and process bookkeeping: the node changes the system only through
//! `ip`, `nsenter`, `unshare`, `mount` and friends, and finds the processes they start
//! through `/proc`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster::contract::NodeError;

/// A search path for the helper programs, independent of the caller's `PATH`.
pub(super) const HELPER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn io_error(context: impl Into<String>, source: std::io::Error) -> NodeError {
    NodeError::Io {
        context: context.into(),
        source,
    }
}

/// Runs `program args` to completion; a non-zero exit is an error carrying its stderr.
pub(super) async fn run(program: &str, args: &[&str]) -> Result<(), NodeError> {
    let context = format!("{program} {}", args.join(" "));
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("PATH", HELPER_PATH)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| io_error(context.clone(), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(io_error(
        context,
        std::io::Error::other(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    ))
}

/// As [`run`], blocking: for `Drop`, where no runtime may be at hand. Errors are
/// ignored: cleanup of something already gone is not a failure.
pub(super) fn run_quietly(program: &str, args: &[&str]) {
    let _ = std::process::Command::new(program)
        .args(args)
        .env("PATH", HELPER_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The first child of `parent` found in `/proc`, waiting up to `within` for it to exist.
pub(super) async fn wait_for_child(parent: u32, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(child) = child_of(parent) {
            return Some(child);
        }
        if Instant::now() >= deadline || !alive(parent) {
            return child_of(parent);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn child_of(parent: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| parent_of(*pid) == Some(parent))
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `pid` exists and is not a zombie.
pub(super) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub(super) fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether `pid` has left the node's root: its root directory is no longer `/`, so the
/// container's setup script has reached its `chroot`.
pub(super) fn chrooted(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|root| root != Path::new("/"))
}

/// `'...'` for `sh`: every byte literal.
pub(super) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
