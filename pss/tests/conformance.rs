//! Upstream Pod Security admission fixtures: every Pod under
//! `{baseline,restricted}/v1.N/pass` must be allowed at that level and version, every
//! Pod under `fail/` denied by the check its file name starts with (or, at restricted,
//! by the restricted check overriding that baseline check).
//!
//! Fixture directory: `$KRUNTIMES_PSS_FIXTURES`, else `shared/conformance/pss/testdata`
//! beside the workspace root (`<root>/../shared/…`, then `<root>/shared/…`); the test is
//! skipped with a notice when none exists.

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use kruntimes_pss::{Level, Policy, Version, checks, evaluate_object, overridden_by};
use serde_json::{Value, json};

#[path = "support/fixtures.rs"]
mod support;

use support::fixture_dir;

const EXPECTED_FIXTURES: usize = 4537;

struct Fixture {
    path: PathBuf,
    level: Level,
    minor: u32,
    pass: bool,
    /// Lower-cased check id from the file name (fail fixtures).
    check: String,
}

fn load_fixtures(dir: &Path) -> Vec<Fixture> {
    let mut out = Vec::new();
    for (level_name, level) in [
        ("baseline", Level::Baseline),
        ("restricted", Level::Restricted),
    ] {
        let level_dir = dir.join(level_name);
        let versions = std::fs::read_dir(&level_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", level_dir.display()));
        for v in versions {
            let v = v.unwrap().path();
            let name = v.file_name().unwrap().to_string_lossy().into_owned();
            let minor: u32 = name
                .strip_prefix("v1.")
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("unexpected version dir {}", v.display()));
            for (sub, pass) in [("pass", true), ("fail", false)] {
                let Ok(files) = std::fs::read_dir(v.join(sub)) else {
                    continue;
                };
                for f in files {
                    let path = f.unwrap().path();
                    if path.extension().is_none_or(|e| e != "yaml") {
                        continue;
                    }
                    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                    let check = stem
                        .trim_end_matches(|c: char| c.is_ascii_digit())
                        .to_owned();
                    out.push(Fixture {
                        path,
                        level,
                        minor,
                        pass,
                        check,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn parse(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The canonical (camelCase) check id for a lower-cased file-name prefix.
fn canonical(lower: &str) -> Option<&'static str> {
    checks()
        .into_iter()
        .map(|c| c.id)
        .find(|id| id.to_ascii_lowercase() == lower)
}

/// Checks one object against one fixture; `None` when it agrees.
fn verdict(fx: &Fixture, obj: &Value) -> Option<String> {
    let version = Version::Minor(fx.minor);
    let eval = match evaluate_object(obj, Policy::new(fx.level, version)) {
        Ok(e) => e,
        Err(e) => return Some(format!("no pod spec: {e}")),
    };
    let got: Vec<&str> = eval.violations.iter().map(|v| v.check).collect();
    if fx.pass {
        return (!eval.allowed())
            .then(|| format!("expected allowed, denied: {}", eval.forbidden_detail()));
    }
    if eval.allowed() {
        return Some(format!("expected denial by {}, allowed", fx.check));
    }
    let Some(expected) = canonical(&fx.check) else {
        return Some(format!("unknown check id in file name: {}", fx.check));
    };
    let mut accepted = vec![expected];
    if fx.level == Level::Restricted
        && let Some(over) = overridden_by(expected, version)
    {
        accepted.push(over);
    }
    // Some fixtures also trip other checks (a hostProcess pod needs hostNetwork, a
    // privileged container escalates): the named check must be among the denials.
    if !got.iter().any(|g| accepted.contains(g)) {
        return Some(format!(
            "expected denial by {}, got [{}]: {}",
            accepted.join(" or "),
            got.join(", "),
            eval.forbidden_detail()
        ));
    }
    None
}

/// The fixture's pod as a kruntimes Runtime and as a CronJob.
fn wrapped(pod: &Value) -> [Value; 2] {
    let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
    [
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
               "metadata": {"name": "rt"}, "spec": {"template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
               "spec": {"jobTemplate": {"spec": {"template": template}}}}),
    ]
}

#[test]
fn upstream_fixtures_agree() {
    let Some(dir) = fixture_dir() else {
        eprintln!(
            "SKIPPED: Pod Security fixtures not found (set KRUNTIMES_PSS_FIXTURES or provide \
             ../shared/conformance/pss/testdata beside the workspace)"
        );
        return;
    };
    let fixtures = load_fixtures(&dir);
    let mut mismatches = Vec::new();
    let (mut passes, mut fails) = (0, 0);
    for fx in &fixtures {
        let pod = parse(&fx.path);
        if fx.pass {
            passes += 1;
        } else {
            fails += 1;
        }
        if let Some(m) = verdict(fx, &pod) {
            mismatches.push(format!("{}: {m}", fx.path.display()));
            continue;
        }
        for obj in wrapped(&pod) {
            if let Some(m) = verdict(fx, &obj) {
                mismatches.push(format!("{} (as {}): {m}", fx.path.display(), obj["kind"]));
            }
        }
    }
    eprintln!(
        "conformance: {} fixtures ({passes} pass, {fails} fail) from {}, {} mismatches",
        fixtures.len(),
        dir.display(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} fixtures disagree:\n{}",
        mismatches.len(),
        fixtures.len(),
        mismatches.join("\n")
    );
    assert_eq!(
        fixtures.len(),
        EXPECTED_FIXTURES,
        "fixture count (a wrong path must not pass vacuously)"
    );
}
