//! Command-line flags, each with an environment fallback so a Kubernetes manifest can
//! configure the server through `env:` alone.

use std::time::Duration;

use clap::Parser;
use model_cache::args::ModelArgs;

/// Serve DistilBERT sentiment over HTTP with dynamic batching.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (logged at start-up). Without
    /// it: `0.0.0.0:<--port>`.
    #[arg(long, env = "BIND")]
    pub bind: Option<String>,

    /// Port to listen on when `--bind` is not given: `PORT` is what a manifest sets to
    /// its containerPort, and what the local kubelet sets to the port it picked, so
    /// one manifest serves both.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Most texts in one forward pass.
    #[arg(long, env = "MAX_BATCH", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_batch: u32,

    /// Longest a batch waits for more texts after its first one arrives. The default 0
    /// adds no latency to a lone request; under load batches still form, from the
    /// requests that queue up while the previous forward pass runs.
    #[arg(long, env = "MAX_WAIT_MS", default_value_t = 0)]
    pub max_wait_ms: u64,

    /// Requests that may wait for the model at once; beyond it, 503 with Retry-After.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// A request not answered within this long gets 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// After SIGTERM, how long in-flight and queued requests may take to finish.
    /// Keep it under the pod's terminationGracePeriodSeconds (30 s by default).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,

    /// HTTP worker threads (they never run the model) [default: the CPUs allowed].
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Log lines as JSON objects instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    /// Test hook: sleep this long before every forward pass, so tests can fill the
    /// queue, hit deadlines and catch requests in flight deterministically.
    #[arg(long, hide = true, default_value_t = 0)]
    pub inference_delay_ms: u64,

    /// Test hook: sleep this long before loading the model, so tests can observe the
    /// not-ready phase.
    #[arg(long, hide = true, default_value_t = 0)]
    pub load_delay_ms: u64,
}

/// The batching settings, as the worker and `/info` see them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait_ms: u64,
    pub queue_capacity: usize,
    pub request_timeout_ms: u64,
    pub max_body_bytes: usize,
    #[serde(skip)]
    pub inference_delay: Duration,
}

impl Args {
    /// The address to listen on: `--bind`, else every interface at `--port`.
    pub fn bind_addr(&self) -> String {
        self.bind
            .clone()
            .unwrap_or_else(|| format!("0.0.0.0:{}", self.port))
    }

    pub fn batching(&self) -> Batching {
        Batching {
            max_batch: self.max_batch as usize,
            max_wait_ms: self.max_wait_ms,
            queue_capacity: self.queue_capacity as usize,
            request_timeout_ms: self.request_timeout_ms,
            max_body_bytes: self.max_body_bytes,
            inference_delay: Duration::from_millis(self.inference_delay_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_falls_back_to_port_then_8080() {
        let a = Args::parse_from(["s"]);
        assert_eq!(a.bind_addr(), "0.0.0.0:8080");
        let a = Args::parse_from(["s", "--port", "9000"]);
        assert_eq!(a.bind_addr(), "0.0.0.0:9000");
        let a = Args::parse_from(["s", "--port", "9000", "--bind", "127.0.0.1:1"]);
        assert_eq!(a.bind_addr(), "127.0.0.1:1", "--bind wins");
    }
}
