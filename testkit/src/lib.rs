//! Test helpers shared by the tests of several kruntimes crates (a dev-dependency only,
//! never linked into a binary): real servers on loopback and fixtures.
//!
//! - [`s3`]: a real S3-compatible server (moto) and plain-HTTP reads of what it holds;
//! - [`git_server`]: bare repositories served over HTTPS by `git http-backend`.

// Helpers fail the test that calls them, loudly: that is what a test helper is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod git_server;
pub mod s3;
