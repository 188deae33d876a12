//! Support code shared by the integration tests.
pub(crate) mod git_server;
