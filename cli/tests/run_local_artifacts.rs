//! `krt run --local` with artifacts: the Runtime in the same file names the store, the
//! real sidecar uploads to a real S3-compatible server (moto) on loopback, signed with
//! the credentials in krt's environment.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/runtime_manifest.rs"]
mod runtime_manifest;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kruntimes_testkit::runtimed::binary as runtimed;
use kruntimes_testkit::s3::S3Server;
use runtime_manifest::RUNTIME_BASH;

/// A Runtime whose artifacts go to `bucket` under `team-a/`, and a Run whose script
/// ends with `exit_code` after writing `out/a.txt`, `out/sub/b.txt` and `skip.txt`.
fn manifest(dir: &Path, endpoint: &str, bucket: &str, exit_code: u8) -> PathBuf {
    let path = dir.join("run.yaml");
    let text = format!(
        "{RUNTIME_BASH}  artifacts:
    maxBytes: 1Mi
    s3: {{endpoint: \"{endpoint}\", bucket: {bucket}, prefix: team-a/}}
---
apiVersion: kruntimes.io/v1alpha1
kind: Run
metadata: {{name: arts}}
spec:
  runtimeRef: {{name: bash}}
  interpreter: bash
  script: |
    mkdir -p out/sub
    printf first > out/a.txt
    printf second > out/sub/b.txt
    printf no > skip.txt
    echo done
    exit {exit_code}
  artifacts: {{paths: [\"out/**\"]}}
"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `krt run --local -f FILE` with `env` added to (or, for `None` values, removed from)
/// its environment.
async fn krt(file: PathBuf, env: Vec<(&'static str, Option<&'static str>)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_krt"));
        command
            .args(["run", "--local", "-f"])
            .arg(&file)
            .env("KRT_RUNTIMED_BIN", runtimed());
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_are_uploaded_and_listed_and_a_failed_upload_is_an_error() {
    let server = S3Server::start();
    server.create_bucket("runs");
    let dir = tempfile::tempdir().unwrap();
    let credentials = server
        .credentials_env()
        .map(|(name, value)| (name, Some(value)))
        .to_vec();

    // Uploaded: the matched files only, under <prefix><run uid>/, listed on stderr.
    let out = krt(
        manifest(dir.path(), &server.endpoint(), "runs", 0),
        credentials.clone(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let keys = server.keys("runs");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let uid = keys[0]
        .strip_prefix("team-a/")
        .and_then(|k| k.strip_suffix("/out/a.txt"))
        .unwrap_or_else(|| panic!("unexpected key {:?}", keys[0]));
    assert!(uid.starts_with("local-arts-"), "{uid}");
    assert_eq!(keys[1], format!("team-a/{uid}/out/sub/b.txt"));
    assert_eq!(server.object("runs", &keys[0]), b"first");
    assert_eq!(server.object("runs", &keys[1]), b"second");
    // sha256("first")
    assert!(
        stderr.contains(&format!(
            "artifact out/a.txt uploaded as team-a/{uid}/out/a.txt (5 bytes, sha256 a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "artifact out/sub/b.txt uploaded as team-a/{uid}/out/sub/b.txt (6 bytes"
        )),
        "{stderr}"
    );

    // A Run that failed keeps its own exit status; its artifacts are still uploaded.
    let failed = tempfile::tempdir().unwrap();
    let out = krt(
        manifest(failed.path(), &server.endpoint(), "runs", 3),
        credentials.clone(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("artifact out/a.txt uploaded as"),
        "{stderr}"
    );

    // The store refuses (no such bucket): the Run succeeded, the data did not arrive,
    // so krt exits 1 and says why.
    let missing = tempfile::tempdir().unwrap();
    let out = krt(
        manifest(missing.path(), &server.endpoint(), "no-such-bucket", 0),
        credentials,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let reported = stderr
        .lines()
        .find(|l| l.starts_with("krt run: artifacts not uploaded: "))
        .unwrap_or_else(|| panic!("no artifacts line in {stderr}"));
    assert!(
        reported.contains("ArtifactUploadFailed: ") && reported.contains("/no-such-bucket/"),
        "{reported}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_without_credentials_are_refused_before_the_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = krt(
        manifest(dir.path(), "http://127.0.0.1:9", "runs", 0),
        vec![("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.artifacts: AWS_ACCESS_KEY_ID is not set"),
        "{stderr}"
    );
    assert_eq!(out.stdout, b"", "nothing ran");
}
