//! `krt run --local` with a git source: the Runtime in the same file allows the host,
//! the real sidecar fetches from a real HTTPS git server on loopback.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/runtime_manifest.rs"]
mod runtime_manifest;

use std::path::PathBuf;
use std::process::Command;

use kruntimes_testkit::git_server::{GitServer, Mode, Repo};
use kruntimes_testkit::runtimed::binary as runtimed;
use runtime_manifest::RUNTIME_BASH;

fn manifest(dir: &std::path::Path, allowed_host: &str, url: &str) -> PathBuf {
    let path = dir.join("run.yaml");
    let text = format!(
        "{RUNTIME_BASH}  git: {{allowedHosts: [\"{allowed_host}\"], maxBytes: 1Mi, timeout: 30s}}
---
apiVersion: kruntimes.io/v1alpha1
kind: Run
metadata: {{name: from-git}}
spec:
  runtimeRef: {{name: bash}}
  interpreter: bash
  git: {{url: \"{url}\", ref: main, path: tools}}
  entrypoint: tools/run.sh
  args: [x]
"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_run_allowed_by_its_runtime_runs_the_fetched_script() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "tools");
    repo.write("tools/run.sh", b"echo \"from git $*\"\n");
    repo.commit("first");
    let server = GitServer::start(root.path(), Mode::Git).await;
    let ca = server.write_ca(root.path());
    let krt = |file: PathBuf| {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_krt"))
                .args(["run", "--local", "--git-ca-file"])
                .arg(&ca)
                .arg("-f")
                .arg(&file)
                .env("KRT_RUNTIMED_BIN", runtimed())
                .output()
                .unwrap()
        })
    };
    let out = krt(manifest(root.path(), &server.host(), &server.url("tools")))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from git x\n");

    let connections = server.connections.load(std::sync::atomic::Ordering::SeqCst);
    let denied = tempfile::tempdir().unwrap();
    let out = krt(manifest(denied.path(), "github.com", &server.url("tools")))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GitHostNotAllowed"), "{stderr}");
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        connections,
        "a host not allowed is never contacted"
    );
}
