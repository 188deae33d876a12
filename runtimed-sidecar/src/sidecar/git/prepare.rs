//! The sidecar's step before forwarding an Execute with a git source: fetch it (unless
//! the agent already holds the Run) and hand the tree to the agent as files.

use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::{
    COMMIT_METADATA, Fetcher, GitError, MAX_REPORTED_SUBMODULES, SUBMODULES_METADATA, bounded,
    check,
};
use crate::proto;
use crate::proto::runtimed_client::RuntimedClient;

/// What a Proxy needs to forward an Execute with a git source.
#[derive(Debug)]
pub struct Prepared {
    /// The request to forward: `git` cleared, `files` filled (or, when the agent
    /// already has this execution, left empty: the agent answers `created: false`).
    pub request: proto::ExecuteRequest,
    /// Metadata to add to the response (commit delivered, submodules skipped).
    pub metadata: Vec<(&'static str, MetadataValue<Ascii>)>,
}

/// The sidecar's step before forwarding an Execute: when `request.git` is set and the
/// agent does not already hold this run uid, fetch it and turn it into files. A fetch
/// failure is returned as a gRPC error whose `krt-reason` metadata is the Run failure
/// reason; no execution is registered.
pub async fn prepare_execute(
    fetcher: Option<&Fetcher>,
    agent: &RuntimedClient<Channel>,
    mut request: proto::ExecuteRequest,
) -> Result<Prepared, Status> {
    let mut metadata = Vec::new();
    let Some(git) = request.git.take() else {
        return Ok(Prepared { request, metadata });
    };
    if request.script.is_some() || !request.files.is_empty() {
        return Err(GitError::SourceInvalid(
            "git excludes script and files: a Run gets one tree, inline or fetched".into(),
        )
        .into());
    }
    let source = check(&git)?;
    // Idempotence: a second Execute for a run uid the agent holds must not fetch again.
    let known = agent
        .clone()
        .status(proto::StatusRequest {
            execution_id: request.run_uid.clone(),
        })
        .await;
    match known {
        Ok(_) => return Ok(Prepared { request, metadata }),
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => return Err(status),
    }
    let Some(fetcher) = fetcher else {
        return Err(GitError::FetchFailed("this sidecar has no git fetcher".into()).into());
    };
    let fetched = fetcher.fetch(&source).await.inspect_err(|e| {
        tracing::info!(run_uid = %request.run_uid, url = %source.url, error = %bounded(&e.to_string()), "git fetch failed");
    })?;
    tracing::info!(
        run_uid = %request.run_uid,
        url = %source.url,
        commit = %fetched.commit,
        files = fetched.files.len(),
        pack_bytes = fetched.pack_bytes,
        skipped_submodules = fetched.skipped_submodules.len(),
        "git sources fetched"
    );
    if let Ok(value) = MetadataValue::try_from(fetched.commit.as_str()) {
        metadata.push((COMMIT_METADATA, value));
    }
    if !fetched.skipped_submodules.is_empty() {
        let shown: Vec<String> = fetched
            .skipped_submodules
            .iter()
            .take(MAX_REPORTED_SUBMODULES)
            .map(|p| p.escape_default().to_string())
            .collect();
        let text = bounded(&format!(
            "{}: {}",
            fetched.skipped_submodules.len(),
            shown.join(", ")
        ));
        if let Ok(value) = MetadataValue::try_from(text.as_str()) {
            metadata.push((SUBMODULES_METADATA, value));
        }
    }
    request.files = fetched
        .files
        .into_iter()
        .map(|f| proto::File {
            path: f.path,
            content: f.content,
            executable: f.executable,
        })
        .collect();
    Ok(Prepared { request, metadata })
}
