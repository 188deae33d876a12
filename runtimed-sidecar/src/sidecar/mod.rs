//! `runtimed sidecar`: serves the `runtimed.v1` API on a unix socket (and, with a
//! token, on the network) and forwards it to the agent, doing on the way what only the
//! sidecar may do, because it alone holds the credentials and the network trust:
//!
//! - [`proxy`]: the forwarding service;
//! - [`git`]: git sources, fetched and handed to the agent as files;
//! - [`artifacts`]: the upload of a terminal Run's files to S3;
//! - [`net`]: the network listener (TLS reloaded from disk);
//! - [`auth`]: its bearer token.

pub mod artifacts;
pub mod auth;
pub mod git;
pub mod net;
pub mod proxy;

pub use proxy::Proxy;
