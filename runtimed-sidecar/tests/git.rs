//! Git sources against a real HTTPS git server on loopback (`git http-backend` behind
//! rustls, see kruntimes-testkit's git_server): the fetcher on its own, then through a real
//! sidecar and agent.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kruntimes_runtimed::Reason;
use kruntimes_runtimed::proto;
use kruntimes_runtimed::sidecar::git::{self, Fetched, Fetcher, GitError};
use kruntimes_testkit::git_server::{GitServer, Mode, Repo, git};

mod common;
use common::RUNTIMED;

/// A repository with a branch, an annotated tag on the first commit and a second commit
/// on main. Returns (first commit, second commit).
fn tools_repo(root: &Path) -> (Repo, String, String) {
    let repo = Repo::new(root, "tools");
    repo.write("tools/run.sh", b"echo first\n")
        .write("README.md", b"readme\n");
    let first = repo.commit("first");
    repo.git(&["tag", "-a", "v1", "-m", "v1"]);
    repo.write("tools/run.sh", b"echo \"second $*\"\n")
        .write("tools/lib/data.txt", b"data\n");
    let script = repo.work.join("tools/run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = repo.commit("second");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("tools/run.sh", b"echo feature\n");
    repo.commit("feature");
    repo.git(&["checkout", "-q", "main"]);
    (repo, first, second)
}

fn request(server: &GitServer, name: &str, git_ref: &str) -> proto::GitSource {
    proto::GitSource {
        url: server.url(name),
        r#ref: git_ref.into(),
        allowed_hosts: vec![server.host()],
        ..Default::default()
    }
}

async fn fetch(server: &GitServer, source: proto::GitSource) -> Result<Fetched, GitError> {
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Some(&server.write_ca(dir.path()))).unwrap();
    fetcher.fetch(&git::check(&source)?).await
}

fn file<'a>(fetched: &'a Fetched, path: &str) -> &'a git::TreeFile {
    fetched
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not in {:?}", paths(fetched)))
}

fn paths(fetched: &Fetched) -> Vec<&str> {
    let mut p: Vec<&str> = fetched.files.iter().map(|f| f.path.as_str()).collect();
    p.sort_unstable();
    p
}

#[tokio::test]
async fn fetches_the_default_branch_a_branch_a_tag_and_a_commit() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, first, second) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;

    let main = fetch(&server, request(&server, "tools", "")).await.unwrap();
    assert_eq!(main.commit, second);
    assert_eq!(
        paths(&main),
        ["README.md", "tools/lib/data.txt", "tools/run.sh"]
    );
    assert_eq!(file(&main, "tools/run.sh").content, b"echo \"second $*\"\n");
    assert!(file(&main, "tools/run.sh").executable);
    assert!(!file(&main, "README.md").executable);
    assert!(main.pack_bytes > 0);

    let branch = fetch(&server, request(&server, "tools", "feature"))
        .await
        .unwrap();
    assert_eq!(file(&branch, "tools/run.sh").content, b"echo feature\n");

    let tag = fetch(&server, request(&server, "tools", "v1"))
        .await
        .unwrap();
    assert_eq!(tag.commit, first);
    assert_eq!(paths(&tag), ["README.md", "tools/run.sh"]);
    assert!(!file(&tag, "tools/run.sh").executable);

    let by_id = fetch(&server, request(&server, "tools", &first))
        .await
        .unwrap();
    assert_eq!(by_id.commit, first);
    assert_eq!(file(&by_id, "tools/run.sh").content, b"echo first\n");
}

#[tokio::test]
async fn path_selects_a_subdirectory_keeping_repository_paths() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let mut source = request(&server, "tools", "main");
    source.path = "tools/lib".into();
    let fetched = fetch(&server, source.clone()).await.unwrap();
    assert_eq!(paths(&fetched), ["tools/lib/data.txt"]);

    source.path = "docs".into();
    let e = fetch(&server, source.clone()).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitPathNotFound, "{e}");
    source.path = "README.md".into(); // a file, not a directory
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitPathNotFound, "{e}");
}

#[tokio::test]
async fn unknown_refs_and_commits_are_ref_not_found() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let e = fetch(&server, request(&server, "tools", "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::GitRefNotFound, "{e}");
    let absent = "0123456789abcdef0123456789abcdef01234567";
    let e = fetch(&server, request(&server, "tools", absent))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::GitRefNotFound, "{e}");
    let e = fetch(&server, request(&server, "missing", ""))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::GitFetchFailed, "{e}");
}

#[tokio::test]
async fn refused_before_any_connection_host_and_scheme() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let mut source = request(&server, "tools", "");
    source.allowed_hosts = vec!["127.0.0.1".into(), "git.example.com".into()];
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitHostNotAllowed, "{e}");
    let mut source = request(&server, "tools", "");
    source.url = source.url.replace("https://", "http://");
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitSourceInvalid, "{e}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_fetch() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let fetcher = Fetcher::new(None).unwrap();
    let e = fetcher
        .fetch(&git::check(&request(&server, "tools", "")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::GitFetchFailed, "{e}");
    assert!(server.connections.load(Ordering::SeqCst) > 0);
}

/// Incompressible content, so the pack is bigger than the tree and its limit trips first.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn pack_byte_limit_at_the_boundary() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "big");
    repo.write("blob.bin", &noise(256 * 1024));
    repo.commit("big");
    let server = GitServer::start(root.path(), Mode::Git).await;
    let measured = fetch(&server, request(&server, "big", "")).await.unwrap();
    let pack = measured.pack_bytes;
    assert!(pack > 256 * 1024, "pack of {pack} bytes");

    let mut source = request(&server, "big", "");
    source.max_bytes = pack;
    let at = fetch(&server, source.clone()).await.unwrap();
    assert_eq!(at.pack_bytes, pack);
    source.max_bytes = pack - 1;
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitTooLarge, "{e}");
    assert!(e.to_string().contains("pack"), "{e}");
}

#[tokio::test]
async fn tree_byte_limit_at_the_boundary() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "text");
    // Compressible: the pack stays far below the tree, so the tree's limit trips.
    repo.write("a.txt", &vec![b'a'; 200_000])
        .write("dir/b.txt", &vec![b'b'; 100_000]);
    repo.commit("text");
    let server = GitServer::start(root.path(), Mode::Git).await;
    let total = ("a.txt".len() + 200_000 + "dir/b.txt".len() + 100_000) as u64;
    let mut source = request(&server, "text", "");
    source.max_bytes = total;
    let at = fetch(&server, source.clone()).await.unwrap();
    assert!(at.pack_bytes < total);
    assert_eq!(paths(&at), ["a.txt", "dir/b.txt"]);
    source.max_bytes = total - 1;
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitTooLarge, "{e}");
    assert!(e.to_string().contains("files to deliver"), "{e}");
}

#[tokio::test]
async fn file_count_limit_at_the_boundary() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Some(&server.write_ca(dir.path()))).unwrap();
    let mut source = git::check(&request(&server, "tools", "main")).unwrap();
    assert_eq!(source.max_files, git::MAX_GIT_FILES);
    source.max_files = 3; // main has exactly 3 files
    assert_eq!(fetcher.fetch(&source).await.unwrap().files.len(), 3);
    source.max_files = 2;
    let e = fetcher.fetch(&source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitTooLarge, "{e}");
    assert!(e.to_string().contains("more than 2 files"), "{e}");
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let root = tempfile::tempdir().unwrap();
    let server = GitServer::start(root.path(), Mode::Stall).await;
    let mut source = request(&server, "any", "");
    source.timeout_ms = 300;
    let e = fetch(&server, source).await.unwrap_err();
    assert_eq!(e.reason(), Reason::GitTimeout, "{e}");
    assert!(server.connections.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn symlinks_are_refused_submodules_skipped_and_lfs_pointers_kept() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "links");
    let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    repo.write("app/main.sh", b"echo hi\n")
        .write(
            "app/.gitattributes",
            b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
        )
        .write("app/model.bin", pointer)
        .write("other/x", b"x\n");
    std::os::unix::fs::symlink("../app/main.sh", repo.work.join("other/link")).unwrap();
    let first = repo.commit("with a symlink");
    // A gitlink (submodule entry) pointing at any commit id.
    repo.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{first},app/vendor"),
    ]);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    repo.git(&["push", "-q", "origin", "main"]);
    let server = GitServer::start(root.path(), Mode::Git).await;

    let e = fetch(&server, request(&server, "links", ""))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::GitTreeRefused, "{e}");
    assert!(e.to_string().contains("other/link is a symlink"), "{e}");

    let mut source = request(&server, "links", "");
    source.path = "app".into();
    let fetched = fetch(&server, source).await.unwrap();
    assert_eq!(
        paths(&fetched),
        ["app/.gitattributes", "app/main.sh", "app/model.bin"]
    );
    assert_eq!(fetched.skipped_submodules, ["app/vendor"]);
    // No LFS smudge: the pointer arrives as stored.
    assert_eq!(file(&fetched, "app/model.bin").content, pointer);
}

// ---- through a real sidecar and agent ----

struct Pod {
    dir: tempfile::TempDir,
    client: kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel>,
    _agent: tokio::process::Child,
    _sidecar: tokio::process::Child,
}

async fn pod(ca: &Path) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let (agent, agent_socket) = common::agent(dir.path(), &["--keep-workspaces"]);
    let (sidecar, sidecar_socket) = common::sidecar(
        dir.path(),
        &agent_socket,
        &["--git-ca-file".as_ref(), ca.as_os_str()],
    );
    for _ in 0..500 {
        if agent_socket.exists()
            && sidecar_socket.exists()
            && let Ok(client) = kruntimes_runtimed::grpc::connect_unix(&sidecar_socket).await
        {
            return Pod {
                dir,
                client,
                _agent: agent,
                _sidecar: sidecar,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("runtimed never listened");
}

async fn wait_terminal(pod: &mut Pod, id: &str) -> proto::Execution {
    for _ in 0..1000 {
        let e = pod
            .client
            .status(proto::StatusRequest {
                execution_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if e.phase != proto::Phase::Running as i32 {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never ended");
}

async fn stdout(pod: &mut Pod, id: &str) -> String {
    let mut logs = pod
        .client
        .logs(proto::LogsRequest {
            execution_id: id.into(),
            stream: proto::Stream::Stdout as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = logs.message().await.unwrap() {
        out.extend(chunk.data);
    }
    String::from_utf8(out).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn execute_through_the_sidecar_runs_the_fetched_script_once() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, second) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let mut pod = pod(&server.write_ca(root.path())).await;
    let mut source = request(&server, "tools", "main");
    source.path = "tools".into();
    let execute = proto::ExecuteRequest {
        run_uid: "git-run".into(),
        interpreter: proto::Interpreter::Bash as i32,
        entrypoint: Some("tools/run.sh".into()),
        args: vec!["a".into()],
        git: Some(source),
        ..Default::default()
    };
    let response = pod.client.execute(execute.clone()).await.unwrap();
    assert_eq!(
        response.metadata().get(git::COMMIT_METADATA).unwrap(),
        second.as_str()
    );
    assert!(response.get_ref().created);
    let end = wait_terminal(&mut pod, "git-run").await;
    assert_eq!(end.phase, proto::Phase::Succeeded as i32, "{end:?}");
    assert_eq!(stdout(&mut pod, "git-run").await, "second a\n");

    let ws = pod.dir.path().join("ws/git-run");
    assert_eq!(mode(&ws.join("tools/run.sh")), 0o755);
    assert_eq!(mode(&ws.join("tools/lib/data.txt")), 0o644);
    assert_eq!(
        std::fs::read(ws.join("tools/lib/data.txt")).unwrap(),
        b"data\n"
    );
    assert!(!ws.join("README.md").exists(), "outside git.path");

    // Idempotent: the agent has it, so no second fetch (no new connection).
    let before = server.connections.load(Ordering::SeqCst);
    let again = pod.client.execute(execute).await.unwrap().into_inner();
    assert!(!again.created);
    assert_eq!(server.connections.load(Ordering::SeqCst), before);
}

/// Beyond tonic's default 4 MiB message limit: MAX_EXECUTE_REQUEST_BYTES is in force
/// on the sidecar's client and the agent's server.
#[tokio::test]
async fn a_tree_larger_than_grpc_default_message_size_reaches_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "large");
    let big = vec![b'z'; 6 * 1024 * 1024];
    repo.write("data.txt", &big)
        .write("check.sh", b"wc -c < data.txt\n");
    repo.commit("large");
    let server = GitServer::start(root.path(), Mode::Git).await;
    let mut pod = pod(&server.write_ca(root.path())).await;
    pod.client
        .execute(proto::ExecuteRequest {
            run_uid: "large".into(),
            interpreter: proto::Interpreter::Bash as i32,
            entrypoint: Some("check.sh".into()),
            git: Some(request(&server, "large", "")),
            ..Default::default()
        })
        .await
        .unwrap();
    let end = wait_terminal(&mut pod, "large").await;
    assert_eq!(end.phase, proto::Phase::Succeeded as i32, "{end:?}");
    assert_eq!(
        stdout(&mut pod, "large").await.trim(),
        big.len().to_string()
    );
}

#[test]
fn the_sidecar_refuses_to_start_with_an_unusable_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for (ca, expected) in [
        (dir.path().join("absent.pem"), "absent.pem"),
        (not_pem, "no PEM certificate"),
    ] {
        let out = std::process::Command::new(RUNTIMED)
            .args(["sidecar", "--listen"])
            .arg(dir.path().join("s.sock"))
            .arg("--agent-socket")
            .arg(dir.path().join("a.sock"))
            .arg("--git-ca-file")
            .arg(&ca)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("--git-ca-file") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_failed_fetch_is_a_grpc_error_with_the_reason_and_no_execution() {
    let root = tempfile::tempdir().unwrap();
    let (_repo, _, _) = tools_repo(root.path());
    let server = GitServer::start(root.path(), Mode::Git).await;
    let mut pod = pod(&server.write_ca(root.path())).await;
    let execute = |run_uid: &str, source: proto::GitSource| proto::ExecuteRequest {
        run_uid: run_uid.into(),
        interpreter: proto::Interpreter::Bash as i32,
        entrypoint: Some("tools/run.sh".into()),
        git: Some(source),
        ..Default::default()
    };
    let mut source = request(&server, "tools", "");
    source.allowed_hosts = vec!["github.com".into()];
    let status = pod
        .client
        .execute(execute("denied", source))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.metadata().get(git::REASON_METADATA).unwrap(),
        "GitHostNotAllowed"
    );
    assert!(
        status.message().starts_with("GitHostNotAllowed: "),
        "{status}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);

    let status = pod
        .client
        .execute(execute("missing-ref", request(&server, "tools", "nope")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        status.metadata().get(git::REASON_METADATA).unwrap(),
        "GitRefNotFound"
    );
    for id in ["denied", "missing-ref"] {
        let e = pod
            .client
            .status(proto::StatusRequest {
                execution_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}");
    }

    // git with inline sources is refused, and the agent refuses a git field outright.
    let mut both = execute("both", request(&server, "tools", ""));
    both.script = Some("true".into());
    let status = pod.client.execute(both).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut agent = kruntimes_runtimed::grpc::connect_unix(&pod.dir.path().join("agent.sock"))
        .await
        .unwrap();
    let status = agent
        .execute(execute("direct", request(&server, "tools", "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    git(root.path(), &["--version"]);
}
