//! Property from ADMISSION.md: a Pod that passes Pod Security `restricted` still passes
//! `restricted` (same version) after injection. Checked on every upstream `restricted`
//! pass fixture.
//!
//! Fixture directory: `$KRUNTIMES_PSS_FIXTURES` (must exist when set), else
//! `shared/conformance/pss/testdata` beside the workspace root; skipped with a notice
//! when none exists (the same lookup as the pss crate's conformance test).

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kruntimes_pss::{Level, Policy, Version, evaluate_object};
use kruntimes_webhook::inject::{InjectConfig, InjectError, inject_pod};
use serde_json::Value;

#[path = "../../pss/tests/support/fixtures.rs"]
mod support;

use support::fixture_dir;

#[test]
fn restricted_pass_fixtures_still_pass_restricted_after_injection() {
    let Some(dir) = fixture_dir() else {
        println!("SKIPPED: no Pod Security fixtures found (set KRUNTIMES_PSS_FIXTURES)");
        return;
    };
    let config = InjectConfig::default();
    let (mut checked, mut refused) = (0usize, 0usize);
    let mut failures = Vec::new();
    let restricted = dir.join("restricted");
    for version_dir in std::fs::read_dir(&restricted).unwrap() {
        let version_dir = version_dir.unwrap().path();
        let name = version_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let minor: u32 = name
            .strip_prefix("v1.")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("unexpected version dir {}", version_dir.display()));
        let policy = Policy::new(Level::Restricted, Version::Minor(minor));
        let Ok(files) = std::fs::read_dir(version_dir.join("pass")) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let pod: Value = serde_norway::from_str(&text).unwrap();
            assert!(
                evaluate_object(&pod, policy).unwrap().allowed(),
                "{}: fixture does not pass before injection",
                path.display()
            );
            match inject_pod(&pod, &config) {
                Ok(injected) => {
                    checked += 1;
                    let eval = evaluate_object(&injected, policy).unwrap();
                    if !eval.allowed() {
                        failures.push(format!("{}: {}", path.display(), eval.forbidden_detail()));
                    }
                    for c in injected["spec"]["initContainers"].as_array().unwrap() {
                        let sc = &c["securityContext"];
                        if c["name"] == "krt-install" || c["name"] == "runtimed" {
                            assert_eq!(sc["runAsNonRoot"], true);
                            assert!(sc["runAsUser"].as_i64().unwrap() > 0);
                        }
                    }
                }
                // Windows pods pass restricted (some checks skip them) but are refused.
                Err(InjectError::Windows) => refused += 1,
                Err(e) => failures.push(format!("{}: refused: {e}", path.display())),
            }
        }
    }
    println!(
        "{checked} restricted pass fixtures injected and re-checked, {refused} Windows pods refused"
    );
    assert!(checked > 0, "no fixtures under {}", restricted.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
