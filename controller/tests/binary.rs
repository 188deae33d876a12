//! The `kruntimes-controller` binary: its flags, a clear error without a cluster, and
//! the admin endpoints' answers before the caches are filled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kruntimes-controller");

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kubeconfig",
        "--namespace",
        "--leader-elect",
        "--leader-elect-lease-name",
        "--leader-elect-lease-namespace",
        "--leader-elect-lease-duration",
        "--leader-elect-renew-grace",
        "--metrics-bind-address",
        "--log-format",
        "--workers",
        "--runtimed-port",
        "--run-ttl-seconds-after-finished",
        "--workflow-ttl-seconds-after-finished",
        "--pss-floor",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let out = Command::new(BIN)
        .args([
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}

#[test]
fn the_default_run_ttl_is_bounded_at_a_year() {
    let with_ttl = |ttl: &str| {
        Command::new(BIN)
            .args([
                "--kubeconfig",
                "/nonexistent/kubeconfig",
                "--metrics-bind-address",
                "127.0.0.1:0",
                "--run-ttl-seconds-after-finished",
                ttl,
            ])
            .output()
            .unwrap()
    };
    // A year is accepted: the binary goes on to the kubeconfig, which is missing.
    let at_limit = with_ttl("31536000");
    let stderr = String::from_utf8_lossy(&at_limit.stderr);
    assert_eq!(at_limit.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    // One second more is refused by the flag's parser (usage error, status 2).
    let over = with_ttl("31536001");
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert_eq!(over.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--run-ttl-seconds-after-finished"),
        "{stderr}"
    );
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response))
}

#[test]
fn without_an_api_server_it_is_live_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // An API server that is not there: the client is made, the caches never fill.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-bind-address", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        if let Some(answer) = get(port, "/livez") {
            break answer;
        }
        assert!(Instant::now() < deadline, "the admin server never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(live.0, 200);
    assert_eq!(
        get(port, "/readyz").unwrap().0,
        503,
        "not ready without synced caches"
    );
    let (code, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("kruntimes_runs_active"), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}
