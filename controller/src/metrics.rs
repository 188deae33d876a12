//! The controller's metrics (prometheus-client). No label names an object: label values
//! are phases, reasons, states and controller names, all bounded sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// A terminal Run phase.
    pub phase: String,
}

/// `phase` and `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseReasonLabels {
    /// A terminal Run phase.
    pub phase: String,
    /// Its reason (runtimed's or the controller's: both closed sets).
    pub reason: String,
}

/// `controller` and `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    /// `runtime`, `run` or `workflow`.
    pub controller: String,
    /// [`crate::Error::metric_label`].
    pub reason: String,
}

/// `state` of a pool pod.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodStateLabels {
    /// `ready`, `unready` or `terminating`.
    pub state: String,
}

/// Every metric of the controller.
#[derive(Debug)]
pub struct Metrics {
    /// Run created (queued) to dispatched to a pod.
    pub queue_wait: Histogram,
    /// Dispatched to runtimed's answer that the process started.
    pub dispatch_latency: Histogram,
    /// Started to terminal, by phase.
    pub run_duration: Family<PhaseLabels, Histogram>,
    /// Runs that ended, by phase and reason.
    pub runs_total: Family<PhaseReasonLabels, Counter>,
    /// Runs dispatched and not ended.
    pub runs_active: Gauge,
    /// Dispatch attempts repeated because runtimed was not reached.
    pub run_retries: Counter,
    /// Pool pods by state.
    pub pool_pods: Family<PodStateLabels, Gauge>,
    /// Failed reconciles.
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    /// 1 while this replica leads, else 0.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let duration_buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 22));
        Self {
            queue_wait: Histogram::new(exponential_buckets(0.000_1, 2.0, 22)),
            dispatch_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            run_duration: Family::new_with_constructor(duration_buckets),
            runs_total: Family::default(),
            runs_active: Gauge::default(),
            run_retries: Counter::default(),
            pool_pods: Family::default(),
            reconcile_errors: Family::default(),
            leader: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric in `registry` under the `kruntimes` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kruntimes");
        r.register(
            "run_queue_wait_seconds",
            "Time from a Run's queueing to its dispatch to a pod",
            self.queue_wait.clone(),
        );
        r.register(
            "run_dispatch_latency_seconds",
            "Time from a Run's dispatch to runtimed's answer that its process started",
            self.dispatch_latency.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Time from a Run's start to its end, by terminal phase",
            self.run_duration.clone(),
        );
        r.register(
            "runs",
            "Runs that reached a terminal phase, by phase and reason",
            self.runs_total.clone(),
        );
        r.register(
            "runs_active",
            "Runs dispatched and not ended",
            self.runs_active.clone(),
        );
        r.register(
            "run_retries",
            "Dispatches repeated because runtimed was not reached",
            self.run_retries.clone(),
        );
        r.register("pool_pods", "Warm pods by state", self.pool_pods.clone());
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and reason",
            self.reconcile_errors.clone(),
        );
        r.register("leader", "1 while this replica leads", self.leader.clone());
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, controller: &str, error: &crate::Error) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels {
                controller: controller.to_owned(),
                reason: error.metric_label().to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_documented_names_are_exposed() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics
            .runs_total
            .get_or_create(&PhaseReasonLabels {
                phase: "Succeeded".into(),
                reason: "Completed".into(),
            })
            .inc();
        metrics
            .run_duration
            .get_or_create(&PhaseLabels {
                phase: "Succeeded".into(),
            })
            .observe(1.0);
        metrics
            .pool_pods
            .get_or_create(&PodStateLabels {
                state: "ready".into(),
            })
            .set(2);
        metrics.reconcile_failed("run", &crate::Error::MissingField("Run", "uid"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "kruntimes_run_queue_wait_seconds",
            "kruntimes_run_dispatch_latency_seconds",
            "kruntimes_run_duration_seconds",
            "kruntimes_runs_total",
            "kruntimes_runs_active",
            "kruntimes_run_retries_total",
            "kruntimes_pool_pods",
            "kruntimes_reconcile_errors_total",
            "kruntimes_leader",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
