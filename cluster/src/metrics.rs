//! Prometheus metrics (OpenMetrics text via `prometheus-client`), all prefixed
//! `sentiment_`. Label sets stay small and fixed: routes are the registered patterns
//! (unknown paths share `unmatched`), so a scanner cannot blow up the series count.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub batch_size: Histogram,
    pub tokens_per_request: Histogram,
    pub queue_depth: Gauge,
    pub dropped: Family<ReasonLabels, Counter>,
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    pub ready: Gauge,
    registry: Registry,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s: covers a tiny model's sub-millisecond passes and a saturated queue.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let queue_seconds = latency_histogram();
        let inference_seconds = latency_histogram();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let tokens_per_request = Histogram::new(exponential_buckets(4.0, 2.0, 12));
        let queue_depth = Gauge::default();
        let dropped = Family::<ReasonLabels, Counter>::default();
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        let ready = Gauge::default();

        let mut registry = Registry::with_prefix("sentiment");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request start to response, by route pattern",
            request_seconds.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a prediction request waited before its forward pass started",
            queue_seconds.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Tokenization plus forward pass of the batch a request rode in",
            inference_seconds.clone(),
        );
        registry.register("batch_size", "Texts per forward pass", batch_size.clone());
        registry.register(
            "tokens_per_request",
            "Tokens (after truncation, special tokens included) per prediction request",
            tokens_per_request.clone(),
        );
        registry.register(
            "queue_depth",
            "Prediction requests waiting for the batching worker",
            queue_depth.clone(),
        );
        registry.register(
            "dropped_requests",
            "Queued requests never run: client_gone, deadline",
            dropped.clone(),
        );
        registry.register(
            "model_load_seconds",
            "Seconds spent resolving and loading the model, warm-up pass included",
            model_load_seconds.clone(),
        );
        registry.register(
            "ready",
            "1 when the model is loaded, warmed up and the server is not draining",
            ready.clone(),
        );
        Self {
            requests,
            request_seconds,
            queue_seconds,
            inference_seconds,
            batch_size,
            tokens_per_request,
            queue_depth,
            dropped,
            model_load_seconds,
            ready,
            registry,
        }
    }

    pub fn count_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn drop_request(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
