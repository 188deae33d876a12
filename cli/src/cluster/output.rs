//! A Run's output: live from its pod's container log through `pods/log` (the runtimed
//! agent mirrors each Run's output there as records, [`super::records`]), or, once the
//! pod is gone, from the tails the controller keeps in the Run's status.

use futures::AsyncBufReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kruntimes_api::labels::{CONTAINER_ANNOTATION, INJECTION_STATUS_ANNOTATION};
use kruntimes_api::v1alpha1::{Run, Runtime};
use kruntimes_runtimed_api::proto;
use kube::api::{Api, LogParams};

use super::error::Request;
use super::records::{Stream, Tracker};
use super::{Cluster, ClusterError};
use crate::commands::run::follow::{FollowError, Output};

/// Where a Run's output is read: its pod, the agent's container, its execution id.
#[derive(Clone, Debug)]
pub struct LogSource {
    /// The pod.
    pub pod: String,
    /// The container whose log holds the records.
    pub container: String,
    /// The execution id the records carry (`status.executionId`, else the uid).
    pub execution: String,
    /// Where to start reading: a second before the Run started.
    pub since: Option<k8s_openapi::jiff::Timestamp>,
}

/// How following a log ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Followed {
    /// Both streams sent their end.
    Complete,
    /// The log ended first (not following, the pod went, the container ended).
    LogEnded,
}

/// The execution id of `run`'s records.
pub fn execution_id(run: &Run) -> Option<String> {
    run.status
        .as_ref()
        .and_then(|s| s.execution_id.clone())
        .or_else(|| run.metadata.uid.clone())
}

/// Where `run`'s output is, or `None` while it has no pod or when its pod is gone.
pub async fn source(cluster: &Cluster, run: &Run) -> Result<Option<LogSource>, ClusterError> {
    let status = run.status.as_ref();
    let (Some(pod_name), Some(execution)) = (status.and_then(|s| s.pod.clone()), execution_id(run))
    else {
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let request = Request {
        verb: "get",
        resource: "pods",
        kind: "Pod",
        name: Some(&pod_name),
        namespace: Some(&cluster.namespace),
    };
    let Some(pod) = pods
        .get_opt(&pod_name)
        .await
        .map_err(|e| cluster.error(&request, e))?
    else {
        return Ok(None);
    };
    let container = target_container(cluster, run, &pod).await;
    let since = status
        .and_then(|s| s.start_time.as_deref())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .and_then(|t| {
            t.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .ok()
        });
    Ok(Some(LogSource {
        pod: pod_name,
        container,
        execution,
        since,
    }))
}

/// The container the agent is PID 1 of: the one the injection status names, else the
/// one the controller's annotation names (the Runtime's `spec.container`), else the
/// Runtime's `spec.container` itself, else the pod's first container.
async fn target_container(cluster: &Cluster, run: &Run, pod: &Pod) -> String {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let injected = annotations
        .get(INJECTION_STATUS_ANNOTATION)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("container")?.as_str().map(str::to_owned));
    if let Some(name) = injected.or_else(|| annotations.get(CONTAINER_ANNOTATION).cloned()) {
        return name;
    }
    let runtimes: Api<Runtime> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    // Reading the Runtime may be forbidden to someone who may read the log: then the
    // first container, as for a Runtime without `spec.container`.
    if let Ok(runtime) = runtimes.get(&run.spec.runtime_ref.name).await
        && let Some(name) = runtime.spec.container
    {
        return name;
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Reads `source`'s log (following it when `follow`) and writes the Run's new output
/// to stdout and stderr (only `only`'s when given) through `output`, until both
/// streams ended or the log did.
pub(crate) async fn follow_log(
    cluster: &Cluster,
    source: &LogSource,
    tracker: &mut Tracker,
    output: &mut Output<'_>,
    follow: bool,
    only: Option<Stream>,
) -> Result<Followed, ClusterError> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = LogParams {
        container: Some(source.container.clone()),
        follow,
        since_time: source.since,
        ..LogParams::default()
    };
    let request = Request {
        verb: "get",
        resource: "pods/log",
        kind: "Pod",
        name: Some(&source.pod),
        namespace: Some(&cluster.namespace),
    };
    let log = pods
        .log_stream(&source.pod, &params)
        .await
        .map_err(|e| cluster.error(&request, e))?;
    let mut log = std::pin::pin!(log);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = log.read_until(b'\n', &mut line).await.map_err(|e| {
            ClusterError::Platform(format!("reading the log of pod {}: {e}", source.pod))
        })?;
        if read == 0 {
            return Ok(Followed::LogEnded);
        }
        if let Some((stream, offset, data)) = tracker.accept(&line)
            && only.is_none_or(|s| s == stream)
        {
            let chunk = proto::LogChunk {
                stream: stream.proto(),
                offset,
                data,
            };
            output.write(chunk).map_err(write_error)?;
        }
        if tracker.done() {
            return Ok(Followed::Complete);
        }
    }
}

/// A write failure of krt's own output as a cluster error (the broken pipe apart:
/// callers check for it with [`is_broken_pipe`]).
pub(crate) fn write_error(error: FollowError) -> ClusterError {
    match error {
        FollowError::BrokenPipe => ClusterError::Platform(BROKEN_PIPE.to_owned()),
        FollowError::Failed(message) => ClusterError::Platform(message),
    }
}

const BROKEN_PIPE: &str = "stdout was closed";

/// Whether `error` says krt's stdout was closed (`krt logs RUN | head`).
pub fn is_broken_pipe(error: &ClusterError) -> bool {
    matches!(error, ClusterError::Platform(m) if m == BROKEN_PIPE)
}

/// Writes the tails of `run`'s status (only `only`'s stream when given), with a note
/// on stderr that they are tails. Returns whether there was a status output at all.
pub fn write_tails(run: &Run, only: Option<Stream>, why: &str) -> Result<bool, ClusterError> {
    let Some(tails) = run.status.as_ref().and_then(|s| s.output.as_ref()) else {
        eprintln!("krt: {why}, and the Run's status holds no output");
        return Ok(false);
    };
    eprintln!(
        "krt: {why}: showing the tails kept in the Run's status (the end of each stream only{})",
        if tails.truncated {
            "; the output was truncated"
        } else {
            ""
        }
    );
    let mut output = Output::new(None);
    for (stream, text) in [
        (Stream::Stdout, &tails.stdout_tail),
        (Stream::Stderr, &tails.stderr_tail),
    ] {
        if only.is_none_or(|s| s == stream) && !text.is_empty() {
            let chunk = proto::LogChunk {
                stream: stream.proto(),
                offset: 0,
                data: text.as_bytes().to_vec(),
            };
            output.write(chunk).map_err(write_error)?;
        }
    }
    Ok(true)
}
