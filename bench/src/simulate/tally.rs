//! What one side of the simulation counts: HDR histograms of every latency (µs, 3
//! significant figures, as `bench run`), errors by kind, and per time bucket the
//! requests, errors, latency (2 significant figures) and the instances up.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::Percentiles;

pub struct Bucket {
    pub requests: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub latency: Histogram<u32>,
    /// Most instances (environments, ready pods) seen in the bucket.
    pub instances_max: u64,
    /// Nodes (Kubernetes).
    pub nodes_max: u64,
}

pub struct Tally {
    /// Failed requests' latencies; every request's is `ok` + `failed` (merged once at
    /// the end: one histogram update per request instead of two).
    pub failed: Histogram<u64>,
    pub ok: Histogram<u64>,
    pub requests: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// Requests that waited for a cold start (Lambda: ran the init).
    pub cold: u64,
    pub bucket_us: u64,
    pub buckets: Vec<Bucket>,
    /// Σ latency (µs), for the mean without histogram rounding (Little's law).
    pub latency_sum_us: f64,
    /// Histogram updates not made yet: `n` requests of the same latency, error and
    /// bucket in a row, recorded at once (`record_n`, the same histograms as `n`
    /// `record`s) when one differs or at [`Tally::flush`]. A Lambda with fixed inputs
    /// answers most requests in the same µs, and an HDR update costs more than the
    /// rest of a request's bookkeeping.
    pending: Pending,
}

#[derive(Clone, Copy, PartialEq)]
struct Pending {
    bucket: usize,
    latency_us: u64,
    failed: bool,
    n: u64,
}

impl Tally {
    pub fn new(duration_us: u64, bucket_us: u64) -> Self {
        let n = duration_us.div_ceil(bucket_us).max(1) as usize;
        Self {
            failed: Histogram::new(3).expect("3 significant figures"),
            ok: Histogram::new(3).expect("3 significant figures"),
            requests: 0,
            errors: BTreeMap::new(),
            cold: 0,
            bucket_us,
            buckets: (0..n)
                .map(|_| Bucket {
                    requests: 0,
                    errors: BTreeMap::new(),
                    latency: Histogram::new(2).expect("2 significant figures"),
                    instances_max: 0,
                    nodes_max: 0,
                })
                .collect(),
            latency_sum_us: 0.0,
            pending: Pending {
                bucket: 0,
                latency_us: 0,
                failed: false,
                n: 0,
            },
        }
    }

    fn bucket_index(&self, at_us: u64) -> usize {
        ((at_us / self.bucket_us) as usize).min(self.buckets.len() - 1)
    }

    pub fn bucket(&mut self, at_us: u64) -> &mut Bucket {
        let i = self.bucket_index(at_us);
        &mut self.buckets[i]
    }

    /// A request that arrived at `at_us` and ended `latency_us` later, with `error`.
    #[inline]
    pub fn record(&mut self, at_us: u64, latency_us: u64, error: Option<&'static str>) {
        // `record`, not `saturating_record`: the latter clamps to the initial range
        // before it would auto-resize.
        let v = latency_us.max(1);
        self.requests += 1;
        self.latency_sum_us += latency_us as f64;
        let i = self.bucket_index(at_us);
        let b = &mut self.buckets[i];
        b.requests += 1;
        if let Some(k) = error {
            *self.errors.entry(k).or_default() += 1;
            *b.errors.entry(k).or_default() += 1;
        }
        let p = &mut self.pending;
        if p.n > 0 && p.bucket == i && p.latency_us == v && p.failed == error.is_some() {
            p.n += 1;
            return;
        }
        self.flush();
        self.pending = Pending {
            bucket: i,
            latency_us: v,
            failed: error.is_some(),
            n: 1,
        };
    }

    /// Makes the pending histogram updates (see `pending`); [`Tally::summary`] needs
    /// none left.
    pub fn flush(&mut self) {
        let p = std::mem::replace(&mut self.pending.n, 0);
        if p == 0 {
            return;
        }
        let Pending {
            bucket,
            latency_us: v,
            failed,
            ..
        } = self.pending;
        let all = if failed {
            &mut self.failed
        } else {
            &mut self.ok
        };
        let _ = all.record_n(v, p);
        // A bucket's counts are u32 (saturating, as `record` would).
        let n = u32::try_from(p).unwrap_or(u32::MAX);
        let _ = self.buckets[bucket].latency.record_n(v, n);
    }

    pub fn instances(&mut self, at_us: u64, n: u64) {
        let b = self.bucket(at_us);
        b.instances_max = b.instances_max.max(n);
    }

    pub fn nodes(&mut self, at_us: u64, n: u64) {
        let b = self.bucket(at_us);
        b.nodes_max = b.nodes_max.max(n);
    }

    pub fn summary(&self) -> SideSummary {
        assert_eq!(self.pending.n, 0, "Tally::flush before the summary");
        let mut all = self.ok.clone();
        let _ = all.add(&self.failed);
        let share =
            |k: &str| self.errors.get(k).copied().unwrap_or(0) as f64 / self.requests.max(1) as f64;
        SideSummary {
            requests: self.requests,
            ok: self.ok.len(),
            errors: self.errors.clone(),
            share_429: share("429"),
            share_503: share("503"),
            share_504: share("504"),
            cold_starts: self.cold,
            cold_start_share: self.cold as f64 / self.requests.max(1) as f64,
            latency_ms: Percentiles::of(&all),
            ok_latency_ms: Percentiles::of(&self.ok),
            mean_latency_ms: self.latency_sum_us / self.requests.max(1) as f64 / 1000.0,
            timeline: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let q = |p: f64| {
                        if b.latency.is_empty() {
                            0.0
                        } else {
                            b.latency.value_at_quantile(p) as f64 / 1000.0
                        }
                    };
                    TimelinePoint {
                        t_s: (i as u64 * self.bucket_us) as f64 / 1e6,
                        requests: b.requests,
                        errors: b.errors.clone(),
                        p50_ms: q(0.5),
                        p99_ms: q(0.99),
                        instances: b.instances_max,
                        nodes: b.nodes_max,
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// The bucket's start, s.
    pub t_s: f64,
    pub requests: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Most environments (Lambda) or ready pods (k8s) in the bucket.
    pub instances: u64,
    /// Most nodes in the bucket (k8s; 0 for Lambda).
    pub nodes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideSummary {
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub share_429: f64,
    pub share_503: f64,
    pub share_504: f64,
    pub cold_starts: u64,
    pub cold_start_share: f64,
    pub latency_ms: Percentiles,
    pub ok_latency_ms: Percentiles,
    /// Exact mean (not from the histogram).
    pub mean_latency_ms: f64,
    pub timeline: Vec<TimelinePoint>,
}
