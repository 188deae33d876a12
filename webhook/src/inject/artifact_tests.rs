//! Unit tests of the artifact store's credentials and plain-http setting in the
//! injected sidecar.

use kruntimes_api::labels::{ARTIFACT_CREDENTIALS_VOLUME, TOKEN_VOLUME};
use serde_json::json;

use super::*;

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"kruntimes.io/runtime": "py"}, "annotations": annotations},
        "spec": {
            "containers": [
                {"name": "main", "image": "python:3.13", "command": ["python"]},
                {"name": "other", "image": "busybox:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn sidecar_command(injected: &Value) -> Vec<String> {
    let sidecar = &injected["spec"]["initContainers"][1];
    assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
    sidecar["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every container (init or not, the sidecar aside) mounting the volume `name`.
fn mounted_by(injected: &Value, name: &str) -> Vec<String> {
    let spec = &injected["spec"];
    let containers = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["containers"].as_array().unwrap());
    containers
        .filter(|c| {
            c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| name_of(m) == Some(name)))
        })
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn volume<'a>(injected: &'a Value, name: &str) -> Option<&'a Value> {
    injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| name_of(v) == Some(name))
}

#[test]
fn without_the_annotations_the_sidecar_has_no_store_settings() {
    let out = inject_pod(&pod(json!({})), &InjectConfig::default()).unwrap();
    let command = sidecar_command(&out);
    assert!(
        !command.iter().any(|a| a.starts_with("--s3-")),
        "{command:?}"
    );
    assert!(volume(&out, ARTIFACT_CREDENTIALS_VOLUME).is_none());
    assert!(mounted_by(&out, ARTIFACT_CREDENTIALS_VOLUME).is_empty());
}

#[test]
fn the_credentials_secret_is_mounted_into_the_sidecar_only() {
    let original = pod(json!({ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "store-keys"}));
    let out = inject_pod(&original, &InjectConfig::default()).unwrap();
    let command = sidecar_command(&out);
    assert!(
        command.ends_with(&[
            "--s3-credentials-dir".to_owned(),
            ARTIFACT_CREDENTIALS_DIR.to_owned()
        ]),
        "{command:?}"
    );
    assert!(!command.contains(&"--s3-allow-http".to_owned()));
    assert_eq!(
        mounted_by(&out, ARTIFACT_CREDENTIALS_VOLUME),
        [SIDECAR_CONTAINER]
    );
    assert!(
        out["spec"]["initContainers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": ARTIFACT_CREDENTIALS_VOLUME, "mountPath": ARTIFACT_CREDENTIALS_DIR, "readOnly": true}))
    );
    assert_eq!(
        volume(&out, ARTIFACT_CREDENTIALS_VOLUME).unwrap()["secret"],
        json!({
            "secretName": "store-keys",
            "items": [
                {"key": "AWS_ACCESS_KEY_ID", "path": "AWS_ACCESS_KEY_ID"},
                {"key": "AWS_SECRET_ACCESS_KEY", "path": "AWS_SECRET_ACCESS_KEY"}
            ],
            "optional": true,
            "defaultMode": 0o444
        })
    );
    let status = injection_status(&out["metadata"]).unwrap().unwrap();
    assert!(
        status
            .volumes
            .contains(&ARTIFACT_CREDENTIALS_VOLUME.to_owned())
    );
    // The credentials never reach the token's volume or the other way round.
    assert!(volume(&out, TOKEN_VOLUME).is_none());
}

#[test]
fn reinjection_with_credentials_and_token_is_byte_for_byte_equal() {
    let original = pod(json!({
        ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "store-keys",
        ARTIFACT_ALLOW_HTTP_ANNOTATION: "true",
        TOKEN_SECRET_ANNOTATION: "py-runtimed",
    }));
    let config = InjectConfig::default();
    let once = inject_pod(&original, &config).unwrap();
    let twice = inject_pod(&once, &config).unwrap();
    assert_eq!(
        serde_json::to_vec(&once).unwrap(),
        serde_json::to_vec(&twice).unwrap()
    );
    assert!(patch(once.clone(), twice).0.is_empty());
    let volumes: Vec<&str> = once["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(name_of)
        .collect();
    assert_eq!(
        volumes,
        [
            "data",
            "krt-bin",
            "krt-run",
            "workspace",
            TOKEN_VOLUME,
            ARTIFACT_CREDENTIALS_VOLUME
        ]
    );
    assert_eq!(strip_pod(&once).unwrap(), original);
}

#[test]
fn removing_the_annotation_removes_the_mount_on_reinjection() {
    let with = inject_pod(
        &pod(json!({ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "store-keys"})),
        &InjectConfig::default(),
    )
    .unwrap();
    let mut edited = with.clone();
    edited["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(ARTIFACT_CREDENTIALS_SECRET_ANNOTATION);
    let out = inject_pod(&edited, &InjectConfig::default()).unwrap();
    assert!(volume(&out, ARTIFACT_CREDENTIALS_VOLUME).is_none());
    assert!(!sidecar_command(&out).contains(&"--s3-credentials-dir".to_owned()));
}

#[test]
fn allow_http_is_passed_only_for_true() {
    let command = |value: &str| {
        let p = pod(json!({ARTIFACT_ALLOW_HTTP_ANNOTATION: value}));
        inject_pod(&p, &InjectConfig::default()).map(|out| sidecar_command(&out))
    };
    assert!(
        command("true")
            .unwrap()
            .ends_with(&["--s3-allow-http".to_owned()])
    );
    assert!(
        !command("false")
            .unwrap()
            .contains(&"--s3-allow-http".to_owned())
    );
    for bad in ["yes", "True", "1", ""] {
        let err = command(bad).unwrap_err();
        assert_eq!(err, InjectError::AllowHttp(bad.to_owned()));
        assert!(
            err.to_string().contains(ARTIFACT_ALLOW_HTTP_ANNOTATION),
            "{err}"
        );
        assert_eq!(err.metric_label(), "allow_http");
    }
}

#[test]
fn the_credentials_annotation_must_name_a_secret() {
    let p = pod(json!({ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "Not_A_Name"}));
    let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
    assert!(
        matches!(&err, InjectError::CredentialsSecret { name, .. } if name == "Not_A_Name"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(ARTIFACT_CREDENTIALS_SECRET_ANNOTATION),
        "{err}"
    );
}

#[test]
fn a_container_cannot_mount_an_injected_volume_by_name() {
    for name in [ARTIFACT_CREDENTIALS_VOLUME, TOKEN_VOLUME] {
        let mut p = pod(json!({ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "store-keys"}));
        p["spec"]["containers"][1]["volumeMounts"] =
            json!([{"name": name, "mountPath": "/stolen"}]);
        let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
        assert_eq!(
            err,
            InjectError::Reserved {
                field: "spec.containers[1].volumeMounts[0].name".to_owned(),
                value: name.to_owned(),
            }
        );
    }
}
