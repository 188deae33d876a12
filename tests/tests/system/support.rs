//! The cluster a scenario runs against: the one `KUBECONFIG` names (kruntimes installed
//! there, as on kind in `.github/workflows/e2e.yml`), else a `kruntimes-test-cluster
//! --install` of this build, started for the scenario and stopped after it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// How long a scenario waits for the state it expects before failing: generous for a
/// loaded CI machine, bounded so that a wrong state fails instead of hanging.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// The emulated cluster's process, its control channel (commands on stdin, one answer
/// line each on stdout) and its directory.
struct Emulator {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

/// A cluster with kruntimes installed.
pub(crate) struct Cluster {
    /// An administrator's client.
    pub(crate) client: kube::Client,
    /// The kubeconfig file of that administrator (for kubectl).
    pub(crate) kubeconfig: PathBuf,
    emulator: Option<Mutex<Emulator>>,
}

impl Cluster {
    /// The cluster for a scenario: the one `KUBECONFIG` names, else an emulated one
    /// (which needs root: the test fails saying so otherwise).
    pub(crate) async fn start() -> Cluster {
        if let Some(kubeconfig) = std::env::var_os("KUBECONFIG") {
            let kubeconfig = PathBuf::from(kubeconfig);
            let client = client_of(&kubeconfig).await;
            return Cluster {
                client,
                kubeconfig,
                emulator: None,
            };
        }
        Cluster::emulated(&["--install".as_ref()]).await
    }

    /// An emulated cluster with kruntimes installed from `rendered`, the output of
    /// `helm template` (`kruntimes-test-cluster --install-chart`).
    pub(crate) async fn with_chart(rendered: &Path) -> Cluster {
        Cluster::emulated(&["--install-chart".as_ref(), rendered.as_os_str()]).await
    }

    /// `kruntimes-test-cluster` with `install_args`, once it printed `ready`.
    async fn emulated(install_args: &[&std::ffi::OsStr]) -> Cluster {
        kruntimes_testkit::privilege::require_root(
            "without KUBECONFIG the suite starts the emulated cluster, whose node runs Pods \
             as processes in namespaces of their own",
        );
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kruntimes-test-cluster"))
            .arg("--dir")
            .arg(dir.path())
            .args(install_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("ready"),
            "kruntimes-test-cluster: {line:?}"
        );
        let kubeconfig = dir.path().join("kubeconfig");
        let client = client_of(&kubeconfig).await;
        let emulator = Emulator {
            child,
            stdin,
            stdout,
            dir,
        };
        Cluster {
            client,
            kubeconfig,
            emulator: Some(Mutex::new(emulator)),
        }
    }

    /// Whether this is the emulated cluster (fault injection needs it).
    pub(crate) fn is_emulated(&self) -> bool {
        self.emulator.is_some()
    }

    /// Sends a control command to the emulated cluster and returns its answer (the
    /// line after `ok `); panics on an error answer.
    pub(crate) fn control(&self, command: &str) -> String {
        let emulator = self
            .emulator
            .as_ref()
            .expect("control needs the emulated cluster");
        let mut emulator = emulator.lock().unwrap();
        writeln!(emulator.stdin, "{command}").unwrap();
        let mut line = String::new();
        emulator.stdout.read_line(&mut line).unwrap();
        let answer = line.trim_end().to_owned();
        match answer.strip_prefix("ok") {
            Some(rest) => rest.trim_start().to_owned(),
            None => panic!("{command}: {answer}"),
        }
    }

    /// A fresh namespace for one scenario, enforcing Pod Security `restricted`.
    pub(crate) async fn namespace(&self, prefix: &str) -> String {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let name = format!("{prefix}-{}", std::process::id());
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
            }},
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        name
    }

    /// Deletes a namespace made by [`Cluster::namespace`].
    pub(crate) async fn delete_namespace(&self, name: &str) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Runs Debian's kubectl (an independent client) against the cluster.
    pub(crate) fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; its stdout.
    pub(crate) fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_diagnostics();
        }
        if let Some(emulator) = self.emulator.take() {
            let mut emulator = emulator.into_inner().unwrap_or_else(|e| e.into_inner());
            let pid = nix::unistd::Pid::from_raw(i32::try_from(emulator.child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let status = emulator.child.wait().unwrap();
            if std::thread::panicking() && std::env::var_os("KRT_E2E_KEEP_DIR").is_some() {
                // Kept for reading the components' and pods' whole logs.
                let kept = emulator.dir.keep();
                eprintln!("--- the cluster's directory is kept: {}", kept.display());
                return;
            }
            if !std::thread::panicking() {
                assert!(
                    status.success(),
                    "kruntimes-test-cluster ended with {status}"
                );
            }
        }
    }
}

impl Cluster {
    /// For a failed scenario: every kruntimes object with its status, and the end of
    /// the emulated components' logs.
    fn print_diagnostics(&self) {
        let objects = self.kubectl(
            &["get", "runtimes,runs,workflows,pods", "-A", "-o", "yaml"],
            None,
        );
        eprintln!(
            "--- objects at the failure\n{}",
            String::from_utf8_lossy(&objects.stdout)
        );
        let Some(emulator) = &self.emulator else {
            return;
        };
        // Installed from the chart, the components are pods: their logs are the pods'.
        for component in ["kruntimes-controller", "kruntimes-webhook"] {
            let selector = format!("app.kubernetes.io/name={component}");
            let logs = self.kubectl(
                &[
                    "logs",
                    "-n",
                    "kruntimes-system",
                    "-l",
                    &selector,
                    "--prefix",
                    "--tail=80",
                ],
                None,
            );
            if logs.status.success() && !logs.stdout.is_empty() {
                eprintln!(
                    "--- last lines of the {component} pods' logs\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
        }
        let Ok(emulator) = emulator.lock() else {
            return;
        };
        for log in ["controller.log", "webhook.log"] {
            let text = std::fs::read_to_string(emulator.dir.path().join(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- last lines of {log}\n{tail}");
        }
    }
}

async fn client_of(kubeconfig: &Path) -> kube::Client {
    let config = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Polls `check` until it gives `Some`, failing after [`WAIT`] with `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until Run `name` is terminal, fails unless it `Succeeded`, and returns it.
pub(crate) async fn succeeded(
    runs: &Api<kruntimes_api::v1alpha1::Run>,
    name: &str,
) -> kruntimes_api::v1alpha1::Run {
    let ended = crate::runs::finished(runs, name).await;
    assert_eq!(
        crate::runs::phase(&ended),
        kruntimes_api::v1alpha1::RunPhase::Succeeded,
        "{name}: {:?}",
        ended.status
    );
    ended
}
