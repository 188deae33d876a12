//! A running krt, as a user drives it: signals sent with `kill`, its first line read.

use std::io::{BufRead, Read};
use std::process::{Child, ChildStderr};

/// Sends `SIG<name>` (`INT`, `TERM`, `HUP`) to `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

/// The first line krt prints on its piped stdout, trimmed (what the Run printed first).
pub(crate) fn first_line(krt: &mut Child) -> String {
    let mut line = String::new();
    std::io::BufReader::new(krt.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

/// Reads krt's stderr until `wanted` has been printed; returns it and what came before.
pub(crate) fn read_stderr_until(krt: &mut Child, wanted: &str) -> (ChildStderr, String) {
    let mut stderr = krt.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains(wanted) {
        let read = stderr.read(&mut byte).unwrap();
        assert_eq!(
            read,
            1,
            "krt closed stderr: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    (stderr, String::from_utf8_lossy(&seen).into_owned())
}
