//! The sidecar's side of the `runtimed.v1` API: every call forwarded to the agent, plus
//! what only the sidecar does (git sources, artifacts).

use std::path::Path;
use std::sync::Arc;

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::agent::service::{EventStream, LogStream};
use crate::grpc::RuntimedClient;
use crate::proto;
use crate::sidecar::artifacts::{self, Uploads};
use crate::sidecar::git;

/// The sidecar's side of the API: every call forwarded to the agent, plus what only
/// the sidecar does: an Execute with a git source is fetched first and forwarded as
/// files (see [`crate::sidecar::git`]); artifacts are uploaded once the Run is terminal (see
/// [`crate::sidecar::artifacts`]).
#[derive(Debug, Clone)]
pub struct Proxy {
    agent: RuntimedClient<Channel>,
    artifacts: Arc<Uploads>,
    git: Option<git::Fetcher>,
}

impl Proxy {
    /// A proxy to the agent listening on `agent_socket` (connected on first use, and
    /// again after the agent restarts).
    pub fn new(agent_socket: &Path) -> Result<Self, tonic::transport::Error> {
        let channel =
            Endpoint::from_shared(format!("unix://{}", agent_socket.display()))?.connect_lazy();
        Ok(Self {
            // Requests carrying a fetched git tree are large; see MAX_EXECUTE_REQUEST_BYTES.
            agent: RuntimedClient::new(channel)
                .max_encoding_message_size(git::MAX_EXECUTE_REQUEST_BYTES),
            artifacts: Arc::new(Uploads::new(artifacts::Settings::default())),
            git: None,
        })
    }

    /// Fetches git sources with `fetcher` (without one, a request with a git source
    /// fails with GitFetchFailed).
    pub fn with_git(mut self, fetcher: git::Fetcher) -> Self {
        self.git = Some(fetcher);
        self
    }

    /// The same proxy with these artifact settings (credentials, http, workspace root).
    pub fn with_artifacts(mut self, settings: artifacts::Settings) -> Self {
        self.artifacts = Arc::new(Uploads::new(settings));
        self
    }
}

#[tonic::async_trait]
impl proto::runtimed_server::Runtimed for Proxy {
    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let mut request = request.into_inner();
        // Checked before anything is fetched or started.
        let artifacts = self.artifacts.prepare(&mut request)?;
        let run_uid = request.run_uid.clone();
        let prepared = git::prepare_execute(self.git.as_ref(), &self.agent, request).await?;
        let mut response = self.agent.clone().execute(prepared.request).await?;
        for (key, value) in prepared.metadata {
            response.metadata_mut().insert(key, value);
        }
        if let Some(artifacts) = artifacts {
            let created = response.get_ref().created;
            self.artifacts
                .track(self.agent.clone(), run_uid, artifacts, created);
        }
        Ok(response)
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        let mut response = self.agent.clone().status(request.into_inner()).await?;
        self.artifacts.annotate(response.get_mut());
        Ok(response)
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        request: Request<proto::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let stream = self.agent.clone().logs(request.into_inner()).await?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        self.agent.clone().cancel(request.into_inner()).await
    }

    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let mut response = self.agent.clone().list(request.into_inner()).await?;
        for execution in &mut response.get_mut().executions {
            self.artifacts.annotate(execution);
        }
        Ok(response)
    }

    async fn forget(
        &self,
        request: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let request = request.into_inner();
        let id = request.execution_id.clone();
        self.artifacts.check_forget(&id)?;
        let response = self.agent.clone().forget(request).await?;
        self.artifacts.forget(&id);
        Ok(response)
    }

    async fn release_workspace(
        &self,
        request: Request<proto::ReleaseWorkspaceRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        let mut response = self
            .agent
            .clone()
            .release_workspace(request.into_inner())
            .await?;
        self.artifacts.annotate(response.get_mut());
        Ok(response)
    }

    type ExecuteAndFollowStream = EventStream;

    async fn execute_and_follow(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteAndFollowStream>, Status> {
        use futures::StreamExt;
        use proto::execution_event::Event;

        let mut request = request.into_inner();
        // As Execute: checked before anything is fetched or started.
        let artifacts = self.artifacts.prepare(&mut request)?;
        let run_uid = request.run_uid.clone();
        let prepared = git::prepare_execute(self.git.as_ref(), &self.agent, request).await?;
        let (mut metadata, mut events, extensions) = self
            .agent
            .clone()
            .execute_and_follow(prepared.request)
            .await?
            .into_parts();
        for (key, value) in prepared.metadata {
            metadata.insert(key, value);
        }
        // `started` comes first; whether the Run is new decides how its upload is
        // tracked (as after Execute).
        let first = events
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the agent ended the call before answering"))?;
        if let Some(artifacts) = artifacts {
            let created = matches!(&first.event, Some(Event::Started(s)) if s.created);
            self.artifacts
                .track(self.agent.clone(), run_uid.clone(), artifacts, created);
        }
        // The last message waits for the artifacts, so that it is the final state.
        let (uploads, agent) = (self.artifacts.clone(), self.agent.clone());
        let rest = events.then(move |item| {
            let (uploads, mut agent, run_uid) = (uploads.clone(), agent.clone(), run_uid.clone());
            async move {
                let mut item = item?;
                if let Some(Event::Ended(execution)) = &mut item.event {
                    if uploads.settled(&run_uid).await {
                        // Taken before the upload: the workspace has been released since.
                        let status = proto::StatusRequest {
                            execution_id: run_uid,
                        };
                        *execution = agent.status(status).await?.into_inner();
                    }
                    uploads.annotate(execution);
                }
                Ok(item)
            }
        });
        let events = futures::stream::once(async { Ok(first) }).chain(rest);
        Ok(Response::from_parts(metadata, Box::pin(events), extensions))
    }

    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        // Not ready while the agent cannot be reached.
        match self.agent.clone().health(request.into_inner()).await {
            Ok(response) => Ok(response),
            Err(status) => {
                tracing::warn!(%status, "agent unreachable");
                Ok(Response::new(proto::HealthResponse {
                    ready: false,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }))
            }
        }
    }
}
