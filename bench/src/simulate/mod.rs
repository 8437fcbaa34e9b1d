//! `bench simulate`: a deterministic discrete-event simulation of both runtimes at
//! rates past what one machine can send or serve (1 to 10,000 req/s and more), driven
//! by the distributions a live `bench run` measured ([`inputs`]).
//!
//! Simulated time is in µs; nothing sleeps. Arrivals are generated lazily
//! ([`arrivals`]) and every latency goes into HDR histograms ([`tally`]), so memory
//! does not grow with the request count. The arrivals and their texts' lengths are
//! drawn once, on a thread of their own, and handed to both sides in blocks
//! ([`Fed`]); each side ([`lambda`], [`k8s`]) runs its own event loop (timed events
//! merged with the arrival stream) on its own thread and draws its service times from
//! its own seeded stream, so a seed gives the same result whatever the thread timing.

pub mod arrivals;
pub mod inputs;
pub mod k8s;
pub mod lambda;
pub mod report;
pub mod tally;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cost::{self, Arch, Prices, Workload};
use arrivals::{Arrivals, CurveSpec, RateCurve, SimProfile, Spacing};
use inputs::Inputs;
use k8s::{K8sOut, K8sParams};
use lambda::{LambdaOut, LambdaParams};
use tally::{SideSummary, Tally};

/// Everything a simulation is run from.
#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    /// The rate over time (unless `trace` gives the send times).
    #[serde(flatten)]
    pub curve: CurveSpec,
    pub spacing: Spacing,
    /// The trace profile's send times, s.
    #[serde(skip)]
    pub trace: Option<Vec<f64>>,
    pub seed: u64,
    /// Time bucket of the timeline, s (0: the duration / 600, at least 1 s).
    pub bucket_s: f64,
    pub lambda: LambdaParams,
    pub k8s: K8sParams,
    #[serde(skip)]
    pub inputs: Inputs,
    /// Mean response, KB (API Gateway metering, data out; `bench cost`'s default).
    pub response_kb: f64,
    /// New load balancer connections per request (`bench cost`'s default).
    pub new_connections_per_request: f64,
    pub arch: Arch,
}

impl SimConfig {
    pub fn new(profile: SimProfile, rate: f64, duration_s: f64, seed: u64) -> Self {
        Self {
            curve: CurveSpec {
                profile,
                rate,
                duration_s,
                steps: 4,
                burst_s: 5.0,
                trough: 0.2,
            },
            spacing: Spacing::Poisson,
            trace: None,
            seed,
            bucket_s: 0.0,
            lambda: LambdaParams::default(),
            k8s: K8sParams::default(),
            inputs: Inputs::default(),
            response_kb: 0.4,
            new_connections_per_request: 0.1,
            arch: Arch::X86_64,
        }
    }

    pub fn bucket_us(&self) -> u64 {
        let s = if self.bucket_s > 0.0 {
            self.bucket_s
        } else {
            (self.curve.duration_s / 600.0).max(1.0)
        };
        (s * 1e6) as u64
    }

    fn arrivals(&self) -> anyhow::Result<Arrivals> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(0);
        if let Some(times) = &self.trace {
            return Ok(Arrivals::from_trace(times));
        }
        let curve = RateCurve::new(&self.curve)?;
        Ok(Arrivals::from_curve(curve, self.spacing, rng))
    }

    fn stream(&self, n: u64) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.seed);
        r.set_stream(n);
        r
    }

    /// One side's `run` with its own tally of `duration_us` and its service times from
    /// `service_stream`.
    fn side<O>(
        &self,
        duration_us: u64,
        service_stream: u64,
        run: impl FnOnce(&mut ChaCha8Rng, &mut Tally) -> O,
    ) -> (Tally, O) {
        let mut tally = Tally::new(duration_us, self.bucket_us());
        let out = run(&mut self.stream(service_stream), &mut tally);
        tally.flush();
        (tally, out)
    }
}

/// One arrival: its time (µs) and its text's tokens.
pub type Arrival = (u64, u16);

/// Arrivals per block handed to the sides (128 KB).
const BLOCK: usize = 8192;

/// Draws the arrivals (stream 0) and their texts' tokens (stream 1) once for both
/// sides, in blocks, until the arrivals end or a side stops listening.
fn feed(
    arrivals: Arrivals,
    words: &inputs::Words,
    mut wrng: ChaCha8Rng,
    to: [SyncSender<Arc<[Arrival]>>; 2],
) {
    let mut arrivals = arrivals.map(|t| (t, inputs::tokens(words.sample(&mut wrng)) as u16));
    loop {
        let block: Arc<[Arrival]> = arrivals.by_ref().take(BLOCK).collect();
        if block.is_empty() {
            return;
        }
        for tx in &to {
            if tx.send(Arc::clone(&block)).is_err() {
                return;
            }
        }
    }
}

/// One side's view of [`feed`]'s blocks, an arrival at a time.
pub struct Fed {
    rx: Receiver<Arc<[Arrival]>>,
    block: Arc<[Arrival]>,
    i: usize,
}

impl Fed {
    fn new(rx: Receiver<Arc<[Arrival]>>) -> Self {
        Self {
            rx,
            block: Arc::new([]),
            i: 0,
        }
    }
}

impl Iterator for Fed {
    type Item = Arrival;

    #[inline]
    fn next(&mut self) -> Option<Arrival> {
        if self.i == self.block.len() {
            self.block = self.rx.recv().ok()?;
            self.i = 0;
        }
        let a = self.block[self.i];
        self.i += 1;
        Some(a)
    }
}

/// What each side cost, priced with [`cost`] as a month at the simulated usage.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideCost {
    /// The simulated window scaled to a month (AWS's 730 h).
    pub month: BTreeMap<&'static str, f64>,
    pub month_total: f64,
    pub per_million: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LambdaSide {
    #[serde(flatten)]
    pub summary: SideSummary,
    pub platform: LambdaOut,
    pub cost: SideCost,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct K8sSide {
    #[serde(flatten)]
    pub summary: SideSummary,
    pub platform: K8sOut,
    pub cost: SideCost,
}

/// `simulate.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimResult {
    pub version: u32,
    pub config: serde_json::Value,
    pub inputs: serde_json::Value,
    pub lambda: LambdaSide,
    pub k8s: K8sSide,
    pub notes: Vec<String>,
}

/// Runs both sides (one thread each, fed by a third) and prices them.
pub fn run(cfg: &SimConfig, prices: &Prices) -> anyhow::Result<SimResult> {
    let duration_us = match &cfg.trace {
        Some(t) => (t.iter().copied().fold(cfg.curve.duration_s, f64::max) * 1e6) as u64,
        None => (cfg.curve.duration_s * 1e6) as u64,
    };
    let instance = prices
        .ec2
        .instances
        .get(&cfg.k8s.instance_type)
        .with_context(|| {
            format!(
                "no price for instance type {:?} in the prices file",
                cfg.k8s.instance_type
            )
        })?
        .clone();
    let mut k8s_params = cfg.k8s.clone();
    k8s_params.node_cpu_m = cost::allocatable_m(instance.vcpus);
    anyhow::ensure!(
        k8s_params.pod_cpu_m <= k8s_params.node_cpu_m,
        "a pod requesting {}m CPU fits no {} node ({}m allocatable)",
        k8s_params.pod_cpu_m,
        k8s_params.instance_type,
        k8s_params.node_cpu_m
    );
    let arrivals = cfg.arrivals()?;
    // A few blocks of slack each: the faster side runs ahead of the slower by at most
    // that much.
    let (ltx, lrx) = sync_channel(4);
    let (ktx, krx) = sync_channel(4);
    let ((lt, lo), (kt, ko)) = std::thread::scope(|s| {
        let inputs = &cfg.inputs;
        let words = cfg.stream(1);
        s.spawn(move || feed(arrivals, &inputs.words, words, [ltx, ktx]));
        let l = s.spawn(|| {
            cfg.side(duration_us, 2, |rng, t| {
                lambda::run(Fed::new(lrx), inputs, &cfg.lambda, duration_us, rng, t)
            })
        });
        let k = s.spawn(|| {
            cfg.side(duration_us, 3, |rng, t| {
                k8s::run(Fed::new(krx), inputs, &k8s_params, duration_us, rng, t)
            })
        });
        (
            l.join().expect("the lambda simulation panicked"),
            k.join().expect("the k8s simulation panicked"),
        )
    });

    // Pricing: the window scaled to a month.
    let secs = (duration_us as f64 / 1e6).max(1e-6);
    let scale = prices.seconds_per_month() / secs;
    let mean_words = match &cfg.inputs.words {
        inputs::Words::Mix {
            short,
            medium,
            long,
        } => {
            f64::from(
                short * crate::corpus::SHORT_WORDS as u32
                    + medium * crate::corpus::MEDIUM_WORDS as u32
                    + long * crate::corpus::LONG_WORDS as u32,
            ) / f64::from(short + medium + long)
        }
        inputs::Words::Empirical(v) => {
            v.iter().map(|&w| f64::from(w)).sum::<f64>() / v.len().max(1) as f64
        }
    };
    let w = Workload {
        lambda_ms: 0.0,
        lambda_memory_mb: cfg.inputs.lambda_memory_mb,
        arch: cfg.arch,
        // As `cost::measured`: about 6 bytes a word plus the JSON around it.
        request_kb: (mean_words * 6.0 + 12.0) / 1024.0,
        response_kb: cfg.response_kb,
        instance_type: cfg.k8s.instance_type.clone(),
        nodes: None,
        pod_rps: 1.0,
        pod_cpu_m: cfg.k8s.pod_cpu_m,
        min_nodes: cfg.k8s.min_nodes,
        peak_factor: 1.0,
        new_connections_per_request: cfg.new_connections_per_request,
        free_tier: false,
    };
    let side_cost = |month: BTreeMap<&'static str, f64>, requests: f64| {
        let total: f64 = month.values().sum();
        SideCost {
            per_million: if requests > 0.0 {
                total / (requests * scale) * 1e6
            } else {
                f64::INFINITY
            },
            month,
            month_total: total,
        }
    };
    let lreq = lt.requests as f64;
    let lcost = side_cost(
        cost::lambda_month(
            lo.invocations as f64 * scale,
            lo.billed_gb_s * scale,
            lreq * scale,
            &w,
            prices,
        ),
        lreq,
    );
    let kreq = kt.requests as f64;
    let kcost = side_cost(
        cost::k8s_month(
            kreq / secs,
            ko.node_seconds / 3600.0 * scale,
            &instance,
            &w,
            prices,
        ),
        kreq,
    );

    let mut notes = Vec::new();
    if !cfg.inputs.any_measured() {
        notes.push(
            "No live run given (--inputs): every distribution is a default entered by hand \
             (see inputs.sources); the latencies are the model's, not a measurement."
                .to_string(),
        );
    }
    notes.push(format!(
        "Cost: the simulated {:.0} s scaled to a month ({} h) and priced with the prices \
         file ({}); per million offered requests.",
        secs, prices.hours_per_month, prices.region
    ));
    let mut config = serde_json::to_value(cfg)?;
    config["k8s"]["node_cpu_m"] = k8s_params.node_cpu_m.into();
    Ok(SimResult {
        version: 1,
        config,
        inputs: serde_json::json!({
            "sources": cfg.inputs.sources,
            "k8s_batch": cfg.inputs.k8s_batch,
            "k8s_overhead_ms": cfg.inputs.k8s_overhead_ms,
            "lambda_duration": cfg.inputs.lambda_duration,
            "lambda_overhead_ms": cfg.inputs.lambda_overhead_ms,
            "lambda_init_ms": cfg.inputs.lambda_init_ms,
            "lambda_memory_mb": cfg.inputs.lambda_memory_mb,
            "words": cfg.inputs.words,
        }),
        lambda: LambdaSide {
            summary: lt.summary(),
            platform: lo,
            cost: lcost,
        },
        k8s: K8sSide {
            summary: kt.summary(),
            platform: ko,
            cost: kcost,
        },
        notes,
    })
}

/// The printed table: one row per side.
pub fn table(r: &SimResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>9} {:>6} {:>9}",
        "side",
        "requests",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "429 %",
        "503 %",
        "504 %",
        "cold %",
        "peak inst",
        "nodes",
        "$/M req"
    );
    let row = |s: &mut String,
               name: &str,
               m: &SideSummary,
               peak: u64,
               nodes: String,
               per_m: f64| {
        let _ = writeln!(
            s,
            "{:<7} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.2} {:>7.2} {:>7.2} {:>7.3} {:>9} {:>6} {:>9.3}",
            name,
            m.requests,
            m.latency_ms.p50,
            m.latency_ms.p90,
            m.latency_ms.p99,
            m.latency_ms.max,
            m.mean_latency_ms,
            m.share_429 * 100.0,
            m.share_503 * 100.0,
            m.share_504 * 100.0,
            m.cold_start_share * 100.0,
            peak,
            nodes,
            per_m
        );
    };
    row(
        &mut s,
        "lambda",
        &r.lambda.summary,
        r.lambda.platform.peak_environments,
        "-".into(),
        r.lambda.cost.per_million,
    );
    row(
        &mut s,
        "k8s",
        &r.k8s.summary,
        r.k8s.platform.peak_ready_pods,
        r.k8s.platform.peak_nodes.to_string(),
        r.k8s.cost.per_million,
    );
    s
}

#[cfg(test)]
mod tests;
