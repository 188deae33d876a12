//! `--result-file PATH`: where `krt run` writes its result document
//! ([`super::result`]) when it ends, whatever ended it: the Run's or Workflow's end,
//! bad input, a platform error, a signal (also the second one that exits at once).
//!
//! The path is checked before anything runs, by creating (and removing) a file in its
//! directory, so a bad path is an error naming the flag, never a Run whose result is
//! lost. A file already at the path is removed then: one left by an earlier run is
//! never read as this one's. The document is written to a temporary file in the same
//! directory and renamed over the path, so a reader sees no file or a whole one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::result::{Ending, ObjectRef, render};
use crate::error::CliError;

/// The prefix of the temporary files krt writes the result to before the rename.
const TEMP_PREFIX: &str = ".krt-result-";

#[derive(Debug, Default)]
struct State {
    path: Option<PathBuf>,
    object: Option<ObjectRef>,
    written: bool,
}

/// Where the result goes (nowhere without `--result-file`), and what it is about. Cheap
/// to clone: the clones share one state, and the first [`ResultSink::finish`] writes.
#[derive(Clone, Debug)]
pub struct ResultSink {
    state: Arc<Mutex<State>>,
    local: bool,
}

impl ResultSink {
    /// No result file.
    pub fn none(local: bool) -> ResultSink {
        ResultSink {
            state: Arc::default(),
            local,
        }
    }

    /// A result file at `path`, checked: its directory exists and takes a new file, and
    /// it is not a directory. A file already there is removed.
    pub fn prepare(path: &Path, local: bool) -> Result<ResultSink, CliError> {
        let bad =
            |why: String| CliError::BadInput(format!("--result-file {}: {why}", path.display()));
        if path.as_os_str().is_empty() {
            return Err(CliError::BadInput(
                "--result-file: the path is empty; give the file to write the result to".into(),
            ));
        }
        if path.is_dir() {
            return Err(bad("is a directory; give a file's path".into()));
        }
        let dir = directory_of(path);
        if !dir.is_dir() {
            return Err(bad(format!("directory {} does not exist", dir.display())));
        }
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| bad(format!("cannot create a file in {}: {e}", dir.display())))?;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(format!("cannot replace the file there: {e}"))),
        }
        Ok(ResultSink {
            state: Arc::new(Mutex::new(State {
                path: Some(path.to_owned()),
                ..State::default()
            })),
            local,
        })
    }

    /// The Run or Workflow the result is about, once known.
    pub fn set_object(&self, object: ObjectRef) {
        self.lock().object = Some(object);
    }

    /// Writes the result of `ending`, once: later calls (a forced exit racing the
    /// normal end) write nothing. A failure is said on stderr; krt's status stays.
    pub fn finish(&self, ending: &Ending) {
        let mut state = self.lock();
        if state.written {
            return;
        }
        state.written = true;
        let Some(path) = state.path.clone() else {
            return;
        };
        let text = render(ending, state.object.as_ref(), self.local);
        if let Err(e) = write_atomically(&path, text.as_bytes()) {
            eprintln!("krt run: --result-file {}: {e}", path.display());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it leaves plain data: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The directory a file at `path` is created in (`.` for a bare name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `text` to a temporary file beside `path`, flushed to disk, then renamed to `path`.
fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(directory_of(path))?;
    file.write_all(text)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::commands::run::result::Ending;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn bad_paths_name_the_flag_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (PathBuf::new(), "--result-file: the path is empty"),
            (dir.path().to_owned(), "is a directory"),
            (dir.path().join("missing/r.json"), "does not exist"),
        ];
        for (path, want) in cases {
            let error = ResultSink::prepare(&path, true).unwrap_err().to_string();
            assert!(error.starts_with("--result-file"), "{error}");
            assert!(error.contains(want), "{path:?}: {error}");
        }
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let under_a_file = ResultSink::prepare(&file.join("r.json"), true).unwrap_err();
        assert!(
            under_a_file.to_string().contains("does not exist"),
            "{under_a_file}"
        );
    }

    #[test]
    fn a_stale_file_is_removed_at_once_and_the_result_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "an earlier run's").unwrap();
        let sink = ResultSink::prepare(&path, true).unwrap();
        assert!(
            !path.exists(),
            "the earlier file is gone before anything runs"
        );
        assert_eq!(
            leftovers(dir.path()),
            Vec::<String>::new(),
            "the probe is removed"
        );
        sink.clone().finish(&Ending::invalid("first"));
        sink.finish(&Ending::platform("second"));
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["message"], "first");
        assert_eq!(written["krtExitStatus"], 2);
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }
}
