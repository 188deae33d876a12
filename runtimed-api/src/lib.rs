//! runtimed's protocol, for every side that speaks it: the committed proto
//! (`proto/runtimed/v1/runtimed.proto`) and its generated tonic code ([`proto`]), the
//! clients ([`client`]), the mapping of a Run and its Runtime to an `ExecuteRequest`
//! ([`request`]), and the typed reason codes runtimed answers with ([`Reason`]).
//!
//! `krt` and the controller depend on this crate, not on the runtimed binary's crate,
//! so neither links git, S3 or process-management code.

pub mod client;
pub mod reason;
pub mod request;

pub use reason::Reason;

/// Code generated from `proto/runtimed/v1/runtimed.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)] // generated
pub mod proto {
    tonic::include_proto!("runtimed.v1");
}

pub use proto::runtimed_client::RuntimedClient;
pub use proto::runtimed_server::RuntimedServer;

/// gRPC metadata key carrying the [`Reason`] of a refused call (for example a git
/// source the sidecar would not fetch), beside the status message.
pub const REASON_METADATA: &str = "krt-reason";

/// The timeout of an execution whose `ExecuteRequest.timeout_ms` is 0: the agent ends
/// it then, and the controller expects its end by then.
pub const DEFAULT_TIMEOUT_MS: u64 = 60 * 60 * 1000;
