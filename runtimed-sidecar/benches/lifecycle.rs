//! Figures for docs/benchmarks.md (not a pass/fail test): the cost of starting a Run
//! through the lifecycle against a direct spawn of the same program, short Runs per
//! second, and the process's RSS while a Run writes 1 GiB.
//!
//! `cargo bench -p kruntimes-runtimed --bench lifecycle`
// A benchmark prints its figures and stops loudly on a setup failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kruntimes_runtimed::agent::lifecycle::{Config, ExecSpec, Interpreter, Phase, Supervisor};

const SEQUENTIAL: usize = 300;
const CONCURRENT: usize = 1000;
const IN_FLIGHT: usize = 16;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn spec(uid: String, command: &[&str]) -> ExecSpec {
    ExecSpec {
        run_uid: uid,
        interpreter: Some(Interpreter::Exec),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        ..ExecSpec::default()
    }
}

fn main() {
    // 1. Direct spawn floor, before anything else waits for children in this process.
    let start = Instant::now();
    let mut direct_spawn = Duration::ZERO;
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let mut child = Command::new("/bin/true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        direct_spawn += t.elapsed();
        assert!(child.wait().unwrap().success());
    }
    let direct = start.elapsed() / SEQUENTIAL as u32;
    let direct_spawn = direct_spawn / SEQUENTIAL as u32;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::new(root.path());
        config.grace = Duration::from_millis(200);
        let supervisor = Arc::new(Supervisor::new(config).unwrap());

        // 2. The same program as a Run, one at a time, start to terminal (workspace
        // created and removed, confinement, capture, /proc sweep for leftovers).
        // `start` returns once the program has been exec'ed (std's spawn waits for the
        // exec), after the workspace is created: Execute-to-process-start.
        let start = Instant::now();
        let mut to_start = Duration::ZERO;
        for i in 0..SEQUENTIAL {
            let t = Instant::now();
            let e = supervisor.start(spec(format!("seq-{i}"), &["/bin/true"])).await.unwrap();
            to_start += t.elapsed();
            assert_eq!(e.wait().await.phase, Phase::Succeeded);
        }
        let sequential = start.elapsed() / SEQUENTIAL as u32;
        let to_start = to_start / SEQUENTIAL as u32;

        // 3. Throughput with IN_FLIGHT Runs at once.
        let start = Instant::now();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..CONCURRENT {
            let permit = semaphore.clone().acquire_owned().await.unwrap();
            let supervisor = supervisor.clone();
            tasks.spawn(async move {
                let e = supervisor.start(spec(format!("par-{i}"), &["/bin/true"])).await.unwrap();
                let phase = e.wait().await.phase;
                drop(permit);
                phase
            });
        }
        while let Some(phase) = tasks.join_next().await {
            assert_eq!(phase.unwrap(), Phase::Succeeded);
        }
        let per_second = CONCURRENT as f64 / start.elapsed().as_secs_f64();

        // 4. RSS while a Run writes 1 GiB to stdout (1 MiB kept per stream).
        let before = rss_kib();
        let e = supervisor
            .start(spec("big".into(), &["head", "-c", "1073741824", "/dev/zero"])).await
            .unwrap();
        let mut peak = before;
        while !e.snapshot().phase.is_terminal() {
            peak = peak.max(rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (total, dropped, _) = e.stdout.stats();
        let after = rss_kib();

        println!("direct spawn of /bin/true (to exec):   {direct_spawn:?}");
        println!("lifecycle start() (to exec):           {to_start:?}, {:.2}x direct", to_start.as_secs_f64() / direct_spawn.as_secs_f64());
        println!("direct spawn+wait of /bin/true:        {direct:?} per process ({SEQUENTIAL} runs)");
        println!("lifecycle start-to-terminal, serial:   {sequential:?} per Run ({SEQUENTIAL} runs), {:.2}x direct", sequential.as_secs_f64() / direct.as_secs_f64());
        println!("lifecycle throughput, {IN_FLIGHT} in flight:  {per_second:.0} Runs/s ({CONCURRENT} runs)");
        println!("1 GiB written: total {total} B, dropped {dropped} B; RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    });
}
