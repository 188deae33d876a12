//! A cgroup (v2) per Run, where the agent may make them: every process a Run starts is
//! born in it, whatever it does to its session, process group or environment, so
//! `cgroup.kill` ends all of them at once. Where it may not (a read-only cgroup file
//! system, as in most Pods, or cgroup v1 only), the Run's processes are found through
//! `/proc` alone (see [`crate::agent::procs`]).
//!
//! The Run cgroups are children of the agent's own cgroup (no controller is enabled, so
//! the agent may stay in it), named `krt-<agent pid>.<n>`. The Run's first process is
//! started inside its cgroup: the spawner process moves itself into it for the
//! `posix_spawn` and back out (see [`crate::agent::spawner`]); forked from this process
//! (library use), it is moved right after its `exec`. Emptied cgroups are kept for the
//! next Runs, as spare workspaces are (a `mkdir` and `rmdir` per Run cost about
//! 120 µs); those of an agent that no longer exists are killed and removed when
//! another one starts.
//!
//! Not a security boundary: a process running as the cgroup files' owner can move
//! itself out. It closes the gap for trusted programs that clear their environment
//! after leaving the Run's session.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lock;

/// Prefix of a Run cgroup's name, followed by the agent's pid, a dot and a number.
const PREFIX: &str = "krt-";

/// The Run cgroups of this agent: where they are made, and the emptied ones kept.
#[derive(Debug)]
pub struct RunCgroups {
    /// The agent's own cgroup directory.
    parent: PathBuf,
    spare: Mutex<Vec<PathBuf>>,
    capacity: usize,
}

/// The number of the next Run cgroup made by this process: unique among them, however
/// many [`RunCgroups`] it holds (every supervisor of a test process has its own).
static NEXT: AtomicU64 = AtomicU64::new(0);

impl RunCgroups {
    /// The agent's own cgroup v2 directory, when a Run cgroup can be made in it and
    /// killed (`cgroup.kill`, Linux 5.14); why not otherwise. Kills and removes the
    /// Run cgroups of agents that no longer exist. Keeps up to `capacity` spares.
    pub fn discover(capacity: usize) -> Result<Self, String> {
        let parent = own_cgroup_dir()?;
        remove_orphaned(&parent);
        let cgroups = Self {
            parent,
            spare: Mutex::new(Vec::new()),
            capacity,
        };
        let probe = cgroups
            .create()
            .map_err(|e| format!("cannot make a cgroup in {}: {e}", cgroups.parent.display()))?;
        if !probe.path().join("cgroup.kill").exists() {
            let _ = fs::remove_dir(probe.path());
            return Err("the kernel has no cgroup.kill (Linux 5.14 or later)".into());
        }
        // Not kept as a spare: the spawner, which removes the Run cgroups it used when
        // the agent is gone, never saw this one.
        let _ = fs::remove_dir(probe.path());
        Ok(cgroups)
    }

    /// The directory the Run cgroups are made in.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// An empty cgroup for a Run: a spare, or a new one.
    pub fn create(&self) -> io::Result<RunCgroup> {
        if let Some(dir) = lock(&self.spare).pop() {
            return Ok(RunCgroup { dir });
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .parent
            .join(format!("{PREFIX}{}.{n}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(RunCgroup { dir })
    }

    /// Takes back a Run's cgroup once it is empty: kept as a spare, or removed.
    pub fn release(&self, cgroup: RunCgroup) {
        if !cgroup.is_empty() {
            // Not reusable: a later Run would be killed with what is left in it.
            tracing::warn!(cgroup = %cgroup.dir.display(), "a Run's cgroup is not empty; left as it is");
            return;
        }
        let mut spare = lock(&self.spare);
        if spare.len() < self.capacity {
            spare.push(cgroup.dir);
            return;
        }
        drop(spare);
        if let Err(e) = fs::remove_dir(&cgroup.dir) {
            tracing::warn!(cgroup = %cgroup.dir.display(), error = %e, "cannot remove a Run's cgroup");
        }
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        for dir in lock(&self.spare).drain(..) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// One Run's cgroup.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
}

impl RunCgroup {
    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The processes in it.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.dir)
    }

    /// Whether no process is in it (zombies are not: an exited process leaves its
    /// cgroup at once).
    pub fn is_empty(&self) -> bool {
        is_empty(&self.dir)
    }

    /// SIGKILL to every process in it, and to every one that forks meanwhile.
    pub fn kill(&self) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.kill"), b"1")
    }

    /// Moves the process `pid` (all its threads) into it.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

fn is_empty(dir: &Path) -> bool {
    // `populated` counts the cgroup's descendants too; Run cgroups have none.
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 0"))
        .unwrap_or(true)
}

/// The cgroup v2 directory of this process: its path in `/proc/self/cgroup` (the
/// `0::` line) under the cgroup2 file system's mount point.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let membership =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let path = membership
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = mounts
        .lines()
        .find_map(cgroup2_mount)
        .ok_or("no cgroup2 file system is mounted")?;
    let dir = mount.join(path.trim_start_matches('/'));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "{} (this process's cgroup) is not visible here",
            dir.display()
        ))
    }
}

/// The mount point of a `/proc/self/mountinfo` line for a cgroup2 file system mounted
/// at its root.
fn cgroup2_mount(line: &str) -> Option<PathBuf> {
    // ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE ...
    let (before, after) = line.split_once(" - ")?;
    if after.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = before.split_whitespace();
    let root = fields.nth(3)?;
    let point = fields.next()?;
    // Octal escapes (a space is \040) are left: a cgroup mount point has none.
    (root == "/").then(|| PathBuf::from(point))
}

/// Kills and removes the Run cgroups in `parent` of agents that no longer exist (one
/// killed with SIGKILL, whose spawner could not clean up either).
fn remove_orphaned(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(agent) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if agent == std::process::id() || Path::new(&format!("/proc/{agent}")).exists() {
            continue;
        }
        let dir = entry.path();
        if !is_empty(&dir) {
            tracing::warn!(cgroup = %dir.display(), "killing what a gone agent's Run left");
            let _ = fs::write(dir.join("cgroup.kill"), b"1");
        }
        // Emptied at once by the kill, but the kernel may take a moment.
        for _ in 0..100 {
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_read_from_mountinfo() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1 = "36 31 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        let bind = "50 31 0:38 /kubepods /mnt rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(bind), None);
    }
}
