//! The dispatch benchmark (not a pass/fail test): what a Run created through the
//! Kubernetes API costs over calling runtimed directly, on the emulated cluster of
//! `kruntimes-e2e` (in this process): its API server, the real webhook and controller
//! binaries, and a Runtime of [`REPLICAS`] pods × [`CONCURRENCY`] run by its node as
//! real processes. Each figure has a floor measured in the same run against the same
//! pods: the same script sent straight to the pods' runtimed over TLS with the
//! Runtime's token (`ExecuteAndFollow`), which is what the controller does for each
//! Run, minus the API server, the watch and the status writes.
//!
//! 1. Created-to-started, one Run at a time ([`SEQUENTIAL`] after [`WARMUP`]): from just
//!    before the create request to the script's first statement (`date +%s%N`, the same
//!    clock). The floor: from just before `ExecuteAndFollow` to the same statement.
//!    Also created-to-terminal: until the client's watch sees the terminal status, and
//!    answered-to-started: from the create request's answer (the Run is stored) to the
//!    first statement, the part of a Run's start that comes after the API server.
//! 2. A burst: [`BURST`] Runs created at once ([`CREATORS`] clients creating in
//!    parallel); Runs per second until the watch has seen all of them terminal, against
//!    the same number sent directly, [`REPLICAS`] × [`CONCURRENCY`] at a time.
//! 3. API requests the controller made per Run (writes, reads, watches opened), counted
//!    by the emulated API server per identity: one at a time, and in the burst; its
//!    writes by resource (Runs apart from the pool's Runtimes, Pods and Events).
//! 4. CPU time per Run in both bursts, from `/proc`: of the controller, the webhook, this
//!    process (the emulated API server and the clients) and the whole machine (with
//!    the pods' runtimed and scripts): where a 2-core machine's time goes.
//!
//! Every figure is printed on a line starting with `dispatch:`. As root (the node runs
//! pods in namespaces of their own), after building the binaries it starts:
//! `cargo build --release --workspace --bins && cargo bench -p kruntimes-controller
//! --bench dispatch`.
// A benchmark prints its figures and stops loudly on a setup failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kruntimes_api::labels::{RUNTIME_LABEL, RUNTIMED_GRPC_PORT};
use kruntimes_api::v1alpha1::{Run, Runtime};
use kruntimes_e2e::cluster::harness::TestCluster;
use kruntimes_runtimed_api::client::{TlsClient, TlsTarget, connect_tls};
use kruntimes_runtimed_api::proto;
use kruntimes_testkit::proc_stat::{cpu_time, machine_busy_time};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Notify;

const NAMESPACE: &str = "bench";
const RUNTIME: &str = "bench";
const REPLICAS: i32 = 2;
/// Runs at once per pod: enough that the burst measures dispatch, not the pool's size.
const CONCURRENCY: i32 = 16;
/// Runs measured one at a time (after [`WARMUP`] unmeasured ones).
const SEQUENTIAL: usize = 60;
const WARMUP: usize = 5;
/// Runs created at once in the throughput measurement.
const BURST: usize = 300;
/// Clients creating the burst's Runs in parallel.
const CREATORS: usize = 8;
/// The script: prints when its first statement ran (ns since the epoch).
const SCRIPT: &str = "date +%s%N";

fn main() {
    if !kruntimes_testkit::privilege::is_root() {
        eprintln!(
            "the dispatch benchmark needs root: the emulated node runs pods in namespaces of their own"
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cluster = TestCluster::start(dir.path(), repo, true).await.unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let pods = warm_pool(&client).await;
    println!(
        "dispatch: Runtime {RUNTIME}: {REPLICAS} pods x concurrency {CONCURRENCY}; script `{SCRIPT}`"
    );
    let runs: Api<Run> = Api::namespaced(client.clone(), NAMESPACE);
    let terminal = TerminalWatch::start(runs.clone());
    let mut direct = Direct::connect(&client, &pods).await;

    for i in 0..WARMUP {
        through_api(&runs, &terminal, &format!("warmup-{i}")).await;
        direct.start_latency(i).await;
    }
    let mut api_started = Vec::new();
    let mut api_created = Vec::new();
    let mut api_terminal = Vec::new();
    let mut api_answered_to_started = Vec::new();
    let mut direct_started = Vec::new();
    let before = Requests::read(&cluster);
    for i in 0..SEQUENTIAL {
        let one = through_api(&runs, &terminal, &format!("seq-{i}")).await;
        api_started.push(one.started);
        api_created.push(one.create_answered);
        api_terminal.push(one.terminal_seen);
        api_answered_to_started.push(one.started.saturating_sub(one.create_answered));
        direct_started.push(direct.start_latency(i).await);
    }
    let sequential = Requests::read(&cluster).per_run_since(&before, SEQUENTIAL);
    row("created-to-started, through the API", &mut api_started);
    row("create request answered (of the above)", &mut api_created);
    row(
        "create answered-to-started, through the API",
        &mut api_answered_to_started,
    );
    row(
        "created-to-terminal-seen, through the API",
        &mut api_terminal,
    );
    row(
        "created-to-started, floor ExecuteAndFollow",
        &mut direct_started,
    );

    let before = Requests::read(&cluster);
    let cpu_before = CpuTimes::read(&cluster);
    let burst_api = burst_through_api(&runs, &terminal).await;
    let cpu_api = CpuTimes::read(&cluster).since(&cpu_before);
    let burst = Requests::read(&cluster).per_run_since(&before, BURST);
    let cpu_before = CpuTimes::read(&cluster);
    let burst_direct = direct.burst().await;
    let cpu_direct = CpuTimes::read(&cluster).since(&cpu_before);
    println!(
        "dispatch: burst of {BURST} through the API: {:.2} s, {:.0} Runs/s",
        burst_api.as_secs_f64(),
        BURST as f64 / burst_api.as_secs_f64()
    );
    println!(
        "dispatch: burst of {BURST}, floor direct {} at a time: {:.2} s, {:.0} Runs/s",
        REPLICAS * CONCURRENCY,
        burst_direct.as_secs_f64(),
        BURST as f64 / burst_direct.as_secs_f64()
    );
    println!(
        "dispatch: CPU per Run in the burst through the API: {}",
        cpu_api.per_run(BURST)
    );
    println!(
        "dispatch: CPU per Run in the burst, floor direct: {}",
        cpu_direct.per_run(BURST)
    );
    println!("dispatch: controller API requests per Run, one at a time: {sequential}");
    println!("dispatch: controller API requests per Run, in the burst: {burst}");
    cluster.stop().await;
}

/// The controller's requests between two counts, per Run.
/// The controller identity's requests so far: all of them by kind, and its writes by
/// resource (those to Runs are what a Run costs; those to Runtimes, Pods and Events
/// follow the pool's state, not each Run).
struct Requests {
    all: kruntimes_e2e::cluster::api::counts::RequestCounts,
    writes: BTreeMap<String, u64>,
}

impl Requests {
    fn read(cluster: &TestCluster) -> Requests {
        Requests {
            all: cluster.controller_requests(),
            writes: cluster.controller_writes_by_resource(),
        }
    }

    fn per_run_since(&self, before: &Requests, runs: usize) -> String {
        let per_run = |n: u64| n as f64 / runs as f64;
        let by_resource: Vec<String> = self
            .writes
            .iter()
            .map(|(resource, n)| (resource, n - before.writes.get(resource).unwrap_or(&0)))
            .filter(|(_, n)| *n > 0)
            .map(|(resource, n)| format!("{:.2} to {resource}", per_run(n)))
            .collect();
        format!(
            "{:.2} writes ({}), {:.2} reads, {:.2} watches opened",
            per_run(self.all.writes - before.all.writes),
            by_resource.join(", "),
            per_run(self.all.reads - before.all.reads),
            per_run(self.all.watches - before.all.watches)
        )
    }
}

/// CPU time used so far: by each component process, by this process (the API server,
/// its admission and the benchmark's clients) and by the whole machine (also the pods'
/// runtimed and scripts).
struct CpuTimes {
    components: Vec<(&'static str, Duration)>,
    this_process: Duration,
    machine: Duration,
}

impl CpuTimes {
    fn read(cluster: &TestCluster) -> CpuTimes {
        CpuTimes {
            components: cluster
                .component_pids()
                .into_iter()
                .map(|(name, pid)| (name, cpu_time(pid).unwrap_or_default()))
                .collect(),
            this_process: cpu_time(std::process::id()).expect("/proc/self/stat"),
            machine: machine_busy_time().expect("/proc/stat"),
        }
    }

    fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            components: self
                .components
                .iter()
                .zip(&before.components)
                .map(|((name, now), (_, then))| (*name, now.saturating_sub(*then)))
                .collect(),
            this_process: self.this_process.saturating_sub(before.this_process),
            machine: self.machine.saturating_sub(before.machine),
        }
    }

    fn per_run(&self, runs: usize) -> String {
        let ms = |time: Duration| time.as_secs_f64() * 1e3 / runs as f64;
        let mut parts: Vec<String> = self
            .components
            .iter()
            .map(|(name, time)| format!("{name} {:.2} ms", ms(*time)))
            .collect();
        parts.push(format!(
            "API server and clients {:.2} ms",
            ms(self.this_process)
        ));
        parts.push(format!("whole machine {:.2} ms", ms(self.machine)));
        parts.join(", ")
    }
}

/// Prints p50 and p99 of `samples` in milliseconds.
fn row(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "dispatch: {name}: p50 {:.1} ms, p99 {:.1} ms ({} Runs)",
        at(50).as_secs_f64() * 1e3,
        at(99).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn now_unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The time from `t0` (ns since the epoch) to the instant the script printed.
fn since(t0: u128, printed: &str) -> Duration {
    let at: u128 = printed
        .trim()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("the script's output {printed:?} is not a time"));
    Duration::from_nanos(u64::try_from(at.saturating_sub(t0)).unwrap())
}

/// Creates the namespace and the Runtime and waits for every pod to be ready; returns
/// the pods.
async fn warm_pool(client: &kube::Client) -> Vec<Pod> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let runtime = kruntimes_e2e::fixtures::restricted_runtime(RUNTIME, REPLICAS, CONCURRENCY);
    let runtimes: Api<Runtime> = Api::namespaced(client.clone(), NAMESPACE);
    runtimes
        .create(&PostParams::default(), &runtime)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let current = runtimes.get(RUNTIME).await.unwrap();
        let ready = current.status.and_then(|s| s.ready_replicas);
        if ready == Some(REPLICAS) {
            break;
        }
        assert!(Instant::now() < deadline, "the Runtime never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("{RUNTIME_LABEL}={RUNTIME}")))
        .await
        .unwrap();
    list.items
}

/// When the client's watch first saw each Run terminal, with its stdout tail.
#[derive(Clone)]
struct TerminalWatch {
    seen: Arc<Mutex<BTreeMap<String, (Instant, String)>>>,
    changed: Arc<Notify>,
}

impl TerminalWatch {
    fn start(runs: Api<Run>) -> TerminalWatch {
        let watch = TerminalWatch {
            seen: Arc::default(),
            changed: Arc::default(),
        };
        let recorder = watch.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(runs, watcher::Config::default()));
            // An error ends the watch: the cluster is being stopped (a Run still awaited
            // then fails its wait with a timeout).
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(run) | watcher::Event::InitApply(run) = event {
                    recorder.record(&run);
                }
            }
        });
        watch
    }

    fn record(&self, run: &Run) {
        let Some(status) = run.status.as_ref() else {
            return;
        };
        if !status.phase.is_some_and(|p| p.is_terminal()) {
            return;
        }
        let name = run.metadata.name.clone().unwrap_or_default();
        let stdout = status
            .output
            .as_ref()
            .map(|o| o.stdout_tail.clone())
            .unwrap_or_default();
        self.seen
            .lock()
            .unwrap()
            .entry(name)
            .or_insert((Instant::now(), stdout));
        self.changed.notify_waiters();
    }

    /// Waits until `name` was seen terminal.
    async fn wait(&self, name: &str) -> (Instant, String) {
        loop {
            let notified = self.changed.notified();
            if let Some(seen) = self.seen.lock().unwrap().get(name) {
                return seen.clone();
            }
            tokio::time::timeout(Duration::from_secs(60), notified)
                .await
                .unwrap_or_else(|_| panic!("Run {name} not terminal within 60 s"));
        }
    }
}

fn run(name: &str) -> Run {
    serde_json::from_value(json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": name},
        "spec": {"runtimeRef": {"name": RUNTIME}, "interpreter": "bash", "script": SCRIPT},
    }))
    .unwrap()
}

/// One Run through the API, from just before its create request.
struct ThroughApi {
    /// To its script's first statement.
    started: Duration,
    /// To the create request's answer (admission, schema check, storage).
    create_answered: Duration,
    /// To the client's watch seeing it terminal.
    terminal_seen: Duration,
}

async fn through_api(runs: &Api<Run>, terminal: &TerminalWatch, name: &str) -> ThroughApi {
    let t0 = now_unix_ns();
    let created = Instant::now();
    runs.create(&PostParams::default(), &run(name))
        .await
        .unwrap();
    let create_answered = created.elapsed();
    let (seen, stdout) = terminal.wait(name).await;
    ThroughApi {
        started: since(t0, &stdout),
        create_answered,
        terminal_seen: seen - created,
    }
}

async fn burst_through_api(runs: &Api<Run>, terminal: &TerminalWatch) -> Duration {
    let started = Instant::now();
    let creators = (0..CREATORS).map(|creator| {
        let runs = runs.clone();
        async move {
            for i in (creator..BURST).step_by(CREATORS) {
                runs.create(&PostParams::default(), &run(&format!("burst-{i}")))
                    .await
                    .unwrap();
            }
        }
    });
    futures::future::join_all(creators).await;
    let mut last = started;
    for i in 0..BURST {
        let (seen, _) = terminal.wait(&format!("burst-{i}")).await;
        last = last.max(seen);
    }
    last - started
}

/// The floor: the Runtime's pods called directly, as the controller calls them.
struct Direct {
    clients: Vec<TlsClient>,
}

impl Direct {
    async fn connect(client: &kube::Client, pods: &[Pod]) -> Direct {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let secret = secrets
            .get(&kruntimes_controller::naming::secret_name(RUNTIME))
            .await
            .unwrap();
        let data = secret.data.unwrap();
        let token =
            String::from_utf8(data[kruntimes_controller::naming::TOKEN_KEY].0.clone()).unwrap();
        let certificate_pem = data[kruntimes_controller::naming::TLS_CERT_KEY].0.clone();
        let mut clients = Vec::new();
        for pod in pods {
            let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
            let target = TlsTarget {
                authority: format!("{ip}:{RUNTIMED_GRPC_PORT}"),
                server_name: kruntimes_controller::naming::server_name(RUNTIME, NAMESPACE),
                certificate_pem: certificate_pem.clone(),
                token: token.trim().to_owned(),
            };
            clients.push(connect_tls(&target, Duration::from_secs(5)).await.unwrap());
        }
        Direct { clients }
    }

    /// One execution on pod `i % pods`: from the call to the script's first statement.
    async fn start_latency(&mut self, i: usize) -> Duration {
        let pods = self.clients.len();
        let client = &mut self.clients[i % pods];
        let t0 = now_unix_ns();
        let stdout = execute_and_follow(client, &format!("direct-{}", uuid(i))).await;
        since(t0, &stdout)
    }

    /// [`BURST`] executions, [`CONCURRENCY`] at a time on each pod.
    async fn burst(&mut self) -> Duration {
        let started = Instant::now();
        let lanes = self
            .clients
            .iter()
            .flat_map(|client| (0..CONCURRENCY as usize).map(move |_| client.clone()));
        let lanes: Vec<TlsClient> = lanes.collect();
        let count = lanes.len();
        let tasks = lanes
            .into_iter()
            .enumerate()
            .map(|(lane, mut client)| async move {
                for i in (lane..BURST).step_by(count) {
                    execute_and_follow(&mut client, &format!("burst-{}", uuid(i))).await;
                }
            });
        futures::future::join_all(tasks).await;
        started.elapsed()
    }
}

/// A run uid no other execution of this process has.
fn uuid(i: usize) -> String {
    format!("{:x}-{i}", now_unix_ns())
}

/// Runs [`SCRIPT`] to its end; its stdout.
async fn execute_and_follow(client: &mut TlsClient, run_uid: &str) -> String {
    let run = kruntimes_e2e::fixtures::run_bash(client, run_uid, SCRIPT).await;
    assert_eq!(
        run.ended.phase,
        proto::Phase::Succeeded as i32,
        "{:?}",
        run.ended
    );
    String::from_utf8(run.stdout).unwrap()
}
