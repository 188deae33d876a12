//! The agent's side of the `runtimed.v1` API: the gRPC service over an [`Agent`], and
//! the conversions between its requests and answers and the lifecycle's types.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::agent::lifecycle::{ExecSpec, Execution, Interpreter, Phase, unix_ms};
use crate::agent::output::{Follower, OutputStream};
use crate::{Error, Reason, limits, proto};

/// Log chunks buffered per Logs call before the server waits for the client.
const LOG_CHANNEL_CAPACITY: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    agent: Arc<Agent>,
}

impl Service {
    /// A service over `agent`.
    pub fn new(agent: Arc<Agent>) -> Self {
        Self { agent }
    }

    /// Execute's check: the agent's view of the request.
    fn spec(request: proto::ExecuteRequest) -> Result<ExecSpec, Error> {
        if request.artifacts.is_some() {
            return Err(Error::InvalidArgument(
                "artifacts are uploaded by the sidecar; send this request to it".into(),
            ));
        }
        to_spec(request)
    }
}

fn started(execution: &Execution, created: bool) -> proto::ExecuteResponse {
    proto::ExecuteResponse {
        execution_id: execution.run_uid().to_owned(),
        created,
    }
}

fn phase(p: Phase) -> proto::Phase {
    match p {
        Phase::Running => proto::Phase::Running,
        Phase::Succeeded => proto::Phase::Succeeded,
        Phase::Failed => proto::Phase::Failed,
        Phase::TimedOut => proto::Phase::TimedOut,
        Phase::Cancelled => proto::Phase::Cancelled,
        Phase::Error => proto::Phase::Error,
    }
}

fn stats(stream: &OutputStream) -> proto::StreamStats {
    let (total_bytes, dropped_bytes, truncated) = stream.stats();
    proto::StreamStats {
        total_bytes,
        dropped_bytes,
        truncated,
    }
}

/// The wire form of an execution's snapshot.
pub fn to_proto(e: &Execution) -> proto::Execution {
    let s = e.snapshot();
    proto::Execution {
        execution_id: e.run_uid().to_owned(),
        run_uid: e.run_uid().to_owned(),
        phase: phase(s.phase) as i32,
        pid: s.pid.unwrap_or(0),
        exit_code: s.exit_code,
        signal: s.signal,
        start_time_unix_ms: unix_ms(s.started),
        end_time_unix_ms: unix_ms(s.ended),
        stdout: Some(stats(&e.stdout)),
        stderr: Some(stats(&e.stderr)),
        reason: s.reason.map(Reason::as_str).unwrap_or_default().to_owned(),
        message: s.message,
        workspace: if s.workspace_present {
            e.workspace().display().to_string()
        } else {
            String::new()
        },
        // The agent knows nothing of artifacts; the sidecar fills these.
        ..Default::default()
    }
}

/// The lifecycle's view of an ExecuteRequest.
pub fn to_spec(r: proto::ExecuteRequest) -> Result<ExecSpec, Error> {
    let interpreter = match proto::Interpreter::try_from(r.interpreter) {
        Ok(proto::Interpreter::Bash | proto::Interpreter::Unspecified) => Interpreter::Bash,
        Ok(proto::Interpreter::Python) => Interpreter::Python,
        Ok(proto::Interpreter::Exec) => Interpreter::Exec,
        Err(_) => return Err(Error::InvalidArgument("unknown interpreter".into())),
    };
    if r.git.is_some() {
        return Err(Error::InvalidArgument(
            "git sources are fetched by the sidecar; the agent takes files only".into(),
        ));
    }
    let executable = r
        .files
        .iter()
        .filter(|f| f.executable)
        .map(|f| f.path.clone())
        .collect();
    Ok(ExecSpec {
        run_uid: r.run_uid,
        interpreter: Some(interpreter),
        script: r.script,
        files: r.files.into_iter().map(|f| (f.path, f.content)).collect(),
        executable,
        entrypoint: r.entrypoint,
        command: r.command,
        args: r.args,
        env: r.env.into_iter().map(|e| (e.name, e.value)).collect(),
        input: r.input,
        timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms)),
        keep_workspace: r.keep_workspace,
    })
}

pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<proto::LogChunk, Status>> + Send>>;
pub(crate) type EventStream =
    Pin<Box<dyn Stream<Item = Result<proto::ExecutionEvent, Status>> + Send>>;

/// Sends the output `followers` read (stdout's, stderr's: each, or none), each chunk
/// as `wrap` makes it: with `follow` until both streams have ended, else what is there
/// now. One task for both streams; a follower is dropped (the program no longer waits
/// for it) once its stream is done. Returns false when the receiver went away.
async fn pump_output<T>(
    execution: &Execution,
    mut followers: [Option<Follower>; 2],
    follow: bool,
    tx: &mpsc::Sender<Result<T, Status>>,
    wrap: impl Fn(proto::LogChunk) -> T,
) -> bool {
    let kinds = [proto::Stream::Stdout, proto::Stream::Stderr];
    let mut changes = [execution.stdout.subscribe(), execution.stderr.subscribe()];
    loop {
        let mut sent = false;
        for (i, slot) in followers.iter_mut().enumerate() {
            let Some(follower) = slot else {
                continue;
            };
            // Marked seen before the read: data that comes after it wakes the wait.
            changes[i].borrow_and_update();
            let (chunk, closed) = follower.read(limits::READ_CHUNK_BYTES);
            match chunk {
                Some((at, data)) => {
                    let chunk = proto::LogChunk {
                        stream: kinds[i] as i32,
                        offset: at,
                        data,
                    };
                    // Waiting here is the backpressure: the follower reads no more, and
                    // the program waits for it (within the stream's follow limits).
                    if tx.send(Ok(wrap(chunk))).await.is_err() {
                        return false;
                    }
                    sent = true;
                }
                None if closed || !follow => *slot = None,
                None => {}
            }
        }
        let wanted = [followers[0].is_some(), followers[1].is_some()];
        if wanted == [false, false] {
            return true;
        }
        if !sent {
            let [stdout_changed, stderr_changed] = &mut changes;
            let changed = tokio::select! {
                changed = stdout_changed.changed(), if wanted[0] => changed,
                changed = stderr_changed.changed(), if wanted[1] => changed,
            };
            if changed.is_err() {
                return true;
            }
        }
    }
}

fn event(event: proto::execution_event::Event) -> proto::ExecutionEvent {
    proto::ExecutionEvent { event: Some(event) }
}

#[tonic::async_trait]
impl proto::runtimed_server::Runtimed for Service {
    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let spec = Self::spec(request.into_inner())?;
        let (execution, created) = self.agent.execute(spec).await?;
        Ok(Response::new(started(&execution, created)))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        let execution = self.agent.get(&request.into_inner().execution_id)?;
        Ok(Response::new(to_proto(&execution)))
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        request: Request<proto::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let execution = self.agent.get(&r.execution_id)?;
        let which = proto::Stream::try_from(r.stream).unwrap_or(proto::Stream::Unspecified);
        let (tx, rx) = mpsc::channel(LOG_CHANNEL_CAPACITY);
        let followers = [
            (which != proto::Stream::Stderr).then(|| execution.stdout.follow(r.stdout_offset)),
            (which != proto::Stream::Stdout).then(|| execution.stderr.follow(r.stderr_offset)),
        ];
        tokio::spawn(async move {
            pump_output(&execution, followers, r.follow, &tx, |chunk| chunk).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        let r = request.into_inner();
        let execution = self.agent.get(&r.execution_id)?;
        execution.cancel((r.grace_ms > 0).then(|| Duration::from_millis(r.grace_ms)));
        Ok(Response::new(to_proto(&execution)))
    }

    async fn list(
        &self,
        _request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let executions = self.agent.list().iter().map(|e| to_proto(e)).collect();
        Ok(Response::new(proto::ListResponse { executions }))
    }

    async fn forget(
        &self,
        request: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        self.agent
            .forget(&request.into_inner().execution_id)
            .await?;
        Ok(Response::new(proto::ForgetResponse {}))
    }

    async fn health(
        &self,
        _request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        let root = &self.agent.config().workspace_root;
        let probe = root.join(format!(".health-{}", std::process::id()));
        let workspace_writable = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        let capacity = self.agent.bounds().max_running as u32;
        Ok(Response::new(proto::HealthResponse {
            ready: workspace_writable,
            workspace_writable,
            running: self.agent.running() as u32,
            capacity,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn release_workspace(
        &self,
        request: Request<proto::ReleaseWorkspaceRequest>,
    ) -> Result<Response<proto::Execution>, Status> {
        let id = request.into_inner().execution_id;
        let execution = self.agent.get(&id)?;
        if !execution.snapshot().phase.is_terminal() {
            return Err(Error::StillRunning(id).into());
        }
        execution.remove_workspace().await;
        Ok(Response::new(to_proto(&execution)))
    }

    type ExecuteAndFollowStream = EventStream;

    async fn execute_and_follow(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteAndFollowStream>, Status> {
        let spec = Self::spec(request.into_inner())?;
        // Following from before the program starts: it waits for this call's reader.
        let (execution, created, [stdout, stderr]) = self.agent.execute_and_follow(spec).await?;
        let started = started(&execution, created);
        let (tx, rx) = mpsc::channel(LOG_CHANNEL_CAPACITY);
        tokio::spawn(async move {
            let output = |chunk| event(proto::execution_event::Event::Output(chunk));
            if tx
                .send(Ok(event(proto::execution_event::Event::Started(started))))
                .await
                .is_err()
                || !pump_output(&execution, [Some(stdout), Some(stderr)], true, &tx, output).await
            {
                return;
            }
            // The streams end once the execution is terminal; waiting costs nothing then.
            execution.wait().await;
            let ended = proto::execution_event::Event::Ended(to_proto(&execution));
            let _ = tx.send(Ok(event(ended))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
