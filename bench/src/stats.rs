//! What a run measures: one [`Record`] per request, and per backend HDR histograms
//! ([`BackendStats`]) that merge, give p50/p90/p99/p99.9/max, and turn into the
//! [`Summary`] written to `results.json` and printed as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Why a request failed. Anything with an HTTP answer is classified by its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 Too Many Requests.
    TooManyRequests,
    /// The Lambda front's throttle: 500 with `x-lambda-error-type: TooManyRequestsException`.
    Throttled,
    /// Another 4xx.
    Client4xx,
    /// Another 5xx.
    Server5xx,
    /// An unexpected status outside 2xx/4xx/5xx.
    OtherStatus,
    /// No full answer within the per-request timeout.
    Timeout,
    /// The connection could not be made (refused, reset before an answer, DNS).
    Connect,
    /// Any other client error (a broken answer body, say).
    Other,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::TooManyRequests => "429",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Client4xx => "4xx",
            ErrorKind::Server5xx => "5xx",
            ErrorKind::OtherStatus => "other_status",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Other => "other",
        }
    }

    /// The class of an HTTP answer, `None` for 2xx (and 1xx/3xx, which a client never
    /// gets here).
    pub fn of_status(status: u16, lambda_error_type: Option<&str>) -> Option<Self> {
        match status {
            200..=299 => None,
            429 => Some(ErrorKind::TooManyRequests),
            500 if lambda_error_type == Some("TooManyRequestsException") => {
                Some(ErrorKind::Throttled)
            }
            400..=499 => Some(ErrorKind::Client4xx),
            500..=599 => Some(ErrorKind::Server5xx),
            _ => Some(ErrorKind::OtherStatus),
        }
    }
}

/// One request to one backend. Times are milliseconds from the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The request's index in the schedule (the same `i` for every backend).
    pub i: usize,
    pub backend: String,
    /// `short`, `medium`, `long`, `file` or `trace`.
    pub text_class: &'static str,
    pub words: usize,
    /// When it was due to leave.
    pub scheduled_ms: f64,
    /// When it really left.
    pub sent_ms: f64,
    /// From the scheduled time to the end of the answer (open loop; in closed loop the
    /// scheduled time is the send time), so a generator or server that falls behind
    /// shows in the latency (no coordinated omission).
    pub latency_ms: f64,
    /// From the real send to the end of the answer.
    pub service_ms: f64,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    pub error: Option<ErrorKind>,
    /// The router's `x-attempts` and `x-backend`.
    pub attempts: Option<u32>,
    pub served_by: Option<String>,
    /// The server's `x-queue-time`, `x-inference-time`, `x-total-time`.
    pub queue_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub server_total_ms: Option<f64>,
    /// The Lambda front's `x-lambda-cold` and `x-lambda-instance`.
    pub cold: Option<bool>,
    pub lambda_instance: Option<String>,
}

impl Record {
    /// Request `i` to `backend`, due at `scheduled_ms` and sent at `sent_ms`, before
    /// its answer: the answer's fields are empty.
    pub fn new(
        i: usize,
        backend: &str,
        text_class: &'static str,
        words: usize,
        scheduled_ms: f64,
        sent_ms: f64,
    ) -> Self {
        Record {
            i,
            backend: backend.to_string(),
            text_class,
            words,
            scheduled_ms,
            sent_ms,
            latency_ms: 0.0,
            service_ms: 0.0,
            status: None,
            error: None,
            attempts: None,
            served_by: None,
            queue_ms: None,
            inference_ms: None,
            server_total_ms: None,
            cold: None,
            lambda_instance: None,
        }
    }
}

/// Latencies are recorded in microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

pub(crate) fn micros(ms: f64) -> u64 {
    (ms.max(0.0) * 1000.0).round() as u64
}

/// Percentiles of a histogram, in milliseconds (read back by the report, where a
/// missing field is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of a backend's run (by scheduled time).
#[derive(Debug, Clone)]
struct SecondStats {
    latency: Histogram<u64>,
    errors: u64,
}

/// The accumulated measurements of one backend.
#[derive(Debug, Clone)]
pub struct BackendStats {
    /// Every request's latency, failures included (measured until they failed).
    pub all: Histogram<u64>,
    /// Successful (2xx) requests only.
    pub ok: Histogram<u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub late_sends: u64,
    /// Sends later than scheduled: the lag of each, in microseconds.
    pub send_lag: Histogram<u64>,
    pub cold_starts: u64,
    pub retried: u64,
    per_second: BTreeMap<u64, SecondStats>,
    first_scheduled_ms: f64,
    last_scheduled_ms: f64,
    last_done_ms: f64,
}

impl Default for BackendStats {
    fn default() -> Self {
        Self {
            all: histogram(),
            ok: histogram(),
            errors: BTreeMap::new(),
            late_sends: 0,
            send_lag: histogram(),
            cold_starts: 0,
            retried: 0,
            per_second: BTreeMap::new(),
            first_scheduled_ms: f64::INFINITY,
            last_scheduled_ms: 0.0,
            last_done_ms: 0.0,
        }
    }
}

impl BackendStats {
    /// Adds a request; a send more than `late_threshold_ms` after its scheduled time is
    /// a late send.
    pub fn record(&mut self, r: &Record, late_threshold_ms: f64) {
        let lat = micros(r.latency_ms);
        self.all.record(lat).expect("auto-resizing histogram");
        match r.error {
            None => self.ok.record(lat).expect("auto-resizing histogram"),
            Some(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        let lag = r.sent_ms - r.scheduled_ms;
        self.send_lag
            .record(micros(lag))
            .expect("auto-resizing histogram");
        if lag > late_threshold_ms {
            self.late_sends += 1;
        }
        if r.cold == Some(true) {
            self.cold_starts += 1;
        }
        if r.attempts.is_some_and(|a| a > 1) {
            self.retried += 1;
        }
        let second = self
            .per_second
            .entry((r.scheduled_ms / 1000.0).max(0.0) as u64)
            .or_insert_with(|| SecondStats {
                latency: histogram(),
                errors: 0,
            });
        second.latency.record(lat).expect("auto-resizing histogram");
        second.errors += u64::from(r.error.is_some());
        self.first_scheduled_ms = self.first_scheduled_ms.min(r.scheduled_ms);
        self.last_scheduled_ms = self.last_scheduled_ms.max(r.scheduled_ms);
        self.last_done_ms = self.last_done_ms.max(r.scheduled_ms + r.latency_ms);
    }

    /// Adds another backend's (or another process's) measurements to these.
    pub fn merge(&mut self, other: &BackendStats) {
        self.all.add(&other.all).expect("auto-resizing histogram");
        self.ok.add(&other.ok).expect("auto-resizing histogram");
        self.send_lag
            .add(&other.send_lag)
            .expect("auto-resizing histogram");
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        self.late_sends += other.late_sends;
        self.cold_starts += other.cold_starts;
        self.retried += other.retried;
        for (s, o) in &other.per_second {
            let mine = self.per_second.entry(*s).or_insert_with(|| SecondStats {
                latency: histogram(),
                errors: 0,
            });
            mine.latency
                .add(&o.latency)
                .expect("auto-resizing histogram");
            mine.errors += o.errors;
        }
        self.first_scheduled_ms = self.first_scheduled_ms.min(other.first_scheduled_ms);
        self.last_scheduled_ms = self.last_scheduled_ms.max(other.last_scheduled_ms);
        self.last_done_ms = self.last_done_ms.max(other.last_done_ms);
    }

    pub fn summary(&self) -> Summary {
        let requests = self.all.len();
        let ok = self.ok.len();
        let first = if self.first_scheduled_ms.is_finite() {
            self.first_scheduled_ms
        } else {
            0.0
        };
        let busy_s = (self.last_done_ms - first) / 1000.0;
        let offered_s = (self.last_scheduled_ms - first) / 1000.0;
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        Summary {
            requests,
            ok,
            errors: self
                .errors
                .iter()
                .map(|(k, n)| (k.name().to_string(), *n))
                .collect(),
            error_rate: if requests > 0 {
                (requests - ok) as f64 / requests as f64
            } else {
                0.0
            },
            offered_rps: rate(requests, offered_s),
            throughput_rps: rate(ok, busy_s),
            latency_ms: Percentiles::of(&self.all),
            ok_latency_ms: Percentiles::of(&self.ok),
            late_sends: self.late_sends,
            send_lag_ms: Percentiles::of(&self.send_lag),
            cold_starts: self.cold_starts,
            retried: self.retried,
            per_second: self
                .per_second
                .iter()
                .map(|(s, st)| Second {
                    second: *s,
                    requests: st.latency.len(),
                    errors: st.errors,
                    p50_ms: st.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: st.latency.value_at_quantile(0.99) as f64 / 1000.0,
                    max_ms: st.latency.max() as f64 / 1000.0,
                })
                .collect(),
        }
    }
}

/// One second of the run, by scheduled time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A backend's results (read back by the report, where a missing field is empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Failures by kind: `429`, `throttled`, `4xx`, `5xx`, `timeout`, `connect`, ...
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    /// Requests over the span of their scheduled times.
    pub offered_rps: f64,
    /// 2xx answers over the span from the first scheduled send to the last answer.
    pub throughput_rps: f64,
    /// All requests, failures included (measured until they failed).
    pub latency_ms: Percentiles,
    /// 2xx answers only.
    pub ok_latency_ms: Percentiles,
    /// Sends later than scheduled by more than the late threshold.
    pub late_sends: u64,
    /// How late sends left (0 when on time).
    pub send_lag_ms: Percentiles,
    /// Answers with `x-lambda-cold: true`.
    pub cold_starts: u64,
    /// Answers with `x-attempts` above 1 (the router retried).
    pub retried: u64,
    pub per_second: Vec<Second>,
}

/// The plain-text table printed at the end of a run.
pub fn table(summaries: &BTreeMap<String, Summary>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}  errors",
        "backend",
        "requests",
        "ok",
        "err%",
        "rps",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "late",
        "cold"
    );
    for (name, m) in summaries {
        let l = &m.latency_ms;
        let errors = if m.errors.is_empty() {
            "-".to_string()
        } else {
            m.errors
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:>8} {:>7.2} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>6}  {}",
            name,
            m.requests,
            m.ok,
            m.error_rate * 100.0,
            m.throughput_rps,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            m.late_sends,
            m.cold_starts,
            errors
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, latency_ms: f64, error: Option<ErrorKind>) -> Record {
        Record {
            latency_ms,
            service_ms: latency_ms,
            status: Some(if error.is_some() { 500 } else { 200 }),
            error,
            ..Record::new(i, "k8s", "short", 10, i as f64, i as f64)
        }
    }

    fn close(got: f64, want: f64) -> bool {
        // 3 significant figures: within 0.1 %, and a little slack.
        (got - want).abs() <= want * 0.002
    }

    #[test]
    fn percentiles_match_a_hand_computed_set() {
        // 1, 2, ..., 1000 ms: the q-quantile is the value at rank ceil(q·1000).
        let mut s = BackendStats::default();
        for v in 1..=1000 {
            s.record(&rec(v, v as f64, None), 2.0);
        }
        let p = s.summary().latency_ms;
        assert_eq!(p.count, 1000);
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p90, 900.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.p999, 999.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
        assert!(close(p.min, 1.0), "{p:?}");
        assert!(close(p.mean, 500.5), "{p:?}");
    }

    #[test]
    fn merged_halves_equal_the_whole() {
        let (mut odd, mut even, mut whole) = Default::default();
        let set = |s: &mut BackendStats, v: usize| {
            let err = v.is_multiple_of(10).then_some(ErrorKind::Timeout);
            s.record(&rec(v, v as f64 * 1.5, err), 2.0);
        };
        for v in 1..=999 {
            set(&mut whole, v);
            set(
                if !v.is_multiple_of(2) {
                    &mut odd
                } else {
                    &mut even
                },
                v,
            );
        }
        let mut merged: BackendStats = odd;
        merged.merge(&even);
        assert_eq!(merged.summary(), whole.summary());
        let m = merged.summary();
        assert_eq!(m.requests, 999);
        assert_eq!(m.ok, 999 - 99);
        assert_eq!(m.errors.get("timeout"), Some(&99));
        // The 2xx-only histogram leaves the failures out.
        assert_eq!(m.ok_latency_ms.count, 900);
        assert!(close(m.latency_ms.max, 1498.5));
    }

    #[test]
    fn late_sends_cold_starts_and_seconds_are_counted() {
        let mut s = BackendStats::default();
        let mut a = rec(0, 10.0, None);
        a.sent_ms = 1.5; // within the 2 ms threshold
        let mut b = rec(1500, 10.0, Some(ErrorKind::TooManyRequests));
        b.sent_ms = 1505.0; // 5 ms late
        b.cold = Some(true);
        b.attempts = Some(3);
        s.record(&a, 2.0);
        s.record(&b, 2.0);
        let m = s.summary();
        assert_eq!(m.late_sends, 1);
        assert_eq!(m.cold_starts, 1);
        assert_eq!(m.retried, 1);
        assert_eq!(m.errors.get("429"), Some(&1));
        assert_eq!(m.per_second.len(), 2);
        assert_eq!(m.per_second[1].second, 1);
        assert_eq!(m.per_second[1].errors, 1);
        assert!(table(&[("k8s".to_string(), m)].into()).contains("429:1"));
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(ErrorKind::of_status(200, None), None);
        assert_eq!(
            ErrorKind::of_status(429, None),
            Some(ErrorKind::TooManyRequests)
        );
        assert_eq!(
            ErrorKind::of_status(500, Some("TooManyRequestsException")),
            Some(ErrorKind::Throttled)
        );
        assert_eq!(ErrorKind::of_status(500, None), Some(ErrorKind::Server5xx));
        assert_eq!(ErrorKind::of_status(422, None), Some(ErrorKind::Client4xx));
    }
}
