//! Clients of the `runtimed.v1` API.

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

use crate::RuntimedClient;

/// A client of the API on a unix socket (the agent's, or the sidecar's in
/// `krt run --local`). Connects once; a broken connection is re-established by tonic.
pub async fn connect_unix(
    socket: &Path,
) -> Result<RuntimedClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))?
        .connect()
        .await?;
    Ok(RuntimedClient::new(channel))
}

/// Where a sidecar's network listener is and how to trust it: what the controller
/// knows of a Runtime's pod from the Runtime's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// `IP:PORT` (or `HOST:PORT`) of the listener.
    pub authority: String,
    /// The name the certificate is issued for (checked against it).
    pub server_name: String,
    /// PEM of the listener's certificate. It is the only root trusted for this
    /// connection: a self-signed certificate held in the Runtime's Secret pins the
    /// connection to that Runtime's key, with no CA to run.
    pub certificate_pem: Vec<u8>,
    /// The bearer token the listener checks.
    pub token: String,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in a log line.
        f.debug_struct("TlsTarget")
            .field("authority", &self.authority)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A client of a sidecar's network listener: TLS trusting exactly the target's
/// certificate, and its bearer token on every call.
pub type TlsClient =
    RuntimedClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// Why a TLS client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The token cannot be sent as a header value.
    #[error("the bearer token is not a valid header value")]
    BadToken,
    /// The TCP and TLS handshakes did not end in time.
    #[error("connecting to {authority}: no TLS session within {after:?}")]
    Timeout {
        /// Where.
        authority: String,
        /// The connect timeout.
        after: std::time::Duration,
    },
    /// The endpoint or TLS configuration was refused, or the connection failed.
    #[error("connecting to {authority}: {source}")]
    Transport {
        /// Where.
        authority: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// How often a TLS connection to a sidecar is pinged (HTTP/2 PING) while it is open,
/// calls or not: a pod whose network went away, or whose runtimed stopped answering,
/// breaks the calls on it instead of leaving a follow waiting forever.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a ping may go unanswered before the connection is closed and its calls
/// fail: far above a loaded pod's answer time, short enough to notice a dead pod in
/// [`KEEPALIVE_INTERVAL`] plus this.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `target` (eagerly: a TLS or TCP failure is returned here) with
/// `connect_timeout` for the TCP and TLS handshakes, and pings the connection every
/// [`KEEPALIVE_INTERVAL`] ([`KEEPALIVE_TIMEOUT`] to answer).
pub async fn connect_tls(
    target: &TlsTarget,
    connect_timeout: std::time::Duration,
) -> Result<TlsClient, ConnectError> {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let bearer = format!("Bearer {}", target.token)
        .parse()
        .map_err(|_| ConnectError::BadToken)?;
    let transport = |source| ConnectError::Transport {
        authority: target.authority.clone(),
        source,
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&target.certificate_pem))
        .domain_name(target.server_name.clone());
    let endpoint = Endpoint::from_shared(format!("https://{}", target.authority))
        .map_err(transport)?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tls_config(tls)
        .map_err(transport)?;
    // tonic's connect timeout covers the TCP connect only: a peer that accepts the
    // connection and then never answers would hold the TLS handshake forever.
    let channel = tokio::time::timeout(connect_timeout, endpoint.connect())
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: target.authority.clone(),
            after: connect_timeout,
        })?
        .map_err(transport)?;
    Ok(RuntimedClient::with_interceptor(
        channel,
        BearerToken(bearer),
    ))
}
