//! Load benchmark of the admission webhook against a floor server, in the same run.
//!
//! `cargo bench -p kruntimes-webhook --bench load` starts two child processes on
//! loopback, both with rcgen certificates from a temporary directory:
//! - the real `kruntimes-webhook --standalone` binary (default flags and logging: one
//!   JSON log line per review, written to a file);
//! - the floor server (`load/floor.rs`): the same axum + axum-server + rustls stack
//!   answering one canned AdmissionReview.
//!
//! and drives both with its own load generator (hyper HTTP/1.1 over tokio-rustls,
//! keep-alive connections), for two realistic reviews: a CREATE of a 50-step Workflow
//! to `/validate` and a CREATE of a Pod to inject to `/mutate`. For each server and
//! review:
//! - throughput, closed loop (`KRT_BENCH_CONNECTIONS` connections, default 8, each
//!   sending its next review when the previous answer arrived), `KRT_BENCH_SECS` seconds
//!   (default 15);
//! - latency at a fixed rate (`KRT_BENCH_RATE`, default 1,000 reviews/s), open loop: a
//!   review is due at `start + i / rate` whatever happened before, and its latency runs
//!   from that due time (so a stall is charged to every review it delays: no coordinated
//!   omission). A thread of its own keeps the due times to the µs (tokio's timer
//!   rounds up to its next 1 ms tick, which was charged to the server), and how late
//!   reviews still leave is printed as the generator's own error;
//! - RSS of the server process (`VmRSS`), sampled every 250 ms.
//!
//! Every answer is checked: HTTP 200, an AdmissionReview whose `response.uid` is the
//! uid sent (the floor's canned uid for the floor), `allowed: true`, and a JSONPatch
//! for the Pod and none for the Workflow. Wrong answers are counted and make the run
//! exit non-zero.
//!
//! `KRT_SOAK_SECS=600` runs the soak instead: the webhook alone at the fixed rate
//! (both reviews, half each), printing RSS, p99 and errors every 30 s.
//! `KRT_BENCH_IN_PROCESS_ONLY=1` measures only the library's cost per review, for
//! `KRT_BENCH_SECS` seconds each (a target for `perf record`).
//!
//! A benchmark, not a test: figures go to docs/benchmarks.md, never into assertions.

#[path = "load/floor.rs"]
mod floor;
#[path = "load/reviews.rs"]
mod reviews;

use reviews::{Review, pod_review, workflow_review};
#[path = "load/procs.rs"]
mod procs;

use kruntimes_testkit::proc_stat::cpu_time;
use procs::{Certs, RssSampler, Server, loadavg, rss_kib, start_floor, start_webhook};

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kruntimes_webhook::admission::{DEFAULT_PSS_FLOOR, Endpoint, Handlers, parse_review};
use kruntimes_webhook::inject::InjectConfig;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::{Value, json};

/// Set in the environment of the child that serves the floor: `CERT\nKEY\nADDR`.
const FLOOR_CHILD_ENV: &str = "KRT_BENCH_FLOOR_SERVER";
/// Stands for the uid in the review templates; replaced per request.
const UID_PLACEHOLDER: &str = "@@UID@@";
/// How long a child server may take to answer its first review.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Warm-up before each measured phase (connections, allocator, caches).
const WARMUP: Duration = Duration::from_secs(2);
/// Connections of the open-loop (fixed-rate) phase: enough that a review never waits
/// for a free connection at 1,000/s unless the server is slow, which then shows.
const OPEN_LOOP_CONNECTIONS: usize = 32;
/// RSS sampling period.
const RSS_PERIOD: Duration = Duration::from_millis(250);
/// Soak report period.
const SOAK_REPORT: Duration = Duration::from_secs(30);
/// How long the in-process handler cost is measured per review.
const HANDLER_COST_TIME: Duration = Duration::from_secs(2);

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?}: expected a whole number")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(FLOOR_CHILD_ENV) {
        let mut parts = spec.split('\n');
        let (Some(cert), Some(key), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{FLOOR_CHILD_ENV}: expected CERT\\nKEY\\nADDR");
        };
        return floor::serve(Path::new(cert), Path::new(key), addr.parse()?);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench())
}

// ---------------------------------------------------------------------------------------
// Client

#[derive(Deserialize)]
struct Answer {
    response: AnswerResponse,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerResponse {
    uid: String,
    allowed: bool,
    #[serde(default)]
    patch: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    patch_type: Option<String>,
}

/// Where the load goes, and how to check its answers.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    /// The floor answers every review with its canned uid and no patch.
    floor: bool,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = target
        .tls
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one review on `sender` and checks the answer.
async fn send(
    sender: &mut Sender,
    target: &Target,
    review: &Review,
    uid: &str,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let request = hyper::Request::post(review.path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(review.body(uid)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != hyper::StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let answer: Answer = serde_json::from_slice(&body).context("not an AdmissionReview")?;
    let r = answer.response;
    let expected_uid = if target.floor { floor::CANNED_UID } else { uid };
    if r.uid != expected_uid {
        bail!("uid {:?} answered for {expected_uid:?}", r.uid);
    }
    if !r.allowed {
        bail!("denied: {}", String::from_utf8_lossy(&body));
    }
    if !target.floor {
        let patched = r.patch.is_some() && r.patch_type.as_deref() == Some("JSONPatch");
        if patched != review.expect_patch {
            bail!(
                "patch present: {patched}, expected: {}",
                review.expect_patch
            );
        }
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    /// Open loop only: how late each review left (due time to its send starting).
    lateness: Vec<Duration>,
}

impl Tally {
    fn record(&mut self, result: anyhow::Result<()>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
        self.lateness.extend(other.lateness);
    }

    fn percentile(&mut self, p: f64) -> Duration {
        percentile(&mut self.latencies, p)
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Closed loop: `connections` connections each send the next review as soon as the
/// previous answer arrived, for `duration`. Returns the tally and the elapsed time.
async fn closed_loop(
    target: &Arc<Target>,
    review: &Arc<Review>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Tally, Duration)> {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(target).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let (target, review) = (target.clone(), review.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let uid = format!("c{c}-{n}");
                n += 1;
                let result = send(&mut sender, &target, &review, &uid).await;
                if result.is_err() {
                    // A broken connection is replaced; the error is counted.
                    if let Ok(s) = connect(&target).await {
                        sender = s;
                    }
                }
                tally.record(result);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(t) = tasks.join_next().await {
        tally.merge(t?);
    }
    Ok((tally, start.elapsed()))
}

/// Open loop at `rate` reviews/s for `duration`: review `i` is due at
/// `start + i / rate`; its latency is measured from that due time.
///
/// The due times are kept by a thread of its own sleeping with the kernel's timer
/// (`std::thread::sleep`, timer slack set to 1 µs), not by tokio's timer: tokio rounds
/// every deadline up to its next 1 ms tick, so reviews left up to 1 ms late and that
/// lateness was charged to the server (the floor showed a p50 of 1.1 ms for answering
/// a canned review). How late each review still leaves (due time to the worker starting
/// to send it) is returned in [`Tally::lateness`] and printed, so the instrument's own
/// error stays visible next to the figures.
async fn open_loop(
    target: &Arc<Target>,
    review: &Arc<Review>,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let total = rate.saturating_mul(duration.as_secs()).max(1);
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..OPEN_LOOP_CONNECTIONS {
        let mut sender = connect(target).await?;
        let (target, review, rx) = (target.clone(), review.clone(), rx.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                tally.lateness.push(due.elapsed());
                let result = send(&mut sender, &target, &review, &format!("o-{i}")).await;
                tally.latencies.push(due.elapsed());
                if result.is_err()
                    && let Ok(s) = connect(&target).await
                {
                    sender = s;
                }
                tally.record(result);
            }
            tally
        });
    }
    let pacer = std::thread::spawn(move || {
        // Without this the kernel may wake the thread up to 50 µs late.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        let start = Instant::now() + Duration::from_millis(20);
        for i in 0..total {
            let due = start + period.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.send((i, due)).is_err() {
                return false;
            }
        }
        true
    });
    let mut tally = Tally::default();
    while let Some(t) = workers.join_next().await {
        tally.merge(t?);
    }
    let paced = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the open-loop pacer panicked"))?;
    if !paced {
        bail!("every open-loop worker stopped");
    }
    Ok(tally)
}

async fn wait_ready(target: &Target, review: &Review, server: &mut Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("{} exited during startup: {status}", server.name);
        }
        let attempt = async {
            let mut sender = connect(target).await?;
            send(&mut sender, target, review, "ready").await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{} not ready", server.name)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What one review costs the library alone, in this process on one thread: the
/// webhook's work without HTTP and TLS (parse the body, decide, encode the answer).
fn handler_cost(review: &Review, time: Duration) -> anyhow::Result<Duration> {
    let handlers = Handlers::standalone(InjectConfig::default(), DEFAULT_PSS_FLOOR);
    let endpoint = if review.path == "/mutate" {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    per_call(time, |n| {
        let body = review.body(&format!("h-{n}"));
        let parsed = parse_review(&body)?;
        let answer = handlers.review(endpoint, parsed)?;
        if !answer.response.as_ref().is_some_and(|r| r.allowed) {
            bail!("{}: not allowed in process", review.label);
        }
        std::hint::black_box(serde_json::to_vec(&answer)?);
        Ok(())
    })
}

/// The mean time of `call` (given its iteration number), repeated for `time`.
fn per_call(
    time: Duration,
    mut call: impl FnMut(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < time {
        call(n)?;
        n += 1;
    }
    Ok(start.elapsed() / n.max(1))
}

/// The least any server that looks at a review at all must spend: checking the body's
/// JSON syntax once, borrowing, allocating nothing (`RawValue`). A lower bound for the
/// webhook's own work, printed beside what the throughput target leaves for it.
fn read_once_cost(review: &Review, time: Duration) -> anyhow::Result<Duration> {
    let body = review.body("read-once");
    per_call(time, |_| {
        let raw: &serde_json::value::RawValue = serde_json::from_slice(&body)?;
        std::hint::black_box(raw);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// The run

struct Figures {
    throughput: f64,
    closed_errors: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// p99 of how late the open loop's reviews left: the generator's own error.
    lateness_p99: Duration,
    open_errors: u64,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    /// Server CPU time during the closed loop over the reviews answered.
    cpu_per_review: Duration,
    load_closed: String,
    load_open: String,
    first_error: Option<String>,
}

async fn measure(
    target: &Arc<Target>,
    pid: u32,
    review: &Arc<Review>,
    connections: usize,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<Figures> {
    let rss_idle_kib = rss_kib(pid)?;
    let sampler = RssSampler::start(pid);
    closed_loop(target, review, connections, WARMUP).await?;
    let cpu_before = cpu_time(pid)?;
    let (mut closed, elapsed) =
        closed_loop(target, review, connections, Duration::from_secs(seconds)).await?;
    let cpu_per_review = (cpu_time(pid)? - cpu_before) / u32::try_from(closed.ok.max(1))?;
    let load_closed = loadavg();
    let mut open = open_loop(target, review, rate, Duration::from_secs(seconds)).await?;
    let load_open = loadavg();
    let samples = sampler.finish().await;
    let first_error = closed.first_error.take().or(open.first_error.take());
    Ok(Figures {
        throughput: closed.ok as f64 / elapsed.as_secs_f64(),
        cpu_per_review,
        closed_errors: closed.errors,
        p50: open.percentile(50.0),
        p99: open.percentile(99.0),
        max: open.latencies.iter().copied().max().unwrap_or_default(),
        lateness_p99: percentile(&mut open.lateness, 99.0),
        open_errors: open.errors,
        rss_idle_kib,
        rss_peak_kib: samples.iter().copied().max().unwrap_or(rss_idle_kib),
        rss_end_kib: samples.last().copied().unwrap_or(rss_idle_kib),
        load_closed,
        load_open,
        first_error,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn client_config(certs: &Certs) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn bench() -> anyhow::Result<()> {
    let seconds = env_number("KRT_BENCH_SECS", 15)?;
    let connections = usize::try_from(env_number("KRT_BENCH_CONNECTIONS", 8)?)?;
    let rate = env_number("KRT_BENCH_RATE", 1000)?;
    let soak = std::env::var("KRT_SOAK_SECS")
        .ok()
        .map(|v| v.parse::<u64>())
        .transpose()
        .context("KRT_SOAK_SECS: expected seconds")?;

    let reviews = [Arc::new(workflow_review()?), Arc::new(pod_review()?)];
    if std::env::var_os("KRT_BENCH_IN_PROCESS_ONLY").is_some() {
        // For profilers: the library alone, no servers, no load generator.
        return in_process_only(&reviews, seconds);
    }
    let certs = Certs::new()?;
    let tls = client_config(&certs)?;
    let mut webhook = start_webhook(&certs)?;
    let webhook_target = Arc::new(Target {
        name: "webhook",
        addr: webhook.addr,
        tls: tls.clone(),
        floor: false,
    });
    wait_ready(&webhook_target, &reviews[0], &mut webhook).await?;
    if let Some(soak_secs) = soak {
        return run_soak(&webhook_target, webhook.pid(), &reviews, rate, soak_secs).await;
    }
    let mut floor_server = start_floor(&certs)?;
    let floor_target = Arc::new(Target {
        name: "floor",
        addr: floor_server.addr,
        tls,
        floor: true,
    });
    wait_ready(&floor_target, &reviews[0], &mut floor_server).await?;

    println!("kruntimes-webhook load benchmark");
    println!(
        "  webhook: {} --standalone (pid {}); floor: same stack, canned answer {} (pid {})",
        env!("CARGO_BIN_EXE_kruntimes-webhook"),
        webhook.pid(),
        floor::CANNED_REVIEW,
        floor_server.pid()
    );
    println!(
        "  closed loop: {connections} keep-alive connections, {seconds} s (after {} s warm-up); open loop: {rate} reviews/s for {seconds} s over {OPEN_LOOP_CONNECTIONS} connections, latency from the due time",
        WARMUP.as_secs()
    );
    println!(
        "  cores: {}, load average at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let mut errors = 0;
    for review in &reviews {
        println!(
            "\n== {} (request body {} bytes)",
            review.label,
            review.len()
        );
        let mut results = Vec::new();
        for (target, pid) in [
            (&floor_target, floor_server.pid()),
            (&webhook_target, webhook.pid()),
        ] {
            let figures = measure(target, pid, review, connections, seconds, rate).await?;
            errors += figures.closed_errors + figures.open_errors;
            if let Some(e) = &figures.first_error {
                println!("  {}: first error: {e}", target.name);
            }
            results.push(figures);
        }
        print_comparison(review, &results[1], &results[0], connections, rate)?;
    }
    println!("\nload average at end: {}", loadavg());
    drop(floor_server);
    drop(webhook);
    if errors > 0 {
        bail!("{errors} wrong answers");
    }
    Ok(())
}

/// Prints the library's cost per review alone: for profilers, no servers, no load.
fn in_process_only(reviews: &[Arc<Review>], seconds: u64) -> anyhow::Result<()> {
    for review in reviews {
        let cost = handler_cost(review, Duration::from_secs(seconds))?;
        let read_once = read_once_cost(review, Duration::from_secs(seconds))?;
        println!(
            "{}: in-process cost {} per review; checking its JSON syntax once: {}",
            review.label,
            ms(cost),
            us(read_once)
        );
    }
    Ok(())
}

/// Prints one review's figures, the webhook's (`w`) beside the floor's (`f`).
fn print_comparison(
    review: &Review,
    w: &Figures,
    f: &Figures,
    connections: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let cost = handler_cost(review, HANDLER_COST_TIME)?;
    println!(
        "  in-process handler cost (parse, decide, encode; one thread, no HTTP/TLS): {} per review, load average {}",
        ms(cost),
        loadavg()
    );
    // At 80 % of the floor's throughput, CPU-bound on the same cores, a review may
    // cost the floor's CPU / 0.8: what is left beyond the floor's own work is this.
    let budget = f.cpu_per_review.mul_f64(1.0 / 0.8 - 1.0);
    let read_once = read_once_cost(review, HANDLER_COST_TIME)?;
    println!(
        "  the 80 % target leaves {} of CPU per review beyond the floor's; checking the body's JSON syntax once (no allocation, one thread) costs {}",
        us(budget),
        us(read_once)
    );
    println!(
        "  {:<34} {:>14} {:>14} {:>10}",
        "figure", "webhook", "floor", "webhook/floor"
    );
    println!(
        "  {:<34} {:>12.0}/s {:>12.0}/s {:>9.1}%",
        format!("throughput ({connections} conn, closed loop)"),
        w.throughput,
        f.throughput,
        100.0 * w.throughput / f.throughput
    );
    println!(
        "  {:<34} {:>14} {:>14} {:>9.1}x",
        "server CPU per review (closed loop)",
        us(w.cpu_per_review),
        us(f.cpu_per_review),
        w.cpu_per_review.as_secs_f64() / f.cpu_per_review.as_secs_f64().max(1e-9)
    );
    for (name, wv, fv) in [
        ("p50 at fixed rate", w.p50, f.p50),
        ("p99 at fixed rate", w.p99, f.p99),
        ("max at fixed rate", w.max, f.max),
        ("generator lateness p99", w.lateness_p99, f.lateness_p99),
    ] {
        println!(
            "  {:<34} {:>14} {:>14} {:>9.1}x",
            format!("{name} ({rate}/s)"),
            ms(wv),
            ms(fv),
            wv.as_secs_f64() / fv.as_secs_f64().max(1e-9)
        );
    }
    for (name, wv, fv) in [
        ("RSS before", w.rss_idle_kib, f.rss_idle_kib),
        ("RSS peak", w.rss_peak_kib, f.rss_peak_kib),
        ("RSS at end", w.rss_end_kib, f.rss_end_kib),
    ] {
        println!("  {:<34} {:>14} {:>14}", name, mib(wv), mib(fv));
    }
    println!(
        "  {:<34} {:>14} {:>14}",
        "wrong answers (closed + open)",
        w.closed_errors + w.open_errors,
        f.closed_errors + f.open_errors
    );
    println!(
        "  load average after closed / open loop: webhook {} / {}; floor {} / {}",
        w.load_closed, w.load_open, f.load_closed, f.load_open
    );
    Ok(())
}

/// The webhook alone at `rate` reviews/s (both reviews, half each) for `seconds`,
/// reporting RSS, p99 and errors every [`SOAK_REPORT`].
async fn run_soak(
    target: &Arc<Target>,
    pid: u32,
    reviews: &[Arc<Review>; 2],
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    println!(
        "soak: webhook (pid {pid}) at {rate} reviews/s ({} and {}, half each) for {seconds} s; load average {}",
        reviews[0].label,
        reviews[1].label,
        loadavg()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>8} {:>16}",
        "t (s)", "RSS", "reviews", "p99", "errors", "load average"
    );
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>8} {:>16}",
        0,
        mib(rss_kib(pid)?),
        0,
        "-",
        0,
        loadavg()
    );
    let start = Instant::now();
    let mut errors = 0;
    let mut elapsed = 0;
    while elapsed < seconds {
        let chunk = SOAK_REPORT.as_secs().min(seconds - elapsed);
        let half = (rate / 2).max(1);
        let (a, b) = tokio::join!(
            open_loop(target, &reviews[0], half, Duration::from_secs(chunk)),
            open_loop(target, &reviews[1], half, Duration::from_secs(chunk)),
        );
        let mut tally = a?;
        tally.merge(b?);
        errors += tally.errors;
        elapsed += chunk;
        if let Some(e) = &tally.first_error {
            println!("  first error: {e}");
        }
        println!(
            "{:>6} {:>10} {:>10} {:>12} {:>8} {:>16}",
            start.elapsed().as_secs(),
            mib(rss_kib(pid)?),
            tally.ok + tally.errors,
            ms(tally.percentile(99.0)),
            tally.errors,
            loadavg()
        );
    }
    if errors > 0 {
        bail!("{errors} wrong answers");
    }
    Ok(())
}
