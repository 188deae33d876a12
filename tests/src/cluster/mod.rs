//! `kruntimes-test-cluster`: an emulated Kubernetes cluster for the end-to-end suite.
//!
//! A stateful in-memory API server over HTTPS on loopback ([`api`]), admission through
//! the registered webhook configurations ([`admission`]), CRD schema pruning and CEL
//! rules ([`schema`]), and a node that runs Pods as real processes ([`node`]). The
//! parts meet only through the traits in [`contract`]. It is a test harness, never a
//! product: docs/test-cluster.md lists where it differs from a real cluster.

pub mod admission;
pub mod api;
pub mod chart;
pub mod contract;
pub mod harness;
pub mod node;
pub mod schema;
