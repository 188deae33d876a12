//! Relative paths inside a Run's workspace: `entrypoint`, `files` keys, `git.path` and
//! artifact globs. These checks are the first line; runtimed re-checks at write time
//! with no-follow opens, so a symlink cannot escape either.

use crate::v1alpha1::limits::{MAX_PATH_BYTES, MAX_PATH_SEGMENT_BYTES};

/// Whether glob metacharacters are allowed (artifact paths) or not (file names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// A plain file or directory path.
    Plain,
    /// A glob pattern such as `out/**/*.json`.
    Glob,
}

/// Checks that `path` is a normalized relative path that stays inside the workspace.
/// Returns why it is not.
pub fn check_relative_path(path: &str, kind: PathKind) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("must be no more than {MAX_PATH_BYTES} bytes"));
    }
    if path.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if path.contains('\\') {
        return Err("must use '/' as separator; '\\' is not allowed".into());
    }
    if path.starts_with('/') {
        return Err("must be relative to the workspace (no leading '/')".into());
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("must not contain empty segments ('//' or a trailing '/')".into()),
            "." => return Err("must not contain '.' segments".into()),
            ".." => return Err("must not contain '..' segments".into()),
            s if s.len() > MAX_PATH_SEGMENT_BYTES => {
                return Err(format!(
                    "each segment must be no more than {MAX_PATH_SEGMENT_BYTES} bytes"
                ));
            }
            _ => {}
        }
    }
    if kind == PathKind::Plain && path.contains(['*', '?', '[']) {
        return Err("must be a plain path, not a glob ('*', '?' and '[' are not allowed)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_normal_relative_paths() {
        for ok in [
            "main.py",
            "lib/util.py",
            "a/b/c.txt",
            ".hidden",
            "a..b",
            "..a",
        ] {
            assert!(check_relative_path(ok, PathKind::Plain).is_ok(), "{ok}");
        }
        assert!(check_relative_path("out/**/*.json", PathKind::Glob).is_ok());
    }

    #[test]
    fn rejects_escapes_and_oddities() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a//b",
            "a/",
            "./a",
            "a\\..\\b",
            "a\0b",
            "a\nb",
        ] {
            assert!(
                check_relative_path(bad, PathKind::Plain).is_err(),
                "{bad:?}"
            );
            assert!(check_relative_path(bad, PathKind::Glob).is_err(), "{bad:?}");
        }
        assert!(check_relative_path("out/*", PathKind::Plain).is_err());
    }

    #[test]
    fn length_boundaries() {
        let segment = "a".repeat(MAX_PATH_SEGMENT_BYTES);
        assert!(check_relative_path(&segment, PathKind::Plain).is_ok());
        assert!(check_relative_path(&format!("{segment}a"), PathKind::Plain).is_err());
        // Five segments of 204 bytes and four separators: exactly the limit.
        let at_limit = vec!["a".repeat(204); 5].join("/");
        assert_eq!(at_limit.len(), MAX_PATH_BYTES);
        assert!(check_relative_path(&at_limit, PathKind::Plain).is_ok());
        assert!(check_relative_path(&format!("{at_limit}b"), PathKind::Plain).is_err());
    }

    proptest! {
        /// Whatever string is accepted, joining it to a workspace can never leave it.
        #[test]
        fn accepted_paths_never_escape(path in "[a-z./\\\\]{1,40}") {
            if check_relative_path(&path, PathKind::Glob).is_ok() {
                let mut depth: i64 = 0;
                for segment in path.split('/') {
                    match segment {
                        ".." => depth -= 1,
                        "." | "" => {}
                        _ => depth += 1,
                    }
                    prop_assert!(depth >= 0, "{} escapes", path);
                }
                prop_assert!(!path.starts_with('/'));
            }
        }
    }
}
