//! Test helpers shared by the tests of several kruntimes crates (a dev-dependency only,
//! never linked into a binary): real servers on loopback and fixtures.
//!
//! - [`s3`]: a real S3-compatible server (moto) and plain-HTTP reads of what it holds;
//! - [`git_server`]: bare repositories served over HTTPS by `git http-backend`;
//! - [`runtimed`]: the runtimed binary of this build, and an agent with a sidecar
//!   listening with TLS and a bearer token, as in a Runtime's pod.

// Helpers fail the test that calls them, loudly: that is what a test helper is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod git_server;
pub mod runtimed;
pub mod s3;
