//! The router's metrics (OpenMetrics text via `prometheus-client`), all prefixed
//! `router_`. Labels are fixed small sets: backend names, status codes, reasons.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The backend that answered last (`none` when the router answered by itself).
    pub backend: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub backend: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

/// The metric families; cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// `router_requests_total{backend,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `router_attempts`: attempts per `/predict` request.
    pub attempts: Histogram,
    /// `router_retries_total{backend,reason}`: the backend of the failed attempt.
    pub retries: Family<ReasonLabels, Counter>,
    /// `router_failovers_total{backend,reason}`: the backend failed away from.
    pub failovers: Family<ReasonLabels, Counter>,
    /// `router_upstream_latency_seconds{backend}`: attempts that got an HTTP answer.
    pub upstream_latency: Family<BackendLabels, Histogram>,
    /// `router_backend_healthy{backend}`: 1 when healthy, updated at each scrape.
    pub backend_healthy: Family<BackendLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s: a warm k8s pod's milliseconds up to a Lambda cold start.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// `metric`, registered in `registry` as `name` with `help`.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// The families and a registry that encodes them.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::with_prefix("router");
        let r = &mut registry;
        let metrics = Self {
            requests: registered(
                r,
                "requests",
                "Prediction requests answered, by the backend that answered and status",
                Family::default(),
            ),
            attempts: registered(
                r,
                "attempts",
                "Attempts per prediction request, over all backends",
                Histogram::new(linear_buckets(1.0, 1.0, 10)),
            ),
            retries: registered(
                r,
                "retries",
                "Attempts retried, by the failed attempt's backend and reason",
                Family::default(),
            ),
            failovers: registered(
                r,
                "failovers",
                "Requests moved to the other backend, by the backend left and reason",
                Family::default(),
            ),
            upstream_latency: registered(
                r,
                "upstream_latency_seconds",
                "Time from sending an attempt to its whole answer, by backend",
                Family::new_with_constructor(latency_histogram as fn() -> _),
            ),
            backend_healthy: registered(
                r,
                "backend_healthy",
                "Whether the router counts a backend as healthy (1) or not (0)",
                Family::default(),
            ),
        };
        (metrics, registry)
    }

    pub(crate) fn request(&self, backend: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                backend: backend.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
