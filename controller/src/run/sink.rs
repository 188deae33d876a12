//! Run statuses to the API server: the whole status, server-side applied on `/status`
//! with the controller's field manager (force: the controller owns `status`).

use futures::future::BoxFuture;
use kruntimes_api::v1alpha1::{Run, RunStatus};
use kube::api::{Api, Patch, PatchParams};

use crate::Error;
use crate::dispatch::{RunKey, StatusSink};
use crate::naming::FIELD_MANAGER;

/// Writes Run statuses through a Kubernetes client.
#[derive(Clone)]
pub struct KubeSink {
    client: kube::Client,
}

impl std::fmt::Debug for KubeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeSink")
    }
}

impl KubeSink {
    /// A sink writing with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// The apply patch of a Run's status.
pub fn status_patch(status: &RunStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": kruntimes_api::labels::API_VERSION,
        "kind": "Run",
        "status": status,
    })
}

/// Applies `status` as the status of `namespace/name`.
pub async fn apply_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &RunStatus,
) -> Result<(), Error> {
    let api: Api<Run> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(status_patch(status)))
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(format!("apply status of Run {namespace}/{name}"), e))
}

impl StatusSink for KubeSink {
    fn write<'a>(
        &'a self,
        run: &'a RunKey,
        status: &'a RunStatus,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(apply_status(
            &self.client,
            &run.namespace,
            &run.name,
            status,
        ))
    }
}
