//! `krt` as users run it: the real binary, real files, exit statuses and output lines.

// Test helpers outside #[test] functions: a failed unwrap is a failed test, which is
// what we want (clippy.toml allows it only inside #[test] functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn krt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_krt"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("krt runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("krt-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn check_passes_the_shipped_examples() {
    let out = krt(&[
        "check",
        "examples/runtimes.yaml",
        "examples/runs.yaml",
        "examples/workflow.yaml",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("6 object(s), 0 with violations"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_prints_file_kind_name_field_reason_detail_and_exits_1() {
    let path = temp_file(
        "bad.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Workflow\nmetadata: {name: release}\nspec:\n  jobs:\n  - name: fetch\n    steps: [{name: s, run: {runtimeRef: {name: b}, interpreter: bash, script: x}}]\n  - name: build\n    needs: [fetc]\n    steps: [{name: s, uses: org/a@v1}]\n",
    );
    let file = path.to_str().unwrap();
    let out = krt(&["check", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let expected = [
        format!(
            "{file}: Workflow/release: spec.jobs[1].needs[0]: Not found: \"fetc\" (no job named \"fetc\"; jobs are: fetch, build)"
        ),
        format!(
            "{file}: Workflow/release: spec.jobs[1].steps[0].uses: Unsupported value: \"org/a@v1\" (steps[].uses is not implemented; use run)"
        ),
    ];
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn check_applies_the_pod_security_floor_to_runtime_templates() {
    let path = temp_file(
        "priv.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Runtime\nmetadata: {name: rt}\nspec:\n  template:\n    spec:\n      containers: [{name: main, image: x, securityContext: {privileged: true}}]\n",
    );
    let out = krt(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("Runtime/rt: spec.template.spec.containers[0].securityContext.privileged: Forbidden: violates PodSecurity \"baseline:latest\": privileged"),
        "{}",
        stdout(&out)
    );
    // The examples meet restricted too; a non-restricted template fails a restricted floor.
    let ok = krt(&[
        "check",
        "--pss-floor",
        "restricted",
        "examples/runtimes.yaml",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let plain = temp_file(
        "plain.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Runtime\nmetadata: {name: rt}\nspec:\n  template:\n    spec:\n      containers: [{name: main, image: x}]\n",
    );
    assert_eq!(
        krt(&["check", plain.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let strict = krt(&[
        "check",
        "--pss-floor",
        "restricted",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        stdout(&strict).contains("allowPrivilegeEscalation != false"),
        "{}",
        stdout(&strict)
    );
}

#[test]
fn check_reports_other_kinds_instead_of_passing_them() {
    let path = temp_file(
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    );
    let out = krt(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("Deployment/web: apps/v1 Deployment is not a kruntimes kind"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unreadable_or_unparsable_input_exits_2_and_says_why() {
    let out = krt(&["check", "does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does/not/exist.yaml: cannot read: No such file"),
        "{}",
        stderr(&out)
    );
    let broken = temp_file("broken.yaml", "a: [1,\n");
    let out = krt(&["check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot parse document 0"),
        "{}",
        stderr(&out)
    );
    let out = krt(&["check", "--pss-floor", "strict", "examples/runs.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--pss-floor"), "{}", stderr(&out));
    let out = krt(&["check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn crds_prints_exactly_the_committed_files() {
    let out = krt(&["crds"]);
    assert_eq!(out.status.code(), Some(0));
    let committed: Vec<String> = ["runtimes", "runs", "workflows"]
        .iter()
        .map(|k| {
            std::fs::read_to_string(
                repo().join(format!("charts/kruntimes/crds/{k}.kruntimes.io.yaml")),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(stdout(&out), committed.join("---\n"));
}

#[test]
fn check_pss_text_json_and_exit_codes() {
    let path = temp_file(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  hostPID: true\n  containers: [{name: c, image: x}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  containers: [{name: c, image: x}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n",
    );
    let file = path.to_str().unwrap();
    let out = krt(&["check", "pss", "--level", "baseline", "-o", "json", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&out));
    assert_eq!(lines[0]["kind"], "Pod");
    assert_eq!(lines[0]["name"], "bad");
    assert_eq!(lines[0]["index"], 0);
    assert_eq!(lines[0]["allowed"], false);
    assert_eq!(lines[0]["violations"][0]["check"], "hostNamespaces");
    assert_eq!(lines[0]["violations"][0]["field"], "spec.hostPID");
    assert_eq!(lines[1]["allowed"], true);
    assert!(lines[2]["skipped"].is_string(), "{}", lines[2]);

    let good_only = temp_file(
        "good.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  containers: [{name: c, image: x}]\n",
    );
    let out = krt(&[
        "check",
        "pss",
        "--level",
        "baseline",
        "--version",
        "v1.25",
        good_only.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = krt(&[
        "check",
        "pss",
        "--level",
        "restricted",
        good_only.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    for bad in [["--level", "strict"], ["--version", "v2.0"]] {
        let mut args = vec!["check", "pss", "--level", "baseline"];
        args.extend(bad);
        args.push(file);
        let out = krt(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
}

/// Every command that reads manifests refuses `file` as bad input (exit 2), with
/// `expected` on stderr and nothing on stdout.
fn every_reader_refuses(file: &str, expected: &str) {
    for args in [
        vec!["check", file],
        vec!["check", "pss", "--level", "baseline", file],
        vec!["run", "--local", "-f", file],
        vec!["inject", "-f", file],
    ] {
        let out = krt(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&out)
        );
    }
}

/// YAML forbids a repeated key, and parsers disagree on which value wins: every command
/// refuses it, naming the file, the key and its line, before doing anything else.
#[test]
fn a_repeated_key_is_refused_by_check_run_and_inject() {
    let path = temp_file(
        "repeated.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec:\n  runtimeRef: {name: b}\n  interpreter: bash\n  script: echo one\n  script: echo two\n",
    );
    let file = path.to_str().unwrap();
    every_reader_refuses(
        file,
        &format!(
            "{file}: cannot parse document 0: spec: duplicate key \"script\": a mapping may set each key once at line 8 column 3"
        ),
    );
    // The reported case: a Pod's hostNetwork set twice.
    let pod = temp_file(
        "repeated-pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  hostNetwork: false\n  containers: [{name: c, image: x}]\n",
    );
    every_reader_refuses(
        pod.to_str().unwrap(),
        "spec: duplicate key \"hostNetwork\": a mapping may set each key once at line 6 column 3",
    );
}

/// `krt check` never passes a file it did not check: a file with no document at all is
/// bad input, named, for every command that reads manifests.
#[test]
fn a_file_with_no_document_is_refused() {
    for (name, content) in [
        ("empty.yaml", ""),
        ("comments.yaml", "# nothing here yet\n---\n---\n"),
    ] {
        let path = temp_file(name, content);
        let file = path.to_str().unwrap();
        every_reader_refuses(
            file,
            &format!(
                "{file}: holds no YAML document (the file is empty, or has only comments and ---)"
            ),
        );
    }
}

/// A leading UTF-8 byte order mark (Windows editors write one) is skipped; one further
/// in is refused with its line instead of the parser's misleading error.
#[test]
fn a_leading_byte_order_mark_is_accepted() {
    let run = "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec: {runtimeRef: {name: b}, interpreter: bash, script: x}\n";
    let path = temp_file("bom.yaml", &format!("\u{feff}{run}"));
    let out = krt(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 object(s), 0 with violations"),
        "{}",
        stderr(&out)
    );
    let joined = temp_file("joined.yaml", &format!("{run}---\n\u{feff}{run}"));
    let out = krt(&["check", joined.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "cannot parse: a byte order mark (U+FEFF) at line 6; only the start of a file may have one"
        ),
        "{}",
        stderr(&out)
    );
}

/// Names, keys and values are printed with their control characters escaped: a name
/// holding an escape sequence cannot drive the terminal, nor a newline split a line.
#[test]
fn check_escapes_control_characters_from_the_file() {
    let path = temp_file(
        "control.yaml",
        "apiVersion: kruntimes.io/v1alpha1\nkind: Run\nmetadata: {name: \"r\\e[31m\"}\nspec:\n  runtimeRef: {name: b}\n  interpreter: bash\n  entrypoint: main.sh\n  files: {\"main.sh\": x, \"a\\nb\": x}\n",
    );
    let out = krt(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        !printed.contains('\u{1b}') && !stderr(&out).contains('\u{1b}'),
        "{printed:?}"
    );
    let file = path.to_str().unwrap();
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        [
            format!(
                "{file}: Run/r\\u{{1b}}[31m: metadata.name: Invalid value: \"r\\u{{1b}}[31m\" (a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name' or '123-abc'), with '.' between labels)"
            ),
            format!(
                "{file}: Run/r\\u{{1b}}[31m: spec.files[a\\nb]: Invalid value: \"a\\nb\" (must not contain control characters)"
            ),
        ]
    );
}
