//! Shared test support.
pub(crate) mod s3_server;
