//! Evaluates all upstream conformance fixtures (4,537 Pods) once per iteration, against
//! the level and version of their directory. Fixtures are read and parsed once, outside
//! the timed loop. Two floors are measured on the same parsed values: a deep clone, and
//! a read-only walk of every node.
//!
//! `CARGO_TARGET_DIR=/work/main/target-pss cargo bench -p kruntimes-pss`
//! (fixtures from `$KRUNTIMES_PSS_FIXTURES` or `../shared/conformance/pss/testdata`).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use kruntimes_pss::{Level, Policy, Version, evaluate_object};
use serde_json::Value;

#[path = "../tests/support/fixtures.rs"]
mod support;

use support::fixture_dir;

fn load(dir: &Path) -> Vec<(Value, Policy)> {
    let mut out = Vec::new();
    for (name, level) in [
        ("baseline", Level::Baseline),
        ("restricted", Level::Restricted),
    ] {
        let Ok(versions) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for v in versions.flatten() {
            let file_name = v.file_name();
            let Some(minor) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("v1."))
                .and_then(|m| m.parse().ok())
            else {
                continue;
            };
            for sub in ["pass", "fail"] {
                let Ok(files) = std::fs::read_dir(v.path().join(sub)) else {
                    continue;
                };
                for f in files.flatten() {
                    let Ok(text) = std::fs::read_to_string(f.path()) else {
                        continue;
                    };
                    let Ok(doc) = serde_norway::from_str::<Value>(&text) else {
                        continue;
                    };
                    out.push((doc, Policy::new(level, Version::Minor(minor))));
                }
            }
        }
    }
    out
}

/// Visits every node: the floor of any evaluation that looks at whole objects.
fn walk(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(walk).sum::<usize>(),
        Value::Object(m) => 1 + m.iter().map(|(k, v)| k.len() + walk(v)).sum::<usize>(),
        Value::String(s) => s.len(),
        _ => 1,
    }
}

fn bench(c: &mut Criterion) {
    let Some(dir) = fixture_dir() else {
        eprintln!("SKIPPED: Pod Security fixtures not found (set KRUNTIMES_PSS_FIXTURES)");
        return;
    };
    let fixtures = load(&dir);
    eprintln!("loaded {} fixtures from {}", fixtures.len(), dir.display());
    let mut g = c.benchmark_group("pss_fixtures");
    g.bench_function("evaluate_all", |b| {
        b.iter(|| {
            let mut denied = 0usize;
            for (doc, policy) in &fixtures {
                if let Ok(e) = evaluate_object(black_box(doc), *policy)
                    && !e.allowed()
                {
                    denied += 1;
                }
            }
            black_box(denied)
        });
    });
    g.bench_function("floor_clone_all", |b| {
        b.iter(|| {
            for (doc, _) in &fixtures {
                black_box(black_box(doc).clone());
            }
        });
    });
    g.bench_function("floor_walk_all", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (doc, _) in &fixtures {
                n += walk(black_box(doc));
            }
            black_box(n)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
