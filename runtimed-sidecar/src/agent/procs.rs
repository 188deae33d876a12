//! Finding every process of a Run through /proc: its process group and session, every
//! descendant, and orphans adopted by this (subreaper) process that carry the Run's
//! marker in their environment. Then killing them until none is left.
//!
//! Where to look: this process is a child subreaper, so every process ever started by a
//! Run stays inside this process's subtree (a Run's first process is a child of the
//! spawner process, itself a child of this one; see [`crate::agent::spawner`]) (an orphan is re-parented to the nearest
//! subreaper ancestor, which is this process or one of its descendants). The Run's
//! processes are therefore found by walking that subtree through
//! `/proc/<pid>/task/<tid>/children`: a handful of reads for this process's children
//! and the Run's own processes, instead of a `stat` of every process on the machine.
//! Where the kernel has no `children` files (`CONFIG_PROC_CHILDREN` off), every entry of
//! `/proc` is read instead, with the same membership rules.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::OnceLock;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::agent::reaper::Reaper;

/// The environment variable that marks a Run's processes (`KRT_RUN_ID=<uid>`).
pub const RUN_MARKER: &str = "KRT_RUN_ID";

#[derive(Debug, Clone, Copy)]
struct Stat {
    zombie: bool,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let zombie = fields.next()? == "Z";
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        zombie,
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

/// Whether a Run's processes are found by walking this process's subtree (cheap), rather
/// than by reading every entry of /proc.
pub fn walks_subtree() -> bool {
    children_files_exist()
}

/// Whether this kernel has `/proc/<pid>/task/<tid>/children` (`CONFIG_PROC_CHILDREN`).
fn children_files_exist() -> bool {
    static EXIST: OnceLock<bool> = OnceLock::new();
    *EXIST.get_or_init(|| fs::metadata("/proc/thread-self/children").is_ok())
}

/// The direct children of every thread of `pid` (a child's parent is the thread that
/// created it, or for an adopted orphan any thread of the subreaper). Empty when `pid`
/// is gone.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("children");
        if let Ok(list) = fs::read_to_string(path) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    children
}

/// The children of every thread of this process, or `None` when any list could not be
/// read (a thread ended while they were read: its children moved to another thread).
/// The agent's proof below and the spawner's check for strays both read them so.
pub(crate) fn own_children_exactly() -> Option<Vec<i32>> {
    let mut children = Vec::new();
    for task in fs::read_dir("/proc/self/task").ok()? {
        let mut path = task.ok()?.path();
        path.push("children");
        let list = fs::read_to_string(path).ok()?;
        for pid in list.split_whitespace() {
            children.push(pid.parse::<i32>().ok()?);
        }
    }
    Some(children)
}

/// Whether this process provably has no children but its spawners and the first
/// processes it spawned itself (through `reaper`), and so holds no orphan of any Run.
/// With the spawner's word that a Run's first process left no stray child of the
/// spawner (see [`crate::agent::spawner::STRAYS`]) this proves that no process of that Run is
/// left, without reading the rest of `/proc`. Why it is a proof: every process a Run
/// ever starts stays in this (child subreaper) process's subtree; once the Run's first
/// process is reaped, the topmost of any that are left is an orphan adopted by this
/// process (on its first live thread's list) or, through `clone(CLONE_PARENT)`, a child
/// of the spawner, which the spawner reports. A process adopted while the lists are
/// read was re-parented because its parent ended, and that parent is then still in a
/// list (a zombie: not known, so the answer is false) or was reaped meanwhile, which
/// the reaper's counts show (a reap begun by the end of the look that had not finished
/// before it). A thread that ends while its list is read also makes the answer false.
pub fn holds_only_known_children(reaper: &Reaper) -> bool {
    if !children_files_exist() {
        return false;
    }
    let done_before = reaper.reaps_done();
    let Some(children) = own_children_exactly() else {
        return false;
    };
    if reaper.reaps_started() != done_before {
        return false;
    }
    let known: HashSet<i32> = reaper
        .waiting_pids()
        .into_iter()
        .chain(crate::agent::spawner::spawner_pids())
        .collect();
    children.iter().all(|c| known.contains(c))
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

/// Whether a process with this stat belongs to the Run directly (not as a descendant):
/// the first process, its group or session, or an orphan adopted by this process that
/// carries the Run's marker.
fn is_member(pid: i32, stat: Stat, leader: i32, me: i32, marker: &[u8]) -> bool {
    pid == leader
        || stat.pgrp == leader
        || stat.session == leader
        || (stat.ppid == me && has_marker(pid, marker))
}

/// Every live process (zombies included) belonging to the Run whose first process was
/// `leader` (its own session and group leader) and whose uid is `run_uid`.
pub fn run_processes(leader: i32, run_uid: &str) -> Vec<i32> {
    let marker = format!("{RUN_MARKER}={run_uid}").into_bytes();
    let mut out = if children_files_exist() {
        in_subtree(leader, &marker)
    } else {
        in_all_of_proc(leader, &marker)
    };
    out.sort_unstable();
    out
}

/// The Run's processes among this process's descendants. Every process of a Run is one
/// (see the module's comment), and a process that belongs to the Run is either a
/// member itself or a descendant of one, so only members' subtrees are walked.
fn in_subtree(leader: i32, marker: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    // A Run's first process is a child of this process's spawner (when it has one),
    // its adopted orphans are children of this process: both lists are looked at.
    let spawners = crate::agent::spawner::spawner_pids();
    let mut pending: Vec<i32> = children_of(me)
        .into_iter()
        .chain(spawners.iter().flat_map(|s| children_of(*s)))
        .filter(|pid| !spawners.contains(pid))
        .filter(|pid| read_stat(*pid).is_some_and(|s| is_member(*pid, s, leader, me, marker)))
        .collect();
    let mut members = HashSet::new();
    while let Some(pid) = pending.pop() {
        if pid != me && !spawners.contains(&pid) && members.insert(pid) {
            pending.extend(children_of(pid));
        }
    }
    members.into_iter().collect()
}

/// The same rules applied to every process in /proc.
fn in_all_of_proc(leader: i32, marker: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let procs = all_processes();
    let spawners = crate::agent::spawner::spawner_pids();
    let mut members: HashSet<i32> = procs
        .iter()
        .filter(|(pid, s)| is_member(**pid, **s, leader, me, marker))
        .map(|(pid, _)| *pid)
        .collect();
    members.remove(&me);
    for spawner in &spawners {
        members.remove(spawner);
    }
    // Descendants of members, to a fixpoint.
    loop {
        let before = members.len();
        for (pid, s) in &procs {
            if members.contains(&s.ppid) && *pid != me && !spawners.contains(pid) {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    members.into_iter().collect()
}

/// Sends `signal` to the Run's process group and to every process of the Run.
/// Returns the processes found.
pub fn signal_run(leader: i32, run_uid: &str, signal: Signal) -> Vec<i32> {
    signal_found(leader, signal, run_processes(leader, run_uid))
}

/// [`signal_run`], finding the processes by a `stat` of every process in `/proc`
/// rather than by the `children` lists. Those lists are per thread: an orphan adopted
/// by a thread of this process that exits moves to another thread's list, and a walk
/// that read that list first misses it. The final look before a Run is declared clean
/// is this one.
pub fn signal_run_all_of_proc(leader: i32, run_uid: &str, signal: Signal) -> Vec<i32> {
    let marker = format!("{RUN_MARKER}={run_uid}").into_bytes();
    let mut found = in_all_of_proc(leader, &marker);
    found.sort_unstable();
    signal_found(leader, signal, found)
}

fn signal_found(leader: i32, signal: Signal, found: Vec<i32>) -> Vec<i32> {
    let _ = kill(Pid::from_raw(-leader), signal);
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    found
}

/// Whether `pid` is a zombie: dead, its `/proc` entry kept until its parent reaps it.
/// A zombie's environment is empty, so an orphan the agent adopted can no longer be
/// told apart as the Run's by its marker once it has died: callers remember the pids
/// they killed and wait on those.
pub fn is_zombie(pid: i32) -> bool {
    read_stat(pid).is_some_and(|s| s.zombie)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn both_ways_of_looking_find_the_same_processes() {
        assert!(
            children_files_exist(),
            "this test needs CONFIG_PROC_CHILDREN"
        );
        // A group of its own (leader), a child in it, and a grandchild that left it for
        // its own session: all three belong to the Run either way.
        let mut leader = std::process::Command::new("bash")
            .args(["-c", "sleep 30 & setsid sleep 31 & wait"])
            .env(RUN_MARKER, "walk")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id() as i32;
        let marker = format!("{RUN_MARKER}=walk").into_bytes();
        let mut found = Vec::new();
        for _ in 0..200 {
            found = in_subtree(pid, &marker);
            if found.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        found.sort_unstable();
        let mut everywhere = in_all_of_proc(pid, &marker);
        everywhere.sort_unstable();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found, everywhere);
        for p in &found {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = leader.wait();
    }
}
