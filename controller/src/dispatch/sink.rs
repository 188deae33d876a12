//! Where the dispatcher writes a Run's status: the API server in the controller, a
//! recording sink in tests and benchmarks. Every write is the Run's whole status (the
//! controller applies it server-side on `/status`), so a repeated write is harmless.

use futures::future::BoxFuture;
use kruntimes_api::v1alpha1::RunStatus;

use crate::Error;

/// A Run, as the dispatcher knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its `metadata.uid`: runtimed's execution id, which makes a repeated Execute safe.
    pub uid: String,
}

/// Writes Run statuses.
pub trait StatusSink: Send + Sync + 'static {
    /// Writes `status` as the Run's status.
    fn write<'a>(
        &'a self,
        run: &'a RunKey,
        status: &'a RunStatus,
    ) -> BoxFuture<'a, Result<(), Error>>;
}
