//! Finding every process of a Run through /proc: its process group and session, every
//! descendant, and orphans adopted by this (subreaper) process that carry the Run's
//! marker in their environment. Then killing them until none is left.

use std::collections::{HashMap, HashSet};
use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks a Run's processes (`KRT_RUN_ID=<uid>`).
pub const RUN_MARKER: &str = "KRT_RUN_ID";

#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: i32,
    pgrp: i32,
    session: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        ppid,
        pgrp,
        session,
    })
}

fn has_marker(pid: i32, marker: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var == marker))
        .unwrap_or(false)
}

fn all_processes() -> HashMap<i32, Stat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// Every live process (zombies included) belonging to the Run whose first process was
/// `leader` (its own session and group leader) and whose uid is `run_uid`.
pub fn run_processes(leader: i32, run_uid: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let marker = format!("{RUN_MARKER}={run_uid}").into_bytes();
    let procs = all_processes();
    let mut members: HashSet<i32> = procs
        .iter()
        .filter(|(pid, s)| {
            **pid == leader
                || s.pgrp == leader
                || s.session == leader
                || (s.ppid == me && has_marker(**pid, &marker))
        })
        .map(|(pid, _)| *pid)
        .collect();
    members.remove(&me);
    // Descendants of members, to a fixpoint.
    loop {
        let before = members.len();
        for (pid, s) in &procs {
            if members.contains(&s.ppid) && *pid != me {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    let mut out: Vec<i32> = members.into_iter().collect();
    out.sort_unstable();
    out
}

/// Sends `signal` to the Run's process group and to every process of the Run.
/// Returns how many processes were found.
pub fn signal_run(leader: i32, run_uid: &str, signal: Signal) -> usize {
    let _ = kill(Pid::from_raw(-leader), signal);
    let found = run_processes(leader, run_uid);
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    found.len()
}
