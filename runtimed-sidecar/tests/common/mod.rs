//! Helpers shared by the test files: the runtimed processes they start, a follower of a
//! Run's output, a look through `/proc`.
// Tests stop loudly on the first unexpected value; each test file uses a part of these.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};

use kruntimes_runtimed::grpc::RuntimedClient;
use kruntimes_runtimed::proto;
use tonic::transport::Channel;

pub(crate) mod supervisor;

/// What a follower got of stdout: its bytes' sha256, how many, and each jump in offsets
/// (where the bytes it missed start, and how many).
#[derive(Debug, Default)]
pub(crate) struct Followed {
    pub(crate) received: u64,
    pub(crate) gaps: Vec<(u64, u64)>,
    pub(crate) sha256: Vec<u8>,
    pub(crate) ended: Option<proto::Execution>,
}

/// Reads an ExecuteAndFollow call to its end, calling `pace` after each stdout chunk
/// (a slow reader sleeps there).
pub(crate) async fn follow_stdout<F: Future<Output = ()>>(
    client: &mut RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
    mut pace: impl FnMut(u64) -> F,
) -> Followed {
    use sha2::Digest;
    let mut stream = client
        .execute_and_follow(request)
        .await
        .unwrap()
        .into_inner();
    let mut hash = sha2::Sha256::new();
    let mut followed = Followed::default();
    let mut next = 0;
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(proto::execution_event::Event::Output(chunk))
                if chunk.stream == proto::Stream::Stdout as i32 =>
            {
                if chunk.offset != next {
                    followed.gaps.push((next, chunk.offset - next));
                }
                next = chunk.offset + chunk.data.len() as u64;
                followed.received += chunk.data.len() as u64;
                hash.update(&chunk.data);
                pace(followed.received).await;
            }
            Some(proto::execution_event::Event::Ended(end)) => followed.ended = Some(end),
            _ => {}
        }
    }
    followed.sha256 = hash.finalize().to_vec();
    followed
}

/// `bytes` bytes of `yes 0123456789abcdef` (17-byte lines): what the Runs below write,
/// and its sha256 computed here.
pub(crate) fn pattern(bytes: usize) -> (proto::ExecuteRequest, Vec<u8>) {
    use sha2::Digest;
    let line = b"0123456789abcdef\n";
    let mut hash = sha2::Sha256::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(line.len());
        hash.update(&line[..n]);
        left -= n;
    }
    let request = proto::ExecuteRequest {
        run_uid: "pattern".into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(format!("yes 0123456789abcdef | head -c {bytes}")),
        timeout_ms: 120_000,
        ..Default::default()
    };
    (request, hash.finalize().to_vec())
}

/// The runtimed binary under test.
pub(crate) const RUNTIMED: &str = env!("CARGO_BIN_EXE_runtimed");

/// `runtimed ARGS`, logging warnings only, killed when dropped.
pub(crate) fn runtimed<S: AsRef<OsStr>>(args: &[S]) -> tokio::process::Child {
    tokio::process::Command::new(RUNTIMED)
        .args(args)
        .env("RUNTIMED_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `runtimed agent` with its socket and workspace in `dir` and `extra` arguments;
/// returns it and its socket.
pub(crate) fn agent(dir: &Path, extra: &[&str]) -> (tokio::process::Child, PathBuf) {
    let socket = dir.join("agent.sock");
    let mut args: Vec<&OsStr> = vec!["agent".as_ref(), "--socket".as_ref(), socket.as_ref()];
    let workspace = dir.join("ws");
    args.extend::<[&OsStr; 2]>(["--workspace".as_ref(), workspace.as_ref()]);
    args.extend(extra.iter().map(OsStr::new));
    (runtimed(&args), socket)
}

/// `runtimed sidecar` listening in `dir`, forwarding to `agent_socket`, with `extra`
/// arguments; returns it and its socket.
pub(crate) fn sidecar(
    dir: &Path,
    agent_socket: &Path,
    extra: &[&OsStr],
) -> (tokio::process::Child, PathBuf) {
    let socket = dir.join("sidecar.sock");
    let mut args: Vec<&OsStr> = vec![
        "sidecar".as_ref(),
        "--listen".as_ref(),
        socket.as_ref(),
        "--agent-socket".as_ref(),
        agent_socket.as_ref(),
    ];
    args.extend_from_slice(extra);
    (runtimed(&args), socket)
}

/// The pids of processes whose command line has `marker` as an argument.
pub(crate) fn processes_with_argument(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
        })
        .collect()
}
