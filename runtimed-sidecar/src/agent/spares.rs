//! Emptied workspace directories, kept for the next Runs.
//!
//! Why: on ext4, `mkdir` of a Run's workspace and `rmdir` of it afterwards cost about
//! 230 µs together (inode and directory block allocated, then freed), against about
//! 26 µs for renaming an existing directory in and out of place (on ext4, on the VMs
//! of `docs/benchmarks.md`). A workspace is needed for every Run, and on
//! the start path. So a removed workspace is emptied and, when it is exactly as a new
//! one would be, renamed to a spare name in the workspace root; the next Run's
//! workspace is a spare renamed into place, or a new directory when none is left.
//!
//! "Exactly as a new one": a directory (not a link), mode [`WORKSPACE_MODE`] with no
//! set-id or sticky bit, the owner and group a new workspace of this agent gets, no
//! subdirectory and no extended attribute (so no ACL: POSIX ACLs are extended
//! attributes). Anything else is removed as before. The contents are removed in both
//! cases, and only after every process of the Run was killed (the driver, and
//! `Forget`, act on terminal executions only). A spare's name (`+spare-N`) cannot be a
//! run uid: `+` is not among the characters [`check_run_uid`] accepts.
//!
//! What recycling does not change: Runs of one pod share its files, as they share
//! its kernel and network (`docs/runtimed.md`, "Trust"); a process of another Run
//! that had opened this directory before it was emptied can still reach it, as it
//! could reach it by path while it existed.
//!
//! [`WORKSPACE_MODE`]: crate::limits::WORKSPACE_MODE
//! [`check_run_uid`]: crate::agent::lifecycle::check_run_uid

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{CWD, RenameFlags};

use crate::limits;
use crate::lock;

/// Prefix of a spare directory's name in the workspace root.
const SPARE_PREFIX: &str = "+spare-";

/// Script files a spare may keep, emptied: nearly every Run's workspace gets one of
/// them first thing, and creating a file's inode on ext4 (its allocator skips every
/// recently deleted inode) was a fifth of the agent's CPU on the start path (profiled on
/// ext4 while `cargo bench -p kruntimes-runtimed --bench e2e` ran).
const KEPT_SCRIPTS: [&str; 2] = ["main.sh", "main.py"];

/// Mode of a script file the agent writes.
const SCRIPT_MODE: u32 = 0o644;

/// The spare workspaces of one workspace root.
#[derive(Debug)]
pub struct Spares {
    root: PathBuf,
    /// Each spare, and the empty script file it holds, if any.
    held: Mutex<Vec<(PathBuf, Option<&'static str>)>>,
    next: AtomicU64,
    capacity: usize,
    /// Owner and group of a new workspace made by this process (known after the first).
    fresh: OnceLock<(u32, u32)>,
}

impl Spares {
    /// Spares in `root`, at most `capacity` of them (0: every workspace is made and
    /// removed). Spares left in `root` by an earlier agent are removed: nothing
    /// checked them.
    pub fn new(root: &Path, capacity: usize) -> Self {
        if let Ok(entries) = fs::read_dir(root) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(SPARE_PREFIX.as_bytes())
                {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Self {
            root: root.to_owned(),
            held: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            capacity,
            fresh: OnceLock::new(),
        }
    }

    /// How many spares are held.
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Makes the workspace directory `workspace` (in the root): a spare renamed into
    /// place, else a new directory with mode [`limits::WORKSPACE_MODE`]. Fails as
    /// `mkdir` does when `workspace` exists. Returns the name of the one entry a spare
    /// may hold: an empty script file (mode 0644, the agent's owner), for the caller to
    /// write the Run's script into or to remove.
    pub fn create(&self, workspace: &Path) -> io::Result<Option<&'static str>> {
        loop {
            let Some((spare, script)) = lock(&self.held).pop() else {
                break;
            };
            match rustix::fs::renameat_with(CWD, &spare, CWD, workspace, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(script),
                Err(rustix::io::Errno::EXIST) => {
                    lock(&self.held).push((spare, script));
                    return Err(rustix::io::Errno::EXIST.into());
                }
                // Gone or unusable (removed by hand, say): try the next one.
                Err(_) => {
                    let _ = fs::remove_dir_all(&spare);
                }
            }
        }
        fs::create_dir(workspace)?;
        fs::set_permissions(
            workspace,
            fs::Permissions::from_mode(limits::WORKSPACE_MODE),
        )?;
        if self.fresh.get().is_none() {
            let made = fs::symlink_metadata(workspace)?;
            let _ = self.fresh.set((made.uid(), made.gid()));
        }
        Ok(None)
    }

    /// Removes everything in `workspace`, then keeps the emptied directory as a spare
    /// if it is as a new one would be and fewer than the capacity are held, else
    /// removes it. Only for a workspace no process of its Run can still use.
    pub fn retire(&self, workspace: &Path) -> io::Result<()> {
        let mut script = None;
        let emptied = fs::read_dir(workspace).and_then(|entries| {
            for entry in entries {
                let entry = entry?;
                self.clear_entry(&entry.path(), entry.file_type()?.is_dir(), &mut script)?;
            }
            Ok(())
        });
        match emptied {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // What could not be emptied is not reused; remove_dir_all says why.
            Err(_) => return fs::remove_dir_all(workspace),
        }
        self.keep_or_remove(workspace, script)
    }

    /// [`Spares::retire`] when `workspace` holds at most `max_entries` entries and no
    /// subdirectory; `None`, with nothing removed, when it holds more (or cannot be
    /// listed), for the caller to retire it where a long walk does no harm.
    pub fn retire_small(&self, workspace: &Path, max_entries: usize) -> Option<io::Result<()>> {
        let entries = match fs::read_dir(workspace) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Ok(())),
            Err(_) => return None,
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.ok()?;
            if files.len() == max_entries || entry.file_type().ok()?.is_dir() {
                return None;
            }
            files.push(entry.path());
        }
        let mut script = None;
        for file in files {
            if self.clear_entry(&file, false, &mut script).is_err() {
                // Not reused; remove_dir_all says why.
                return Some(fs::remove_dir_all(workspace));
            }
        }
        Some(self.keep_or_remove(workspace, script))
    }

    /// Empties one entry of a workspace being retired: the first script file that
    /// [`Spares::keepable_script`] keeps is named in `script` and left (empty); anything
    /// else is removed. An entry already gone is fine.
    fn clear_entry(
        &self,
        path: &Path,
        is_dir: bool,
        script: &mut Option<&'static str>,
    ) -> io::Result<()> {
        if !is_dir
            && script.is_none()
            && let Some(name) = self.keepable_script(path)
        {
            *script = Some(name);
            return Ok(());
        }
        let removed = if is_dir {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// When `path` is a script file as the agent writes one (a regular file named as in
    /// [`KEPT_SCRIPTS`], one link, mode 0644, the owner and group of a new workspace, no
    /// extended attribute) and it could be emptied here (not append-only or
    /// immutable), its name: the file is kept, empty, for the next Run.
    fn keepable_script(&self, path: &Path) -> Option<&'static str> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.file_name()?;
        let kept = KEPT_SCRIPTS.into_iter().find(|k| name == *k)?;
        let &(uid, gid) = self.fresh.get()?;
        let meta = fs::symlink_metadata(path).ok()?;
        let plain = meta.file_type().is_file()
            && meta.nlink() == 1
            && meta.mode() & 0o7777 == SCRIPT_MODE
            && meta.uid() == uid
            && meta.gid() == gid
            && matches!(
                rustix::fs::llistxattr_query(path),
                Ok(0) | Err(rustix::io::Errno::NOTSUP)
            );
        if !plain {
            return None;
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        file.set_len(0).ok()?;
        Some(kept)
    }

    /// Keeps the emptied `workspace` (holding only `script`, empty, if any) as a spare,
    /// or removes it.
    fn keep_or_remove(&self, workspace: &Path, script: Option<&'static str>) -> io::Result<()> {
        if self.as_new(workspace) {
            // Checked and renamed under the lock, so that Runs ending together never
            // keep more than the capacity.
            let mut held = lock(&self.held);
            if held.len() < self.capacity {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let spare = self.root.join(format!("{SPARE_PREFIX}{n}"));
                if rustix::fs::renameat_with(CWD, workspace, CWD, &spare, RenameFlags::NOREPLACE)
                    .is_ok()
                {
                    held.push((spare, script));
                    return Ok(());
                }
            }
        }
        if let Some(script) = script {
            fs::remove_file(workspace.join(script))?;
        }
        fs::remove_dir(workspace)
    }

    /// Whether the (emptied) directory `dir` is as [`Spares::create`] makes a new one.
    fn as_new(&self, dir: &Path) -> bool {
        let Some(&(uid, gid)) = self.fresh.get() else {
            return false;
        };
        let Ok(meta) = fs::symlink_metadata(dir) else {
            return false;
        };
        let attributes = match rustix::fs::llistxattr_query(dir) {
            Ok(bytes) => bytes,
            // The filesystem has none to keep.
            Err(rustix::io::Errno::NOTSUP) => 0,
            Err(_) => return false,
        };
        meta.file_type().is_dir()
            && meta.mode() & 0o7777 == limits::WORKSPACE_MODE
            && meta.uid() == uid
            && meta.gid() == gid
            && meta.nlink() == 2
            && attributes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares(capacity: usize) -> (tempfile::TempDir, Spares) {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::new(root.path(), capacity);
        (root, spares)
    }

    /// A root holding one spare, made from the workspace `r` (whose path is returned).
    fn one_spare() -> (tempfile::TempDir, Spares, PathBuf) {
        let (root, spares) = spares(4);
        let dir = root.path().join("r");
        spares.create(&dir).unwrap();
        spares.retire(&dir).unwrap();
        assert_eq!(spares.held(), 1);
        (root, spares, dir)
    }

    fn names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Writes a script file as the agent does (mode 0644); returns its inode.
    fn script(dir: &Path, name: &str, content: &str) -> u64 {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::metadata(&path).unwrap().ino()
    }

    #[test]
    fn a_script_file_unlike_the_agents_is_not_kept() {
        let (root, spares) = spares(4);
        let dir = root.path().join("r");
        for (case, prepare) in [
            (
                "executable",
                &(|d: &Path| {
                    script(d, "main.sh", "true");
                    fs::set_permissions(d.join("main.sh"), fs::Permissions::from_mode(0o755))
                        .unwrap();
                }) as &dyn Fn(&Path),
            ),
            ("hard-linked", &|d: &Path| {
                script(d, "main.py", "pass");
                fs::hard_link(d.join("main.py"), root.path().join("elsewhere")).unwrap();
            }),
            ("a symlink", &|d: &Path| {
                script(d, "target", "true");
                std::os::unix::fs::symlink("target", d.join("main.sh")).unwrap();
            }),
            ("another name", &|d: &Path| {
                script(d, "run.sh", "true");
            }),
        ] {
            spares.create(&dir).unwrap();
            prepare(&dir);
            spares.retire(&dir).unwrap();
            let _ = fs::remove_file(root.path().join("elsewhere"));
            assert_eq!(spares.create(&dir).unwrap(), None, "{case}");
            assert_eq!(names(&dir), Vec::<String>::new(), "{case}: emptied");
            spares.retire(&dir).unwrap();
        }
    }

    #[test]
    fn an_emptied_workspace_is_the_next_runs() {
        let (root, spares) = spares(4);
        let first = root.path().join("run-1");
        assert_eq!(spares.create(&first).unwrap(), None, "a new directory");
        let script = script(&first, "main.sh", "true");
        fs::write(first.join("out.txt"), "x").unwrap();
        fs::create_dir_all(first.join("a/b")).unwrap();
        fs::write(first.join("a/b/out.txt"), "x").unwrap();
        let inode = fs::metadata(&first).unwrap().ino();
        spares.retire(&first).unwrap();
        assert_eq!(names(root.path()), ["+spare-0"]);
        assert_eq!(spares.held(), 1);

        let second = root.path().join("run-2");
        assert_eq!(spares.create(&second).unwrap(), Some("main.sh"));
        assert_eq!(
            fs::metadata(&second).unwrap().ino(),
            inode,
            "the same directory"
        );
        assert_eq!(names(&second), ["main.sh"], "holding only the script file");
        let kept = fs::metadata(second.join("main.sh")).unwrap();
        assert_eq!(
            (kept.ino(), kept.len()),
            (script, 0),
            "the same file, empty"
        );
        assert_eq!(
            fs::metadata(&second).unwrap().mode() & 0o7777,
            limits::WORKSPACE_MODE
        );
        assert_eq!(names(root.path()), ["run-2"]);
        assert_eq!(spares.held(), 0);
    }

    #[test]
    fn a_small_workspace_is_retired_in_place_and_a_larger_one_left_whole() {
        let (root, spares) = spares(4);
        let dir = root.path().join("r");
        spares.create(&dir).unwrap();
        for i in 0..3 {
            fs::write(dir.join(format!("f{i}")), "x").unwrap();
        }
        // One entry more than allowed: nothing is touched.
        assert!(spares.retire_small(&dir, 2).is_none());
        assert_eq!(names(&dir), ["f0", "f1", "f2"]);
        // Exactly as many as allowed: retired, as `retire` would.
        spares.retire_small(&dir, 3).unwrap().unwrap();
        assert_eq!(names(root.path()), ["+spare-0"]);
        assert_eq!(spares.held(), 1);

        // A subdirectory, however small, is a tree to walk: left whole.
        spares.create(&dir).unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/out"), "x").unwrap();
        assert!(spares.retire_small(&dir, 64).is_none());
        assert_eq!(names(&dir.join("sub")), ["out"]);
        spares.retire(&dir).unwrap();
        assert_eq!(names(root.path()), ["+spare-1"]);

        // Already gone: nothing to do.
        assert!(
            spares
                .retire_small(&root.path().join("gone"), 64)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn a_workspace_unlike_a_new_one_is_removed() {
        let (root, spares) = spares(4);
        let changed = |name: &str, change: &dyn Fn(&Path)| {
            let dir = root.path().join(name);
            spares.create(&dir).unwrap();
            change(&dir);
            spares.retire(&dir).unwrap();
            assert!(!dir.exists(), "{name}");
        };
        changed("chmod", &|d| {
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        });
        changed("setgid", &|d| {
            fs::set_permissions(d, fs::Permissions::from_mode(0o2755)).unwrap();
        });
        // An extended attribute (what an ACL is), where the filesystem keeps them.
        let dir = root.path().join("xattr");
        spares.create(&dir).unwrap();
        rustix::fs::setxattr(&dir, "user.krt", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        spares.retire(&dir).unwrap();
        assert!(!dir.exists());
        assert_eq!(spares.held(), 0);
        assert_eq!(names(root.path()), Vec::<String>::new());
    }

    #[test]
    fn spares_are_bounded_by_the_capacity() {
        let (root, spares) = spares(2);
        for i in 0..3 {
            spares.create(&root.path().join(format!("r{i}"))).unwrap();
        }
        for i in 0..3 {
            spares.retire(&root.path().join(format!("r{i}"))).unwrap();
        }
        assert_eq!(spares.held(), 2);
        assert_eq!(names(root.path()), ["+spare-0", "+spare-1"]);

        let (root, none) = self::spares(0);
        let dir = root.path().join("r");
        none.create(&dir).unwrap();
        none.retire(&dir).unwrap();
        assert_eq!(names(root.path()), Vec::<String>::new());
    }

    #[test]
    fn runs_ending_together_keep_no_more_than_the_capacity() {
        let (root, spares) = spares(2);
        let dirs: Vec<PathBuf> = (0..8).map(|i| root.path().join(format!("r{i}"))).collect();
        for dir in &dirs {
            spares.create(dir).unwrap();
        }
        std::thread::scope(|scope| {
            for dir in &dirs {
                let spares = &spares;
                scope.spawn(move || spares.retire(dir).unwrap());
            }
        });
        assert_eq!(spares.held(), 2);
        assert_eq!(names(root.path()).len(), 2);
    }

    #[test]
    fn an_existing_workspace_is_refused_and_the_spare_kept() {
        let (_root, spares, dir) = one_spare();
        fs::create_dir(&dir).unwrap();
        let err = spares.create(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(spares.held(), 1);
        // Without a spare, mkdir refuses it the same way.
        let (root, none) = self::spares(0);
        let dir = root.path().join("r");
        fs::create_dir(&dir).unwrap();
        assert_eq!(
            none.create(&dir).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn a_spare_gone_missing_is_skipped_and_leftovers_are_removed_at_start() {
        let (root, spares, dir) = one_spare();
        fs::remove_dir(root.path().join("+spare-0")).unwrap();
        spares.create(&dir).unwrap();
        assert!(dir.is_dir());

        spares.retire(&dir).unwrap();
        assert_eq!(names(root.path()), ["+spare-1"]);
        let again = Spares::new(root.path(), 4);
        assert_eq!(again.held(), 0);
        assert_eq!(names(root.path()), Vec::<String>::new());
    }

    #[test]
    fn a_link_in_the_workspace_is_removed_not_followed() {
        let (root, spares) = spares(4);
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), "x").unwrap();
        let dir = root.path().join("r");
        spares.create(&dir).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("link")).unwrap();
        spares.retire(&dir).unwrap();
        assert!(outside.path().join("keep").exists());
        assert_eq!(spares.held(), 1);
    }
}
