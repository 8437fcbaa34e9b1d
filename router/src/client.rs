//! The router proper: one prediction request, forwarded to a backend with retries,
//! backoff and failover under one deadline. Usable without the HTTP server (the
//! benchmark calls [`Router::predict`] directly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::backend::{Backend, BackendState, Probe, Snapshot, probe_loop};
use crate::config::Config;
use crate::metrics::{BackendLabels, Metrics, ReasonLabels};
use crate::retry::{LAMBDA_ERROR_TYPE_HEADER, RetryReason, classify_status, parse_retry_after};
use crate::select::{self, Choice};

/// The backend that answered (`x-backend`).
pub const BACKEND_HEADER: &str = "x-backend";
/// How many attempts the request took in all (`x-attempts`).
pub const ATTEMPTS_HEADER: &str = "x-attempts";

/// A backend's answer, passed on as it came: status, headers (less hop-by-hop ones),
/// body bytes; plus which backend gave it and after how many attempts.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The upstream's headers (its timing headers and `x-lambda-*` among them) plus
    /// `x-backend` and `x-attempts`.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub backend: Backend,
    pub attempts: u32,
    /// Time in the router, from the call to the answer.
    pub elapsed: Duration,
}

/// Why no backend answer is passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The deadline ran out (or the next wait would not fit in it). 504.
    #[error(
        "deadline of {deadline_ms} ms exceeded: backend {backend}, {attempts} attempts, last: {last}"
    )]
    DeadlineExceeded {
        backend: Backend,
        attempts: u32,
        deadline_ms: u128,
        last: String,
    },
    /// Every attempt failed without an HTTP answer (connection refused, reset). 502.
    #[error("no answer from backend {backend}: {attempts} attempts, last: {last}")]
    Unreachable {
        backend: Backend,
        attempts: u32,
        last: String,
    },
}

/// The JSON body of a router-made error: `{"error": kind, "detail": message}`, the
/// same shape as [`sentiment_api::ErrorBody`] with the router's own kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterErrorBody {
    pub error: &'static str,
    pub detail: String,
}

impl RouteError {
    pub fn status(&self) -> u16 {
        match self {
            RouteError::DeadlineExceeded { .. } => 504,
            RouteError::Unreachable { .. } => 502,
        }
    }

    /// `deadline_exceeded` or `backend_unreachable`.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteError::DeadlineExceeded { .. } => "deadline_exceeded",
            RouteError::Unreachable { .. } => "backend_unreachable",
        }
    }

    /// The backend of the last attempt.
    pub fn backend(&self) -> Backend {
        match self {
            RouteError::DeadlineExceeded { backend, .. }
            | RouteError::Unreachable { backend, .. } => *backend,
        }
    }

    pub fn attempts(&self) -> u32 {
        match self {
            RouteError::DeadlineExceeded { attempts, .. }
            | RouteError::Unreachable { attempts, .. } => *attempts,
        }
    }

    pub fn body(&self) -> RouterErrorBody {
        RouterErrorBody {
            error: self.kind(),
            detail: self.to_string(),
        }
    }

    /// The body as JSON bytes.
    pub fn body_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.body()).unwrap_or_default())
    }
}

/// How one attempt ended.
enum Outcome {
    /// An HTTP answer (final or retryable).
    Answered {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        latency: Duration,
    },
    /// No answer: `reason` is Connect, Timeout or Transport.
    Failed { reason: RetryReason, detail: String },
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    backends: [Arc<BackendState>; 2],
    metrics: Metrics,
    registry: Registry,
}

/// The router: both backends' state, the HTTP client, the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// The running probe tasks; dropping it stops them.
#[derive(Debug)]
pub struct Probes(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A URL the client cannot use, or a client that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{backend} URL {url:?} is not an http(s) URL")]
    BadUrl { backend: Backend, url: String },
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Router {
    /// A router over `config`'s two backends. Starts no tasks: call
    /// [`Router::spawn_probes`] for the active health checks (the server does).
    pub fn new(config: Config) -> Result<Self, BuildError> {
        for (backend, url) in [
            (Backend::Lambda, &config.lambda_url),
            (Backend::K8s, &config.k8s_url),
        ] {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            if rest.is_none_or(|r| r.trim_matches('/').is_empty()) {
                return Err(BuildError::BadUrl {
                    backend,
                    url: url.clone(),
                });
            }
        }
        // The router talks to two known endpoints: no proxies from the environment, and
        // redirects are answers to pass on, not to follow.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let backends = [
            Arc::new(BackendState::new(Backend::Lambda, &config.lambda_url)),
            Arc::new(BackendState::new(Backend::K8s, &config.k8s_url)),
        ];
        let (metrics, registry) = Metrics::new();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                backends,
                metrics,
                registry,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Starts the `/healthz` probes (one task per backend, on the current Tokio
    /// runtime); a backend answering 404 there has no probe and its task ends.
    pub fn spawn_probes(&self) -> Probes {
        let Some(interval) = self.inner.config.health.probe_interval else {
            return Probes(Vec::new());
        };
        let tasks = self
            .inner
            .backends
            .iter()
            .map(|state| {
                tokio::spawn(probe_loop(
                    self.inner.http.clone(),
                    state.clone(),
                    self.inner.config.health.clone(),
                    interval,
                ))
            })
            .collect();
        Probes(tasks)
    }

    fn state(&self, backend: Backend) -> &BackendState {
        &self.inner.backends[backend.index()]
    }

    /// What the router knows about `backend` now.
    pub fn snapshot(&self, backend: Backend) -> Snapshot {
        self.state(backend).snapshot(&self.inner.config.health)
    }

    /// At least one backend healthy (the router's `/readyz`).
    pub fn ready(&self) -> bool {
        Backend::ALL.iter().any(|b| self.snapshot(*b).healthy)
    }

    /// The metrics in OpenMetrics text.
    pub fn encode_metrics(&self) -> String {
        for backend in Backend::ALL {
            let snap = self.snapshot(backend);
            self.inner
                .metrics
                .backend_healthy
                .get_or_create(&BackendLabels {
                    backend: backend.to_string(),
                })
                .set(i64::from(snap.healthy));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The first backend for `choice`.
    pub fn pick(&self, choice: Choice) -> Backend {
        match choice {
            Choice::Fixed(b) => b,
            Choice::Auto => select::pick(
                &self.snapshot(Backend::Lambda),
                &self.snapshot(Backend::K8s),
                self.inner.config.weights.as_ref(),
                &mut rand::rng(),
            ),
        }
    }

    /// Forwards one `/predict` body (`content_type` as the client sent it, if at all)
    /// under the retry policy. A backend's final answer is `Ok` whatever its status
    /// (a 422 is an answer); so is its last retryable answer when the attempts run
    /// out. `Err` when the deadline passes or no attempt got an HTTP answer.
    pub async fn predict(
        &self,
        choice: Choice,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<Answer, RouteError> {
        let started = Instant::now();
        let result = self.route(choice, body, content_type, started).await;
        let metrics = &self.inner.metrics;
        match &result {
            Ok(answer) => {
                metrics.request(answer.backend.as_str(), answer.status);
                metrics.attempts.observe(f64::from(answer.attempts));
            }
            Err(e) => {
                metrics.request(e.backend().as_str(), e.status());
                metrics.attempts.observe(f64::from(e.attempts()));
            }
        }
        result
    }

    async fn route(
        &self,
        choice: Choice,
        body: Bytes,
        content_type: Option<&str>,
        started: Instant,
    ) -> Result<Answer, RouteError> {
        let policy = &self.inner.config.retry;
        let health = &self.inner.config.health;
        let metrics = &self.inner.metrics;
        let deadline = started + policy.deadline;
        let max_attempts = policy.max_attempts.max(1);
        let deadline_error = |backend, attempts, last: String| RouteError::DeadlineExceeded {
            backend,
            attempts,
            deadline_ms: policy.deadline.as_millis(),
            last,
        };

        let mut backend = self.pick(choice);
        let mut tried = [false; 2];
        let mut attempts = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(deadline_error(backend, attempts, "no time left".into()));
            }
            attempts += 1;
            tried[backend.index()] = true;
            let timeout = policy.attempt_timeout_within(remaining);
            let outcome = self.attempt(backend, &body, content_type, timeout).await;

            // A final answer, or the reason to retry.
            let (reason, retry_after, last, answered) = match outcome {
                Outcome::Answered {
                    status,
                    headers,
                    body,
                    latency,
                } => {
                    metrics
                        .upstream_latency
                        .get_or_create(&BackendLabels {
                            backend: backend.to_string(),
                        })
                        .observe(latency.as_secs_f64());
                    let lambda_error = headers
                        .get(LAMBDA_ERROR_TYPE_HEADER)
                        .and_then(|v| v.to_str().ok());
                    match classify_status(status, lambda_error, &body) {
                        None => {
                            self.state(backend).record_answer(
                                latency,
                                (200..300).contains(&status),
                                health,
                            );
                            return Ok(answer(status, headers, body, backend, attempts, started));
                        }
                        Some(reason) => {
                            let retry_after = headers
                                .get(header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(parse_retry_after);
                            let last = format!("HTTP {status} ({})", reason.as_str());
                            (reason, retry_after, last, Some((status, headers, body)))
                        }
                    }
                }
                Outcome::Failed { reason, detail } => (reason, None, detail, None),
            };
            self.state(backend).record_failure(reason, health);
            tracing::debug!(%backend, attempts, reason = reason.as_str(), %last, "attempt failed");

            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(deadline_error(backend, attempts, last));
            }
            if attempts >= max_attempts {
                return match answered {
                    Some((status, headers, body)) => {
                        Ok(answer(status, headers, body, backend, attempts, started))
                    }
                    None => Err(RouteError::Unreachable {
                        backend,
                        attempts,
                        last,
                    }),
                };
            }

            let next = match choice {
                Choice::Fixed(b) => b,
                Choice::Auto => {
                    select::failover(&self.snapshot(backend), &self.snapshot(backend.other()))
                }
            };
            let labels = ReasonLabels {
                backend: backend.to_string(),
                reason: reason.as_str().to_string(),
            };
            metrics.retries.get_or_create(&labels).inc();
            if next != backend {
                metrics.failovers.get_or_create(&labels).inc();
                tracing::info!(from = %backend, to = %next, reason = reason.as_str(), "failover");
            }
            // A backend not yet tried in this request is tried at once; one that has
            // failed already waits out the backoff (or its Retry-After).
            if tried[next.index()] {
                let retry_after = retry_after.filter(|_| next == backend);
                let delay = policy.delay(attempts, retry_after, remaining, &mut rand::rng());
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(deadline_error(backend, attempts, last)),
                }
            }
            backend = next;
        }
    }

    /// One attempt: POST the body, read the whole answer, all within `timeout`.
    async fn attempt(
        &self,
        backend: Backend,
        body: &Bytes,
        content_type: Option<&str>,
        timeout: Duration,
    ) -> Outcome {
        let url = self.state(backend).predict_url();
        let mut request = self.inner.http.post(url).body(body.clone());
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let sent = Instant::now();
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, headers, body))) => Outcome::Answered {
                status,
                headers,
                body,
                latency: sent.elapsed(),
            },
            Ok(Err(e)) => {
                let reason = if e.is_connect() {
                    RetryReason::Connect
                } else if e.is_timeout() {
                    RetryReason::Timeout
                } else {
                    RetryReason::Transport
                };
                Outcome::Failed {
                    reason,
                    detail: format!("{}: {}", reason.as_str(), error_chain(&e)),
                }
            }
            Err(_) => Outcome::Failed {
                reason: RetryReason::Timeout,
                detail: format!("timeout: no answer within {} ms", timeout.as_millis()),
            },
        }
    }

    /// The probe state of `backend` (for `/readyz`).
    pub fn probe(&self, backend: Backend) -> Probe {
        self.state(backend).probe()
    }
}

/// Headers that describe one hop, not the answer; the server sets its own.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn answer(
    status: u16,
    upstream: HeaderMap,
    body: Bytes,
    backend: Backend,
    attempts: u32,
    started: Instant,
) -> Answer {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 2);
    for (name, value) in &upstream {
        if !is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(BACKEND_HEADER, HeaderValue::from_static(backend.as_str()));
    headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    Answer {
        status,
        headers,
        body,
        backend,
        attempts,
        elapsed: started.elapsed(),
    }
}

/// An error with its sources, one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
