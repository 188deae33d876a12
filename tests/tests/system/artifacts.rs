//! A Run's artifacts reach a real S3 server (moto) through the sidecar, with the
//! credentials of the Runtime's Secret that the injector mounted into the sidecar only,
//! and are deleted from it with the Run.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kruntimes_api::labels::{ARTIFACT_CREDENTIALS_VOLUME, SIDECAR_CONTAINER};
use kruntimes_api::v1alpha1::{Run, Runtime};
use kruntimes_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::runs::{ready_runtime, run, runtime};
use crate::support::{Cluster, eventually, succeeded};

const BUCKET: &str = "e2e-artifacts";
const PREFIX: &str = "runs/";
/// What the Run writes: two files listed in `spec.artifacts`, one that is not.
const SCRIPT: &str = "mkdir -p out/sub && printf 'hello artifacts\\n' > out/a.txt && \
                      head -c 70000 /dev/zero | tr '\\0' 'x' > out/sub/b.bin && \
                      echo skipped > not-listed.txt";

/// `sha256sum` of `bytes`: an implementation independent of the sidecar's.
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// A Runtime of one pod whose artifacts go to `endpoint` with the Secret `keys`.
fn store_runtime(endpoint: &str) -> Runtime {
    let mut rt = runtime("store", 1, 1);
    rt.spec.artifacts = serde_json::from_value(json!({
        "s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": BUCKET,
               "prefix": PREFIX, "credentialsSecretRef": {"name": "keys"}},
    }))
    .unwrap();
    rt
}

/// The Runtime's pod: the credentials Secret is mounted into the sidecar, and into no
/// other container.
async fn only_the_sidecar_mounts_the_credentials(pods: &Api<Pod>, name: &str) -> IpAddr {
    let pod = pods.get(name).await.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let mounting: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == ARTIFACT_CREDENTIALS_VOLUME)
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(mounting, [SIDECAR_CONTAINER], "{spec:?}");
    let host_ip = pod.status.as_ref().and_then(|s| s.host_ip.as_deref());
    host_ip
        .expect("a running pod has a hostIP")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn artifacts_reach_the_store_and_are_deleted_with_the_run() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!(
            "skipped: the S3 server runs on this host at the emulated node's bridge address; \
             KUBECONFIG names a real cluster, whose pods do not reach it there"
        );
        return;
    }
    let ns = cluster.namespace("artifacts").await;
    let client = cluster.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // `stringData`, as a user writes it: the API server stores it in `data`, which the
    // sidecar's mount and the controller's cleanup read.
    let keys = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("keys".to_owned()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &keys).await.unwrap();

    // Pods reach the host only at the node's bridge address, which exists once a pod
    // does: the Runtime starts with a store nobody listens at and is pointed at moto
    // once its pod says where the host is (the store reaches the sidecar with each
    // Run, so its pods stay).
    ready_runtime(&cluster, &ns, store_runtime("http://127.0.0.1:9")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod_name = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find_map(|p| p.metadata.name)
        .expect("the Runtime's pod");
    let host_ip = only_the_sidecar_mounts_the_credentials(&pods, &pod_name).await;
    let s3 = S3Server::start_on(host_ip);
    s3.create_bucket(BUCKET);
    let runtimes: Api<Runtime> = Api::namespaced(client.clone(), &ns);
    let patched = runtimes
        .patch(
            "store",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"artifacts": {"s3": {"endpoint": s3.endpoint()}}}})),
        )
        .await
        .unwrap();
    let generation = patched.metadata.generation;
    eventually("the Runtime's new store observed", || async {
        let rt = runtimes.get("store").await.ok()?;
        (rt.status?.observed_generation >= generation).then_some(())
    })
    .await;

    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"interpreter": "bash", "script": SCRIPT, "artifacts": {"paths": ["out/**"]}});
    runs.create(&PostParams::default(), &run("upload", "store", spec))
        .await
        .unwrap();
    let done = succeeded(&runs, "upload").await;
    let status = done.status.as_ref().unwrap();
    let uid = done.metadata.uid.clone().unwrap();
    let artifacts = status.artifacts.clone().unwrap_or_default();
    let listed: Vec<(&str, &str, i64)> = artifacts
        .iter()
        .map(|a| (a.path.as_str(), a.key.as_str(), a.size))
        .collect();
    let (key_a, key_b) = (
        format!("{PREFIX}{uid}/out/a.txt"),
        format!("{PREFIX}{uid}/out/sub/b.bin"),
    );
    assert_eq!(
        listed,
        [
            ("out/a.txt", key_a.as_str(), 16),
            ("out/sub/b.bin", key_b.as_str(), 70_000)
        ],
        "{status:?}"
    );
    assert_eq!(s3.keys(BUCKET), [key_a.clone(), key_b.clone()]);
    for artifact in &artifacts {
        let bytes = s3.object(BUCKET, &artifact.key);
        assert_eq!(i64::try_from(bytes.len()).unwrap(), artifact.size);
        assert_eq!(sha256_hex(&bytes), artifact.sha256, "{}", artifact.key);
    }
    assert_eq!(s3.object(BUCKET, &key_a), b"hello artifacts\n");
    let store = status.artifact_store.as_ref().unwrap();
    assert_eq!(
        (store.endpoint.as_str(), store.bucket.as_str()),
        (s3.endpoint().as_str(), BUCKET)
    );

    // Deleting the Run deletes its objects, then the Run goes.
    runs.delete("upload", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Run deleted", || async {
        match runs.get("upload").await {
            Err(kube::Error::Api(e)) if e.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(s3.keys(BUCKET).is_empty(), "{:?}", s3.keys(BUCKET));
    cluster.delete_namespace(&ns).await;
}
