//! Real-cluster end-to-end tests for kruntimes. They live in `tests/`, are `#[ignore]`d
//! (a normal run shows them as skipped) and run on kind in `.github/workflows/e2e.yml`
//! with `cargo test -p kruntimes-e2e -- --ignored`, which needs `KUBECONFIG` and
//! `kubectl`.

pub mod cluster;
