//! Test inputs: the AdmissionReview documents of `webhook/tests/fixtures` (what a real
//! apiserver sends, also the seeds of the webhook's fuzz targets) and builders of
//! objects that tests of several crates need.

use std::path::PathBuf;

use kruntimes_api::labels::INJECTION_STATUS_ANNOTATION;
use serde_json::{Value, json};

/// The directory of the AdmissionReview fixtures.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../webhook/tests/fixtures")
}

/// The path of fixture `name`.
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// The bytes of fixture `name`.
pub fn bytes(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fixture `name` as JSON.
pub fn json(name: &str) -> Value {
    serde_json::from_slice(&bytes(name)).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"))
}

/// Fixture `name` padded with trailing spaces to exactly `len` bytes: the same review,
/// of a chosen size (body limits are tested at their boundary with it).
pub fn padded(name: &str, len: usize) -> Vec<u8> {
    let mut body = bytes(name);
    assert!(body.len() <= len, "{name} is longer than {len} bytes");
    body.resize(len, b' ');
    body
}

/// A Pod whose author wrote a made-up `kruntimes.io/injection-status`: it lists the pod's
/// own init container `setup`, its PVC volume `data` and that volume's mount as injected,
/// and records `["rm", "-rf", "/"]` as the container's original command. An injector
/// that trusts it strips what it never added.
pub fn pod_with_forged_injection_status() -> Value {
    let forged = json!({
        "version": 1,
        "configHash": "sha256:0",
        "container": "main",
        "initContainers": ["setup"],
        "volumes": ["data"],
        "volumeMounts": ["data"],
        "command": ["rm", "-rf", "/"]
    });
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "forged",
            "labels": {"kruntimes.io/runtime": "py"},
            "annotations": {INJECTION_STATUS_ANNOTATION: forged.to_string()}
        },
        "spec": {
            "initContainers": [{"name": "setup", "image": "busybox:1", "command": ["true"]}],
            "containers": [{
                "name": "main", "image": "python:3.13", "command": ["python"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        }
    })
}

/// An AdmissionReview v1 of a CREATE of `pod` in `namespace`, as the apiserver sends it
/// to `/mutate`.
pub fn pod_create_review(uid: &str, namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"].clone(),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_found_and_padded_exactly() {
        let review = json("run-create.json");
        assert_eq!(review["kind"], "AdmissionReview");
        let padded = padded("run-create.json", 100_000);
        assert_eq!(padded.len(), 100_000);
        let reread: Value = serde_json::from_slice(&padded).unwrap();
        assert_eq!(reread, review);
    }

    #[test]
    fn the_forged_pod_carries_a_status_listing_its_own_names() {
        let pod = pod_with_forged_injection_status();
        let status: Value = serde_json::from_str(
            pod["metadata"]["annotations"][INJECTION_STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            status["initContainers"][0],
            pod["spec"]["initContainers"][0]["name"]
        );
        assert_eq!(status["volumes"][0], pod["spec"]["volumes"][0]["name"]);
        let review = pod_create_review("u-1", "team-a", pod.clone());
        assert_eq!(review["request"]["object"], pod);
        assert_eq!(review["request"]["name"], "forged");
    }
}
