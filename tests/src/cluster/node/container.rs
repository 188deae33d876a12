//! Starting one container: its environment, its setup script, and the process tree
//! `nsenter` (the pod's network, UTS, IPC and mount namespaces) -> `unshare` (a fresh
//! mount and PID namespace) -> the setup script as PID 1, which `exec`s the command.
//! stdout and stderr go to `<pod dir>/logs/<container>.log`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::env;
use super::plan::expand;
use super::pod::Shared;
use super::probe;
use super::process::{HELPER_PATH, io_error, wait_for_child};
use super::script::{self, ScriptInput};
use super::status::Phase;
use crate::cluster::contract::NodeError;

/// How long the node waits for `unshare` to fork the container's PID 1.
const PID1_WAIT: Duration = Duration::from_secs(10);

/// Starts container `idx`. `Ok(false)`: it cannot be created (its status says why).
pub(super) async fn start(shared: &Arc<Shared>, idx: usize) -> Result<bool, NodeError> {
    let plan = &shared.plans[idx];
    let env = match env::resolve(plan, &shared.pod, &shared.facts, shared.source.as_ref()) {
        Ok(env) => env,
        Err(message) => {
            shared.set_waiting(idx, "CreateContainerConfigError", message);
            return Ok(false);
        }
    };
    let argv: Vec<String> = plan
        .spec
        .command
        .iter()
        .flatten()
        .chain(plan.spec.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    let dir = shared.dir.join("containers").join(&plan.name);
    let (root, layer) = (dir.join("root"), dir.join("layer"));
    for d in [&root, &layer, &shared.dir.join("logs")] {
        std::fs::create_dir_all(d).map_err(|e| io_error(format!("creating {}", d.display()), e))?;
    }
    let text = script::render(&ScriptInput {
        plan,
        argv: &argv,
        env: &env,
        root: &root,
        layer: &layer,
        volumes: &shared.volumes,
        image_binaries: &shared.image_binaries,
        hostname: &shared.facts.hostname,
        pod_ip: &shared.facts.pod_ip,
    });
    let script_path = dir.join("setup.sh");
    std::fs::write(&script_path, text)
        .map_err(|e| io_error(format!("writing {}", script_path.display()), e))?;
    let log_path = shared.log_path(&plan.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error(format!("opening {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| io_error(format!("opening {}", log_path.display()), e))?;
    let pause = shared.pause_pid.to_string();
    let child = tokio::process::Command::new("nsenter")
        .args(["-t", &pause, "--net", "--uts", "--ipc", "--mount", "--"])
        .args([
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
        ])
        .args(["--propagation", "private", "--", "/bin/sh"])
        .arg(&script_path)
        .env_clear()
        .env("PATH", HELPER_PATH)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| io_error(format!("starting container {}", plan.name), e))?;
    let outer = child.id();
    let started_at = Timestamp::now();
    shared.update(|s| {
        if let Some(c) = s.containers.get_mut(idx) {
            c.phase = Phase::Running { started_at };
            c.outer = outer;
        }
    });
    tokio::spawn(wait_for_exit(shared.clone(), idx, child, started_at));
    tokio::spawn(probe::supervise(shared.clone(), idx, env));
    Ok(true)
}

/// Records the container's PID 1, then its exit.
async fn wait_for_exit(
    shared: Arc<Shared>,
    idx: usize,
    mut child: tokio::process::Child,
    started_at: Timestamp,
) {
    if let Some(outer) = child.id()
        && let Some(pid) = wait_for_child(outer, PID1_WAIT).await
    {
        shared.update(|s| {
            if let Some(c) = s.containers.get_mut(idx) {
                c.pid = Some(pid);
            }
        });
    }
    let status = child.wait().await;
    shared.update(|s| {
        if let Some(c) = s.containers.get_mut(idx) {
            let exit_code = exit_code(status.as_ref().ok(), c.killed);
            c.phase = Phase::Terminated {
                exit_code,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
                started_at,
                finished_at: Timestamp::now(),
            };
            c.pid = None;
            c.outer = None;
            c.started = false;
            c.ready = false;
        }
    });
}

/// The container's exit code as the kubelet reports it: the code, or 128 + the signal.
/// `unshare` (util-linux up to at least 2.38) reports a child killed by SIGKILL as its
/// own exit code 1 (it cannot reset SIGKILL's disposition to re-raise it), so a 1 after
/// the node sent SIGKILL is taken for 137. A SIGKILL from elsewhere reads as 1.
fn exit_code(status: Option<&std::process::ExitStatus>, killed: bool) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return -1;
    };
    match (status.code(), status.signal()) {
        (Some(1), _) if killed => 137,
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}
