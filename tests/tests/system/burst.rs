//! A burst of Runs larger than the pool: every Run succeeds, and the pool never runs
//! more than its capacity (pods x concurrency) at once, read from the Runs' own
//! `startTime` and `completionTime`. The Runtime's `status.capacity.busy` follows the
//! burst: above 0 while it runs, never above the capacity, back to 0 after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kruntimes_api::v1alpha1::{Run, Runtime};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::runs::{ready_runtime, run, runtime};
use crate::support::{Cluster, succeeded};

/// Runs in the burst.
const BURST: usize = 20;
/// The pool: pods, and Runs at once in each.
const PODS: i32 = 2;
const CONCURRENCY: i32 = 2;

/// The most intervals `[start, end]` that overlap at one instant; an interval ending
/// at the instant another starts does not overlap it.
fn most_at_once(intervals: &[(Timestamp, Timestamp)]) -> usize {
    // At the same instant ends (0) sort before starts (1).
    let mut edges: Vec<(Timestamp, u8)> = intervals
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, 0)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0usize, 0usize);
    for (_, edge) in edges {
        if edge == 1 {
            now += 1;
            most = most.max(now);
        } else {
            now = now.saturating_sub(1);
        }
    }
    most
}

fn interval(run: &Run) -> (Timestamp, Timestamp) {
    let status = run.status.as_ref().unwrap();
    let parse = |t: Option<&str>| -> Timestamp {
        t.unwrap_or_else(|| panic!("no time in {status:?}"))
            .parse()
            .unwrap()
    };
    (
        parse(status.start_time.as_deref()),
        parse(status.completion_time.as_deref()),
    )
}

#[test]
fn overlap_counts_touching_intervals_apart() {
    let t = |s: i64| Timestamp::from_second(s).unwrap();
    assert_eq!(most_at_once(&[(t(0), t(2)), (t(2), t(4))]), 1);
    assert_eq!(most_at_once(&[(t(0), t(3)), (t(1), t(4)), (t(2), t(5))]), 3);
    assert_eq!(most_at_once(&[]), 0);
}

#[tokio::test]
async fn a_burst_of_runs_all_succeed_without_exceeding_the_pool() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("burst").await;
    ready_runtime(&cluster, &ns, runtime("bash", PODS, CONCURRENCY)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let runtimes: Api<Runtime> = Api::namespaced(cluster.client.clone(), &ns);
    let most_busy = Arc::new(AtomicUsize::new(0));
    let watching = tokio::spawn(watch_busy(runtimes.clone(), most_busy.clone()));
    let names: Vec<String> = (0..BURST).map(|i| format!("burst-{i:02}")).collect();
    for name in &names {
        let spec = json!({"interpreter": "bash", "script": "sleep 1; echo ok"});
        runs.create(&PostParams::default(), &run(name, "bash", spec))
            .await
            .unwrap();
    }
    let mut intervals = Vec::new();
    let mut per_pod: BTreeMap<String, Vec<(Timestamp, Timestamp)>> = BTreeMap::new();
    for name in &names {
        let ended = succeeded(&runs, name).await;
        let pod = ended.status.as_ref().unwrap().pod.clone().unwrap();
        intervals.push(interval(&ended));
        per_pod.entry(pod).or_default().push(interval(&ended));
    }
    let capacity = usize::try_from(PODS * CONCURRENCY).unwrap();
    let most = most_at_once(&intervals);
    assert!(
        most <= capacity,
        "{most} Runs at once on a pool of {capacity}: {intervals:?}"
    );
    // Both pods took Runs, and neither more than its concurrency at once.
    assert_eq!(per_pod.len(), 2, "{:?}", per_pod.keys());
    for (pod, intervals) in &per_pod {
        let most = most_at_once(intervals);
        assert!(
            most <= usize::try_from(CONCURRENCY).unwrap(),
            "{most} Runs at once in {pod}"
        );
    }
    watching.abort();
    let most_busy = most_busy.load(Ordering::SeqCst);
    eprintln!(
        "burst: {BURST} Runs, at most {most} at once on a pool of {capacity}; status.capacity.busy peaked at {most_busy}"
    );
    assert!(
        (1..=capacity).contains(&most_busy),
        "status.capacity.busy peaked at {most_busy} during the burst, on a pool of {capacity}"
    );
    busy_back_to_zero(&runtimes).await;
    cluster.delete_namespace(&ns).await;
}

/// The Runtime's `status.capacity.busy`.
async fn busy(runtimes: &Api<Runtime>) -> usize {
    let runtime = runtimes.get("bash").await.unwrap();
    let busy = runtime
        .status
        .and_then(|s| s.capacity)
        .map_or(0, |c| c.busy);
    usize::try_from(busy).unwrap()
}

/// Keeps in `most` the highest `status.capacity.busy` seen, every 200 ms, until aborted.
async fn watch_busy(runtimes: Api<Runtime>, most: Arc<AtomicUsize>) {
    loop {
        most.fetch_max(busy(&runtimes).await, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `status.capacity.busy` is 0 again (the controller writes it within 2 s
/// of a change), for at most 20 s.
async fn busy_back_to_zero(runtimes: &Api<Runtime>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = busy(runtimes).await;
        if now == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status.capacity.busy still {now} 20 s after the burst ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
