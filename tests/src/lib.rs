//! kruntimes' end-to-end tests and the emulated cluster they run against.
//!
//! - [`cluster`]: `kruntimes-test-cluster`, a stateful Kubernetes API server on loopback
//!   whose node runs Pods as real processes (docs/test-cluster.md).
//! - [`fixtures`]: objects and runtimed calls the suite and the benchmarks share.
//! - `tests/system/`: the end-to-end suite: webhook, controller and runtimed together,
//!   against the emulated cluster by default (as root) and against the cluster
//!   `KUBECONFIG` names when set.
//! - `tests/crds.rs`: real-cluster checks of the CRDs, `#[ignore]`d (they need
//!   `KUBECONFIG`) and run on kind by `.github/workflows/e2e.yml`.

pub mod cluster;
pub mod fixtures;
