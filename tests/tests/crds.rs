//! Real-cluster tests: the CRDs and examples against a live apiserver, which is the only
//! place the CEL rules are compiled and cost-checked for real.
//!
//! They need a cluster, so they are `#[ignore]`d and show as skipped in a normal run;
//! `.github/workflows/e2e.yml` runs them on kind with `cargo test -p kruntimes-e2e --
//! --ignored`. Run explicitly without a cluster, they fail rather than pass vacuously.

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a cluster: set KUBECONFIG"
    );
    let mut command = Command::new("kubectl");
    command.args(args).current_dir(repo());
    if stdin.is_none() {
        return command.output().expect("kubectl runs");
    }
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn install_crds() {
    ok(&kubectl(
        &["apply", "--server-side", "-f", "charts/kruntimes/crds/"],
        None,
    ));
    ok(&kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/runtimes.kruntimes.io",
            "crd/runs.kruntimes.io",
            "crd/workflows.kruntimes.io",
        ],
        None,
    ));
    let namespace = "kruntimes-e2e";
    let _ = kubectl(&["create", "namespace", namespace], None);
}

#[test]
#[ignore = "needs a cluster: KUBECONFIG and --ignored"]
fn the_apiserver_accepts_the_crds_and_the_examples() {
    install_crds();
    for example in [
        "examples/runtimes.yaml",
        "examples/runs.yaml",
        "examples/workflow.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(example))
            .unwrap()
            .replace("namespace: team-a", "namespace: kruntimes-e2e");
        ok(&kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&text),
        ));
    }
}

#[test]
#[ignore = "needs a cluster: KUBECONFIG and --ignored"]
fn the_apiserver_enforces_the_cel_rules_with_no_webhook() {
    install_crds();
    let two_sources = "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: two, namespace: kruntimes-e2e}\nspec:\n  runtimeRef: {name: bash}\n  interpreter: exec\n  script: echo\n  command: [echo]\n";
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(two_sources));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one program source"));

    let run = "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: immutable, namespace: kruntimes-e2e}\nspec:\n  runtimeRef: {name: bash}\n  interpreter: bash\n  script: echo one\n";
    let _ = kubectl(
        &[
            "delete",
            "run",
            "immutable",
            "-n",
            "kruntimes-e2e",
            "--ignore-not-found",
        ],
        None,
    );
    ok(&kubectl(&["apply", "-f", "-"], Some(run)));
    let edited = run.replace("echo one", "echo two");
    let out = kubectl(&["apply", "-f", "-"], Some(&edited));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.script is immutable"));
    let cancelled = format!("{run}  cancel: true\n");
    ok(&kubectl(&["apply", "-f", "-"], Some(&cancelled)));
    ok(&kubectl(
        &["delete", "run", "immutable", "-n", "kruntimes-e2e"],
        None,
    ));
}
