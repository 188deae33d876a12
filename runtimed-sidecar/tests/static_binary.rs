//! The static `runtimed`: no loader and no library to find, so the agent starts in any
//! image, as RUNTIMED.md requires ("one static binary"). `.ci/run` builds it with
//! `-C target-feature=+crt-static` and runs the ignored tests here with
//! `KRT_STATIC_RUNTIMED` naming it (docs/runtimed.md, "The static binary").
//!
//! The proof is a root holding nothing but the binary and what every container runtime
//! provides (`/proc`, `/dev/null`): the agent serves there and runs a Run.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kruntimes_runtimed::grpc::connect_unix;
use kruntimes_runtimed::proto;

/// The environment variable naming the static build.
const STATIC_ENV: &str = "KRT_STATIC_RUNTIMED";

fn static_runtimed() -> PathBuf {
    let path = std::env::var_os(STATIC_ENV).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "set {STATIC_ENV} to a runtimed built with RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu (.ci/run does)"
        )
    });
    assert!(
        path.is_file(),
        "{STATIC_ENV}={} is not a file",
        path.display()
    );
    path
}

/// Whether the ELF64 little-endian executable `elf` names a program interpreter (the
/// dynamic loader, `PT_INTERP`): what a dynamically linked program needs from the image.
fn names_a_loader(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn the_loader_check_sees_the_default_builds_loader() {
    // The default (test) build links glibc dynamically: the check must see that, or its
    // "no loader" below would mean nothing.
    let default_build = std::fs::read(env!("CARGO_BIN_EXE_runtimed")).unwrap();
    assert!(names_a_loader(&default_build));
}

#[test]
#[ignore = "needs the static build: .ci/run builds it and sets KRT_STATIC_RUNTIMED"]
fn the_static_build_needs_no_loader() {
    let binary = std::fs::read(static_runtimed()).unwrap();
    assert!(
        !names_a_loader(&binary),
        "{STATIC_ENV} names a dynamically linked binary"
    );
}

async fn connect(
    socket: &Path,
    agent: &mut tokio::process::Child,
) -> kruntimes_runtimed::grpc::RuntimedClient<tonic::transport::Channel> {
    for _ in 0..500 {
        if let Some(status) = agent.try_wait().unwrap() {
            panic!("the agent (under unshare and chroot) ended before listening: {status}");
        }
        if let Ok(client) = connect_unix(socket).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the agent never listened on {}", socket.display());
}

/// Tests that need root: the default nextest profile leaves them out, `--profile full`
/// runs them (as root, as `.ci/run` does).
mod needs_root {
    use super::*;

    #[tokio::test]
    #[ignore = "needs the static build: .ci/run builds it and sets KRT_STATIC_RUNTIMED"]
    async fn the_static_agent_runs_a_run_in_a_root_holding_only_runtimed() {
        kruntimes_testkit::privilege::require_root(
            "the test mounts /proc and chroots, as a container runtime does",
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["krt", "proc", "dev", "ws"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        std::fs::copy(static_runtimed(), root.join("krt/runtimed")).unwrap();
        std::fs::write(root.join("dev/null"), b"").unwrap();
        // In a mount namespace of its own (private propagation: nothing shows outside):
        // what a container runtime mounts, then the agent as PID 1 of a scratch image
        // would be. `--kill-child` and `--exit-with-parent` stop it with the test.
        let script = r#"
            mount -t proc proc "$1/proc"
            mount --bind /dev/null "$1/dev/null"
            exec chroot "$1" /krt/runtimed agent --socket /agent.sock --workspace /ws --exit-with-parent
        "#;
        let mut agent = tokio::process::Command::new("unshare")
            .args([
                "--mount",
                "--fork",
                "--kill-child=SIGTERM",
                "--",
                "sh",
                "-ec",
                script,
                "sh",
            ])
            .arg(root)
            .env("RUNTIMED_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut client = connect(&root.join("agent.sock"), &mut agent).await;
        let health = client
            .health(proto::HealthRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(health.ready, "{health:?}");

        // The one program this root holds: runtimed itself, as an exec Run.
        let mut events = client
            .execute_and_follow(proto::ExecuteRequest {
                run_uid: "in-scratch".into(),
                interpreter: proto::Interpreter::Exec as i32,
                command: vec!["/krt/runtimed".into(), "--version".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let (mut stdout, mut ended) = (Vec::new(), None);
        while let Some(event) = events.message().await.unwrap() {
            match event.event {
                Some(proto::execution_event::Event::Output(chunk))
                    if chunk.stream == proto::Stream::Stdout as i32 =>
                {
                    stdout.extend_from_slice(&chunk.data);
                }
                Some(proto::execution_event::Event::Ended(execution)) => ended = Some(execution),
                _ => {}
            }
        }
        let ended = ended.expect("an ended event");
        assert_eq!(ended.phase, proto::Phase::Succeeded as i32, "{ended:?}");
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            format!("runtimed {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}
