//! Objects and calls the end-to-end suite and the benchmarks share.

// Helpers of tests and benchmarks: one that cannot do its job fails the caller, with
// the reason, which is what a test wants.
#![allow(clippy::panic)]

use kruntimes_api::v1alpha1::Runtime;
use kruntimes_runtimed_api::client::TlsClient;
use kruntimes_runtimed_api::proto::{self, execution_event::Event};
use serde_json::json;

/// A Runtime named `name` whose pods pass Pod Security `restricted` (a non-root uid,
/// `RuntimeDefault` seccomp, no privilege escalation, every capability dropped).
pub fn restricted_runtime(name: &str, replicas: i32, concurrency: i32) -> Runtime {
    let runtime = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "concurrency": concurrency,
            "template": {"spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "main", "image": "debian:trixie-slim",
                    "securityContext": {"allowPrivilegeEscalation": false,
                                        "capabilities": {"drop": ["ALL"]}}}],
            }},
        },
    });
    serde_json::from_value(runtime).unwrap_or_else(|e| panic!("the Runtime fixture: {e}"))
}

/// What one execution wrote and how it ended.
#[derive(Debug)]
pub struct Followed {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its final state.
    pub ended: proto::Execution,
}

/// Runs `script` with bash as execution `run_uid` through `ExecuteAndFollow`, to its
/// end. Panics (the caller is a test or a benchmark) when the call fails or the stream
/// ends without the execution's end.
pub async fn run_bash(client: &mut TlsClient, run_uid: &str, script: &str) -> Followed {
    let request = proto::ExecuteRequest {
        run_uid: run_uid.to_owned(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(script.to_owned()),
        ..Default::default()
    };
    let mut events = client
        .execute_and_follow(request)
        .await
        .unwrap_or_else(|e| panic!("ExecuteAndFollow: {e}"))
        .into_inner();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(event) = events
        .message()
        .await
        .unwrap_or_else(|e| panic!("ExecuteAndFollow's stream: {e}"))
    {
        match event.event {
            Some(Event::Output(chunk)) if chunk.stream == proto::Stream::Stderr as i32 => {
                stderr.extend(chunk.data);
            }
            Some(Event::Output(chunk)) => stdout.extend(chunk.data),
            Some(Event::Ended(ended)) => {
                return Followed {
                    stdout,
                    stderr,
                    ended,
                };
            }
            Some(Event::Started(_)) | None => {}
        }
    }
    panic!(
        "execution {run_uid} never ended; stdout {:?}",
        String::from_utf8_lossy(&stdout)
    );
}
