//! Artifact upload against a real S3-compatible server (moto) on loopback: keys, sizes
//! and sha256 read back from the server; the size limit checked before any upload;
//! rollback of a partial upload; symlinks never followed; and end to end through a
//! real `runtimed sidecar` and `runtimed agent`.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use kruntimes_runtimed::grpc::connect_unix;
use kruntimes_runtimed::proto;
use kruntimes_runtimed::sidecar::artifacts::{
    self, ArtifactError, Matched, upload, upload_workspace,
};
use std::sync::Arc;

use kruntimes_runtimed::sidecar::artifacts::{CredentialSource, Credentials, build_store};
use kruntimes_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

const RUNTIMED: &str = env!("CARGO_BIN_EXE_runtimed");

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn request(
    server: &S3Server,
    bucket: &str,
    prefix: &str,
    paths: &[&str],
    max_bytes: u64,
) -> proto::ArtifactRequest {
    proto::ArtifactRequest {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        max_bytes,
        store: Some(store(server, bucket, prefix)),
    }
}

/// Where `bucket` is, with `prefix`, as a request names it.
fn store(server: &S3Server, bucket: &str, prefix: &str) -> proto::S3Store {
    proto::S3Store {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

/// The sidecar's own S3 client for `bucket`, signed with the test keys.
fn client(server: &S3Server, bucket: &str) -> Arc<dyn ObjectStore> {
    let credentials = Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
    };
    Arc::new(build_store(&store(server, bucket, ""), &credentials, false).unwrap())
}

/// The test keys as a mounted Secret holds them, and the source reading them.
fn credentials_dir(server: &S3Server) -> (tempfile::TempDir, CredentialSource) {
    let dir = server.credentials_dir();
    let source = CredentialSource::Dir(dir.path().to_owned());
    (dir, source)
}

#[tokio::test]
async fn uploads_matched_files_with_their_keys_sizes_and_sha256() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let (_creds, credentials) = credentials_dir(&server);
    let ws = tempfile::tempdir().unwrap();
    let a = br#"{"answer": 42}"#.to_vec();
    let b: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write(ws.path(), "out/a.json", &a);
    write(ws.path(), "out/deep/b.bin", &b);
    write(ws.path(), "out/deep/c.txt", b"not json");
    write(ws.path(), "other.json", b"{}");

    let results = upload_workspace(
        ws.path(),
        "uid-1",
        &request(
            &server,
            "runs",
            "team-a/",
            &["out/*.json", "out/**/*.bin"],
            0,
        ),
        &credentials,
        false,
    )
    .await
    .unwrap();

    let summary: Vec<(&str, &str, u64)> = results
        .iter()
        .map(|r| (r.path.as_str(), r.key.as_str(), r.size))
        .collect();
    assert_eq!(
        summary,
        [
            ("out/a.json", "team-a/uid-1/out/a.json", a.len() as u64),
            (
                "out/deep/b.bin",
                "team-a/uid-1/out/deep/b.bin",
                b.len() as u64
            ),
        ]
    );
    for (result, content) in results.iter().zip([&a, &b]) {
        assert_eq!(result.sha256, sha256_hex(content));
        let stored = server.object("runs", &result.key);
        assert_eq!(&stored, content, "{}", result.key);
        assert_eq!(sha256_hex(&stored), result.sha256);
    }
    assert_eq!(
        server.keys("runs"),
        ["team-a/uid-1/out/a.json", "team-a/uid-1/out/deep/b.bin"]
    );
}

#[tokio::test]
async fn nothing_matched_uploads_nothing_and_succeeds() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let (_creds, credentials) = credentials_dir(&server);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "main.sh", b"true");
    let results = upload_workspace(
        ws.path(),
        "uid-2",
        &request(&server, "runs", "", &["out/**"], 0),
        &credentials,
        false,
    )
    .await
    .unwrap();
    assert!(results.is_empty());
    assert!(server.keys("runs").is_empty());
}

#[tokio::test]
async fn total_size_at_the_limit_uploads_and_one_byte_over_uploads_nothing() {
    let server = S3Server::start();
    server.create_bucket("at-limit");
    server.create_bucket("over-limit");
    let (_creds, credentials) = credentials_dir(&server);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "out/one", &[1u8; 600]);
    write(ws.path(), "out/two", &[2u8; 400]);
    let total = 1000;

    let results = upload_workspace(
        ws.path(),
        "uid-3",
        &request(&server, "at-limit", "", &["out/*"], total),
        &credentials,
        false,
    )
    .await
    .unwrap();
    assert_eq!(results.iter().map(|r| r.size).sum::<u64>(), total);
    assert_eq!(server.keys("at-limit").len(), 2);

    let error = upload_workspace(
        ws.path(),
        "uid-3",
        &request(&server, "over-limit", "", &["out/*"], total - 1),
        &credentials,
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ArtifactError::TooLarge {
                total: 1000,
                max: 999
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.reason(),
        Some(kruntimes_runtimed::Reason::ArtifactsTooLarge)
    );
    assert!(
        server.keys("over-limit").is_empty(),
        "no object may be written"
    );
}

#[tokio::test]
async fn a_failure_after_some_uploads_deletes_every_uploaded_object() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let ws = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..12 {
        let path = format!("out/f{i:02}");
        write(ws.path(), &path, &[i as u8; 1000]);
        files.push(Matched { path, size: 1000 });
    }
    // Last, so at least 12 - UPLOAD_CONCURRENCY + 1 uploads have finished before its
    // read starts; it changed size after matching, so its read fails.
    write(
        ws.path(),
        "out/z-changed",
        b"now longer than when it was matched",
    );
    files.push(Matched {
        path: "out/z-changed".into(),
        size: 3,
    });

    let error = upload(client(&server, "runs"), ws.path(), "uid-4", "p/", files)
        .await
        .unwrap_err();
    assert_eq!(
        error.reason(),
        Some(kruntimes_runtimed::Reason::ArtifactUploadFailed),
        "{error}"
    );
    let ArtifactError::UploadFailed { key, rollback, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(key, "p/uid-4/out/z-changed");
    let deleted: usize = rollback
        .strip_prefix("rolled back: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected rollback: {rollback}"));
    assert!(
        deleted > 12 - artifacts::UPLOAD_CONCURRENCY,
        "only {deleted} objects were uploaded before the failure"
    );
    assert!(server.keys("runs").is_empty(), "rollback left objects");
}

#[tokio::test]
async fn a_missing_bucket_fails_with_a_clear_reason() {
    let server = S3Server::start();
    let (_creds, credentials) = credentials_dir(&server);
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "out/a", b"a");
    let error = upload_workspace(
        ws.path(),
        "uid-5",
        &request(&server, "no-such-bucket", "", &["out/*"], 0),
        &credentials,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.reason(),
        Some(kruntimes_runtimed::Reason::ArtifactUploadFailed),
        "{error}"
    );
    assert!(error.to_string().contains("out/a"), "{error}");
}

#[tokio::test]
async fn symlinks_are_never_followed_or_uploaded() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let (_creds, credentials) = credentials_dir(&server);
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"outside the workspace");
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "out/real.txt", b"inside");
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        ws.path().join("out/file-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("out/dir-link")).unwrap();
    std::os::unix::fs::symlink("real.txt", ws.path().join("out/inner-link")).unwrap();

    let results = upload_workspace(
        ws.path(),
        "uid-6",
        &request(&server, "runs", "", &["out/**"], 0),
        &credentials,
        false,
    )
    .await
    .unwrap();
    let paths: Vec<&str> = results.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["out/real.txt"]);
    assert_eq!(server.keys("runs"), ["uid-6/out/real.txt"]);
}

#[tokio::test]
async fn plain_http_to_a_non_loopback_endpoint_is_refused() {
    let r = proto::ArtifactRequest {
        paths: vec!["out/**".into()],
        max_bytes: 0,
        store: Some(proto::S3Store {
            endpoint: "http://s3.example.com".into(),
            bucket: "runs".into(),
            ..Default::default()
        }),
    };
    let error = artifacts::check_request(&r, false).unwrap_err();
    assert_eq!(
        error.reason(),
        Some(kruntimes_runtimed::Reason::ArtifactStoreInvalid)
    );
    assert!(error.to_string().contains("store.endpoint"), "{error}");
    assert!(artifacts::check_request(&r, true).is_ok());
}

struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn connect(
    socket: &Path,
) -> kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel> {
    for _ in 0..500 {
        if socket.exists()
            && let Ok(client) = connect_unix(socket).await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listened on {}", socket.display());
}

/// A real `runtimed agent` and `runtimed sidecar` (with the test server's credentials in
/// a mounted-Secret-like directory), and clients of both.
struct Pod {
    _agent: Child,
    _sidecar: Child,
    _creds: tempfile::TempDir,
    dir: tempfile::TempDir,
    agent: kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel>,
    sidecar: kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel>,
}

impl Pod {
    fn workspace_root(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }
}

async fn start_pod(server: &S3Server) -> Pod {
    let (creds_dir, _) = credentials_dir(server);
    let dir = tempfile::tempdir().unwrap();
    let agent_socket = dir.path().join("agent.sock");
    let sidecar_socket = dir.path().join("sidecar.sock");
    let workspace_root = dir.path().join("ws");
    let agent = Child(
        tokio::process::Command::new(RUNTIMED)
            .args(["agent", "--socket"])
            .arg(&agent_socket)
            .arg("--workspace")
            .arg(&workspace_root)
            .env("RUNTIMED_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let sidecar = Child(
        tokio::process::Command::new(RUNTIMED)
            .args(["sidecar", "--listen"])
            .arg(&sidecar_socket)
            .arg("--agent-socket")
            .arg(&agent_socket)
            .arg("--s3-credentials-dir")
            .arg(creds_dir.path())
            .env("RUNTIMED_LOG", "warn")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let agent_client = connect(&agent_socket).await;
    let sidecar_client = connect(&sidecar_socket).await;
    Pod {
        _agent: agent,
        _sidecar: sidecar,
        _creds: creds_dir,
        dir,
        agent: agent_client,
        sidecar: sidecar_client,
    }
}

/// Polls Status through the sidecar until the artifacts are done and the workspace
/// released.
async fn artifacts_done(
    sidecar: &mut kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel>,
    id: &str,
) -> proto::Execution {
    loop {
        let status = sidecar
            .status(proto::StatusRequest {
                execution_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let state = proto::ArtifactsState::try_from(status.artifacts_state).unwrap();
        assert_ne!(state, proto::ArtifactsState::Unspecified);
        if matches!(
            state,
            proto::ArtifactsState::Uploaded | proto::ArtifactsState::Failed
        ) && status.workspace.is_empty()
        {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn end_to_end_a_run_uploads_its_artifact_then_loses_its_workspace() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let mut pod = start_pod(&server).await;
    let workspace_root = pod.workspace_root();
    let (agent, sidecar) = (&mut pod.agent, &mut pod.sidecar);
    let content = "{\"ok\": true}\n";
    let execute = proto::ExecuteRequest {
        run_uid: "e2e-uid".into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(format!(
            "mkdir out && printf '%s' '{content}' > out/a.json && echo done"
        )),
        timeout_ms: 30_000,
        artifacts: Some(request(&server, "runs", "team-a/", &["out/*.json"], 0)),
        ..Default::default()
    };

    // The agent alone refuses artifacts: only the sidecar holds credentials.
    let refused = agent.execute(execute.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // A bad glob is refused at Execute, before anything runs.
    let mut bad = execute.clone();
    bad.artifacts.as_mut().unwrap().paths = vec!["../escape".into()];
    let refused = sidecar.execute(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("artifacts.paths[0]"),
        "{}",
        refused.message()
    );

    let created = sidecar.execute(execute.clone()).await.unwrap().into_inner();
    assert!(created.created);
    // Idempotent: the same run uid again neither runs nor uploads twice.
    let again = sidecar.execute(execute).await.unwrap().into_inner();
    assert!(!again.created);

    let status = artifacts_done(sidecar, "e2e-uid").await;
    assert_eq!(status.phase, proto::Phase::Succeeded as i32);
    assert_eq!(
        status.artifacts_state,
        proto::ArtifactsState::Uploaded as i32,
        "{}: {}",
        status.artifacts_reason,
        status.artifacts_message
    );
    assert_eq!(
        status.artifacts,
        [proto::ArtifactResult {
            path: "out/a.json".into(),
            key: "team-a/e2e-uid/out/a.json".into(),
            size: content.len() as u64,
            sha256: sha256_hex(content.as_bytes()),
        }]
    );
    let store = status.artifact_store.clone().unwrap();
    assert_eq!(
        (store.bucket.as_str(), store.prefix.as_str()),
        ("runs", "team-a/")
    );
    assert_eq!(
        server.object("runs", "team-a/e2e-uid/out/a.json"),
        content.as_bytes()
    );
    assert!(
        !workspace_root.join("e2e-uid").exists(),
        "the workspace must be deleted after upload"
    );

    // List through the sidecar carries the same artifact state.
    let list = sidecar
        .list(proto::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.executions.len(), 1);
    assert_eq!(list.executions[0].artifacts, status.artifacts);
    // Forget drops it (and its artifact state) everywhere.
    sidecar
        .forget(proto::ForgetRequest {
            execution_id: "e2e-uid".into(),
        })
        .await
        .unwrap();
    let gone = sidecar
        .status(proto::StatusRequest {
            execution_id: "e2e-uid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

/// ExecuteAndFollow through the sidecar: its last message is the final state, the
/// artifacts uploaded and the workspace gone, with no Status polling.
#[tokio::test]
async fn end_to_end_execute_and_follow_ends_with_the_uploaded_artifacts() {
    use proto::execution_event::Event;
    let server = S3Server::start();
    server.create_bucket("runs");
    let mut pod = start_pod(&server).await;
    let workspace_root = pod.workspace_root();
    let execute = proto::ExecuteRequest {
        run_uid: "followed".into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some("mkdir out && printf 12345 > out/a.txt && echo done".into()),
        timeout_ms: 30_000,
        artifacts: Some(request(&server, "runs", "", &["out/*"], 0)),
        ..Default::default()
    };
    let mut stream = pod
        .sidecar
        .execute_and_follow(execute)
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    assert!(matches!(events.first(), Some(Event::Started(s)) if s.created));
    let Some(Event::Ended(ended)) = events.last() else {
        panic!("the last event is not `ended`: {events:?}");
    };
    assert_eq!(ended.phase, proto::Phase::Succeeded as i32);
    assert_eq!(
        ended.artifacts_state,
        proto::ArtifactsState::Uploaded as i32,
        "{}: {}",
        ended.artifacts_reason,
        ended.artifacts_message
    );
    assert_eq!(
        ended.artifacts,
        [proto::ArtifactResult {
            path: "out/a.txt".into(),
            key: "followed/out/a.txt".into(),
            size: 5,
            sha256: sha256_hex(b"12345"),
        }]
    );
    assert!(ended.workspace.is_empty(), "{ended:?}");
    assert!(!workspace_root.join("followed").exists());
    assert_eq!(server.object("runs", "followed/out/a.txt"), b"12345");
}

#[tokio::test]
async fn end_to_end_over_the_limit_uploads_nothing_and_still_releases_the_workspace() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let mut pod = start_pod(&server).await;
    let workspace_root = pod.workspace_root();
    let execute = proto::ExecuteRequest {
        run_uid: "too-big".into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(
            "mkdir out && head -c 600 /dev/zero > out/a && head -c 401 /dev/zero > out/b".into(),
        ),
        timeout_ms: 30_000,
        artifacts: Some(request(&server, "runs", "", &["out/*"], 1000)),
        ..Default::default()
    };
    pod.sidecar.execute(execute).await.unwrap();
    let status = artifacts_done(&mut pod.sidecar, "too-big").await;
    assert_eq!(status.phase, proto::Phase::Succeeded as i32);
    assert_eq!(status.artifacts_state, proto::ArtifactsState::Failed as i32);
    assert_eq!(
        status.artifacts_reason, "ArtifactsTooLarge",
        "{}",
        status.artifacts_message
    );
    assert!(status.artifacts.is_empty());
    assert!(server.keys("runs").is_empty(), "no object may be written");
    assert!(!workspace_root.join("too-big").exists());
}
