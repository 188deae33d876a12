//! Exec probes: `startupProbe`, then `readinessProbe`, run with `nsenter` in the
//! container's namespaces and root, as its uid and gid, with its environment.
//! `livenessProbe` is not run (the node restarts nothing, so a failed liveness probe
//! would have no consequence to emulate).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::plan::{Kind, ProbePlan};
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
            if run_probe(startup, pid, plan.uid, plan.gid, &env).await {
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
        if run_probe(probe, pid, plan.uid, plan.gid, env).await {
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

/// One probe: success when the command exits 0 within `timeoutSeconds`.
async fn run_probe(
    probe: &ProbePlan,
    pid: u32,
    uid: u32,
    gid: u32,
    env: &BTreeMap<String, String>,
) -> bool {
    let pid = pid.to_string();
    let child = tokio::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "-p", "-n", "-u", "-i", "-r", "-w"])
        .args(["-S", &uid.to_string(), "-G", &gid.to_string(), "--"])
        .args(&probe.command)
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
    match tokio::time::timeout(Duration::from_secs(probe.timeout_secs), child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => false,
    }
}
