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
