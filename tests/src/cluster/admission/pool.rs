//! Kept-alive webhook connections, as kube-apiserver keeps them: its webhook clients
//! are cached per client configuration and their Go transport reuses idle HTTP/1.1
//! connections. A connection is reused only for the same address, server name and
//! `caBundle`, so a changed bundle or Service is verified by a new TLS handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;

/// Idle connections kept per webhook target: the `MaxIdleConnsPerHost` kube-apiserver's
/// transports are given (`utilnet.SetTransportDefaults`, 25). More concurrent calls
/// open more connections; those beyond this are closed when their call ends.
pub const MAX_IDLE_PER_TARGET: usize = 25;

/// What a connection was opened and verified for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TargetKey {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) ca_bundle: Vec<u8>,
}

/// One open HTTP/1.1 connection: its request half and the task driving it, aborted
/// with it (also when a call's timeout drops it mid-request).
pub(crate) struct Connection {
    pub(crate) sender: SendRequest<Full<Bytes>>,
    pub(crate) driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The idle connections and client TLS configurations of one emulated API server.
#[derive(Default)]
pub(crate) struct ConnectionPool {
    idle: Mutex<HashMap<TargetKey, Vec<Connection>>>,
    tls: Mutex<HashMap<Vec<u8>, Arc<rustls::ClientConfig>>>,
}

impl ConnectionPool {
    /// An idle connection to `key` that is still open, if one is kept.
    pub(crate) fn take(&self, key: &TargetKey) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let connections = idle.get_mut(key)?;
        while let Some(connection) = connections.pop() {
            if !connection.sender.is_closed() && !connection.driver.is_finished() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next call to `key`, up to [`MAX_IDLE_PER_TARGET`].
    pub(crate) fn put(&self, key: TargetKey, connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let connections = idle.entry(key).or_default();
        if connections.len() < MAX_IDLE_PER_TARGET {
            connections.push(connection);
        }
    }

    /// The client configuration trusting `ca_bundle`, built once per bundle.
    pub(crate) fn tls(
        &self,
        ca_bundle: &[u8],
        build: impl FnOnce(&[u8]) -> Result<Arc<rustls::ClientConfig>, String>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut configs = self.tls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = configs.get(ca_bundle) {
            return Ok(config.clone());
        }
        let config = build(ca_bundle)?;
        configs.insert(ca_bundle.to_vec(), config.clone());
        Ok(config)
    }
}
