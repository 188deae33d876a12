//! What the injector adds to a pod: the install init container, the native sidecar, the
//! volumes and mounts, and the agent's command. Pure functions of the configuration.

use kruntimes_api::labels::{
    ACCESS_KEY_ID_SECRET_KEY, ARTIFACT_CREDENTIALS_VOLUME, BIN_VOLUME, INSTALL_CONTAINER,
    RUN_VOLUME, SECRET_ACCESS_KEY_SECRET_KEY, SIDECAR_CONTAINER, TOKEN_VOLUME, WORKSPACE_VOLUME,
};
use serde_json::{Value, json};

use super::{
    AGENT_BINARY, AGENT_SOCKET, AGENT_SOCKET_MODE, ARTIFACT_CREDENTIALS_DIR, BIN_DIR, IMAGE_BINARY,
    InjectConfig, KRT_BIN_SIZE_LIMIT, KRT_RUN_SIZE_LIMIT, RUN_DIR, RUNTIMED_GRPC_PORT,
    RUNTIMED_UID, SIDECAR_SOCKET, Settings, TLS_CERT_FILE, TLS_CERT_SECRET_KEY, TLS_KEY_FILE,
    TLS_KEY_SECRET_KEY, TOKEN_DIR, TOKEN_FILE, TOKEN_SECRET_KEY, WORKSPACE_DIR,
};

/// The volumes mounted into the user container, in the order they are added.
pub(super) const TARGET_MOUNTS: [&str; 3] = [BIN_VOLUME, RUN_VOLUME, WORKSPACE_VOLUME];

fn security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUNTIMED_UID,
        "runAsGroup": RUNTIMED_UID,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

pub(super) fn install_container(config: &InjectConfig) -> Value {
    json!({
        "name": INSTALL_CONTAINER,
        "image": config.image(),
        "command": [IMAGE_BINARY, "install", AGENT_BINARY],
        "volumeMounts": [{"name": BIN_VOLUME, "mountPath": BIN_DIR}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"}
        },
        "securityContext": security_context()
    })
}

pub(super) fn sidecar_container(config: &InjectConfig, settings: &Settings) -> Value {
    let mut command = vec![
        json!(IMAGE_BINARY),
        json!("sidecar"),
        json!("--listen"),
        json!(SIDECAR_SOCKET),
        json!("--agent-socket"),
        json!(AGENT_SOCKET),
    ];
    let mut mounts = vec![
        json!({"name": RUN_VOLUME, "mountPath": RUN_DIR}),
        json!({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR, "readOnly": true}),
    ];
    let mut ports = Vec::new();
    if settings.token_secret.is_some() {
        command.extend([
            json!("--grpc-bind-address"),
            json!(format!("0.0.0.0:{RUNTIMED_GRPC_PORT}")),
            json!("--token-file"),
            json!(TOKEN_FILE),
            // TLS with the Runtime's own certificate: the controller trusts exactly it,
            // so the token never crosses the pod network in clear text.
            json!("--tls-cert-file"),
            json!(TLS_CERT_FILE),
            json!("--tls-private-key-file"),
            json!(TLS_KEY_FILE),
        ]);
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        ports.push(json!({"name": "runtimed-grpc", "containerPort": RUNTIMED_GRPC_PORT, "protocol": "TCP"}));
    }
    if settings.credentials_secret.is_some() {
        command.extend([
            json!("--s3-credentials-dir"),
            json!(ARTIFACT_CREDENTIALS_DIR),
        ]);
        mounts.push(json!({"name": ARTIFACT_CREDENTIALS_VOLUME, "mountPath": ARTIFACT_CREDENTIALS_DIR, "readOnly": true}));
    }
    if settings.allow_http {
        command.push(json!("--s3-allow-http"));
    }
    let mut sidecar = json!({
        "name": SIDECAR_CONTAINER,
        "image": config.image(),
        "restartPolicy": "Always",
        "command": command,
        "volumeMounts": mounts,
        "startupProbe": {
            "exec": {"command": [IMAGE_BINARY, "probe", "startup", "--socket", SIDECAR_SOCKET]},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 30
        },
        "readinessProbe": {
            "exec": {"command": [IMAGE_BINARY, "probe", "ready", "--socket", SIDECAR_SOCKET]},
            "periodSeconds": 5,
            "timeoutSeconds": 1,
            "failureThreshold": 3
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "256Mi"}
        },
        "securityContext": security_context()
    });
    if !ports.is_empty()
        && let Some(map) = sidecar.as_object_mut()
    {
        map.insert("ports".to_owned(), Value::Array(ports));
    }
    sidecar
}

pub(super) fn volumes(settings: &Settings) -> Vec<Value> {
    let mut volumes = vec![
        json!({"name": BIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": KRT_BIN_SIZE_LIMIT}}),
        json!({"name": RUN_VOLUME, "emptyDir": {"sizeLimit": KRT_RUN_SIZE_LIMIT}}),
        json!({"name": WORKSPACE_VOLUME, "emptyDir": {"sizeLimit": settings.workspace_limit}}),
    ];
    if let Some(secret) = &settings.token_secret {
        let keys = [TOKEN_SECRET_KEY, TLS_CERT_SECRET_KEY, TLS_KEY_SECRET_KEY];
        volumes.push(secret_volume(TOKEN_VOLUME, secret, &keys));
    }
    if let Some(secret) = &settings.credentials_secret {
        // Only the two keys the sidecar reads, whatever else the Secret holds.
        let keys = [ACCESS_KEY_ID_SECRET_KEY, SECRET_ACCESS_KEY_SECRET_KEY];
        let mut volume = secret_volume(ARTIFACT_CREDENTIALS_VOLUME, secret, &keys);
        // A missing Secret must not keep the pod from starting: Runs without artifacts
        // still work, and an upload fails with NoArtifactCredentials naming the missing
        // file until the Secret exists (the kubelet then fills the volume in, and the
        // sidecar reads it again before each upload).
        if let Some(source) = volume["secret"].as_object_mut() {
            source.insert("optional".to_owned(), Value::Bool(true));
        }
        volumes.push(volume);
    }
    volumes
}

/// A volume of Secret `secret` holding `keys`, each as the file of its own name,
/// readable by the sidecar's uid (only the sidecar mounts the volumes made here).
fn secret_volume(name: &str, secret: &str, keys: &[&str]) -> Value {
    let items: Vec<Value> = keys
        .iter()
        .map(|key| json!({"key": key, "path": key}))
        .collect();
    json!({
        "name": name,
        "secret": {"secretName": secret, "items": items, "defaultMode": 0o444}
    })
}

pub(super) fn target_mounts() -> [Value; 3] {
    [
        json!({"name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true}),
        json!({"name": RUN_VOLUME, "mountPath": RUN_DIR}),
        json!({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_DIR}),
    ]
}

/// The agent's command. `workspace_limit_bytes` is the workspace emptyDir's sizeLimit:
/// the agent fails the Run that fills it (reason WorkspaceFull) before the kubelet
/// would evict the whole pod.
pub(super) fn agent_command(workspace_limit_bytes: u64) -> Value {
    json!([
        AGENT_BINARY,
        "agent",
        "--socket",
        AGENT_SOCKET,
        "--workspace",
        WORKSPACE_DIR,
        "--socket-mode",
        AGENT_SOCKET_MODE,
        "--workspace-size-limit",
        workspace_limit_bytes.to_string()
    ])
}

/// Whether `command` is exactly what [`agent_command`] renders, for some workspace
/// limit: the only command an injected target container has.
pub(super) fn is_agent_command(command: &Value) -> bool {
    command
        .as_array()
        .and_then(|argv| argv.last())
        .and_then(Value::as_str)
        .and_then(|limit| limit.parse::<u64>().ok())
        .is_some_and(|limit| *command == agent_command(limit))
}
