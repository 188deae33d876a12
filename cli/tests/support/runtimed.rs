//! The runtimed binary `krt run --local` starts, for krt's end-to-end tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The runtimed binary next to krt in the same target directory; built with cargo when
/// this test run did not build it (`cargo nextest run -p krt` alone).
pub(crate) fn runtimed() -> &'static PathBuf {
    static RUNTIMED: OnceLock<PathBuf> = OnceLock::new();
    RUNTIMED.get_or_init(|| {
        let krt = PathBuf::from(env!("CARGO_BIN_EXE_krt"));
        let path = krt.parent().unwrap().join("runtimed");
        if !path.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = krt.parent().unwrap().parent().unwrap();
            let status = Command::new(cargo)
                .args(["build", "-p", "kruntimes-runtimed", "--bin", "runtimed"])
                .env("CARGO_TARGET_DIR", target_dir)
                .status()
                .unwrap();
            assert!(status.success(), "building runtimed failed");
        }
        assert!(path.is_file(), "no runtimed at {}", path.display());
        path
    })
}
