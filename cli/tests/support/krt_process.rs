//! A running krt, as a user drives it: signals sent with `kill`, its first line read.

use std::io::BufRead;
use std::process::Child;

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
