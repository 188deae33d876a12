//! Self-managed certificates: the planner with times at the boundaries and the served
//! chain checked against the bundle by rustls' WebPKI verifier; the reconciler against a
//! mocked API server (the exact requests, in order); the written files served by the real
//! server over TLS to a client that trusts only the bundle.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plan;
mod reconcile;
mod served;
mod support;
