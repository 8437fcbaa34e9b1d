//! The report of a run: `report.md` (the headline table, the time to absorb a spike,
//! the cold starts, the billing, the run's configuration, the method) and the plots
//! `latency`, `cdf`, `throughput` and `errors`, each as SVG and PNG, drawn with
//! `plotters` from a `results.json`.
//!
//! The reader is tolerant: every field has a default, unknown fields are ignored, and the
//! optional `cold_starts` (cold starts matched to the requests they delayed) and
//! `platform` (billed GB-s, pod-seconds) are used when present.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use crate::stats::{Percentiles, Second, Summary};

// ---------------------------------------------------------------------------------
// results.json, as read back

/// A `results.json`, the parts the report uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Results {
    pub version: Option<u32>,
    pub started_at: Option<String>,
    pub wall_s: Option<f64>,
    pub config: Config,
    pub backends: BTreeMap<String, Summary>,
    pub records: Vec<RecordRow>,
    /// Cold starts matched to the requests they delayed (newer files only).
    pub cold_starts: Option<Vec<ColdStart>>,
    /// What the platforms billed (newer files only).
    pub platform: Option<Platform>,
}

/// The run's flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `open` or `closed`.
    pub mode: Option<String>,
    /// `constant`, `step`, `ramp`, `spike` or `trace`.
    pub profile: Option<String>,
    pub rate: Option<f64>,
    pub concurrency: Option<u64>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub steps: Option<u64>,
    pub burst_s: Option<f64>,
    pub texts: Option<String>,
    pub seed: Option<u64>,
    pub timeout_s: Option<f64>,
    pub targets: Vec<TargetRow>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TargetRow {
    pub name: String,
    pub url: String,
}

/// One request ([`crate::stats::Record`]), the fields the report uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RecordRow {
    pub i: u64,
    pub backend: String,
    pub scheduled_ms: f64,
    pub latency_ms: f64,
    pub status: Option<u16>,
    /// `null`, or the error class (`too_many_requests`, `timeout`, ...).
    pub error: Option<String>,
    pub cold: Option<bool>,
}

/// A cold start: a Lambda init (from its REPORT line or the `x-lambda-cold` header) or
/// a pod start, with the requests it delayed when they were matched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ColdStart {
    pub backend: String,
    /// When it happened, ms from the start of the run.
    pub at_ms: f64,
    pub init_ms: Option<f64>,
    /// `report`, `header` or `pod`.
    pub source: Option<String>,
    pub instance: Option<String>,
    /// The indices (`i`) of the requests it delayed, when matched.
    pub requests: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub lambda: Option<LambdaBill>,
    pub k8s: Option<K8sBill>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LambdaBill {
    pub billed_gb_s: Option<f64>,
    pub invocations: Option<u64>,
    pub billed_ms: Option<f64>,
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct K8sBill {
    pub pod_seconds: Option<f64>,
    pub pods_max: Option<u64>,
}

/// Reads a `results.json`; the errors name the file.
pub fn load(path: &Path) -> anyhow::Result<Results> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let results: Results = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a bench results.json", path.display()))?;
    if results.backends.is_empty() && results.records.is_empty() {
        bail!(
            "{} is not a bench results.json: it has no backends and no records",
            path.display()
        );
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------
// The public entry points

/// The plots, each written as `<name>.svg` and `<name>.png`.
pub const PLOTS: [&str; 4] = ["latency", "cdf", "throughput", "errors"];

/// Writes the report of the run in `results_path` into `out_dir` (created if needed):
/// `report.md`, then each plot as SVG and PNG. Returns the files written.
pub fn write(results_path: &Path, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let results = load(results_path)?;
    write_results(&results, out_dir)
}

/// [`write`] from a results.json already in memory (what `bench run` just wrote).
pub fn write_value(results: &serde_json::Value, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let results = Results::deserialize(results).context("reading the results")?;
    write_results(&results, out_dir)
}

/// [`write`] from parsed results.
pub fn write_results(results: &Results, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let model = Model::new(results);
    let mut written = Vec::new();
    let md = out_dir.join("report.md");
    std::fs::write(&md, markdown(&model)).with_context(|| format!("writing {}", md.display()))?;
    written.push(md);
    for name in PLOTS {
        let plot = Plot::from_name(name);
        let svg = out_dir.join(format!("{name}.svg"));
        std::fs::write(&svg, render_svg(plot, &model)?)
            .with_context(|| format!("writing {}", svg.display()))?;
        written.push(svg);
        let png = out_dir.join(format!("{name}.png"));
        std::fs::write(&png, render_png(plot, &model)?)
            .with_context(|| format!("writing {}", png.display()))?;
        written.push(png);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------
// Definitions, each in a tested function

/// A second of the burst is *settled* when its p99 latency is at most this many times
/// the backend's baseline (the median latency of its 2xx answers over the run)...
pub const ABSORB_FACTOR: f64 = 2.0;
/// ...and at most this share of its requests failed (a second of fast 429s is not
/// absorbing the load; one timeout among 50 requests is not a backlog).
pub const ABSORB_MAX_ERROR_SHARE: f64 = 0.05;
/// The burst is absorbed at the first settled second that starts this many settled
/// seconds in a row (or a shorter run that lasts to the burst's end): one lucky second
/// inside a backlog does not count, and one slow second later does not undo it.
pub const ABSORB_RUN: usize = 3;

/// The time a backend took to absorb a burst, in seconds: from the burst's start to the
/// first second of the burst that starts [`ABSORB_RUN`] settled seconds in a row (or a
/// run that lasts to the burst's end); a second is settled when its p99 latency is at
/// most [`ABSORB_FACTOR`] × `baseline_ms` and at most [`ABSORB_MAX_ERROR_SHARE`] of its
/// requests failed. `per_second` is by scheduled second, so a backlog shows as latency;
/// the resolution is 1 s. 0 when the burst's first seconds are already settled; `None`
/// when no such run exists (not absorbed while the burst lasted), no second of the
/// burst has requests, or there is no baseline.
pub fn time_to_absorb(
    per_second: &[Second],
    burst_start_s: f64,
    burst_end_s: f64,
    baseline_ms: f64,
) -> Option<f64> {
    if baseline_ms <= 0.0 || !baseline_ms.is_finite() {
        return None;
    }
    let first = burst_start_s.max(0.0).floor() as u64;
    let end = burst_end_s.max(0.0).ceil() as u64;
    let mut burst: Vec<&Second> = per_second
        .iter()
        .filter(|s| s.second >= first && s.second < end && s.requests > 0)
        .collect();
    burst.sort_by_key(|s| s.second);
    let settled = |s: &Second| {
        s.p99_ms <= ABSORB_FACTOR * baseline_ms
            && s.errors as f64 <= ABSORB_MAX_ERROR_SHARE * s.requests as f64
    };
    let mut run_start = None;
    let mut run = 0;
    for s in &burst {
        if settled(s) {
            run_start.get_or_insert(s.second);
            run += 1;
            if run >= ABSORB_RUN {
                break;
            }
        } else {
            run_start = None;
            run = 0;
        }
    }
    // A run shorter than ABSORB_RUN counts only when it reaches the burst's end.
    run_start.map(|second| (second as f64 - burst_start_s).max(0.0))
}

/// Where a backend's cold-start share comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdBasis {
    /// The requests listed in `cold_starts[].requests`: those a cold start delayed.
    Matched,
    /// The records with `cold == true` (the `x-lambda-cold` header): the requests that
    /// ran the init themselves.
    Header,
}

/// A backend's cold starts and the requests they touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdShare {
    pub cold_starts: u64,
    /// Requests delayed by a cold start ([`ColdBasis::Matched`]) or marked cold
    /// ([`ColdBasis::Header`]).
    pub delayed: u64,
    /// All of the backend's requests.
    pub requests: u64,
    pub basis: ColdBasis,
}

impl ColdShare {
    /// `delayed / requests` (0 without requests).
    pub fn share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            (self.delayed as f64 / self.requests as f64).min(1.0)
        }
    }
}

/// The cold starts of `backend` and the share of its `requests` they delayed: with
/// `cold_starts` (the file's top-level list), its entries for the backend, and the
/// distinct requests they list when any of them lists requests; otherwise, and for the
/// share when none lists requests, the backend's records with `cold == true`.
pub fn cold_start_share(
    backend: &str,
    requests: u64,
    records: &[RecordRow],
    cold_starts: Option<&[ColdStart]>,
) -> ColdShare {
    let header = records
        .iter()
        .filter(|r| r.backend == backend && r.cold == Some(true))
        .count() as u64;
    let mine: Vec<&ColdStart> = cold_starts
        .unwrap_or_default()
        .iter()
        .filter(|c| c.backend == backend)
        .collect();
    let count = if cold_starts.is_some() {
        mine.len() as u64
    } else {
        header
    };
    if mine.iter().any(|c| c.requests.is_some()) {
        let delayed: BTreeSet<u64> = mine
            .iter()
            .flat_map(|c| c.requests.iter().flatten().copied())
            .collect();
        ColdShare {
            cold_starts: count,
            delayed: delayed.len() as u64,
            requests,
            basis: ColdBasis::Matched,
        }
    } else {
        ColdShare {
            cold_starts: count,
            delayed: header,
            requests,
            basis: ColdBasis::Header,
        }
    }
}

/// The q-quantile of sorted values, nearest rank (the value at rank ⌈q·n⌉).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A backend's summary computed from its records, for a file whose `backends` lacks it.
fn summary_of(records: &[&RecordRow]) -> Summary {
    let mut lat: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let mut ok_lat: Vec<f64> = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.latency_ms)
        .collect();
    ok_lat.sort_by(f64::total_cmp);
    let pct = |v: &[f64]| Percentiles {
        count: v.len() as u64,
        min: v.first().copied().unwrap_or(0.0),
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        p50: quantile(v, 0.5),
        p90: quantile(v, 0.9),
        p99: quantile(v, 0.99),
        p999: quantile(v, 0.999),
        max: v.last().copied().unwrap_or(0.0),
    };
    let mut errors = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.error {
            *errors.entry(error_label(e).to_string()).or_insert(0) += 1;
        }
    }
    let requests = records.len() as u64;
    let ok = ok_lat.len() as u64;
    let first = records
        .iter()
        .map(|r| r.scheduled_ms)
        .fold(f64::INFINITY, f64::min);
    let last_done = records
        .iter()
        .map(|r| r.scheduled_ms + r.latency_ms)
        .fold(0.0, f64::max);
    let busy_s = (last_done - first) / 1000.0;
    let mut seconds: BTreeMap<u64, Vec<&RecordRow>> = BTreeMap::new();
    for r in records {
        seconds
            .entry((r.scheduled_ms / 1000.0).max(0.0) as u64)
            .or_default()
            .push(*r);
    }
    Summary {
        requests,
        ok,
        errors,
        error_rate: if requests > 0 {
            (requests - ok) as f64 / requests as f64
        } else {
            0.0
        },
        throughput_rps: if busy_s > 0.0 {
            ok as f64 / busy_s
        } else {
            0.0
        },
        latency_ms: pct(&lat),
        ok_latency_ms: pct(&ok_lat),
        cold_starts: records.iter().filter(|r| r.cold == Some(true)).count() as u64,
        per_second: seconds
            .into_iter()
            .map(|(second, rs)| {
                let mut l: Vec<f64> = rs.iter().map(|r| r.latency_ms).collect();
                l.sort_by(f64::total_cmp);
                Second {
                    second,
                    requests: rs.len() as u64,
                    errors: rs.iter().filter(|r| r.error.is_some()).count() as u64,
                    p50_ms: quantile(&l, 0.5),
                    p99_ms: quantile(&l, 0.99),
                    max_ms: quantile(&l, 1.0),
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// The short name of an error class, as in the summaries (`429`, `5xx`, ...).
fn error_label(kind: &str) -> &str {
    match kind {
        "too_many_requests" => "429",
        "client4xx" => "4xx",
        "server5xx" => "5xx",
        other => other,
    }
}

// ---------------------------------------------------------------------------------
// The model: what the markdown and the plots show

/// The most single requests drawn as dots on the latency plot; above it only the
/// per-second lines (an SVG of a million circles is no use to anyone).
const MAX_DOTS: usize = 20_000;

/// Colour-blind-safe colours (Okabe–Ito), fixed for the project's three backends.
pub(crate) fn color_of(name: &str, index: usize) -> RGBColor {
    const OTHERS: [RGBColor; 4] = [
        RGBColor(213, 94, 0),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
    ];
    match name {
        "lambda" => RGBColor(230, 159, 0),
        "k8s" => RGBColor(0, 114, 178),
        "router" => RGBColor(0, 158, 115),
        _ => OTHERS[index % OTHERS.len()],
    }
}

/// How the throughput series was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThroughputBasis {
    /// 2xx answers by the second they completed (from the records).
    Completed,
    /// 2xx answers by the second they were scheduled (per-second summary, no records).
    Scheduled,
}

struct BackendView<'a> {
    name: &'a str,
    color: RGBColor,
    summary: Summary,
    records: Vec<&'a RecordRow>,
    cold: ColdShare,
    /// When each cold start happened, s.
    cold_at_s: Vec<f64>,
    /// The requests a cold start delayed (or that were marked cold).
    cold_requests: BTreeSet<u64>,
    /// Seconds to absorb the spike's burst, when the profile is a spike.
    absorb: Option<f64>,
    /// Per second from `Model::s0`: requests scheduled, 2xx answers, errors by kind.
    offered: Vec<u64>,
    answered: Vec<u64>,
    errors: BTreeMap<String, Vec<u64>>,
}

struct Model<'a> {
    results: &'a Results,
    backends: Vec<BackendView<'a>>,
    /// The seconds the time plots cover: from `s0` to `sched_end` (exclusive) by
    /// scheduled time (latency, errors), to `s1` by completion (throughput).
    s0: u64,
    sched_end: u64,
    s1: u64,
    /// The spike's burst, s from the start.
    burst: Option<(f64, f64)>,
    throughput_basis: ThroughputBasis,
    dots: bool,
}

impl<'a> Model<'a> {
    fn new(results: &'a Results) -> Self {
        let mut names: BTreeSet<&str> = results.backends.keys().map(String::as_str).collect();
        names.extend(results.records.iter().map(|r| r.backend.as_str()));
        let profile = results.config.profile.as_deref().unwrap_or("");
        // The spike's burst: the last `burst_s` of the duration (open loop only; a closed
        // loop's config still names the default profile).
        let open = results.config.mode.as_deref() != Some("closed");
        let burst = match (profile, results.config.duration_s, results.config.burst_s) {
            ("spike", Some(d), Some(b)) if open && d > 0.0 => Some((d - b.clamp(0.0, d), d)),
            _ => None,
        };
        let has_records = !results.records.is_empty();
        let throughput_basis = if has_records {
            ThroughputBasis::Completed
        } else {
            ThroughputBasis::Scheduled
        };

        let mut backends = Vec::new();
        for (index, name) in names.into_iter().enumerate() {
            let records: Vec<&RecordRow> = results
                .records
                .iter()
                .filter(|r| r.backend == name && r.latency_ms.is_finite())
                .collect();
            let summary = match results.backends.get(name) {
                Some(s) => s.clone(),
                None => summary_of(&records),
            };
            let requests = if summary.requests > 0 {
                summary.requests
            } else {
                records.len() as u64
            };
            let mut cold = cold_start_share(
                name,
                requests,
                &results.records,
                results.cold_starts.as_deref(),
            );
            if records.is_empty() && results.cold_starts.is_none() {
                // Neither records nor matched cold starts: the header count of the summary.
                cold.cold_starts = summary.cold_starts;
                cold.delayed = summary.cold_starts;
            }
            let (cold_at_s, cold_requests) = match &results.cold_starts {
                Some(list) => {
                    let mine: Vec<&ColdStart> = list.iter().filter(|c| c.backend == name).collect();
                    let at = mine.iter().map(|c| c.at_ms / 1000.0).collect();
                    let reqs = if cold.basis == ColdBasis::Matched {
                        mine.iter()
                            .flat_map(|c| c.requests.iter().flatten().copied())
                            .collect()
                    } else {
                        cold_flagged(&records)
                    };
                    (at, reqs)
                }
                None => (
                    records
                        .iter()
                        .filter(|r| r.cold == Some(true))
                        .map(|r| r.scheduled_ms / 1000.0)
                        .collect(),
                    cold_flagged(&records),
                ),
            };
            let baseline = if summary.ok_latency_ms.count > 0 {
                summary.ok_latency_ms.p50
            } else {
                summary.latency_ms.p50
            };
            let absorb = burst
                .and_then(|(start, end)| time_to_absorb(&summary.per_second, start, end, baseline));
            backends.push(BackendView {
                name,
                color: color_of(name, index),
                summary,
                records,
                cold,
                cold_at_s,
                cold_requests,
                absorb,
                offered: Vec::new(),
                answered: Vec::new(),
                errors: BTreeMap::new(),
            });
        }

        // The seconds the time plots cover: from the first scheduled request (or cold
        // start) to the last scheduled second, and for the throughput to the last 2xx
        // answer (a timeout 30 s later is no answer to plot).
        let mut lo = f64::INFINITY;
        let mut hi_sched = 0.0f64;
        let mut hi_ok = 0.0f64;
        for b in &backends {
            for r in &b.records {
                lo = lo.min(r.scheduled_ms / 1000.0);
                hi_sched = hi_sched.max(r.scheduled_ms / 1000.0);
                if r.error.is_none() {
                    hi_ok = hi_ok.max((r.scheduled_ms + r.latency_ms) / 1000.0);
                }
            }
            for s in &b.summary.per_second {
                lo = lo.min(s.second as f64);
                hi_sched = hi_sched.max(s.second as f64);
            }
            for &t in &b.cold_at_s {
                lo = lo.min(t);
                hi_sched = hi_sched.max(t);
            }
        }
        if !lo.is_finite() {
            lo = 0.0;
        }
        let s0 = lo.max(0.0).floor() as u64;
        let sched_end = (hi_sched.max(0.0).floor() as u64 + 1).max(s0 + 1);
        let s1 = (hi_ok.max(0.0).floor() as u64 + 1).max(sched_end);
        let n = (s1 - s0) as usize;
        let slot = |t_s: f64| ((t_s.max(0.0).floor() as u64).clamp(s0, s1 - 1) - s0) as usize;
        for b in &mut backends {
            let mut offered = vec![0; n];
            let mut answered = vec![0; n];
            let mut errors: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            if has_records {
                for r in &b.records {
                    offered[slot(r.scheduled_ms / 1000.0)] += 1;
                    match &r.error {
                        None => answered[slot((r.scheduled_ms + r.latency_ms) / 1000.0)] += 1,
                        Some(e) => {
                            errors
                                .entry(error_label(e).to_string())
                                .or_insert_with(|| vec![0; n])[slot(r.scheduled_ms / 1000.0)] += 1
                        }
                    }
                }
            } else {
                for s in &b.summary.per_second {
                    let k = slot(s.second as f64);
                    offered[k] += s.requests;
                    answered[k] += s.requests.saturating_sub(s.errors);
                    if s.errors > 0 {
                        errors
                            .entry("all".to_string())
                            .or_insert_with(|| vec![0; n])[k] += s.errors;
                    }
                }
            }
            b.offered = offered;
            b.answered = answered;
            b.errors = errors;
        }
        let dots = backends.iter().map(|b| b.records.len()).sum::<usize>() <= MAX_DOTS;
        Model {
            results,
            backends,
            s0,
            sched_end,
            s1,
            burst,
            throughput_basis,
            dots,
        }
    }

    /// The latency range of the latency and CDF plots (log scale: above 0).
    fn latency_range(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = 0.0f64;
        let mut see = |v: f64| {
            if v > 0.0 && v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        };
        for b in &self.backends {
            for r in &b.records {
                see(r.latency_ms);
            }
            for s in &b.summary.per_second {
                see(s.p50_ms);
                see(s.p99_ms);
            }
            see(b.summary.latency_ms.min);
            see(b.summary.latency_ms.max);
        }
        if !lo.is_finite() {
            return (0.1, 1000.0);
        }
        let lo = lo / 1.5;
        let hi = (hi * 1.5).max(lo * 10.0);
        (lo, hi)
    }

    /// `counts`, one per second from `s0`, as points at the middle of each second.
    fn per_second(&self, counts: &[u64]) -> Vec<(f64, f64)> {
        counts
            .iter()
            .enumerate()
            .map(|(k, n)| ((self.s0 + k as u64) as f64 + 0.5, *n as f64))
            .collect()
    }

    /// [`Model::per_second`] over the scheduled seconds only (up to `sched_end`).
    fn per_scheduled_second(&self, counts: &[u64]) -> Vec<(f64, f64)> {
        self.per_second(&counts[..(self.sched_end - self.s0) as usize])
    }

    /// The largest of the per-second `counts` of every backend (0 without any).
    fn max_per_second<'m, I>(&'m self, counts: impl Fn(&'m BackendView<'a>) -> I) -> u64
    where
        I: IntoIterator<Item = &'m u64>,
    {
        self.backends
            .iter()
            .flat_map(counts)
            .copied()
            .max()
            .unwrap_or(0)
    }
}

fn cold_flagged(records: &[&RecordRow]) -> BTreeSet<u64> {
    records
        .iter()
        .filter(|r| r.cold == Some(true))
        .map(|r| r.i)
        .collect()
}

// ---------------------------------------------------------------------------------
// The markdown

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An axis label: up to 3 significant digits, no trailing zeros (`40`, `2.5`, `0.05`).
fn fmt_tick(v: &f64) -> String {
    let v = *v;
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_s(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0} s")
    } else {
        format!("{v:.1} s")
    }
}

fn billed(model: &Model, backend: &str) -> String {
    let platform = model.results.platform.as_ref();
    match backend {
        "lambda" => platform
            .and_then(|p| p.lambda.as_ref())
            .and_then(|l| l.billed_gb_s)
            .map(|v| format!("{v:.2} GB-s")),
        "k8s" => platform
            .and_then(|p| p.k8s.as_ref())
            .and_then(|k| k.pod_seconds)
            .map(|v| format!("{v:.0} pod-s")),
        _ => None,
    }
    .unwrap_or_else(|| "—".to_string())
}

fn markdown(m: &Model) -> String {
    let r = m.results;
    let c = &r.config;
    let profile = c.profile.as_deref().unwrap_or("?");
    let closed = c.mode.as_deref() == Some("closed");
    let mut s = String::new();
    let load = if closed {
        format!(
            "closed loop, {} workers per backend",
            c.concurrency.unwrap_or(0)
        )
    } else {
        format!(
            "{profile}, {} req/s per backend",
            c.rate.map(|v| format!("{v}")).unwrap_or("?".into())
        )
    };
    let _ = writeln!(
        s,
        "# Benchmark report: {load}, {}\n",
        c.duration_s.map(fmt_s).unwrap_or("?".into())
    );
    let _ = writeln!(
        s,
        "Run started {} (UTC), wall time {}; from `results.json` (version {}). \
         Backends: {}.\n",
        r.started_at.as_deref().unwrap_or("?"),
        r.wall_s.map(|w| format!("{w:.1} s")).unwrap_or("?".into()),
        r.version.map(|v| v.to_string()).unwrap_or("?".into()),
        m.backends
            .iter()
            .map(|b| format!("`{}`", b.name))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The headline.
    let _ = writeln!(s, "## Headline\n");
    let _ = writeln!(
        s,
        "| backend | requests | p50 ms | p99 ms | max ms | throughput (2xx/s) | error rate | cold starts | requests delayed by a cold start | billed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for b in &m.backends {
        let l = &b.summary.latency_ms;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {:.2} % | {} | {:.1} % ({}) | {} |",
            b.name,
            b.summary.requests,
            fmt_ms(l.p50),
            fmt_ms(l.p99),
            fmt_ms(l.max),
            b.summary.throughput_rps,
            b.summary.error_rate * 100.0,
            b.cold.cold_starts,
            b.cold.share() * 100.0,
            b.cold.delayed,
            billed(m, b.name),
        );
    }
    let matched = m
        .backends
        .iter()
        .any(|b| b.cold.basis == ColdBasis::Matched);
    let header = m.backends.iter().any(|b| b.cold.basis == ColdBasis::Header);
    let _ = writeln!(
        s,
        "\nLatency runs from the scheduled send time to the last byte of the answer, \
         failures included (until they failed). Throughput is 2xx answers over the span \
         from the first scheduled send to the last answer. {}{}\
         Billed: the Lambda's billed GB-s, the Kubernetes Service's pod-seconds \
         (`platform` in results.json; \"—\" when the run did not collect it).\n",
        if matched {
            "*Delayed by a cold start*: the requests that a cold start in `cold_starts` \
             was matched to (they waited for an init). "
        } else {
            ""
        },
        if header {
            "*Delayed by a cold start*, without matched cold starts: the requests answered \
             with `x-lambda-cold: true` (each ran an init itself; requests queued behind \
             it are not counted). "
        } else {
            ""
        },
    );

    // The spike.
    if let Some((start, end)) = m.burst {
        let _ = writeln!(s, "## Time to absorb the burst\n");
        let _ = writeln!(
            s,
            "The burst ran from {} to {} after the start. A second of the burst is \
             *settled* when its p99 latency is at most {ABSORB_FACTOR}× the backend's \
             baseline — the median latency of its 2xx answers over the whole run — and at \
             most {:.0} % of its requests failed (seconds by scheduled time, so a backlog \
             shows as latency). The **time to absorb** runs from the burst's start to the \
             first second that begins {ABSORB_RUN} settled seconds in a row (or a shorter \
             run lasting to the burst's end), at 1 s resolution; 0 s: settled from the \
             start. \"not absorbed\": no such run before the burst ended. The spike has \
             no traffic before the burst, so the baseline comes from the burst itself.\n",
            fmt_s(start),
            fmt_s(end),
            ABSORB_MAX_ERROR_SHARE * 100.0
        );
        let _ = writeln!(
            s,
            "| backend | baseline (p50 of 2xx) ms | time to absorb |\n|---|---:|---:|"
        );
        for b in &m.backends {
            let baseline = if b.summary.ok_latency_ms.count > 0 {
                b.summary.ok_latency_ms.p50
            } else {
                b.summary.latency_ms.p50
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                b.name,
                fmt_ms(baseline),
                b.absorb
                    .map(fmt_s)
                    .unwrap_or_else(|| format!("not absorbed (> {})", fmt_s(end - start)))
            );
        }
        s.push('\n');
    }

    // The plots.
    let _ = writeln!(s, "## Plots\n");
    let _ = writeln!(
        s,
        "Each plot is also a PNG beside it (`latency.png`, ...). Colours: {}.\n",
        m.backends
            .iter()
            .map(|b| {
                let RGBColor(r, g, bl) = b.color;
                format!("{} #{r:02x}{g:02x}{bl:02x}", b.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "### Latency over time\n\n![Latency over time](latency.svg)\n"
    );
    let _ = writeln!(
        s,
        "x: the scheduled send time, s from the start of the run; y: latency in ms, log \
         scale. Thick line: the p99 of each scheduled second; thin line: its p50. {}\
         Triangles: requests delayed by a cold start; dashed verticals: when each cold \
         start happened{}.{}\n",
        if m.dots {
            "Faint dots: single requests. "
        } else {
            "(Single requests are not drawn: the run has more than 20,000.) "
        },
        if r.cold_starts.is_some() {
            " (`cold_starts[].at_ms`)"
        } else {
            " (the scheduled time of each request answered with `x-lambda-cold: true`)"
        },
        if m.burst.is_some() {
            " The grey dotted vertical marks the burst's start."
        } else {
            ""
        }
    );
    let _ = writeln!(s, "### Latency CDF\n\n![Latency CDF](cdf.svg)\n");
    let _ = writeln!(
        s,
        "The share of requests (y) answered within a latency (x, ms, log scale), every \
         request of the backend, failures included; the dotted lines mark p50 and p99.\n"
    );
    let _ = writeln!(
        s,
        "### Throughput vs offered load\n\n![Throughput](throughput.svg)\n"
    );
    let _ = writeln!(
        s,
        "Per second: the requests scheduled in it (offered load, dashed) and the 2xx \
         answers {} (solid). An answer counts in the second it completed, so a backlog \
         shows as throughput below the offered load, then above it while it drains.\n",
        match m.throughput_basis {
            ThroughputBasis::Completed => "that completed in it",
            ThroughputBasis::Scheduled =>
                "to the requests scheduled in it (this file has no records, so by \
                 scheduled second, not completion)",
        }
    );
    let _ = writeln!(s, "### Errors\n\n![Errors](errors.svg)\n");
    let _ = writeln!(
        s,
        "Failed requests per scheduled second, by backend and kind (`429`, `throttled`: \
         the Lambda's concurrency limit, `4xx`, `5xx`, `timeout`, `connect`, ...).\n"
    );

    // Cold starts.
    if let Some(list) = &r.cold_starts {
        let _ = writeln!(s, "## Cold starts\n");
        if list.is_empty() {
            let _ = writeln!(s, "None recorded.\n");
        } else {
            let _ = writeln!(
                s,
                "| backend | at (s) | init ms | source | instance | requests delayed |\n|---|---:|---:|---|---|---:|"
            );
            const SHOWN: usize = 50;
            for c in list.iter().take(SHOWN) {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {} | {} | {} | {} |",
                    c.backend,
                    c.at_ms / 1000.0,
                    c.init_ms.map(fmt_ms).unwrap_or("—".into()),
                    c.source.as_deref().unwrap_or("—"),
                    c.instance.as_deref().unwrap_or("—"),
                    c.requests
                        .as_ref()
                        .map(|v| v.len().to_string())
                        .unwrap_or("—".into())
                );
            }
            if list.len() > SHOWN {
                let _ = writeln!(s, "\n({} more in results.json.)", list.len() - SHOWN);
            }
            s.push('\n');
        }
    }

    // What the platforms billed.
    if let Some(p) = &r.platform {
        let _ = writeln!(s, "## What the platforms billed\n");
        if let Some(l) = &p.lambda {
            let _ = writeln!(
                s,
                "- Lambda: {} GB-s billed ({} invocations, {} ms billed, {} MB of memory).",
                l.billed_gb_s
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or("?".into()),
                l.invocations.map(|v| v.to_string()).unwrap_or("?".into()),
                l.billed_ms.map(|v| format!("{v:.0}")).unwrap_or("?".into()),
                l.memory_mb.map(|v| v.to_string()).unwrap_or("?".into()),
            );
        }
        if let Some(k) = &p.k8s {
            let _ = writeln!(
                s,
                "- Kubernetes: {} pod-seconds (at most {} pods at once).",
                k.pod_seconds
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or("?".into()),
                k.pods_max.map(|v| v.to_string()).unwrap_or("?".into()),
            );
        }
        let _ = writeln!(
            s,
            "\nGB-s is what a Lambda bills (memory × billed duration); pod-seconds is \
             what the Service's pods held while the run lasted, whether busy or idle.\n"
        );
    }

    // The run.
    let _ = writeln!(s, "## The run\n\n| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {v} |");
    };
    row(
        "mode",
        match c.mode.as_deref() {
            Some("closed") => "closed loop".to_string(),
            Some("open") => "open loop".to_string(),
            other => other.unwrap_or("?").to_string(),
        },
    );
    if closed {
        row(
            "concurrency",
            c.concurrency.map(|v| v.to_string()).unwrap_or("?".into()),
        );
    } else {
        row("profile", profile.to_string());
        row(
            "rate",
            c.rate
                .map(|v| format!("{v} req/s per backend"))
                .unwrap_or("?".into()),
        );
    }
    row("duration", c.duration_s.map(fmt_s).unwrap_or("?".into()));
    if profile == "spike" {
        row("burst", c.burst_s.map(fmt_s).unwrap_or("?".into()));
    }
    if profile == "step" {
        row(
            "steps",
            c.steps.map(|v| v.to_string()).unwrap_or("?".into()),
        );
    }
    if let Some(n) = c.requests {
        row("requests cap", format!("{n} per backend"));
    }
    if let Some(t) = &c.texts {
        row("texts", t.clone());
    }
    if let Some(seed) = c.seed {
        row("seed", seed.to_string());
    }
    if let Some(t) = c.timeout_s {
        row("timeout", fmt_s(t));
    }
    row(
        "targets",
        c.targets
            .iter()
            .map(|t| format!("`{}` = {}", t.name, t.url))
            .collect::<Vec<_>>()
            .join("<br>"),
    );
    row(
        "started",
        r.started_at.clone().unwrap_or("?".into()) + " UTC",
    );
    row(
        "wall time",
        r.wall_s.map(|w| format!("{w:.1} s")).unwrap_or("?".into()),
    );
    s.push('\n');

    // The method.
    let _ = writeln!(s, "## Method\n");
    if closed {
        let _ = writeln!(
            s,
            "Closed loop: each worker sends its next request when the last one is \
             answered, so the latency of a request runs from its real send. A closed loop \
             slows down with the server and under-counts the queueing a real client \
             population would see (coordinated omission): read it as \"how much can it \
             do\", not as user latency.\n"
        );
    } else {
        let _ = writeln!(
            s,
            "Open loop: the send time of every request is computed up front from the \
             profile and each request leaves at its time whether or not earlier ones were \
             answered, like independent users. Latency runs from the **scheduled** send \
             time to the last byte of the answer, so a generator or server that falls \
             behind shows in the latency (no coordinated omission). Request i goes to \
             every backend at the same scheduled time with the same text, so the backends \
             see the same load in the same window. Each request is one attempt (the bench \
             does not retry).\n"
        );
    }
    let late: u64 = m.backends.iter().map(|b| b.summary.late_sends).sum();
    if late > 0 {
        let _ = writeln!(
            s,
            "{late} sends left more than the late threshold after their scheduled time: \
             with many, the run measured the generator as well as the backends.\n"
        );
    }
    s
}

// ---------------------------------------------------------------------------------
// The plots

pub(crate) const SIZE: (u32, u32) = (1200, 720);
/// The font family: plotters draws the PNG's text with the embedded Noto Sans
/// registered under this name, and writes it as the SVG's `font-family`, a CSS list:
/// Noto Sans where the viewer has it, else Arial's metrics (Liberation Sans on Linux),
/// which are no wider, so the text still fits the boxes measured with Noto Sans.
const FONT: &str = "Noto Sans, Arial, Helvetica, Liberation Sans, sans-serif";

/// Registers the embedded Noto Sans as [`FONT`], once: the PNG's text needs no system
/// font.
pub(crate) fn register_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    if !ok {
        bail!("the embedded Noto Sans font did not load");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Plot {
    Latency,
    Cdf,
    Throughput,
    Errors,
}

impl Plot {
    fn from_name(name: &str) -> Self {
        match name {
            "latency" => Plot::Latency,
            "cdf" => Plot::Cdf,
            "throughput" => Plot::Throughput,
            _ => Plot::Errors,
        }
    }
}

fn render_svg(plot: Plot, m: &Model) -> anyhow::Result<String> {
    svg_of(|root| draw(plot, root, m, true))
}

fn render_png(plot: Plot, m: &Model) -> anyhow::Result<Vec<u8>> {
    png_of(|root| draw(plot, root, m, false))
}

/// An SVG of [`SIZE`] drawn by `f` on white (with the embedded font registered).
pub(crate) fn svg_of(
    f: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    register_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        f(&root)?;
        root.present()?;
    }
    Ok(svg)
}

/// A PNG of [`SIZE`] drawn by `f` on white, encoded with the `png` crate.
pub(crate) fn png_of(
    f: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u8>> {
    register_font()?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        f(&root)?;
        root.present()?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding the PNG")?;
    writer.write_image_data(&rgb).context("encoding the PNG")?;
    writer.finish().context("encoding the PNG")?;
    Ok(png)
}

fn draw<DB: DrawingBackend<ErrorType: 'static>>(
    plot: Plot,
    root: &DrawingArea<DB, Shift>,
    m: &Model,
    svg: bool,
) -> anyhow::Result<()> {
    match plot {
        Plot::Latency => draw_latency(root, m, svg),
        Plot::Cdf => draw_cdf(root, m, svg),
        Plot::Throughput => draw_throughput(root, m, svg),
        Plot::Errors => draw_errors(root, m, svg),
    }
}

pub(crate) fn text(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

const GRID: RGBColor = RGBColor(225, 225, 225);
pub(crate) const GREY: RGBColor = RGBColor(120, 120, 120);

/// A legend label. The legend box is as wide as the label measured with Noto Sans; an
/// SVG viewer without Noto Sans may draw a wider font (DejaVu Sans is ~10 % wider), so in
/// the SVG the label gets trailing spaces, which widen the box and which SVG does not draw.
pub(crate) fn legend_text(svg: bool, label: String) -> String {
    if svg {
        let pad = label.chars().count() / 5 + 2;
        label + &" ".repeat(pad)
    } else {
        label
    }
}

pub(crate) fn legend_line(
    color: RGBColor,
    width: u32,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
}

/// A solid line through `points` and its legend entry: `label` (see [`legend_text`])
/// beside a short line of the same colour and width.
pub(crate) fn line<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    points: impl IntoIterator<Item = (f64, f64)>,
    color: RGBColor,
    width: u32,
    svg: bool,
    label: String,
) -> anyhow::Result<()>
where
    DB: DrawingBackend<ErrorType: 'static> + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(width)))?
        .label(legend_text(svg, label))
        .legend(legend_line(color, width));
    Ok(())
}

/// The top of a count axis whose largest count is `max`: 15 % above it (at least 1).
pub(crate) fn count_axis_top(max: u64) -> f64 {
    max.max(1) as f64 * 1.15
}

/// Every plot's frame: caption, margins, room for the axis labels.
pub(crate) fn frame<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.caption(caption, text(26))
        .margin(18)
        .x_label_area_size(56)
        .y_label_area_size(84);
    b
}

/// Every plot's grid, axis descriptions and tick labels.
pub(crate) fn mesh<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(text(16))
        .axis_desc_style(text(18))
        .light_line_style(GRID.mix(0.5))
        .bold_line_style(GRID)
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .draw()?;
    Ok(())
}

/// Every plot's legend box.
pub(crate) fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(16)
        .label_font(text(16))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

fn draw_latency<DB: DrawingBackend<ErrorType: 'static>>(
    root: &DrawingArea<DB, Shift>,
    m: &Model,
    svg: bool,
) -> anyhow::Result<()> {
    let (y0, y1) = m.latency_range();
    let (x0, x1) = (m.s0 as f64, m.sched_end as f64);
    let mut chart = frame(root, "Latency over time (from the scheduled send)")
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
    mesh(
        &mut chart,
        "scheduled time (s from the start of the run)",
        "latency (ms, log scale)",
    )?;
    let clamp = |v: f64| v.clamp(y0, y1);
    if m.dots {
        for b in &m.backends {
            let style = b.color.mix(0.35).filled();
            chart.draw_series(
                b.records
                    .iter()
                    .map(|r| Circle::new((r.scheduled_ms / 1000.0, clamp(r.latency_ms)), 2, style)),
            )?;
        }
    }
    if let Some((start, _)) = m.burst {
        chart.draw_series(DashedLineSeries::new(
            [(start, y0), (start, y1)],
            2,
            5,
            GREY.stroke_width(2),
        ))?;
    }
    for b in &m.backends {
        let mid = |s: &Second| s.second as f64 + 0.5;
        let per_second = &b.summary.per_second;
        let p99 = per_second.iter().map(|s| (mid(s), clamp(s.p99_ms)));
        line(
            &mut chart,
            p99,
            b.color,
            3,
            svg,
            format!("{} p99 per second", b.name),
        )?;
        let p50 = per_second.iter().map(|s| (mid(s), clamp(s.p50_ms)));
        line(
            &mut chart,
            p50,
            b.color,
            1,
            svg,
            format!("{} p50 per second", b.name),
        )?;
        if b.cold_at_s.is_empty() && b.cold_requests.is_empty() {
            continue;
        }
        for &t in &b.cold_at_s {
            chart.draw_series(DashedLineSeries::new(
                [(t, y0), (t, y1)],
                8,
                5,
                b.color.stroke_width(2),
            ))?;
        }
        let color = b.color;
        chart
            .draw_series(
                b.records
                    .iter()
                    .filter(|r| b.cold_requests.contains(&r.i))
                    .map(|r| {
                        TriangleMarker::new(
                            (r.scheduled_ms / 1000.0, clamp(r.latency_ms)),
                            7,
                            color.filled(),
                        )
                    }),
            )?
            .label(legend_text(
                svg,
                format!("{} cold start ({})", b.name, b.cold.cold_starts),
            ))
            .legend(move |(x, y)| TriangleMarker::new((x + 12, y), 7, color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// At most this many points per CDF line.
const CDF_POINTS: usize = 2000;

fn draw_cdf<DB: DrawingBackend<ErrorType: 'static>>(
    root: &DrawingArea<DB, Shift>,
    m: &Model,
    svg: bool,
) -> anyhow::Result<()> {
    let (x0, x1) = m.latency_range();
    let mut chart = frame(root, "Latency CDF (every request, failures included)")
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..1.0)?;
    mesh(
        &mut chart,
        "latency (ms, log scale)",
        "share of requests answered within",
    )?;
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        chart.draw_series(DashedLineSeries::new(
            [(x0, q), (x1, q)],
            3,
            4,
            GREY.stroke_width(1),
        ))?;
        // The label at the right end, just under the line.
        chart.draw_series(std::iter::once(Text::new(
            label,
            (x1 / 1.03, q - 0.012),
            text(15).color(&GREY).pos(Pos::new(HPos::Right, VPos::Top)),
        )))?;
    }
    for b in &m.backends {
        let points: Vec<(f64, f64)> = if b.records.is_empty() {
            // No records: the summary's percentiles.
            let l = &b.summary.latency_ms;
            vec![
                (l.min, 0.0),
                (l.p50, 0.5),
                (l.p90, 0.9),
                (l.p99, 0.99),
                (l.p999, 0.999),
                (l.max, 1.0),
            ]
        } else {
            let mut lat: Vec<f64> = b.records.iter().map(|r| r.latency_ms).collect();
            lat.sort_by(f64::total_cmp);
            let n = lat.len();
            let step = n.div_ceil(CDF_POINTS).max(1);
            let mut pts: Vec<(f64, f64)> = (0..n)
                .step_by(step)
                .map(|k| (lat[k], (k + 1) as f64 / n as f64))
                .collect();
            if !(n - 1).is_multiple_of(step) {
                pts.push((lat[n - 1], 1.0));
            }
            pts
        };
        let points = points.into_iter().map(|(x, y)| (x.clamp(x0, x1), y));
        let label = format!("{} ({} requests)", b.name, b.summary.requests);
        line(&mut chart, points, b.color, 3, svg, label)?;
    }
    // Lower right: slow and rare, where a CDF has no line.
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn draw_throughput<DB: DrawingBackend<ErrorType: 'static>>(
    root: &DrawingArea<DB, Shift>,
    m: &Model,
    svg: bool,
) -> anyhow::Result<()> {
    let top = m.max_per_second(|b| b.offered.iter().chain(&b.answered));
    let (x0, x1) = (m.s0 as f64, m.s1 as f64);
    let caption = match m.throughput_basis {
        ThroughputBasis::Completed => "Throughput (2xx by second completed) vs offered load",
        ThroughputBasis::Scheduled => "Throughput (2xx by second scheduled) vs offered load",
    };
    let mut chart = frame(root, caption).build_cartesian_2d(x0..x1, 0.0..count_axis_top(top))?;
    mesh(
        &mut chart,
        "time (s from the start of the run)",
        "requests per second",
    )?;
    // The offered load is the same for every backend in an open-loop run: one line,
    // drawn over the answers (dashed, it leaves them visible).
    let same_offered = m.backends.windows(2).all(|w| w[0].offered == w[1].offered);
    for b in &m.backends {
        let answered = m.per_second(&b.answered);
        line(
            &mut chart,
            answered,
            b.color,
            3,
            svg,
            format!("{} 2xx answers", b.name),
        )?;
        // Offered load exists over the scheduled seconds only.
        if !same_offered {
            chart
                .draw_series(DashedLineSeries::new(
                    m.per_scheduled_second(&b.offered),
                    8,
                    5,
                    b.color.stroke_width(2),
                ))?
                .label(legend_text(svg, format!("{} offered", b.name)))
                .legend(legend_line(b.color, 1));
        }
    }
    if same_offered && let Some(b) = m.backends.first() {
        chart
            .draw_series(DashedLineSeries::new(
                m.per_scheduled_second(&b.offered),
                8,
                5,
                BLACK.stroke_width(2),
            ))?
            .label(legend_text(
                svg,
                if m.backends.len() > 1 {
                    "offered (each backend)".to_string()
                } else {
                    "offered".to_string()
                },
            ))
            .legend(legend_line(BLACK, 2));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn draw_errors<DB: DrawingBackend<ErrorType: 'static>>(
    root: &DrawingArea<DB, Shift>,
    m: &Model,
    svg: bool,
) -> anyhow::Result<()> {
    let top = m.max_per_second(|b| b.errors.values().flatten());
    let (x0, x1) = (m.s0 as f64, m.sched_end as f64);
    let mut chart = frame(root, "Errors per second (by scheduled second)")
        .build_cartesian_2d(x0..x1, 0.0..count_axis_top(top))?;
    mesh(
        &mut chart,
        "scheduled time (s from the start of the run)",
        "failed requests per second",
    )?;
    if top == 0 {
        let (w, h) = chart.plotting_area().dim_in_pixel();
        let centre = chart.plotting_area().get_base_pixel();
        root.draw(&Text::new(
            "no errors",
            (centre.0 + w as i32 / 2 - 50, centre.1 + h as i32 / 2 - 14),
            text(28),
        ))?;
        return Ok(());
    }
    for b in &m.backends {
        for (k, (kind, counts)) in b.errors.iter().enumerate() {
            let pts = m.per_scheduled_second(counts);
            let color = b.color;
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
            // A marker on each second with errors: one shape per kind, the backend's colour.
            let marked = pts.into_iter().filter(|p| p.1 > 0.0);
            let anno = match k % 3 {
                0 => chart
                    .draw_series(marked.map(|p| Circle::new(p, 5, color.filled())))?
                    .legend(move |(x, y)| Circle::new((x + 12, y), 5, color.filled())),
                1 => chart
                    .draw_series(marked.map(|p| TriangleMarker::new(p, 7, color.filled())))?
                    .legend(move |(x, y)| TriangleMarker::new((x + 12, y), 7, color.filled())),
                _ => chart
                    .draw_series(marked.map(|p| Cross::new(p, 6, color.stroke_width(3))))?
                    .legend(move |(x, y)| Cross::new((x + 12, y), 6, color.stroke_width(3))),
            };
            anno.label(legend_text(svg, format!("{} {}", b.name, kind)));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(second: u64, p99_ms: f64, errors: u64) -> Second {
        Second {
            second,
            requests: 50,
            errors,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            max_ms: p99_ms,
        }
    }

    /// A burst from 50 s to 60 s, baseline 10 ms (settled: p99 ≤ 20 ms, ≤ 5 % errors).
    fn burst(p99s: &[f64]) -> Vec<Second> {
        let mut v: Vec<Second> = p99s
            .iter()
            .enumerate()
            .map(|(k, p)| sec(50 + k as u64, *p, 0))
            .collect();
        // Outside the burst, and ignored: a slow second before and after it.
        v.push(sec(49, 5000.0, 50));
        v.push(sec(60, 5000.0, 50));
        v
    }

    fn absorb(p99s: &[f64]) -> Option<f64> {
        time_to_absorb(&burst(p99s), 50.0, 60.0, 10.0)
    }

    #[test]
    fn the_burst_is_absorbed_when_the_p99_settles_within_twice_the_baseline() {
        let slow_start = [500.0, 300.0, 25.0, 15.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0];
        assert_eq!(absorb(&slow_start), Some(3.0));
        // Exactly 2× the baseline is settled.
        let mut edge = slow_start;
        edge[2] = 20.0;
        assert_eq!(absorb(&edge), Some(2.0));
        // One settled second inside the backlog is not the end of it...
        let lucky = [500.0, 15.0, 300.0, 25.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0];
        assert_eq!(absorb(&lucky), Some(4.0));
        // ...nor two.
        let lucky2 = [500.0, 15.0, 15.0, 300.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0];
        assert_eq!(absorb(&lucky2), Some(4.0));
        // A slow second after three settled ones does not undo it.
        let mut relapse = slow_start;
        relapse[7] = 30.0;
        assert_eq!(absorb(&relapse), Some(3.0));
        // Settled from the first second: 0; from a start within a second, the rest.
        assert_eq!(absorb(&[12.0; 10]), Some(0.0));
        assert_eq!(
            time_to_absorb(&burst(&slow_start), 50.5, 60.0, 10.0),
            Some(2.5)
        );
        // A run shorter than three counts when it lasts to the burst's end.
        let late = [
            500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 500.0, 12.0, 12.0,
        ];
        assert_eq!(absorb(&late), Some(8.0));
        // Still slow in the last second, no three settled in a row: not absorbed.
        let never = [
            500.0, 500.0, 12.0, 12.0, 500.0, 500.0, 12.0, 500.0, 12.0, 40.0,
        ];
        assert_eq!(absorb(&never), None);
        // No baseline, no seconds in the burst.
        assert_eq!(time_to_absorb(&burst(&slow_start), 50.0, 60.0, 0.0), None);
        assert_eq!(time_to_absorb(&burst(&slow_start), 70.0, 80.0, 10.0), None);
    }

    #[test]
    fn failures_keep_a_second_unsettled() {
        // Fast 429s are not absorbing the burst: 10 of 50 failed (20 %) in the first two
        // seconds, however fast they were.
        let mut v = burst(&[12.0; 10]);
        v[0].errors = 10;
        v[1].errors = 10;
        assert_eq!(time_to_absorb(&v, 50.0, 60.0, 10.0), Some(2.0));
        // Up to 5 % is tolerated: 2 of 50 (4 %).
        v[0].errors = 2;
        v[1].errors = 2;
        assert_eq!(time_to_absorb(&v, 50.0, 60.0, 10.0), Some(0.0));
        // 3 of 50 (6 %) is not.
        v[0].errors = 3;
        v[1].errors = 0;
        assert_eq!(time_to_absorb(&v, 50.0, 60.0, 10.0), Some(1.0));
    }

    fn rec(i: u64, backend: &str, cold: Option<bool>) -> RecordRow {
        RecordRow {
            i,
            backend: backend.into(),
            scheduled_ms: i as f64 * 100.0,
            latency_ms: 10.0,
            status: Some(200),
            error: None,
            cold,
        }
    }

    fn records() -> Vec<RecordRow> {
        let mut v = Vec::new();
        for i in 0..10 {
            v.push(rec(i, "lambda", Some(i == 0 || i == 5)));
            v.push(rec(i, "k8s", None));
        }
        v
    }

    fn cold(backend: &str, requests: Option<Vec<u64>>) -> ColdStart {
        ColdStart {
            backend: backend.into(),
            at_ms: 100.0,
            init_ms: Some(2500.0),
            source: Some("report".into()),
            instance: None,
            requests,
        }
    }

    #[test]
    fn cold_share_from_the_header_without_matched_cold_starts() {
        let r = records();
        let lambda = cold_start_share("lambda", 10, &r, None);
        assert_eq!(
            lambda,
            ColdShare {
                cold_starts: 2,
                delayed: 2,
                requests: 10,
                basis: ColdBasis::Header
            }
        );
        assert!((lambda.share() - 0.2).abs() < 1e-12);
        let k8s = cold_start_share("k8s", 10, &r, None);
        assert_eq!((k8s.cold_starts, k8s.delayed, k8s.share()), (0, 0, 0.0));
    }

    #[test]
    fn cold_share_counts_each_delayed_request_once() {
        let r = records();
        let list = vec![
            cold("lambda", Some(vec![1, 2, 3])),
            cold("lambda", Some(vec![3, 4])),
            cold("k8s", None),
        ];
        let lambda = cold_start_share("lambda", 10, &r, Some(&list));
        assert_eq!(
            lambda,
            ColdShare {
                cold_starts: 2,
                delayed: 4,
                requests: 10,
                basis: ColdBasis::Matched
            }
        );
        assert!((lambda.share() - 0.4).abs() < 1e-12);
        // A pod start matched to no request list: counted, share from the records.
        let k8s = cold_start_share("k8s", 10, &r, Some(&list));
        assert_eq!(
            (k8s.cold_starts, k8s.delayed, k8s.basis),
            (1, 0, ColdBasis::Header)
        );
        // An empty list: no cold starts, whatever the headers said.
        let none = cold_start_share("lambda", 10, &r, Some(&[]));
        assert_eq!(none.cold_starts, 0);
        // No requests: a share of 0, not NaN.
        assert_eq!(cold_start_share("lambda", 0, &[], None).share(), 0.0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
