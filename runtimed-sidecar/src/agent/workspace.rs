//! Writing a Run's sources into its workspace: every path re-checked with the API's
//! rules, every directory and file opened without following symlinks, files created
//! exclusively, so nothing can be written outside the workspace.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use kruntimes_api::validation::paths::{PathKind, check_relative_path};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, mkdirat};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path breaks the API's rules.
    #[error("path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The path would leave the workspace through a symlink, or collides with a file
    /// already there.
    #[error("path {path:?} refused: {reason}")]
    Refused {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Writing failed.
    #[error("path {path:?}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Checks every path first (nothing is written when one is invalid), then writes each
/// file under `workspace` with no-follow opens, mode 0644.
pub fn write_files<'a>(
    workspace: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<(), WriteError> {
    let files: Vec<_> = files.into_iter().map(|(p, c)| (p, c, false)).collect();
    write_files_with_modes(workspace, files)
}

/// Like [`write_files`], with an executable flag per file: mode 0755 instead of 0644
/// (git's executable bit).
pub fn write_files_with_modes<'a>(
    workspace: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8], bool)> + Clone,
) -> Result<(), WriteError> {
    write_files_into(workspace, files, None)
}

/// Like [`write_files_with_modes`], in a workspace that already holds `existing`: an
/// empty file directly in it, left by a recycled workspace (see `crate::agent::spares`).
/// A file to write by that name (not executable) is written into it, checked first
/// (opened without following a link; a regular file, one link, empty); otherwise it
/// is removed before anything is written.
pub fn write_files_into<'a>(
    workspace: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8], bool)> + Clone,
    existing: Option<&str>,
) -> Result<(), WriteError> {
    for (path, _, _) in files.clone() {
        check_relative_path(path, PathKind::Plain).map_err(|reason| WriteError::InvalidPath {
            path: path.to_owned(),
            reason,
        })?;
    }
    let root = open(workspace, DIR_FLAGS, Mode::empty()).map_err(|e| WriteError::Io {
        path: workspace.display().to_string(),
        source: e.into(),
    })?;
    let mut reuse = None;
    if let Some(name) = existing {
        let wanted = files
            .clone()
            .into_iter()
            .any(|(path, _, executable)| path == name && !executable);
        reuse = wanted.then(|| open_existing(&root, name)).flatten();
        if reuse.is_none() {
            match nix::unistd::unlinkat(&root, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(WriteError::Io {
                        path: name.to_owned(),
                        source: e.into(),
                    });
                }
            }
        }
    }
    for (path, content, executable) in files {
        match reuse.take_if(|_| Some(path) == existing) {
            Some(file) => write_content(file, path, content)?,
            None => write_one(&root, path, content, executable)?,
        }
    }
    Ok(())
}

/// `name` in `root`, opened for writing when it is a regular file with one link and
/// nothing in it (not following a link).
fn open_existing(root: &OwnedFd, name: &str) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let fd = openat(
        root,
        name,
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let file = File::from(fd);
    let meta = file.metadata().ok()?;
    (meta.file_type().is_file() && meta.nlink() == 1 && meta.len() == 0).then_some(file)
}

fn write_content(mut file: File, path: &str, content: &[u8]) -> Result<(), WriteError> {
    file.write_all(content).map_err(|source| WriteError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_one(
    root: &OwnedFd,
    path: &str,
    content: &[u8],
    executable: bool,
) -> Result<(), WriteError> {
    let refused = |reason: &str| WriteError::Refused {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let io = |e: Errno| WriteError::Io {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut segments: Vec<&str> = path.split('/').collect();
    let Some(name) = segments.pop() else {
        return Err(refused("empty path"));
    };
    let mut dir: Option<OwnedFd> = None;
    for segment in segments {
        let parent = dir.as_ref().unwrap_or(root);
        match mkdirat(parent, segment, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io(e)),
        }
        let next = openat(parent, segment, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                refused("a parent directory is a symlink or not a directory")
            }
            e => io(e),
        })?;
        dir = Some(next);
    }
    let parent = dir.as_ref().unwrap_or(root);
    let fd = openat(
        parent,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(if executable { 0o755 } else { 0o644 }),
    )
    .map_err(|e| match e {
        Errno::EEXIST => refused("a file, directory or symlink already exists there"),
        Errno::ELOOP => refused("the file is a symlink"),
        e => io(e),
    })?;
    write_content(File::from(fd), path, content)
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du` and the kubelet count
/// them: a sparse file counts for what it really holds), without following symlinks.
/// The walk stops as soon as the count reaches `stop_at`, so measuring a huge workspace
/// costs no more than reaching the limit. Entries that vanish during the walk are
/// skipped.
pub fn disk_usage(dir: &Path, stop_at: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = fs::symlink_metadata(dir).map_or(0, |m| m.blocks() * 512);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow a symlink.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks() * 512);
            if total >= stop_at {
                return total;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// Whether a write failed because the filesystem (or a quota) is full.
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32)
}
