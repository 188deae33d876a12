//! Figures for docs/benchmarks.md (not a pass/fail test), measured through the real
//! binaries: `runtimed agent` and `runtimed sidecar` run as child processes on unix
//! sockets in a temporary directory (as `krt run --local` starts them), and this
//! program is the client, calling the sidecar's gRPC API. Every figure has a floor
//! measured in the same run: the same `bash` with the same script, spawned directly.
//!
//! 1. Execute-to-process-start: "started" is when the script's first statement has run,
//!    seen by the client in two ways: a byte written to a FIFO the client holds open
//!    (identical for the floor), and the first stdout byte (for the Run: through
//!    `Logs`; for the floor: from the pipe). Also the to-exec time: Execute's round trip
//!    (the agent answers once the program has been exec'ed) against the direct spawn
//!    call returning (std's `posix_spawn` also returns after the exec). Measured twice
//!    on both sides: back to back (each start as soon as the previous Run is done) and
//!    paced (each start [`PACE`] after the previous one began, the CPUs idle in
//!    between, as for Runs that arrive one at a time). On the benchmark VMs a CPU that has just
//!    been idle starts bash markedly slower than one that has not (docs/benchmarks.md,
//!    "Paced and back-to-back starts"): back to back, the floor's bash always finds a CPU that has been
//!    busy, a Run's bash one that was idle while the call went through the other
//!    processes; paced, both start from the same idle machine.
//! 2. Short Runs per second (`bash` running `true`), [`IN_FLIGHT`] at once, twice: each
//!    Run as Execute, then `Logs` follow to its end, then `Status` (terminal by then);
//!    then each Run as one `ExecuteAndFollow` call. With the CPU of each process.
//! 3. Peak RSS of the sidecar and the agent while one Run writes 1 GiB to stdout and the
//!    client streams it through `Logs`.
//!
//! `cargo bench -p kruntimes-runtimed --bench e2e` (`KRT_BENCH_RUNTIMED=PATH` measures
//! another runtimed binary with the same client and floors).
// A benchmark prints its figures and stops loudly on a setup failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kruntimes_runtimed::grpc::{RuntimedClient, connect_unix};
use kruntimes_runtimed::proto;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

/// The binary measured: the one cargo built with this bench, or `KRT_BENCH_RUNTIMED`
/// (to measure another build, e.g. a "before" figure, with the same client).
fn runtimed() -> PathBuf {
    std::env::var_os("KRT_BENCH_RUNTIMED").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_runtimed")),
        PathBuf::from,
    )
}

/// Runs measured one at a time for the start latency (after [`WARMUP`] unmeasured).
const SEQUENTIAL: usize = 300;
const WARMUP: usize = 20;
/// Time from one start to the next in the paced measurement: several times a start's
/// length, so that every start begins on idle CPUs.
const PACE: Duration = Duration::from_millis(10);

/// When each start of a latency measurement begins: at once (back to back), or every
/// [`PACE`] from the first.
struct Pacer {
    next: Option<tokio::time::Instant>,
}

impl Pacer {
    fn new(paced: bool) -> Self {
        Self {
            next: paced.then(tokio::time::Instant::now),
        }
    }

    async fn wait(&mut self) {
        if let Some(next) = &mut self.next {
            tokio::time::sleep_until(*next).await;
            *next = (*next + PACE).max(tokio::time::Instant::now());
        }
    }
}
/// Short Runs for the throughput figure, and how many are in flight at once.
const THROUGHPUT_RUNS: usize = 2000;
const IN_FLIGHT: usize = 16;
/// Bytes the big Run writes to stdout.
const BIG_OUTPUT: u64 = 1 << 30;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

struct Summary {
    p50: Duration,
    p99: Duration,
}

fn summary(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    Summary {
        p50: percentile(&samples, 50),
        p99: percentile(&samples, 99),
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// `bash` as the agent finds it: the first match on its PATH.
fn which(program: &str) -> PathBuf {
    let path = kruntimes_runtimed::limits::DEFAULT_PATH;
    path.split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not found on {path}"))
}

fn status_field_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The environment the agent gives a Run (see lifecycle.rs), for the floor's bash too:
/// the same locale and PATH, so both start the same way.
fn scrubbed<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env_clear()
        .env("PATH", kruntimes_runtimed::limits::DEFAULT_PATH)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("KRT_RUN_ID", "direct")
}

/// CPU time used by a process itself and by its waited-for children, from
/// /proc/PID/stat (utime + stime, cutime + cstime), in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the command: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(11) stime(12) cutime(13) cstime(14).
    (fields[11] + fields[12], fields[13] + fields[14])
}

/// The agent's spawner process (`runtimed spawner`, its child that forks the Runs), if
/// the binary measured has one: its CPU and its reaped children's (the Runs' bash) count
/// too.
fn spawner_of(agent: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{agent}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"spawner".as_slice()))
        })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resets VmHWM (the peak RSS) of `pid` to its current RSS.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").unwrap();
}

fn spawn_runtimed(args: &[&std::ffi::OsStr]) -> tokio::process::Child {
    tokio::process::Command::new(runtimed())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env("RUNTIMED_LOG", "warn")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn connect(socket: &Path) -> RuntimedClient<Channel> {
    for _ in 0..500 {
        if socket.exists()
            && let Ok(client) = connect_unix(socket).await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {}", socket.display());
}

fn bash_request(uid: String, script: &str) -> proto::ExecuteRequest {
    proto::ExecuteRequest {
        run_uid: uid,
        interpreter: proto::Interpreter::Bash as i32,
        script: Some(script.into()),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

/// Follows the Run's output to its end; returns the stdout bytes received and when the
/// first one came.
async fn follow(client: &mut RuntimedClient<Channel>, id: &str) -> (u64, Option<Instant>) {
    let mut stream = client
        .logs(proto::LogsRequest {
            execution_id: id.into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = 0;
    let mut first = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        if chunk.stream == proto::Stream::Stdout as i32 && !chunk.data.is_empty() {
            first.get_or_insert_with(Instant::now);
            bytes += chunk.data.len() as u64;
        }
    }
    (bytes, first)
}

/// Status once the output has ended: terminal at once (the agent ends `Logs` only after
/// the execution is terminal); polled otherwise, and counted.
async fn terminal(client: &mut RuntimedClient<Channel>, id: &str) -> (proto::Execution, bool) {
    let mut polled = false;
    loop {
        let status = client
            .status(proto::StatusRequest {
                execution_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.phase != proto::Phase::Running as i32 {
            return (status, polled);
        }
        polled = true;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Latency {
    fifo: Summary,
    stdout: Summary,
    to_exec: Summary,
}

/// One side of the start-latency comparison: the Run through the API.
async fn run_latency(client: &mut RuntimedClient<Channel>, fifo: &Path, paced: bool) -> Latency {
    let mut reader = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(fifo)
        .unwrap();
    let script = format!("printf x > {}; printf y", fifo.display());
    let (mut at_fifo, mut at_stdout, mut to_exec) = (Vec::new(), Vec::new(), Vec::new());
    let mut pacer = Pacer::new(paced);
    for i in 0..WARMUP + SEQUENTIAL {
        pacer.wait().await;
        let id = format!("lat-{}-{i}", if paced { "paced" } else { "b2b" });
        let request = bash_request(id.clone(), &script);
        let mut byte = [0u8; 1];
        let t0 = Instant::now();
        let mut exec_client = client.clone();
        let (executed, seen) = tokio::join!(
            async {
                exec_client.execute(request).await.unwrap();
                Instant::now()
            },
            async {
                reader.read_exact(&mut byte).await.unwrap();
                Instant::now()
            }
        );
        let (_, first_stdout) = follow(client, &id).await;
        let (status, _) = terminal(client, &id).await;
        assert_eq!(status.phase, proto::Phase::Succeeded as i32, "{status:?}");
        if i >= WARMUP {
            to_exec.push(executed - t0);
            at_fifo.push(seen - t0);
            at_stdout.push(first_stdout.unwrap() - t0);
        }
    }
    Latency {
        fifo: summary(at_fifo),
        stdout: summary(at_stdout),
        to_exec: summary(to_exec),
    }
}

/// The floor: the same bash and script, spawned directly (std: `posix_spawn`), stdout
/// and stderr piped as the agent does.
async fn direct_latency(bash: &Path, dir: &Path, fifo: &Path, paced: bool) -> Latency {
    let mut reader = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(fifo)
        .unwrap();
    let script = dir.join("direct.sh");
    std::fs::write(&script, format!("printf x > {}; printf y", fifo.display())).unwrap();
    let (mut at_fifo, mut at_stdout, mut to_exec) = (Vec::new(), Vec::new(), Vec::new());
    let mut pacer = Pacer::new(paced);
    for i in 0..WARMUP + SEQUENTIAL {
        pacer.wait().await;
        let mut byte = [0u8; 1];
        let t0 = Instant::now();
        let mut child = scrubbed(&mut Command::new(bash), dir)
            .arg(&script)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let mut stdout =
            tokio::net::unix::pipe::Receiver::from_owned_fd(child.stdout.take().unwrap().into())
                .unwrap();
        let mut out = [0u8; 1];
        let (seen, first_stdout) = tokio::join!(
            async {
                reader.read_exact(&mut byte).await.unwrap();
                Instant::now()
            },
            async {
                stdout.read_exact(&mut out).await.unwrap();
                Instant::now()
            }
        );
        assert!(child.wait().unwrap().success());
        if i >= WARMUP {
            to_exec.push(spawned - t0);
            at_fifo.push(seen - t0);
            at_stdout.push(first_stdout - t0);
        }
    }
    Latency {
        fifo: summary(at_fifo),
        stdout: summary(at_stdout),
        to_exec: summary(to_exec),
    }
}

/// How the client runs each short Run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Calls {
    /// Execute, then Logs with follow to its end, then Status.
    Three,
    /// One ExecuteAndFollow.
    One,
}

/// One short Run in one ExecuteAndFollow call; its final state, or `None` when the
/// binary measured does not have the call.
async fn execute_and_follow(
    client: &mut RuntimedClient<Channel>,
    request: proto::ExecuteRequest,
) -> Option<proto::Execution> {
    let mut stream = match client.execute_and_follow(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => return None,
        Err(status) => panic!("{status}"),
    };
    let mut ended = None;
    while let Some(event) = stream.message().await.unwrap() {
        if let Some(proto::execution_event::Event::Ended(execution)) = event.event {
            ended = Some(execution);
        }
    }
    Some(ended.expect("the call ended without `ended`"))
}

/// Short Runs per second through the sidecar, and how many Status calls had to poll
/// (`None`: the binary has no ExecuteAndFollow).
async fn run_throughput(client: &RuntimedClient<Channel>, calls: Calls) -> Option<(f64, usize)> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let prefix = if calls == Calls::One { "one" } else { "tp" };
    for i in 0..THROUGHPUT_RUNS {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let mut client = client.clone();
        tasks.spawn(async move {
            let id = format!("{prefix}-{i}");
            let request = bash_request(id.clone(), "true");
            let (status, polled) = match calls {
                Calls::Three => {
                    client.execute(request).await.unwrap();
                    follow(&mut client, &id).await;
                    terminal(&mut client, &id).await
                }
                Calls::One => (execute_and_follow(&mut client, request).await?, false),
            };
            drop(permit);
            assert_eq!(status.phase, proto::Phase::Succeeded as i32, "{status:?}");
            Some(polled)
        });
    }
    let mut polled = 0;
    while let Some(p) = tasks.join_next().await {
        polled += usize::from(p.unwrap()?);
    }
    Some((
        THROUGHPUT_RUNS as f64 / start.elapsed().as_secs_f64(),
        polled,
    ))
}

/// The floor: the same bash and script, spawned and waited for directly, from
/// [`IN_FLIGHT`] threads.
fn direct_throughput(bash: &Path, dir: &Path) -> f64 {
    let script = dir.join("true.sh");
    std::fs::write(&script, "true").unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (bash, script, dir, next) = (
                bash.to_owned(),
                script.clone(),
                dir.to_owned(),
                next.clone(),
            );
            std::thread::spawn(move || {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < THROUGHPUT_RUNS {
                    let out = scrubbed(&mut Command::new(&bash), &dir)
                        .arg(&script)
                        .current_dir(&dir)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    THROUGHPUT_RUNS as f64 / start.elapsed().as_secs_f64()
}

/// CPU per short Run, in µs, of each process.
struct Cpu {
    agent: f64,
    spawner: f64,
    sidecar: f64,
    client: f64,
    bash: f64,
}

impl Cpu {
    fn all(&self) -> f64 {
        self.agent + self.spawner + self.sidecar + self.client + self.bash
    }
}

struct Memory {
    before: (u64, u64),
    peak: (u64, u64),
    after: (u64, u64),
    received: u64,
    total: u64,
    dropped: u64,
}

/// RSS of (sidecar, agent) while one Run writes [`BIG_OUTPUT`] bytes and the client
/// streams them.
async fn run_memory(client: &mut RuntimedClient<Channel>, sidecar: u32, agent: u32) -> Memory {
    let rss = |pid| status_field_kib(pid, "VmRSS:");
    let before = (rss(sidecar), rss(agent));
    reset_peak(sidecar);
    reset_peak(agent);
    let id = "big".to_owned();
    client
        .execute(bash_request(
            id.clone(),
            &format!("head -c {BIG_OUTPUT} /dev/zero"),
        ))
        .await
        .unwrap();
    let (received, _) = follow(client, &id).await;
    let (status, _) = terminal(client, &id).await;
    assert_eq!(status.phase, proto::Phase::Succeeded as i32, "{status:?}");
    let hwm = |pid| status_field_kib(pid, "VmHWM:");
    let stdout = status.stdout.unwrap();
    Memory {
        before,
        peak: (hwm(sidecar), hwm(agent)),
        after: (rss(sidecar), rss(agent)),
        received,
        total: stdout.total_bytes,
        dropped: stdout.dropped_bytes,
    }
}

/// The floors: bash started directly, back to back and paced, and its rate; CPU per
/// start of the spawning process and of bash, in µs.
struct Floors {
    direct: Latency,
    direct_paced: Latency,
    direct_rate: f64,
    direct_parent: f64,
    direct_bash: f64,
}

async fn floors(bash: &Path, dir: &Path, fifo: &Path) -> Floors {
    let direct = direct_latency(bash, dir, fifo, false).await;
    let direct_paced = direct_latency(bash, dir, fifo, true).await;
    let me = std::process::id();
    let before = cpu_ticks(me);
    let direct_rate = direct_throughput(bash, dir);
    let after = cpu_ticks(me);
    let per_start = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / THROUGHPUT_RUNS as f64 * 1e6;
    Floors {
        direct,
        direct_paced,
        direct_rate,
        direct_parent: per_start(after.0 - before.0),
        direct_bash: per_start(after.1 - before.1),
    }
}

/// An agent and a sidecar in `dir`, and a client of the sidecar.
async fn start_runtimed(
    dir: &Path,
) -> (
    tokio::process::Child,
    tokio::process::Child,
    RuntimedClient<Channel>,
) {
    let agent_socket = dir.join("agent.sock");
    let sidecar_socket = dir.join("sidecar.sock");
    let workspace = dir.join("ws");
    let agent = spawn_runtimed(&[
        "agent".as_ref(),
        "--socket".as_ref(),
        agent_socket.as_os_str(),
        "--workspace".as_ref(),
        workspace.as_os_str(),
        "--grace-ms".as_ref(),
        "200".as_ref(),
    ]);
    let sidecar = spawn_runtimed(&[
        "sidecar".as_ref(),
        "--listen".as_ref(),
        sidecar_socket.as_os_str(),
        "--agent-socket".as_ref(),
        agent_socket.as_os_str(),
    ]);
    connect(&agent_socket).await;
    let client = connect(&sidecar_socket).await;
    (agent, sidecar, client)
}

fn main() {
    let bash = which("bash");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("started.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

        // Floors first, while nothing else runs.
        let Floors { direct, direct_paced, direct_rate, direct_parent, direct_bash } =
            floors(&bash, dir.path(), &fifo).await;

        let (agent, sidecar, mut client) = start_runtimed(dir.path()).await;
        let (agent_pid, sidecar_pid) = (agent.id().unwrap(), sidecar.id().unwrap());
        let spawner_pid = spawner_of(agent_pid);
        let spawner_ticks = || spawner_pid.map_or((0, 0), cpu_ticks);

        let run = run_latency(&mut client, &fifo, false).await;
        let run_paced = run_latency(&mut client, &fifo, true).await;
        let me = std::process::id();
        let ticks = || [cpu_ticks(sidecar_pid), cpu_ticks(agent_pid), cpu_ticks(me), spawner_ticks()];
        let per_run = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / THROUGHPUT_RUNS as f64 * 1e6;
        let cpu = |before: [(u64, u64); 4], after: [(u64, u64); 4]| Cpu {
            sidecar: per_run(after[0].0 - before[0].0),
            agent: per_run(after[1].0 - before[1].0),
            spawner: per_run(after[3].0 - before[3].0),
            // The Runs' bash is reaped by the spawner when there is one, else by the agent.
            bash: per_run(after[1].1 - before[1].1 + after[3].1 - before[3].1),
            client: per_run(after[2].0 - before[2].0),
        };
        let before = ticks();
        let (rate, polled) = run_throughput(&client, Calls::Three).await.unwrap();
        let three = cpu(before, ticks());
        let before = ticks();
        let one = run_throughput(&client, Calls::One)
            .await
            .map(|(rate, _)| (rate, cpu(before, ticks())));
        let memory = run_memory(&mut client, sidecar_pid, agent_pid).await;

        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!("runtimed through sidecar + agent (binary: {}); spawner process: {}; bash: {}", runtimed().display(), if spawner_pid.is_some() { "yes" } else { "no" }, bash.display());
        println!("load average at the end: {}", std::fs::read_to_string("/proc/loadavg").unwrap().trim());
        println!();
        println!("| figure | through sidecar + agent | floor: bash spawned directly | ratio |");
        println!("| --- | --- | --- | --- |");
        let paced = format!("start, paced (one every {} ms): first statement ran (FIFO byte)", PACE.as_millis());
        for (name, r, d) in [
            ("start: first statement ran (FIFO byte), p50", run.fifo.p50, direct.fifo.p50),
            ("start: first statement ran (FIFO byte), p99", run.fifo.p99, direct.fifo.p99),
            (&format!("{paced}, p50"), run_paced.fifo.p50, direct_paced.fifo.p50),
            (&format!("{paced}, p99"), run_paced.fifo.p99, direct_paced.fifo.p99),
            ("start: first stdout byte seen (Logs / pipe), p50", run.stdout.p50, direct.stdout.p50),
            ("start: first stdout byte seen (Logs / pipe), p99", run.stdout.p99, direct.stdout.p99),
            ("to exec: Execute returned / spawn returned, p50", run.to_exec.p50, direct.to_exec.p50),
            ("to exec: Execute returned / spawn returned, p99", run.to_exec.p99, direct.to_exec.p99),
        ] {
            println!("| {name} ({SEQUENTIAL} runs) | {} | {} | {:.2}x |", us(r), us(d), ratio(r, d));
        }
        let direct_cpu = direct_parent + direct_bash;
        for (calls, rate, cpu) in [("Execute + Logs + Status", Some(rate), Some(&three)), ("ExecuteAndFollow", one.as_ref().map(|o| o.0), one.as_ref().map(|o| &o.1))] {
            let (Some(rate), Some(cpu)) = (rate, cpu) else {
                println!("| short Runs/s, {calls} | this binary has no ExecuteAndFollow | | |");
                continue;
            };
            println!(
                "| short Runs/s, bash `true`, {IN_FLIGHT} in flight ({THROUGHPUT_RUNS} runs), {calls} | {rate:.0} /s | {direct_rate:.0} /s | {:.2}x |",
                direct_rate / rate
            );
            println!("| CPU per short Run ({calls}): bash itself | {:.0} µs | {direct_bash:.0} µs | |", cpu.bash);
            println!(
                "| CPU per short Run ({calls}): agent / spawner / sidecar / client (floor: the spawning process) | {:.0} / {:.0} / {:.0} / {:.0} µs | {direct_parent:.0} µs | |",
                cpu.agent, cpu.spawner, cpu.sidecar, cpu.client
            );
            println!(
                "| CPU per short Run ({calls}): all of runtimed + client + bash | {:.0} µs | {direct_cpu:.0} µs | {:.2}x |",
                cpu.all(),
                cpu.all() / direct_cpu
            );
        }
        println!(
            "| RSS sidecar while 1 GiB is written: before / peak (VmHWM) / after | {} / {} / {} KiB | | |",
            memory.before.0, memory.peak.0, memory.after.0
        );
        println!(
            "| RSS agent while 1 GiB is written: before / peak (VmHWM) / after | {} / {} / {} KiB | | |",
            memory.before.1, memory.peak.1, memory.after.1
        );
        println!();
        println!(
            "1 GiB Run: {} B written, {} B dropped by the agent's bound, {} B streamed to the client; Status polled after Logs ended: {polled} of {THROUGHPUT_RUNS}",
            memory.total, memory.dropped, memory.received
        );
        drop(client);
        for mut child in [sidecar, agent] {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    });
}
