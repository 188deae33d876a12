//! The contract between the injector (webhook) and runtimed: every command the injector
//! renders into a Pod must be one the `runtimed` command line accepts, with the modes
//! and sockets the other side expects. It links both crates, which no library may do
//! (the webhook never depends on runtimed), so it lives in the end-to-end crate.

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use kruntimes_runtimed::cli::{Cli, Mode, ProbeKind};
use kruntimes_webhook::inject::{
    AGENT_BINARY, AGENT_SOCKET, IMAGE_BINARY, InjectConfig, SIDECAR_SOCKET, inject_pod,
};
use serde_json::{Value, json};

fn injected() -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"kruntimes.io/runtime": "bash"}},
        "spec": {"containers": [{"name": "main", "image": "bash:5.2"}]}
    });
    inject_pod(&pod, &InjectConfig::default()).unwrap()
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
