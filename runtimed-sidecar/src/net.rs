//! The sidecar's network listener: the same `runtimed.v1` API as on its unix socket,
//! for the controller, behind a bearer token ([`crate::auth`]) and optionally TLS.
//! runtimed never serves the network unauthenticated: the binary refuses a bind
//! address without a token file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::Error;
use crate::auth::BearerAuth;
use crate::grpc::RuntimedServer;
use crate::proto;

/// PEM files of the listener's certificate chain and private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
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
    /// `tls` is given, until `shutdown` resolves.
    pub async fn serve<S: proto::runtimed_server::Runtimed>(
        self,
        service: S,
        auth: BearerAuth,
        tls: Option<&TlsFiles>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut server = Server::builder();
        if let Some(files) = tls {
            let cert = std::fs::read(&files.cert)
                .map_err(|e| Error::io(format!("reading {}", files.cert.display()), e))?;
            let key = std::fs::read(&files.key)
                .map_err(|e| Error::io(format!("reading {}", files.key.display()), e))?;
            server = server
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|e| {
                    Error::io(
                        "loading the TLS certificate and key",
                        std::io::Error::other(e),
                    )
                })?;
        }
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener);
        server
            .add_service(RuntimedServer::with_interceptor(service, auth))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| Error::io("serving gRPC on the network", std::io::Error::other(e)))
    }
}
