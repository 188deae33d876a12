//! Figures for docs/benchmarks.md (not a pass/fail test): the latency of a Run's live
//! output on the emulated cluster, from a line written by the Run to the line printed
//! by `krt run --wait` (through the runtimed agent's mirror, the container log and the
//! API server's `pods/log` follow), against a floor measured on the same lines at the
//! same time: the container log file itself, tail-followed by this program (polled
//! every [`FLOOR_POLL`]), which every path through `pods/log` has to read after.
//!
//! Each line carries the wall-clock time the Run took just before writing it (`date
//! +%s%N` on the same host, the emulated node's processes share the clock); its
//! latency is the time it is seen minus that stamp, so both paths include the same
//! `date` and `echo` and differ only in what follows the write.
//!
//! Needs root (the emulated node) and the binaries of the same profile beside this
//! one: `cargo build -p krt -p kruntimes-runtimed -p kruntimes-e2e --bins` then
//! `cargo bench --profile dev -p krt --bench live_output` (or build with `--release`
//! and run `cargo bench -p krt --bench live_output`). `KRT_BENCH_LINES` sets how many
//! lines (default [`LINES`]).
// A benchmark prints its figures and stops loudly on a setup failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kruntimes_api::v1alpha1::{Run, Runtime};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Lines measured per run (at least 50 for a p99 that is not the maximum).
const LINES: usize = 200;

/// Between two lines of the Run: each line is measured alone, not in a burst.
const LINE_GAP: &str = "0.02";

/// How often the floor looks at the log file.
const FLOOR_POLL: Duration = Duration::from_millis(1);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn beside_me(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (see the module docs)",
        path.display()
    );
    path
}

/// `(stamp, seen)` for a line `T<stamp>`, as nanoseconds.
fn latency(line: &str, seen: u128) -> Option<f64> {
    let stamp: u128 = line.trim().strip_prefix('T')?.parse().ok()?;
    Some((seen.saturating_sub(stamp)) as f64 / 1e6)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: {} lines, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(0.0)
    );
}

/// Tail-follows `path` from its current end, returning the latency of every `T` line
/// inside a record's `data` until `count` were seen.
fn follow_file(path: &Path, count: usize) -> Vec<f64> {
    let mut file = std::fs::File::open(path).unwrap();
    file.seek(SeekFrom::End(0)).unwrap();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < count {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            std::thread::sleep(FLOOR_POLL);
            continue;
        }
        let seen = now_ns();
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(data) = record.get("data").and_then(|d| d.as_str()) {
                out.extend(data.lines().filter_map(|l| latency(l, seen)));
            }
        }
    }
    out
}

/// `kruntimes-test-cluster --install` in `dir`, once ready: the process, its control
/// channel (kept open to the end: the cluster answers control commands there) and an
/// administrator's client.
async fn start_cluster(
    dir: &Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    kube::Client,
) {
    let mut cluster = Command::new(beside_me("kruntimes-test-cluster"))
        .arg("--dir")
        .arg(dir)
        .arg("--install")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut control = BufReader::new(cluster.stdout.take().unwrap());
    control.read_line(&mut ready).unwrap();
    assert!(
        ready.starts_with("ready"),
        "kruntimes-test-cluster: {ready:?}"
    );
    let config = kube::config::Kubeconfig::read_from(dir.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    (cluster, control, kube::Client::try_from(config).unwrap())
}

/// Namespace `ns` (Pod Security `restricted`) with Runtime `bash` of one ready pod.
async fn ready_runtime(client: &kube::Client, ns: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let runtime: Runtime = serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime", "metadata": {"name": "bash"},
        "spec": {"replicas": 1, "concurrency": 2, "template": {"spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "image": "debian:trixie-slim",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}},
    }))
    .unwrap();
    let runtimes: Api<Runtime> = Api::namespaced(client.clone(), ns);
    runtimes
        .create(&PostParams::default(), &runtime)
        .await
        .unwrap();
    for _ in 0..600 {
        let r = runtimes.get("bash").await.unwrap();
        if r.status.and_then(|s| s.ready_replicas) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let lines: usize = std::env::var("KRT_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LINES);
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, control, client) = start_cluster(dir.path()).await;
    let kubeconfig = dir.path().join("kubeconfig");
    let ns = "bench";
    ready_runtime(&client, ns).await;
    // A pause first, so that both readers are attached before the first line.
    let script =
        format!("sleep 3; for i in $(seq {lines}); do echo T$(date +%s%N); sleep {LINE_GAP}; done");
    let manifest = dir.path().join("run.yaml");
    std::fs::write(
        &manifest,
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "latency"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": script}})
        .to_string(),
    )
    .unwrap();
    let mut krt = Command::new(beside_me("krt"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["-n", ns, "--wait", "-f"])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let krt_out = krt.stdout.take().unwrap();
    let through_krt = std::thread::spawn(move || {
        let mut out = Vec::new();
        for line in BufReader::new(krt_out).lines() {
            let line = line.unwrap();
            out.extend(latency(&line, now_ns()));
        }
        out
    });
    let runs: Api<Run> = Api::namespaced(client.clone(), ns);
    let pod = loop {
        if let Some(pod) = runs.get("latency").await.ok().and_then(|r| r.status?.pod) {
            break pod;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pods_dir = dir.path().join("node").join("pods");
    let log = std::fs::read_dir(&pods_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{ns}_{pod}_")))
        })
        .unwrap()
        .join("logs")
        .join("main.log");
    let floor = std::thread::spawn(move || follow_file(&log, lines));
    let status = krt.wait().unwrap();
    let through_krt = through_krt.join().unwrap();
    let floor = floor.join().unwrap();
    println!("krt run --wait exited {status}");
    report("line written -> printed by krt run --wait", through_krt);
    report(
        "floor: line written -> read from the container log file",
        floor,
    );
    let _ = nix_kill(cluster.id());
    let _ = cluster.wait();
    drop(control);
}

/// SIGTERM to the emulated cluster (it stops what it started and exits).
fn nix_kill(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
}
