//! The sidecar's network listener: the same `runtimed.v1` API as on its unix socket,
//! for the controller, behind a bearer token ([`crate::sidecar::auth`]) and optionally TLS.
//! runtimed never serves the network unauthenticated: the binary refuses a bind
//! address without a token file. The TLS certificate and key are read again when the
//! files change (cert-manager or a Secret volume replacing them), without a restart.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::Server;

use crate::Error;
use crate::grpc::RuntimedServer;
use crate::proto;
use crate::sidecar::auth::BearerAuth;

/// PEM files of the listener's certificate chain and private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// How often the certificate and key files are read to see whether they changed: as
/// for the token file, far below how long a rotated certificate takes to reach a Pod
/// (the kubelet's Secret volume sync: about a minute) and the overlap cert-manager
/// leaves before the old one expires (a third of its lifetime).
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A connection that has not finished its TLS handshake in this time is closed, so a
/// client that connects and says nothing holds no task for long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that finished their handshake and wait for the gRPC server to take
/// them: a bound, not a tuning knob (the server takes them as fast as they come).
const HANDSHAKEN_QUEUE: usize = 64;

impl TlsFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// A certificate chain and key from PEM, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        Error::io(
            "loading the TLS certificate and key",
            std::io::Error::other(format!("{what}: {e}")),
        )
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("the certificate file is not PEM", &e))?;
    if chain.is_empty() {
        return Err(invalid("the certificate file", &"holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid("the private key file is not a PEM key", &e))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| invalid("the private key does not match the certificate", &e))
}

/// The served certificate, swapped whole when the files change: a handshake takes
/// whichever pair is current and never waits for a reload.
#[derive(Debug)]
struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServingCert {
    /// Reads `files` every `interval`; a changed pair that loads replaces the served
    /// one. A pair that does not load (half-way through a rotation: the new certificate
    /// beside the old key) keeps the current one and is tried again when a file changes
    /// again. Runs until the task is dropped.
    async fn watch(
        self: Arc<Self>,
        files: TlsFiles,
        mut last: (Vec<u8>, Vec<u8>),
        interval: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = match files.read() {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the TLS files; serving the current certificate");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            match certified_key(&now.0, &now.1) {
                Ok(key) => {
                    self.current.store(Arc::new(key));
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "the TLS files changed but do not load; serving the current certificate");
                }
            }
            last = now;
        }
    }
}

/// A bound TCP listener, so that the caller knows the address (port 0 picks one).
#[derive(Debug)]
pub struct Listener {
    listener: tokio::net::TcpListener,
}

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("binding {addr}"), e))?;
        Ok(Self { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))
    }

    /// Serves `service` on this listener, every call checked by `auth`, over TLS when
    /// `tls` is given (the files read again every [`TLS_RELOAD_INTERVAL`]), until
    /// `shutdown` resolves.
    pub async fn serve<S: proto::runtimed_server::Runtimed>(
        self,
        service: S,
        auth: BearerAuth,
        tls: Option<&TlsFiles>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let server = Server::builder().add_service(RuntimedServer::with_interceptor(service, auth));
        let serving = |e| Error::io("serving gRPC on the network", std::io::Error::other(e));
        let Some(files) = tls else {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener);
            return server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .map_err(serving);
        };
        // Read once here, so that a missing or bad pair stops the sidecar at start.
        let first = files.read()?;
        let cert = Arc::new(ServingCert {
            current: ArcSwap::from_pointee(certified_key(&first.0, &first.1)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::io("TLS protocol versions", std::io::Error::other(e)))?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let watcher = AbortOnDrop(tokio::spawn(cert.watch(
            files.clone(),
            first,
            TLS_RELOAD_INTERVAL,
        )));
        let (handshaken, incoming) = tokio::sync::mpsc::channel(HANDSHAKEN_QUEUE);
        let accepting = AbortOnDrop(tokio::spawn(accept_tls(
            self.listener,
            acceptor,
            handshaken,
        )));
        let result = server
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                shutdown,
            )
            .await
            .map_err(serving);
        drop((watcher, accepting));
        result
    }
}

/// Accepts connections and hands each to the gRPC server once its TLS handshake is done;
/// handshakes run side by side, so one slow client delays no other.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    handshaken: tokio::sync::mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = handshaken.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// A task aborted when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
