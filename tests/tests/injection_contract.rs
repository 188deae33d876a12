//! The contract between the injector (webhook) and runtimed: every command the injector
//! renders into a Pod must be one the `runtimed` command line accepts, with the modes
//! and sockets the other side expects. It links both crates, which no library may do
//! (the webhook never depends on runtimed), so it lives in the end-to-end crate.

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use kruntimes_api::labels::{
    ACCESS_KEY_ID_SECRET_KEY, ARTIFACT_ALLOW_HTTP_ANNOTATION,
    ARTIFACT_CREDENTIALS_SECRET_ANNOTATION, ARTIFACT_CREDENTIALS_VOLUME,
    SECRET_ACCESS_KEY_SECRET_KEY, TLS_CERT_SECRET_KEY, TLS_KEY_SECRET_KEY, TOKEN_SECRET_ANNOTATION,
    TOKEN_SECRET_KEY, TOKEN_VOLUME,
};
use kruntimes_runtimed::cli::{Cli, Mode, ProbeKind};
use kruntimes_webhook::inject::{
    AGENT_BINARY, AGENT_SOCKET, IMAGE_BINARY, InjectConfig, SIDECAR_SOCKET, inject_pod,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn injected() -> Value {
    injected_with(json!({}))
}

/// A Pod of the Runtime `bash` with the annotations the controller's Deployment sets.
fn injected_with(annotations: Value) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"kruntimes.io/runtime": "bash"}, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "bash:5.2"}]}
    });
    inject_pod(&pod, &InjectConfig::default()).unwrap()
}

/// The file `key` of the Secret volume `volume` as `container` sees it: where the
/// volume is mounted, then the key (a Secret volume's files are named by its keys).
fn secret_file(pod: &Value, container: &Value, volume: &str, key: &str) -> PathBuf {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("{volume} is not mounted in {}", container["name"]));
    assert_eq!(mount["readOnly"], true, "{mount}");
    let spec = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap();
    assert!(
        spec["secret"].is_object(),
        "{volume} is a Secret volume: {spec}"
    );
    if let Some(items) = spec["secret"]["items"].as_array() {
        // With `items`, only the listed keys are files, possibly under other names.
        let item = items
            .iter()
            .find(|i| i["key"] == key)
            .unwrap_or_else(|| panic!("{volume} does not project the key {key}: {spec}"));
        return Path::new(mount["mountPath"].as_str().unwrap())
            .join(item["path"].as_str().unwrap());
    }
    Path::new(mount["mountPath"].as_str().unwrap()).join(key)
}

fn argv(command: &Value) -> Vec<String> {
    command
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Parses an injected argv with runtimed's own command line, checking the binary path.
fn parse(command: &Value, binary: &str) -> Mode {
    let argv = argv(command);
    assert_eq!(argv[0], binary, "{argv:?}");
    match Cli::try_parse_from(argv.iter().map(String::as_str)) {
        Ok(cli) => cli.mode,
        Err(e) => panic!("runtimed rejects the injected command {argv:?}:\n{e}"),
    }
}

fn init_container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[test]
fn install_command_is_accepted() {
    let pod = injected();
    match parse(
        &init_container(&pod, "krt-install")["command"],
        IMAGE_BINARY,
    ) {
        Mode::Install { dest } => assert_eq!(dest.to_str(), Some(AGENT_BINARY)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sidecar_command_and_probes_are_accepted() {
    let pod = injected();
    let sidecar = init_container(&pod, "runtimed");
    match parse(&sidecar["command"], IMAGE_BINARY) {
        Mode::Sidecar(args) => {
            assert_eq!(args.listen.to_str(), Some(SIDECAR_SOCKET));
            assert_eq!(args.agent_socket.to_str(), Some(AGENT_SOCKET));
        }
        other => panic!("{other:?}"),
    }
    for (probe, kind) in [
        ("startupProbe", ProbeKind::Startup),
        ("readinessProbe", ProbeKind::Ready),
    ] {
        match parse(&sidecar[probe]["exec"]["command"], IMAGE_BINARY) {
            Mode::Probe(args) => {
                assert_eq!(args.kind, kind);
                assert_eq!(args.socket.to_str(), Some(SIDECAR_SOCKET));
            }
            other => panic!("{probe}: {other:?}"),
        }
    }
}

#[test]
fn agent_command_is_accepted() {
    let pod = injected();
    let main = &pod["spec"]["containers"][0];
    match parse(&main["command"], AGENT_BINARY) {
        Mode::Agent(args) => {
            assert_eq!(args.socket.to_str(), Some(AGENT_SOCKET));
            assert_eq!(args.workspace.to_str(), Some("/workspace"));
        }
        other => panic!("{other:?}"),
    }
}

/// With the token and store Secrets the controller names: every file flag runtimed is
/// given points at the Secret key the controller writes, in a volume mounted into the
/// sidecar, and the store flags are the ones runtimed reads its credentials with.
#[test]
fn sidecar_flags_with_token_and_store_secrets_are_accepted_and_point_into_their_mounts() {
    let pod = injected_with(json!({
        TOKEN_SECRET_ANNOTATION: "bash-runtimed",
        ARTIFACT_CREDENTIALS_SECRET_ANNOTATION: "store-keys",
        ARTIFACT_ALLOW_HTTP_ANNOTATION: "true",
    }));
    let sidecar = init_container(&pod, "runtimed");
    let Mode::Sidecar(args) = parse(&sidecar["command"], IMAGE_BINARY) else {
        panic!("not the sidecar mode: {}", sidecar["command"]);
    };
    assert!(
        args.grpc_bind_address.is_some(),
        "the network listener is on"
    );
    let token_file = secret_file(&pod, sidecar, TOKEN_VOLUME, TOKEN_SECRET_KEY);
    assert_eq!(args.token_file.as_deref(), Some(token_file.as_path()));
    let cert = secret_file(&pod, sidecar, TOKEN_VOLUME, TLS_CERT_SECRET_KEY);
    assert_eq!(args.tls_cert_file.as_deref(), Some(cert.as_path()));
    let key = secret_file(&pod, sidecar, TOKEN_VOLUME, TLS_KEY_SECRET_KEY);
    assert_eq!(args.tls_private_key_file.as_deref(), Some(key.as_path()));
    let dir = args.s3_credentials_dir.expect("--s3-credentials-dir");
    for k in [ACCESS_KEY_ID_SECRET_KEY, SECRET_ACCESS_KEY_SECRET_KEY] {
        let file = secret_file(&pod, sidecar, ARTIFACT_CREDENTIALS_VOLUME, k);
        assert_eq!(file, dir.join(k), "runtimed reads {k} from {dir:?}");
    }
    assert!(args.s3_allow_http);
    // The agent in the user's container sees neither Secret.
    let main = &pod["spec"]["containers"][0];
    let mounts: Vec<&str> = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        !mounts.contains(&TOKEN_VOLUME) && !mounts.contains(&ARTIFACT_CREDENTIALS_VOLUME),
        "{mounts:?}"
    );
}

/// Without those annotations the sidecar listens on its Unix socket only.
#[test]
fn without_secrets_the_sidecar_has_no_network_listener_or_store() {
    let pod = injected();
    let Mode::Sidecar(args) = parse(&init_container(&pod, "runtimed")["command"], IMAGE_BINARY)
    else {
        panic!("not the sidecar mode");
    };
    assert_eq!(args.grpc_bind_address, None);
    assert_eq!(args.token_file, None);
    assert_eq!(args.s3_credentials_dir, None);
    assert!(!args.s3_allow_http);
}
