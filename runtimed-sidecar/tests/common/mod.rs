//! Helpers shared by the test files that follow a Run's output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use kruntimes_runtimed::grpc::RuntimedClient;
use kruntimes_runtimed::proto;
use tonic::transport::Channel;

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
