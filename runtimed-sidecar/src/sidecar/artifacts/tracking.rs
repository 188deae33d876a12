//! The sidecar's artifact state per Run: taken off the request at Execute, the Run
//! watched until it is terminal, its files uploaded, its workspace released, and the
//! outcome added to every answer about the Run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;

use super::request::check_request;
use super::upload::upload_workspace;
use super::{ArtifactError, MAX_TRACKED_RUNS, STATUS_POLL_INTERVAL, Settings};
use crate::grpc::RuntimedClient;
use crate::{Reason, lock, proto};

#[derive(Debug, Clone)]
struct Tracked {
    order: u64,
    state: proto::ArtifactsState,
    reason: Option<Reason>,
    message: String,
    results: Vec<proto::ArtifactResult>,
    store: proto::S3Store,
}

/// The sidecar's artifact uploads: one per Run asking for artifacts, keyed by run uid.
#[derive(Debug, Default)]
pub struct Uploads {
    settings: Settings,
    runs: Mutex<(u64, HashMap<String, Tracked>)>,
    /// Woken whenever a tracked Run's state changes (see [`Uploads::settled`]).
    changed: tokio::sync::Notify,
}

impl Uploads {
    /// Uploads with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            runs: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// At Execute: checks the request's artifacts and, when there are some, takes them
    /// off the request (the agent does not upload) and makes the agent keep the
    /// workspace. Returns what [`Uploads::track`] needs.
    pub fn prepare(
        &self,
        request: &mut proto::ExecuteRequest,
    ) -> Result<Option<proto::ArtifactRequest>, ArtifactError> {
        let Some(artifacts) = request.artifacts.take() else {
            return Ok(None);
        };
        check_request(&artifacts, self.settings.allow_http)?;
        let runs = lock(&self.runs);
        if !runs.1.contains_key(&request.run_uid) && runs.1.len() >= MAX_TRACKED_RUNS {
            let finished = runs.1.values().filter(|t| is_final(t.state)).count();
            if finished == 0 {
                return Err(ArtifactError::TooManyInProgress);
            }
        }
        request.keep_workspace = true;
        Ok(Some(artifacts))
    }

    /// After the agent accepted the Run: watches it and uploads when it is terminal.
    /// Idempotent on the run uid: a Run already tracked is not watched twice. `created`
    /// is the agent's answer; an untracked Run the agent already had (this sidecar
    /// restarted) is watched too, so its upload still happens if its workspace is there.
    pub fn track(
        self: &Arc<Self>,
        agent: RuntimedClient<Channel>,
        run_uid: String,
        request: proto::ArtifactRequest,
        created: bool,
    ) {
        {
            let mut runs = lock(&self.runs);
            if runs.1.contains_key(&run_uid) {
                return;
            }
            if runs.1.len() >= MAX_TRACKED_RUNS {
                // Forget the oldest finished entry (prepare made sure there is one).
                let oldest = runs
                    .1
                    .iter()
                    .filter(|(_, t)| is_final(t.state))
                    .min_by_key(|(_, t)| t.order)
                    .map(|(uid, _)| uid.clone());
                if let Some(uid) = oldest {
                    runs.1.remove(&uid);
                }
            }
            runs.0 += 1;
            let order = runs.0;
            runs.1.insert(
                run_uid.clone(),
                Tracked {
                    order,
                    state: proto::ArtifactsState::Pending,
                    reason: None,
                    message: String::new(),
                    results: Vec::new(),
                    store: request.store.clone().unwrap_or_default(),
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(agent, run_uid, request, created).await });
    }

    fn set(&self, run_uid: &str, f: impl FnOnce(&mut Tracked)) {
        if let Some(t) = lock(&self.runs).1.get_mut(run_uid) {
            f(t);
        }
        self.changed.notify_waiters();
    }

    /// Returns once the Run's artifacts are uploaded or have failed and its workspace
    /// released (at once for a Run not tracked): what ExecuteAndFollow waits for before
    /// its last message. True when the Run is tracked.
    pub async fn settled(&self, run_uid: &str) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look, so a change right after it is not missed.
            changed.as_mut().enable();
            match lock(&self.runs).1.get(run_uid) {
                Some(t) if !is_final(t.state) => {}
                tracked => return tracked.is_some(),
            }
            changed.await;
        }
    }

    async fn run(
        &self,
        mut agent: RuntimedClient<Channel>,
        run_uid: String,
        request: proto::ArtifactRequest,
        created: bool,
    ) {
        let Some(execution) = wait_terminal(&mut agent, &run_uid).await else {
            self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Failed;
                t.reason = Some(Reason::ExecutionGone);
                t.message = "the agent no longer knows the execution; nothing was uploaded".into();
            });
            return;
        };
        self.set(&run_uid, |t| t.state = proto::ArtifactsState::Uploading);
        let workspace = match &self.settings.workspace_root {
            Some(root) => root.join(&run_uid),
            None => PathBuf::from(&execution.workspace),
        };
        let outcome = if execution.workspace.is_empty() && !created {
            // Released by an earlier sidecar process, whose result was lost with it.
            self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Failed;
                t.reason = Some(Reason::ArtifactStateLost);
                t.message = "the workspace was already released by an earlier sidecar; \
                    whether its upload succeeded is unknown here"
                    .into();
            });
            return;
        } else if execution.workspace.is_empty() {
            Err(ArtifactError::ReadFailed {
                path: workspace.display().to_string(),
                reason: "the workspace no longer exists (never created, or already deleted)".into(),
            })
        } else {
            upload_workspace(
                &workspace,
                &run_uid,
                &request,
                &self.settings.credentials,
                self.settings.allow_http,
            )
            .await
        };
        // Upload first, then delete: the workspace goes only now, and the state is
        // final only once it has gone (ExecuteAndFollow's last message waits for it).
        let release = proto::ReleaseWorkspaceRequest {
            execution_id: run_uid.clone(),
        };
        if let Err(status) = agent.release_workspace(release).await {
            tracing::warn!(run_uid, %status, "cannot release the workspace");
        }
        match outcome {
            Ok(results) => self.set(&run_uid, |t| {
                t.state = proto::ArtifactsState::Uploaded;
                t.reason = Some(Reason::Uploaded);
                t.message = format!("{} file(s) uploaded", results.len());
                t.results = results;
            }),
            Err(e) => {
                tracing::warn!(run_uid, error = %e, "artifacts not uploaded");
                self.set(&run_uid, |t| {
                    t.state = proto::ArtifactsState::Failed;
                    t.reason = e.reason();
                    t.message = e.to_string();
                });
            }
        }
    }

    /// Adds the artifact state of a tracked Run to its snapshot.
    pub fn annotate(&self, execution: &mut proto::Execution) {
        if let Some(t) = lock(&self.runs).1.get(&execution.run_uid) {
            execution.artifacts = t.results.clone();
            execution.artifacts_state = t.state as i32;
            execution.artifacts_reason =
                t.reason.map(Reason::as_str).unwrap_or_default().to_owned();
            execution.artifacts_message = t.message.clone();
            execution.artifact_store = Some(t.store.clone());
        }
    }

    /// Before Forget: refused while the Run's artifacts are uploading (upload first).
    pub fn check_forget(&self, run_uid: &str) -> Result<(), ArtifactError> {
        match lock(&self.runs).1.get(run_uid) {
            Some(t) if t.state == proto::ArtifactsState::Uploading => {
                Err(ArtifactError::StillUploading(run_uid.to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// After Forget: drops the Run's entry.
    pub fn forget(&self, run_uid: &str) {
        lock(&self.runs).1.remove(run_uid);
    }
}

fn is_final(state: proto::ArtifactsState) -> bool {
    matches!(
        state,
        proto::ArtifactsState::Uploaded | proto::ArtifactsState::Failed
    )
}

/// Waits until the execution is terminal; `None` when the agent no longer knows it.
async fn wait_terminal(
    agent: &mut RuntimedClient<Channel>,
    run_uid: &str,
) -> Option<proto::Execution> {
    loop {
        // Sleeps until the output ends (offsets past the end: no data is sent).
        let follow = proto::LogsRequest {
            execution_id: run_uid.to_owned(),
            stream: proto::Stream::Unspecified as i32,
            stdout_offset: u64::MAX,
            stderr_offset: u64::MAX,
            follow: true,
        };
        if let Ok(stream) = agent.logs(follow).await {
            let mut stream = stream.into_inner();
            while let Ok(Some(_)) = stream.message().await {}
        }
        let status = proto::StatusRequest {
            execution_id: run_uid.to_owned(),
        };
        match agent.status(status).await {
            Ok(e) if e.get_ref().phase != proto::Phase::Running as i32 => {
                return Some(e.into_inner());
            }
            Err(s) if s.code() == tonic::Code::NotFound => return None,
            _ => tokio::time::sleep(STATUS_POLL_INTERVAL).await,
        }
    }
}
