//! `bench validate RUN_DIR`: simulate a live run with its own measured distributions
//! and its own schedule (the records' scheduled times, so every profile, trace
//! included, is replayed as sent), then compare p50 and p99 per backend with what the
//! run measured.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

use super::arrivals::SimProfile;
use super::inputs::Inputs;
use super::{SimConfig, SimResult};
use crate::cost::Prices;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub backend: String,
    pub quantile: &'static str,
    pub live_ms: f64,
    pub simulated_ms: f64,
    /// |simulated − live| / live.
    pub error: f64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub tolerance: f64,
    pub checks: Vec<Check>,
    pub passed: bool,
    #[serde(skip)]
    pub simulation: Option<SimResult>,
}

/// Reads `RUN_DIR/results.json` (or the file itself).
pub fn read_run(path: &Path) -> anyhow::Result<serde_json::Value> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// The simulation of `run`: its schedule, its distributions, its pods (HPA off, at the
/// run's `platform.k8s.pods_max`, else `replicas`), the Lambda at `lambda_concurrency`.
pub fn config_for(
    run: &serde_json::Value,
    seed: u64,
    replicas: u32,
    lambda_concurrency: u64,
) -> anyhow::Result<SimConfig> {
    if run["config"]["mode"].as_str() == Some("closed") {
        bail!("a closed-loop run has no schedule to replay: validate an open-loop run");
    }
    let records = run["records"]
        .as_array()
        .context("the run has no records: run `bench run` (it keeps them)")?;
    let mut seen = std::collections::BTreeMap::new();
    for r in records {
        if let (Some(i), Some(t)) = (r["i"].as_u64(), r["scheduled_ms"].as_f64()) {
            seen.entry(i).or_insert(t / 1000.0);
        }
    }
    if seen.is_empty() {
        bail!("the run's records have no scheduled times");
    }
    let times: Vec<f64> = seen.into_values().collect();
    let duration = run["config"]["duration_s"]
        .as_f64()
        .unwrap_or_else(|| times.iter().copied().fold(0.0, f64::max));
    let mut cfg = SimConfig::new(SimProfile::Trace, 1.0, duration.max(1.0), seed);
    cfg.trace = Some(times);
    cfg.inputs = Inputs::from_run(run);
    let pods = run["platform"]["k8s"]["pods_max"]
        .as_u64()
        .filter(|&n| n > 0)
        .map_or(replicas, |n| n as u32);
    cfg.k8s.fixed_replicas = Some(pods);
    cfg.k8s.min_replicas = pods;
    cfg.k8s.max_replicas = pods;
    // Room for every pod from the start.
    cfg.k8s.initial_nodes = pods;
    cfg.k8s.max_nodes = pods;
    cfg.lambda.concurrency = lambda_concurrency;
    cfg.lambda.warm_at_start = warm_at_start(records);
    Ok(cfg)
}

/// The Lambda environments that were already warm when the run started: those that
/// answered (directly or through the router, by `x-lambda-instance`) and never with
/// a cold start (`x-lambda-cold`) during it. A suite's later runs start warm from the
/// earlier ones: simulated from cold, their first requests would wait for inits the
/// live run never had.
pub fn warm_at_start(records: &[serde_json::Value]) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut started_cold = std::collections::BTreeSet::new();
    for r in records {
        if let Some(instance) = r["lambda_instance"].as_str() {
            seen.insert(instance);
            if r["cold"].as_bool() == Some(true) {
                started_cold.insert(instance);
            }
        }
    }
    seen.difference(&started_cold).count() as u64
}

pub fn validate(
    run: &serde_json::Value,
    cfg: &SimConfig,
    prices: &Prices,
    tolerance: f64,
) -> anyhow::Result<Validation> {
    let sim = super::run(cfg, prices)?;
    let mut checks = Vec::new();
    for backend in ["lambda", "k8s"] {
        let live = &run["backends"][backend]["latency_ms"];
        if live.is_null() {
            continue;
        }
        let s = match backend {
            "lambda" => &sim.lambda.summary.latency_ms,
            _ => &sim.k8s.summary.latency_ms,
        };
        for (q, simulated) in [("p50", s.p50), ("p99", s.p99)] {
            let Some(live_ms) = live[q].as_f64() else {
                continue;
            };
            let error = (simulated - live_ms).abs() / live_ms.max(1e-9);
            checks.push(Check {
                backend: backend.into(),
                quantile: q,
                live_ms,
                simulated_ms: simulated,
                error,
                ok: error <= tolerance,
            });
        }
    }
    if checks.is_empty() {
        bail!("the run has no lambda or k8s latency summary (backends.<name>.latency_ms)");
    }
    let passed = checks.iter().all(|c| c.ok);
    Ok(Validation {
        tolerance,
        checks,
        passed,
        simulation: Some(sim),
    })
}

pub fn table(v: &Validation) -> String {
    let mut s = format!(
        "{:<7} {:>4} {:>10} {:>10} {:>8}  (tolerance {:.0} %)\n",
        "backend",
        "q",
        "live ms",
        "sim ms",
        "error",
        v.tolerance * 100.0
    );
    for c in &v.checks {
        s += &format!(
            "{:<7} {:>4} {:>10.1} {:>10.1} {:>7.1}% {}\n",
            c.backend,
            c.quantile,
            c.live_ms,
            c.simulated_ms,
            c.error * 100.0,
            if c.ok { "ok" } else { "BEYOND TOLERANCE" }
        );
    }
    s += if v.passed {
        "validation passed\n"
    } else {
        "validation FAILED\n"
    };
    s
}
