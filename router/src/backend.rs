//! The two backends and what the router knows about each: an EWMA of its answer
//! latency, passive health from consecutive failures (with a cool-down), and the
//! result of the active `/healthz` probe where the backend has one.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::retry::RetryReason;

/// One of the two deployments of the same API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// The function behind the API Gateway-like front (`api_url`).
    Lambda,
    /// The Kubernetes Service (`service_url`).
    K8s,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Lambda, Backend::K8s];

    /// The name used in `?backend=`, `x-backend` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Lambda => "lambda",
            Backend::K8s => "k8s",
        }
    }

    /// The other backend (the failover target).
    pub fn other(self) -> Backend {
        match self {
            Backend::Lambda => Backend::K8s,
            Backend::K8s => Backend::Lambda,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Backend::Lambda => 0,
            Backend::K8s => 1,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `lambda` or `k8s`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: expected lambda or k8s")]
pub struct UnknownBackend(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lambda" => Ok(Backend::Lambda),
            "k8s" | "kubernetes" => Ok(Backend::K8s),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

/// What the active probe last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Not probed yet (counts as healthy).
    Unknown,
    /// `/healthz` answered 2xx.
    Up,
    /// `/healthz` failed: connection refused, timeout, or a status other than 2xx/404.
    Down,
    /// `/healthz` answered 404: the backend has no probe endpoint (the Lambda front
    /// routes only `POST /predict`); health is passive only and probing stops.
    Absent,
}

/// How health and latency are tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failed attempts (timeouts, throttles, 5xx gateway answers) after
    /// which a backend is down. A refused connection marks it down at once.
    pub unhealthy_after: u32,
    /// How long a backend stays down before it is tried again.
    pub cool_down: Duration,
    /// Interval of the active `/healthz` probe; `None` turns probing off.
    pub probe_interval: Option<Duration>,
    /// Timeout of one probe.
    pub probe_timeout: Duration,
    /// Weight of the newest latency sample in the EWMA (0 < alpha <= 1).
    pub ewma_alpha: f64,
    /// A latency average older than this no longer counts: the backend is tried again,
    /// so `auto` does not stick to one backend forever on old numbers.
    pub stale_after: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            unhealthy_after: 3,
            cool_down: Duration::from_secs(5),
            probe_interval: Some(Duration::from_secs(2)),
            probe_timeout: Duration::from_secs(1),
            ewma_alpha: 0.3,
            stale_after: Duration::from_secs(30),
        }
    }
}

/// A copy of one backend's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub backend: Backend,
    /// Neither passively down (within its cool-down) nor failing its probe.
    pub healthy: bool,
    /// The latency EWMA of successful answers, unless none yet or stale.
    pub ewma: Option<Duration>,
    pub consecutive_failures: u32,
    pub probe: Probe,
    /// The last failure seen was a throttle (429, 503, Lambda throttle).
    pub throttled: bool,
}

#[derive(Debug)]
struct Inner {
    ewma_secs: Option<f64>,
    last_sample: Option<Instant>,
    consecutive_failures: u32,
    down_until: Option<Instant>,
    throttled: bool,
    probe: Probe,
}

/// One backend's mutable state, shared by all requests.
#[derive(Debug)]
pub struct BackendState {
    pub backend: Backend,
    /// Base URL without a trailing slash.
    pub base_url: String,
    inner: Mutex<Inner>,
}

impl BackendState {
    pub fn new(backend: Backend, base_url: &str) -> Self {
        Self {
            backend,
            base_url: base_url.trim_end_matches('/').to_string(),
            inner: Mutex::new(Inner {
                ewma_secs: None,
                last_sample: None,
                consecutive_failures: 0,
                down_until: None,
                throttled: false,
                probe: Probe::Unknown,
            }),
        }
    }

    pub fn predict_url(&self) -> String {
        format!("{}/predict", self.base_url)
    }

    pub fn healthz_url(&self) -> String {
        format!("{}/healthz", self.base_url)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the numbers inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An answer that is not retried came back: the backend is alive. 2xx answers also
    /// feed the latency average (errors such as 422 come back fast and would flatter it).
    pub fn record_answer(&self, latency: Duration, success: bool, policy: &HealthPolicy) {
        let mut s = self.lock();
        s.consecutive_failures = 0;
        s.down_until = None;
        s.throttled = false;
        if success {
            let sample = latency.as_secs_f64();
            let now = Instant::now();
            let fresh = s
                .last_sample
                .is_some_and(|t| now.duration_since(t) < policy.stale_after);
            s.ewma_secs = Some(match s.ewma_secs {
                Some(avg) if fresh => avg + policy.ewma_alpha * (sample - avg),
                _ => sample,
            });
            s.last_sample = Some(now);
        }
    }

    /// An attempt failed for `reason`.
    pub fn record_failure(&self, reason: RetryReason, policy: &HealthPolicy) {
        let mut s = self.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.throttled = reason.is_throttle();
        if reason == RetryReason::Connect || s.consecutive_failures >= policy.unhealthy_after {
            s.down_until = Some(Instant::now() + policy.cool_down);
        }
    }

    pub fn set_probe(&self, probe: Probe) {
        self.lock().probe = probe;
    }

    pub fn probe(&self) -> Probe {
        self.lock().probe
    }

    pub fn snapshot(&self, policy: &HealthPolicy) -> Snapshot {
        let s = self.lock();
        let now = Instant::now();
        let passive_down = s.down_until.is_some_and(|t| now < t);
        let fresh = s
            .last_sample
            .is_some_and(|t| now.duration_since(t) < policy.stale_after);
        Snapshot {
            backend: self.backend,
            healthy: !passive_down && s.probe != Probe::Down,
            ewma: s
                .ewma_secs
                .filter(|_| fresh)
                .map(|secs| Duration::from_secs_f64(secs.max(0.0))),
            consecutive_failures: s.consecutive_failures,
            probe: s.probe,
            throttled: s.throttled && passive_down,
        }
    }
}

/// Probes `state`'s `/healthz` every `interval` until it answers 404 (no probe there)
/// or the task is aborted.
pub(crate) async fn probe_loop(
    http: reqwest::Client,
    state: std::sync::Arc<BackendState>,
    policy: HealthPolicy,
    interval: Duration,
) {
    let url = state.healthz_url();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = tokio::time::timeout(policy.probe_timeout, http.get(&url).send()).await;
        let probe = match result {
            Ok(Ok(r)) if r.status().is_success() => Probe::Up,
            Ok(Ok(r)) if r.status().as_u16() == 404 => Probe::Absent,
            _ => Probe::Down,
        };
        if state.probe() != probe {
            tracing::info!(backend = %state.backend, ?probe, "probe changed");
        }
        state.set_probe(probe);
        if probe == Probe::Absent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
            assert_eq!(b.other().other(), b);
        }
        assert!("gpu".parse::<Backend>().is_err());
    }

    #[test]
    fn urls_lose_the_trailing_slash() {
        let s = BackendState::new(Backend::K8s, "http://127.0.0.1:9000/");
        assert_eq!(s.predict_url(), "http://127.0.0.1:9000/predict");
        assert_eq!(s.healthz_url(), "http://127.0.0.1:9000/healthz");
    }

    #[test]
    fn consecutive_failures_mark_down_and_an_answer_heals() {
        let policy = HealthPolicy::default();
        let s = BackendState::new(Backend::Lambda, "http://x");
        for _ in 0..policy.unhealthy_after - 1 {
            s.record_failure(RetryReason::Unavailable, &policy);
            assert!(s.snapshot(&policy).healthy);
        }
        s.record_failure(RetryReason::Throttled, &policy);
        let snap = s.snapshot(&policy);
        assert!(!snap.healthy && snap.throttled);
        s.record_answer(Duration::from_millis(10), true, &policy);
        assert!(s.snapshot(&policy).healthy);
    }

    #[test]
    fn a_refused_connection_marks_down_at_once_until_the_cool_down_ends() {
        let long = HealthPolicy {
            cool_down: Duration::from_secs(600),
            ..HealthPolicy::default()
        };
        let s = BackendState::new(Backend::Lambda, "http://x");
        s.record_failure(RetryReason::Connect, &long);
        assert!(!s.snapshot(&long).healthy);
        // One timeout alone does not.
        let t = BackendState::new(Backend::Lambda, "http://x");
        t.record_failure(RetryReason::Timeout, &long);
        assert!(t.snapshot(&long).healthy);
        // A cool-down that has ended (no sleeping: a zero cool-down ends at once).
        let none = HealthPolicy {
            cool_down: Duration::ZERO,
            ..HealthPolicy::default()
        };
        let s = BackendState::new(Backend::Lambda, "http://x");
        s.record_failure(RetryReason::Connect, &none);
        assert!(s.snapshot(&none).healthy);
    }

    #[test]
    fn a_failing_probe_marks_down_and_an_absent_one_does_not() {
        let policy = HealthPolicy::default();
        let s = BackendState::new(Backend::K8s, "http://x");
        s.set_probe(Probe::Down);
        assert!(!s.snapshot(&policy).healthy);
        s.set_probe(Probe::Absent);
        assert!(s.snapshot(&policy).healthy);
    }

    #[test]
    fn the_ewma_moves_toward_new_samples() {
        let policy = HealthPolicy {
            ewma_alpha: 0.5,
            ..HealthPolicy::default()
        };
        let s = BackendState::new(Backend::K8s, "http://x");
        s.record_answer(Duration::from_millis(100), true, &policy);
        s.record_answer(Duration::from_millis(300), true, &policy);
        let ewma = s.snapshot(&policy).ewma.unwrap().as_secs_f64();
        assert!((ewma - 0.2).abs() < 1e-6, "{ewma}");
        // Error answers do not count as latency samples.
        s.record_answer(Duration::from_millis(1), false, &policy);
        let ewma = s.snapshot(&policy).ewma.unwrap().as_secs_f64();
        assert!((ewma - 0.2).abs() < 1e-6, "{ewma}");
    }
}
