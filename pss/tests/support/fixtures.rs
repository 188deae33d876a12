//! Where the upstream Pod Security fixtures are: shared by the conformance test, the
//! benchmark and other crates' property tests (`#[path]`-included, so there is one copy).

use std::path::{Path, PathBuf};

/// `$KRUNTIMES_PSS_FIXTURES` (which must exist when set), else
/// `shared/conformance/pss/testdata` beside or inside the workspace root, else `None`.
pub(crate) fn fixture_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KRUNTIMES_PSS_FIXTURES") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "KRUNTIMES_PSS_FIXTURES={} is not a directory",
            dir.display()
        );
        return Some(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let rel = Path::new("shared/conformance/pss/testdata");
    [root.parent().map(|p| p.join(rel)), Some(root.join(rel))]
        .into_iter()
        .flatten()
        .find(|d| d.is_dir())
}
