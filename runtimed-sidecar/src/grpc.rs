//! The `runtimed.v1` API's plumbing shared by the agent and the sidecar: serving an
//! implementation on a unix socket, and the unix-socket client.

use std::path::Path;
use std::sync::Arc;

use crate::agent::Agent;
use crate::agent::service::Service;
use crate::{Error, proto};

pub use proto::runtimed_client::RuntimedClient;
pub use proto::runtimed_server::RuntimedServer;

/// Owner-only: the mode of every socket unless the agent is told otherwise.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// Serves the agent's API on a unix socket (mode 0600) until `shutdown` resolves.
pub async fn serve_unix(
    agent: Arc<Agent>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    serve_unix_with_mode(agent, socket, DEFAULT_SOCKET_MODE, shutdown).await
}

/// [`serve_unix`] with another file mode for the socket.
pub async fn serve_unix_with_mode(
    agent: Arc<Agent>,
    socket: &Path,
    mode: u32,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    serve_service_unix_with_mode(Service::new(agent), socket, mode, shutdown).await
}

/// Serves any implementation of the API (the agent's, or the sidecar's [`Proxy`]) on a
/// unix socket (mode 0600) until `shutdown` resolves.
pub async fn serve_service_unix<S: proto::runtimed_server::Runtimed>(
    service: S,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    serve_service_unix_with_mode(service, socket, DEFAULT_SOCKET_MODE, shutdown).await
}

/// [`serve_service_unix`] with another file mode for the socket.
pub async fn serve_service_unix_with_mode<S: proto::runtimed_server::Runtimed>(
    service: S,
    socket: &Path,
    mode: u32,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(socket)
        && meta.file_type().is_socket()
    {
        let _ = std::fs::remove_file(socket);
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("binding {}", socket.display()), e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode {mode:o} on the socket"), e))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(
            RuntimedServer::new(service)
                .max_decoding_message_size(crate::sidecar::git::MAX_EXECUTE_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::io("serving gRPC", std::io::Error::other(e)))
}

pub use kruntimes_runtimed_api::client::connect_unix;
