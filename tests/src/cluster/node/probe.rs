//! Probes: `startupProbe`, then `readinessProbe`. An exec probe runs with `nsenter` in
//! the container's namespaces and root, as its uid and gid, with its environment; an
//! httpGet probe is a plain HTTP GET from the node to the pod's IP, as the kubelet's.
//! `livenessProbe` is not run (the node restarts nothing, so a failed liveness probe
//! would have no consequence to emulate).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::plan::{Kind, ProbeAction, ProbePlan};
use super::pod::Shared;
use super::process::{HELPER_PATH, chrooted};

/// Runs the probes of container `idx` while it runs, and keeps its `started` and
/// `ready` flags. A startup probe that fails `failureThreshold` times kills the
/// container (the kubelet would restart it; the node does not).
pub(super) async fn supervise(shared: Arc<Shared>, idx: usize, env: BTreeMap<String, String>) {
    let plan = &shared.plans[idx];
    let Some(pid) = wait_for_setup(&shared, idx).await else {
        return;
    };
    if let Some(startup) = &plan.startup {
        tokio::time::sleep(Duration::from_secs(startup.initial_delay_secs)).await;
        let mut failures = 0;
        loop {
            if !shared.is_running(idx) {
                return;
            }
            if run_probe(&shared, startup, pid, plan.uid, plan.gid, &env).await {
                break;
            }
            failures += 1;
            if failures >= startup.failure_threshold {
                shared.sigkill(idx);
                return;
            }
            tokio::time::sleep(Duration::from_secs(startup.period_secs)).await;
        }
    }
    let ready_without_probe = plan.readiness.is_none() && plan.kind != Kind::Init;
    shared.update(|s| {
        if let Some(c) = s.containers.get_mut(idx).filter(|c| c.running()) {
            c.started = true;
            c.ready = ready_without_probe;
        }
    });
    if let Some(readiness) = &plan.readiness {
        readiness_loop(&shared, idx, readiness, pid, &env).await;
    }
}

async fn readiness_loop(
    shared: &Shared,
    idx: usize,
    probe: &ProbePlan,
    pid: u32,
    env: &BTreeMap<String, String>,
) {
    let plan = &shared.plans[idx];
    tokio::time::sleep(Duration::from_secs(probe.initial_delay_secs)).await;
    let (mut successes, mut failures) = (0, 0);
    while shared.is_running(idx) {
        if run_probe(shared, probe, pid, plan.uid, plan.gid, env).await {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let verdict = if successes >= probe.success_threshold {
            Some(true)
        } else if failures >= probe.failure_threshold {
            Some(false)
        } else {
            None
        };
        if let Some(ready) = verdict {
            shared.update(|s| {
                if let Some(c) = s.containers.get_mut(idx).filter(|c| c.running()) {
                    c.ready = ready;
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(probe.period_secs)).await;
    }
}

/// The container's PID 1 once its setup script has reached `chroot`: a probe before
/// that would run against the host's root.
async fn wait_for_setup(shared: &Shared, idx: usize) -> Option<u32> {
    loop {
        if !shared.is_running(idx) {
            return None;
        }
        if let Some(pid) = shared.pid(idx).filter(|p| chrooted(*p)) {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One probe: success when it passes within `timeoutSeconds`.
async fn run_probe(
    shared: &Shared,
    probe: &ProbePlan,
    pid: u32,
    uid: u32,
    gid: u32,
    env: &BTreeMap<String, String>,
) -> bool {
    let timeout = Duration::from_secs(probe.timeout_secs);
    match &probe.action {
        ProbeAction::Exec(command) => exec_probe(command, timeout, pid, uid, gid, env).await,
        ProbeAction::HttpGet { port, path } => {
            let get = http_get(&shared.facts.pod_ip, *port, path);
            tokio::time::timeout(timeout, get).await.unwrap_or(false)
        }
    }
}

/// `GET path` on `ip:port`: whether the status is 200 to 399 (the kubelet's success).
async fn http_get(ip: &str, port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect((ip, port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all a probe reads.
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).await.is_err() {
        return false;
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    head.starts_with(b"HTTP/1.") && status.is_some_and(|s| (200..400).contains(&s))
}

async fn exec_probe(
    command: &[String],
    timeout: Duration,
    pid: u32,
    uid: u32,
    gid: u32,
    env: &BTreeMap<String, String>,
) -> bool {
    let pid = pid.to_string();
    let child = tokio::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "-p", "-n", "-u", "-i", "-r", "-w"])
        .args(["-S", &uid.to_string(), "-G", &gid.to_string(), "--"])
        .args(command)
        .env_clear()
        .env("PATH", HELPER_PATH)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => false,
    }
}
