//! Unit tests of the injector.

use kruntimes_api::labels::TOKEN_VOLUME;
use serde_json::json;

use super::*;

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"kruntimes.io/runtime": "py"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "python:3.13", "command": ["python"], "args": ["-c", "1"]},
                {"name": "other", "image": "busybox:1"}
            ]
        }
    })
}

#[test]
fn pinned_images() {
    assert!(image_is_pinned("ghcr.io/kruntimes/runtimed:0.1.0"));
    assert!(image_is_pinned("localhost:5000/runtimed:1"));
    assert!(image_is_pinned("r@sha256:abc"));
    assert!(!image_is_pinned("localhost:5000/runtimed"));
    assert!(!image_is_pinned("runtimed:latest"));
    assert!(!image_is_pinned("runtimed"));
    assert!(InjectConfig::new("runtimed:latest").is_err());
    assert!(!default_image().ends_with(":latest"));
}

#[test]
fn token_secret_annotation_opens_the_network_listener() {
    let plain = inject_pod(&pod(), &InjectConfig::default()).unwrap();
    let sidecar = &plain["spec"]["initContainers"][1];
    assert!(sidecar.get("ports").is_none());
    assert!(
        !sidecar["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--grpc-bind-address"))
    );

    let mut with_token = pod();
    with_token["metadata"]["annotations"] = json!({TOKEN_SECRET_ANNOTATION: "py-runtimed-token"});
    let out = inject_pod(&with_token, &InjectConfig::default()).unwrap();
    let sidecar = &out["spec"]["initContainers"][1];
    let command: Vec<&str> = sidecar["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(command.ends_with(&[
        "--grpc-bind-address",
        "0.0.0.0:9440",
        "--token-file",
        TOKEN_FILE,
        "--tls-cert-file",
        TLS_CERT_FILE,
        "--tls-private-key-file",
        TLS_KEY_FILE,
    ]));
    assert_eq!(sidecar["ports"][0]["containerPort"], RUNTIMED_GRPC_PORT);
    assert!(
        sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}))
    );
    let token_volume = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| name_of(v) == Some(TOKEN_VOLUME))
        .unwrap();
    assert_eq!(token_volume["secret"]["secretName"], "py-runtimed-token");
    // The token and the listener's certificate and key, from the Runtime's Secret.
    assert_eq!(
        token_volume["secret"]["items"],
        json!([
            {"key": "token", "path": "token"},
            {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"}
        ])
    );
    // Only the sidecar sees the token.
    let target_mounts = out["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    assert!(
        target_mounts
            .iter()
            .all(|m| name_of(m) != Some(TOKEN_VOLUME))
    );
    // Re-injection strips the token volume and adds it once.
    let again = inject_pod(&out, &InjectConfig::default()).unwrap();
    assert_eq!(again, out);
    // Stripping restores the original pod.
    assert_eq!(strip_pod(&out).unwrap(), with_token);
}

#[test]
fn token_secret_annotation_must_name_a_secret() {
    let mut p = pod();
    p["metadata"]["annotations"] = json!({TOKEN_SECRET_ANNOTATION: "Not_A_Name"});
    let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
    assert!(matches!(err, InjectError::TokenSecret { .. }));
    assert!(err.to_string().contains(TOKEN_SECRET_ANNOTATION), "{err}");
}

#[test]
fn injects_the_documented_shape() {
    let out = inject_pod(&pod(), &InjectConfig::default()).unwrap();
    let spec = &out["spec"];
    let inits: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(name_of)
        .collect();
    assert_eq!(inits, ["krt-install", "runtimed"]);
    assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(spec["containers"][0]["command"][0], AGENT_BINARY);
    // The agent knows the workspace limit (1Gi by default), in bytes.
    let command = spec["containers"][0]["command"].as_array().unwrap();
    assert!(command.ends_with(&[json!("--workspace-size-limit"), json!("1073741824")]));
    assert!(spec["containers"][0].get("args").is_none());
    assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
    assert_eq!(spec["containers"][1], pod()["spec"]["containers"][1]);
    assert_eq!(spec["volumes"][0]["emptyDir"]["medium"], "Memory");
    assert_eq!(
        spec["volumes"][2]["emptyDir"]["sizeLimit"],
        DEFAULT_WORKSPACE_SIZE_LIMIT
    );
    for c in spec["initContainers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_ne!(sc["runAsUser"], 0);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert!(sc["capabilities"].get("add").is_none());
    }
    let status = injection_status(&out["metadata"]).unwrap().unwrap();
    assert_eq!(status.container, "main");
    assert_eq!(status.command, Some(json!(["python"])));
    assert_eq!(status.config_hash, InjectConfig::default().hash());
}

#[test]
fn injection_is_idempotent() {
    let config = InjectConfig::default();
    let once = inject_pod(&pod(), &config).unwrap();
    let twice = inject_pod(&once, &config).unwrap();
    assert_eq!(once, twice);
    assert!(patch(once, twice).0.is_empty());
}

#[test]
fn strip_restores_the_original() {
    let once = inject_pod(&pod(), &InjectConfig::default()).unwrap();
    assert_eq!(strip_pod(&once).unwrap(), pod());
}

#[test]
fn a_changed_config_re_renders() {
    let old = InjectConfig::new("example.com/runtimed:0.0.9").unwrap();
    let new = InjectConfig::new("example.com/runtimed:0.1.0")
        .unwrap()
        .with_default_workspace_size_limit("2Gi")
        .unwrap();
    let injected_old = inject_pod(&pod(), &old).unwrap();
    let re = inject_pod(&injected_old, &new).unwrap();
    assert_eq!(re, inject_pod(&pod(), &new).unwrap());
    assert_eq!(re["spec"]["initContainers"].as_array().unwrap().len(), 2);
    assert_eq!(
        re["spec"]["initContainers"][0]["image"],
        "example.com/runtimed:0.1.0"
    );
    assert_eq!(re["spec"]["volumes"][2]["emptyDir"]["sizeLimit"], "2Gi");
    assert_ne!(old.hash(), new.hash());
}

#[test]
fn annotations_choose_container_and_size() {
    let mut p = pod();
    p["metadata"]["annotations"] =
        json!({CONTAINER_ANNOTATION: "other", WORKSPACE_SIZE_ANNOTATION: "5Gi"});
    let out = inject_pod(&p, &InjectConfig::default()).unwrap();
    assert_eq!(out["spec"]["containers"][0], p["spec"]["containers"][0]);
    assert_eq!(out["spec"]["containers"][1]["command"][0], AGENT_BINARY);
    assert_eq!(out["spec"]["volumes"][2]["emptyDir"]["sizeLimit"], "5Gi");
    assert_eq!(strip_pod(&out).unwrap(), p);
}

#[test]
fn refusals() {
    let config = InjectConfig::default();
    let mut p = pod();
    p["spec"]["os"] = json!({"name": "windows"});
    assert_eq!(inject_pod(&p, &config), Err(InjectError::Windows));
    let mut p = pod();
    p["spec"]["hostNetwork"] = json!(true);
    assert_eq!(inject_pod(&p, &config), Err(InjectError::HostNetwork));
    let mut p = pod();
    p["metadata"]["annotations"] = json!({CONTAINER_ANNOTATION: "nope"});
    assert_eq!(
        inject_pod(&p, &config),
        Err(InjectError::ContainerNotFound("nope".into()))
    );
    let mut p = pod();
    p["spec"]["volumes"] = json!([{"name": "workspace", "emptyDir": {}}]);
    assert!(matches!(
        inject_pod(&p, &config),
        Err(InjectError::Reserved { .. })
    ));
    let mut p = pod();
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "x", "mountPath": "/workspace/"}]);
    assert!(matches!(
        inject_pod(&p, &config),
        Err(InjectError::Reserved { .. })
    ));
    let mut p = pod();
    p["metadata"]["annotations"] = json!({WORKSPACE_SIZE_ANNOTATION: "-1Gi"});
    assert!(matches!(
        inject_pod(&p, &config),
        Err(InjectError::SizeLimit(_))
    ));
    let mut p = pod();
    p["metadata"]["annotations"] = json!({INJECTION_STATUS_ANNOTATION: "{"});
    assert!(matches!(
        inject_pod(&p, &config),
        Err(InjectError::BadStatus(_))
    ));
    let mut p = pod();
    p["spec"]["containers"] = json!([]);
    assert_eq!(inject_pod(&p, &config), Err(InjectError::NoContainers));
    let mut p = pod();
    p["spec"]["containers"] = json!("x");
    assert!(matches!(
        inject_pod(&p, &config),
        Err(InjectError::Malformed(_))
    ));
    // an injected pod turned into a refused shape is refused too
    let mut p = inject_pod(&pod(), &config).unwrap();
    p["spec"]["hostNetwork"] = json!(true);
    assert_eq!(inject_pod(&p, &config), Err(InjectError::HostNetwork));
}

#[test]
fn workloads_get_their_template_injected() {
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": pod()["spec"].clone()}}
    });
    let out = inject_object(&deploy, &InjectConfig::default()).unwrap();
    let tpl = &out["spec"]["template"];
    assert!(tpl["metadata"]["annotations"][INJECTION_STATUS_ANNOTATION].is_string());
    assert_eq!(tpl["spec"]["initContainers"][1]["name"], "runtimed");
    assert_eq!(inject_object(&out, &InjectConfig::default()).unwrap(), out);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert!(matches!(
        inject_object(&cm, &InjectConfig::default()),
        Err(InjectError::NoPodTemplate(_))
    ));
}

#[test]
fn the_patch_leaves_managed_fields_alone() {
    let mut p = pod();
    p["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
    let out = inject_pod(&p, &InjectConfig::default()).unwrap();
    let patch = patch(p.clone(), out.clone());
    assert!(
        !serde_json::to_string(&patch)
            .unwrap()
            .contains("managedFields")
    );
    let mut applied = p.clone();
    json_patch::patch(&mut applied, &patch).unwrap();
    assert_eq!(applied, out);
}

#[test]
fn typed_pods_work() {
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod()).unwrap();
    let out = inject_typed_pod(&typed, &InjectConfig::default()).unwrap();
    assert_eq!(out.spec.unwrap().init_containers.unwrap().len(), 2);
}

#[test]
fn a_forged_status_cannot_strip_what_the_injector_did_not_add() {
    let forged = kruntimes_testkit::fixtures::pod_with_forged_injection_status();
    let err = inject_pod(&forged, &InjectConfig::default()).unwrap_err();
    assert!(matches!(err, InjectError::BadStatus(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "metadata.annotations[{INJECTION_STATUS_ANNOTATION}]: Invalid value: not written by this injector: it lists the init container \"setup\""
        )),
        "{message}"
    );
    assert!(matches!(strip_pod(&forged), Err(InjectError::BadStatus(_))));
    // Each list is checked: a forged volume or mount alone is refused too.
    for (key, what) in [("volumes", "volume"), ("volumeMounts", "volume mount")] {
        let mut status: Value = serde_json::from_str(
            forged["metadata"]["annotations"][INJECTION_STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        status["initContainers"] = json!(["krt-install", "runtimed"]);
        status["volumes"] = json!(["krt-bin"]);
        status["volumeMounts"] = json!(["krt-bin"]);
        status[key] = json!(["data"]);
        let mut p = forged.clone();
        p["metadata"]["annotations"][INJECTION_STATUS_ANNOTATION] = json!(status.to_string());
        let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("the {what} \"data\"")),
            "{key}: {err}"
        );
    }
}

#[test]
fn a_recorded_command_is_trusted_only_over_the_agent_command() {
    // Only reserved names listed, but the container does not run the agent: the
    // recorded "original" command is not its own and must not replace `python`.
    let mut p = pod();
    let status = json!({
        "version": STATUS_VERSION, "configHash": "sha256:0", "container": "main",
        "initContainers": [], "volumes": [], "volumeMounts": [],
        "command": ["rm", "-rf", "/"]
    });
    p["metadata"]["annotations"] = json!({INJECTION_STATUS_ANNOTATION: status.to_string()});
    let err = inject_pod(&p, &InjectConfig::default()).unwrap_err();
    assert_eq!(
        err,
        InjectError::BadStatus(
            "container \"main\" does not run the injected agent command, so the command and args recorded for it are not its own".to_owned()
        )
    );
    // An injected pod whose agent command was edited, or given args, is refused alike.
    let injected = inject_pod(&pod(), &InjectConfig::default()).unwrap();
    let mut edited = injected.clone();
    edited["spec"]["containers"][0]["command"][1] = json!("sidecar");
    assert!(matches!(
        inject_pod(&edited, &InjectConfig::default()),
        Err(InjectError::BadStatus(_))
    ));
    let mut with_args = injected.clone();
    with_args["spec"]["containers"][0]["args"] = json!(["-c", "1"]);
    assert!(matches!(
        inject_pod(&with_args, &InjectConfig::default()),
        Err(InjectError::BadStatus(_))
    ));
    // The genuine injection is still re-injected to the same bytes.
    let again = inject_pod(&injected, &InjectConfig::default()).unwrap();
    assert_eq!(
        serde_json::to_vec(&again).unwrap(),
        serde_json::to_vec(&injected).unwrap()
    );
}

#[test]
fn the_agent_command_is_recognised_exactly() {
    assert!(render::is_agent_command(&render::agent_command(
        1_073_741_824
    )));
    assert!(render::is_agent_command(&render::agent_command(0)));
    let mut padded = render::agent_command(5);
    padded[9] = json!("05");
    assert!(!render::is_agent_command(&padded));
    let mut longer = render::agent_command(5);
    longer.as_array_mut().unwrap().push(json!("--extra"));
    assert!(!render::is_agent_command(&longer));
    assert!(!render::is_agent_command(&json!(["python"])));
    assert!(!render::is_agent_command(&json!("runtimed")));
}

#[test]
fn names_under_the_reserved_prefix_are_refused_like_runtime_templates_refuse_them() {
    let config = InjectConfig::default();
    for (key, item) in [
        ("volumes", json!({"name": "krt-cache", "emptyDir": {}})),
        (
            "initContainers",
            json!({"name": "krt-setup", "image": "busybox:1"}),
        ),
    ] {
        let mut p = pod();
        p["spec"][key] = json!([item]);
        assert_eq!(
            inject_pod(&p, &config),
            Err(InjectError::Reserved {
                field: format!("spec.{key}[0].name"),
                value: item["name"].as_str().unwrap().to_owned(),
            })
        );
    }
}
