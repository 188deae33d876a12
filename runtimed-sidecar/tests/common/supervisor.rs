//! Helpers of the tests that drive a [`Supervisor`] directly.

use std::path::Path;
use std::time::Duration;

use kruntimes_runtimed::agent::lifecycle::{Config, ExecSpec, Interpreter, Supervisor};

/// How a supervisor starts processes: through the spawner process (what the agent
/// does) or forked from this process (the library's default).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Spawn {
    Spawner,
    Fork,
}

impl Spawn {
    /// A run uid distinct per mode, so both can run at once.
    pub(crate) fn uid(self, name: &str) -> String {
        format!("{name}-{self:?}").to_lowercase()
    }
}

pub(crate) fn supervisor_in(root: &Path, mode: Spawn) -> Supervisor {
    let mut config = Config::new(root);
    config.grace = Duration::from_millis(300);
    config.output_limit = 64 * 1024;
    if let Spawn::Spawner = mode {
        config.spawner = Some(env!("CARGO_BIN_EXE_runtimed").into());
    }
    Supervisor::new(config).unwrap()
}

/// The agent's way: Runs started by the spawner process.
pub(crate) fn supervisor(root: &Path) -> Supervisor {
    supervisor_in(root, Spawn::Spawner)
}

pub(crate) fn bash(uid: &str, script: &str) -> ExecSpec {
    ExecSpec {
        run_uid: uid.into(),
        interpreter: Some(Interpreter::Bash),
        script: Some(script.into()),
        timeout: Some(Duration::from_secs(10)),
        ..ExecSpec::default()
    }
}

pub(crate) fn stdout_of(e: &kruntimes_runtimed::agent::lifecycle::Execution) -> String {
    String::from_utf8(e.stdout.kept_bytes()).unwrap()
}

/// Waits up to 2 s for the Run's first line of output (the pid a script reports).
pub(crate) async fn wait_for_first_line(e: &kruntimes_runtimed::agent::lifecycle::Execution) {
    for _ in 0..200 {
        if stdout_of(e).lines().count() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every process in /proc whose environment carries the Run's marker.
pub(crate) fn marked_processes(uid: &str) -> Vec<i32> {
    let marker = format!("KRT_RUN_ID={uid}").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == marker))
                .unwrap_or(false)
        })
        .collect()
}

pub(crate) fn assert_gone(pids: &[i32], uid: &str) {
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of the Run still exists"
        );
    }
    assert_eq!(marked_processes(uid), Vec::<i32>::new());
}
