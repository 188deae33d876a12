//! The webhook's Prometheus metrics (`/metrics` on the admin port), all under the
//! `kruntimes_webhook_` prefix. Label values are bounded: endpoints, the kinds the
//! webhook is registered for, operations, decisions, results.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `reviews_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReviewLabels {
    pub(super) endpoint: &'static str,
    pub(super) kind: &'static str,
    pub(super) operation: &'static str,
    pub(super) decision: &'static str,
}

/// `deadline_exceeded_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeadlineLabels {
    pub(super) endpoint: &'static str,
    pub(super) action: &'static str,
}

/// `tls_reloads_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReloadLabels {
    pub(super) result: &'static str,
}

#[derive(Debug)]
pub(super) struct Metrics {
    pub(super) reviews: Family<ReviewLabels, Counter>,
    pub(super) latency: Histogram,
    pub(super) in_flight: Gauge<i64, AtomicI64>,
    pub(super) tls_reloads: Family<ReloadLabels, Counter>,
    pub(super) cert_expiry: Gauge<i64, AtomicI64>,
    pub(super) deadline_exceeded: Family<DeadlineLabels, Counter>,
    pub(super) registry: Registry,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        let cert_expiry = Gauge::<i64, AtomicI64>::default();
        let deadline_exceeded = Family::<DeadlineLabels, Counter>::default();
        let mut registry = Registry::with_prefix("kruntimes_webhook");
        registry.register(
            "reviews",
            "Admission reviews answered, by endpoint, kind, operation and decision",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one review (parse, decide, encode)",
            latency.clone(),
        );
        registry.register(
            "reviews_in_flight",
            "Reviews being answered now",
            in_flight.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate reloads from disk, by result",
            tls_reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until the served leaf certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        registry.register(
            "deadline_exceeded",
            "Reviews not decided within the deadline, by endpoint and the action taken (deny or allow)",
            deadline_exceeded.clone(),
        );
        Metrics {
            deadline_exceeded,
            reviews,
            latency,
            in_flight,
            tls_reloads,
            cert_expiry,
            registry,
        }
    }

    /// The registry in the OpenMetrics text format.
    pub(super) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A metric label for a kind: bounded to the kinds the webhook is registered for.
pub(super) fn kind_label(kind: &str) -> &'static str {
    match kind {
        "Runtime" => "Runtime",
        "Run" => "Run",
        "Workflow" => "Workflow",
        "Pod" => "Pod",
        _ => "other",
    }
}

/// Decrements `reviews_in_flight` however the request ends (the client may hang up and
/// drop the future).
pub(super) struct InFlight<'a>(&'a Gauge<i64, AtomicI64>);

impl<'a> InFlight<'a> {
    pub(super) fn enter(gauge: &'a Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
