//! Matching a terminal Run's workspace against its globs (symlinks never followed),
//! with the count and size checked before anything is uploaded; and the no-follow
//! read of each matched file.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use globset::GlobSet;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

use super::{ArtifactError, MAX_FILES, MAX_WALK_ENTRIES};

/// A matched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// Bytes, at the walk.
    pub size: u64,
}

/// Walks `workspace` (never following symlinks) and returns the regular files matching
/// `globs`, sorted by path, after checking their count and total size against the
/// limits. Non-UTF-8 names are skipped (they cannot be keys).
pub fn collect(
    workspace: &Path,
    globs: &GlobSet,
    max_bytes: u64,
) -> Result<Vec<Matched>, ArtifactError> {
    let read_failed = |path: &Path, e: std::io::Error| ArtifactError::ReadFailed {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut matched = Vec::new();
    let mut walked = 0usize;
    let mut pending: Vec<(PathBuf, String)> = vec![(workspace.to_owned(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| read_failed(&dir, e))? {
            let entry = entry.map_err(|e| read_failed(&dir, e))?;
            walked += 1;
            if walked > MAX_WALK_ENTRIES {
                return Err(ArtifactError::TooMany(format!(
                    "more than {MAX_WALK_ENTRIES} entries in the workspace"
                )));
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // file_type() does not follow symlinks: a symlink is neither a dir nor a file.
            let kind = entry
                .file_type()
                .map_err(|e| read_failed(&entry.path(), e))?;
            if kind.is_dir() {
                pending.push((entry.path(), path));
            } else if kind.is_file() && globs.is_match(&path) {
                let size = entry
                    .metadata()
                    .map_err(|e| read_failed(&entry.path(), e))?
                    .len();
                matched.push(Matched { path, size });
            }
        }
    }
    if matched.len() > MAX_FILES {
        return Err(ArtifactError::TooMany(format!(
            "{} files matched, above the limit of {MAX_FILES}",
            matched.len()
        )));
    }
    let total = matched.iter().map(|m| m.size).sum::<u64>();
    if total > max_bytes {
        return Err(ArtifactError::TooLarge {
            total,
            max: max_bytes,
        });
    }
    matched.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(matched)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Reads `rel` under `workspace` with no-follow opens at every segment, and checks it
/// is still a regular file of the walked size.
pub(super) fn read_file(workspace: &Path, matched: &Matched) -> Result<Vec<u8>, ArtifactError> {
    let failed = |reason: String| ArtifactError::ReadFailed {
        path: matched.path.clone(),
        reason,
    };
    let refused = |e: nix::errno::Errno| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            failed("became a symlink or left the workspace after matching; refused".into())
        }
        e => failed(e.to_string()),
    };
    let mut dir: OwnedFd = open(workspace, DIR_FLAGS, Mode::empty()).map_err(refused)?;
    let mut segments: Vec<&str> = matched.path.split('/').collect();
    let name = segments.pop().unwrap_or_default();
    for segment in segments {
        dir = openat(&dir, segment, DIR_FLAGS, Mode::empty()).map_err(refused)?;
    }
    let fd = openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(refused)?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| failed(e.to_string()))?;
    if !meta.is_file() || meta.len() != matched.size {
        return Err(failed("changed after matching (type or size)".into()));
    }
    let mut content = Vec::with_capacity(matched.size as usize);
    // One byte more than expected reveals a file that grew while being read.
    file.by_ref()
        .take(matched.size + 1)
        .read_to_end(&mut content)
        .map_err(|e| failed(e.to_string()))?;
    if content.len() as u64 != matched.size {
        return Err(failed("changed while being read".into()));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Reason;
    use crate::sidecar::artifacts::globs;

    #[test]
    fn file_count_boundary() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let set = globs(&["f*".into()]).unwrap();
        assert_eq!(
            collect(dir.path(), &set, u64::MAX).unwrap().len(),
            MAX_FILES
        );
        std::fs::write(dir.path().join("f-extra"), b"x").unwrap();
        assert_eq!(
            collect(dir.path(), &set, u64::MAX).unwrap_err().reason(),
            Some(Reason::ArtifactsTooMany)
        );
    }
}
