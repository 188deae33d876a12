//! Helpers shared by the tests of several kruntimes crates. A dev-dependency only: no
//! library or binary depends on it.
//!
//! - [`fixtures`]: the AdmissionReview fixtures of `webhook/tests/fixtures` and builders
//!   of test objects;
//! - [`certs`]: a test CA and serving certificates (rcgen), and a rustls client that
//!   trusts only that CA;
//! - [`apiserver`]: a mocked Kubernetes API server behind a real `kube::Client`
//!   (tower-test), driven by scenarios of the exact requests expected and their answers;
//! - [`http`]: plain HTTP/1.1 GETs (admin ports);
//! - [`privilege`]: the guard of the tests that need root;
//! - [`s3`]: a real S3-compatible server (moto) and plain-HTTP reads of what it holds;
//! - [`git_server`]: bare repositories served over HTTPS by `git http-backend`;
//! - [`runtimed`]: the runtimed binary of this build, and an agent with a sidecar
//!   listening with TLS and a bearer token, as in a Runtime's pod.
//!
//! A helper that cannot do its job panics: in a test that is a failed test, with the
//! reason, which is what a test wants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod apiserver;
pub mod certs;
pub mod fixtures;
pub mod git_server;
pub mod http;
pub mod privilege;
pub mod proc_stat;
pub mod runtimed;
pub mod s3;
