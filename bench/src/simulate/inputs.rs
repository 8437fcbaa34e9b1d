//! What the simulation draws from: text lengths, service times by length (and batch
//! for the server), Lambda init times, network overheads. Each either measured by a
//! live `bench run` (`--inputs RUN_DIR`) or a default entered by hand, and each says
//! which ([`Inputs::sources`]).
//!
//! Service times are a linear model in tokens, `ms = a + b·tokens`, fitted by least
//! squares on the run's records, times a multiplicative noise resampled from the
//! fit's residual ratios (so the spread, the skew and the tail of the run come back).
//! The server runs a batch padded to its longest text, so a batch of n costs
//! `a + b·n·max_tokens`, which the default figures (model-cache, f32, 2 threads,
//! `bench/results/model-cache.md`) satisfy: 9.7 ms for 1×16 tokens, 46.9 ms for
//! 1×128, 46.2 ms for 8×16 (173 seq/s).

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::corpus::{LONG_WORDS, MEDIUM_WORDS, SHORT_WORDS};

/// Tokens of a text of `words` words: ~1.28 tokens a word (400 words ≈ 512 tokens, the
/// corpus's long class), plus [CLS] and [SEP], truncated at the model's 512.
pub fn tokens(words: u32) -> u32 {
    ((f64::from(words) * 1.28).ceil() as u32 + 2).min(512)
}

/// `ms = a + b·x`, times a resampled noise ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Linear {
    pub a_ms: f64,
    pub b_ms_per_token: f64,
    /// Observed / fitted ratios of the fit's points (empty: no noise).
    #[serde(skip)]
    pub noise: Vec<f64>,
    pub points: usize,
}

impl Linear {
    pub fn fixed(a_ms: f64, b_ms_per_token: f64) -> Self {
        Self {
            a_ms,
            b_ms_per_token,
            noise: Vec::new(),
            points: 0,
        }
    }

    /// Least squares on `(x, ms)`; `None` with fewer than 5 points.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        if points.len() < 5 {
            return None;
        }
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        // One text length only: the mean, no slope.
        let b = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
        let a = (my - b * mx).max(0.0);
        let noise = points
            .iter()
            .map(|&(x, y)| {
                let fit = a + b * x;
                if fit > 0.0 { y / fit } else { 1.0 }
            })
            .collect();
        Some(Self {
            a_ms: a,
            b_ms_per_token: b,
            noise,
            points: points.len(),
        })
    }

    pub fn mean(&self, x: f64) -> f64 {
        self.a_ms + self.b_ms_per_token * x
    }

    pub fn sample(&self, x: f64, rng: &mut ChaCha8Rng) -> f64 {
        let m = self.mean(x);
        if self.noise.is_empty() {
            m
        } else {
            m * self.noise[rng.random_range(0..self.noise.len())]
        }
    }
}

/// A distribution: a fixed value or values resampled uniformly.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Dist {
    Fixed(f64),
    #[serde(serialize_with = "summarize")]
    Empirical(Vec<f64>),
}

fn summarize<S: serde::Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let mut m = BTreeMap::new();
    m.insert("n", sorted.len() as f64);
    m.insert("p50", q(0.5));
    m.insert("p99", q(0.99));
    m.insert("max", q(1.0));
    serde::Serialize::serialize(&m, s)
}

impl Dist {
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Empirical(v) => v[rng.random_range(0..v.len())],
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Empirical(v) => v.iter().sum::<f64>() / v.len() as f64,
        }
    }

    fn of(values: Vec<f64>) -> Option<Self> {
        (!values.is_empty()).then_some(Dist::Empirical(values))
    }
}

/// Text lengths: a short/medium/long mix, or lengths resampled from a run.
#[derive(Debug, Clone, Serialize)]
pub enum Words {
    Mix { short: u32, medium: u32, long: u32 },
    Empirical(#[serde(skip)] Vec<u32>),
}

impl Words {
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u32 {
        match self {
            Words::Mix {
                short,
                medium,
                long,
            } => {
                let k = rng.random_range(0..short + medium + long);
                if k < *short {
                    SHORT_WORDS as u32
                } else if k < short + medium {
                    MEDIUM_WORDS as u32
                } else {
                    LONG_WORDS as u32
                }
            }
            Words::Empirical(v) => v[rng.random_range(0..v.len())],
        }
    }
}

/// Every distribution the simulation draws from.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub words: Words,
    /// The server's batch: `a + b·n·max_tokens` ms.
    pub k8s_batch: Linear,
    /// Client → pod and back besides the server's own time (load balancer, network).
    pub k8s_overhead_ms: Dist,
    /// A warm Lambda invocation's duration (the billed part): `a + b·tokens` ms.
    pub lambda_duration: Linear,
    /// Client → API Gateway → Lambda and back, besides the duration.
    pub lambda_overhead_ms: Dist,
    /// A new environment's init (billed, as for custom runtimes).
    pub lambda_init_ms: Dist,
    pub lambda_memory_mb: f64,
    /// Where each input came from: `measured (…)` or `default (…)`.
    pub sources: BTreeMap<&'static str, String>,
}

impl Default for Inputs {
    fn default() -> Self {
        let mut sources = BTreeMap::new();
        let mut put = |k, v: &str| {
            sources.insert(k, format!("default: {v}"));
        };
        put(
            "words",
            "bench run's default mix 6:3:1 of 10, 60 and 400 words (corpus.rs)",
        );
        put(
            "k8s_batch",
            "4.4 ms + 0.332 ms x texts x padded tokens, from bench/results/model-cache.md \
             (f32, 2 threads: 9.7 ms at 1x16 tokens, 46.9 ms at 1x128, 46.2 ms at 8x16); no noise",
        );
        put(
            "k8s_overhead_ms",
            "1 ms (in-region load balancer hop, entered by hand)",
        );
        put(
            "lambda_duration",
            "7 ms + 0.53 ms/token: the server's single-text figures x 1.6 for the ~1.2 vCPU \
             of 2048 MB (entered by hand, not measured); no noise",
        );
        put(
            "lambda_overhead_ms",
            "12 ms (API Gateway HTTP API + Invoke, entered by hand)",
        );
        put(
            "lambda_init_ms",
            "1200 ms (custom runtime start + model load, entered by hand, not measured)",
        );
        put("lambda_memory_mb", "2048 (stack/src/config.rs)");
        Self {
            words: Words::Mix {
                short: 6,
                medium: 3,
                long: 1,
            },
            k8s_batch: Linear::fixed(4.4, 0.332),
            k8s_overhead_ms: Dist::Fixed(1.0),
            lambda_duration: Linear::fixed(7.0, 0.53),
            lambda_overhead_ms: Dist::Fixed(12.0),
            lambda_init_ms: Dist::Fixed(1200.0),
            lambda_memory_mb: 2048.0,
            sources,
        }
    }
}

impl Inputs {
    /// The defaults, replaced by whatever the run's results.json measured:
    /// - words: every record's `words`;
    /// - k8s: `inference_ms` against `tokens(words)` of the 2xx k8s records that did
    ///   not queue (`queue_ms` < 1 ms: a batch of one, mostly, at the rates a live run
    ///   uses); overhead: `service_ms − server_total_ms`;
    /// - lambda: `service_ms` of warm 2xx records (not `cold`, not delayed by a listed
    ///   cold start) against tokens, less the overhead (the default, 12 ms, since the
    ///   run cannot split API Gateway from the function), and the overhead's noise
    ///   rides with the duration's; init: `cold_starts[].init_ms` of the lambda;
    ///   memory: `platform.lambda.memory_mb`.
    pub fn from_run(results: &serde_json::Value) -> Self {
        let mut inp = Inputs::default();
        let empty = Vec::new();
        let records = results["records"].as_array().unwrap_or(&empty);
        let words: Vec<u32> = records
            .iter()
            .filter_map(|r| r["words"].as_u64())
            .map(|w| w as u32)
            .collect();
        if !words.is_empty() {
            inp.note_measured("words", format!("the {} records' lengths", words.len()));
            inp.words = Words::Empirical(words);
        }
        let ok = |r: &&serde_json::Value, backend: &str| {
            r["backend"].as_str() == Some(backend)
                && r["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
        };
        let tok =
            |r: &serde_json::Value| f64::from(tokens(r["words"].as_u64().unwrap_or(0) as u32));

        let k8s: Vec<(f64, f64)> = records
            .iter()
            .filter(|r| ok(r, "k8s"))
            .filter(|r| r["queue_ms"].as_f64().is_some_and(|q| q < 1.0))
            .filter_map(|r| Some((tok(r), r["inference_ms"].as_f64()?)))
            .collect();
        if let Some(fit) = Linear::fit(&k8s) {
            inp.note_measured(
                "k8s_batch",
                format!(
                    "{:.2} ms + {:.4} ms x texts x padded tokens, fitted on {} unqueued \
                     k8s records' inference_ms, noise resampled from their residuals",
                    fit.a_ms, fit.b_ms_per_token, fit.points
                ),
            );
            inp.k8s_batch = fit;
        }
        let over: Vec<f64> = records
            .iter()
            .filter(|r| ok(r, "k8s"))
            .filter_map(|r| {
                Some((r["service_ms"].as_f64()? - r["server_total_ms"].as_f64()?).max(0.0))
            })
            .collect();
        if let Some(d) = Dist::of(over) {
            inp.note_measured(
                "k8s_overhead_ms",
                "service_ms - server_total_ms of the k8s records",
            );
            inp.k8s_overhead_ms = d;
        }

        let delayed: std::collections::HashSet<u64> = results["cold_starts"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|c| c["backend"].as_str() == Some("lambda"))
            .flat_map(|c| c["requests"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i.as_u64())
            .collect();
        let overhead = inp.lambda_overhead_ms.mean();
        let warm: Vec<(f64, f64)> = records
            .iter()
            .filter(|r| ok(r, "lambda"))
            .filter(|r| r["cold"].as_bool() != Some(true))
            .filter(|r| !r["i"].as_u64().is_some_and(|i| delayed.contains(&i)))
            .filter_map(|r| Some((tok(r), (r["service_ms"].as_f64()? - overhead).max(0.1))))
            .collect();
        if let Some(fit) = Linear::fit(&warm) {
            inp.note_measured(
                "lambda_duration",
                format!(
                    "{:.2} ms + {:.4} ms/token, fitted on {} warm lambda records' \
                     service_ms less the overhead, noise resampled from their residuals",
                    fit.a_ms, fit.b_ms_per_token, fit.points
                ),
            );
            inp.lambda_duration = fit;
        }
        let inits: Vec<f64> = results["cold_starts"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|c| c["backend"].as_str().is_none_or(|b| b == "lambda"))
            .filter_map(|c| c["init_ms"].as_f64())
            .filter(|v| *v > 0.0)
            .collect();
        if let Some(d) = Dist::of(inits) {
            inp.note_measured("lambda_init_ms", "cold_starts[].init_ms of the lambda");
            inp.lambda_init_ms = d;
        }
        if let Some(mb) = results["platform"]["lambda"]["memory_mb"]
            .as_f64()
            .filter(|m| *m > 0.0)
        {
            inp.note_measured("lambda_memory_mb", "platform.lambda.memory_mb");
            inp.lambda_memory_mb = mb;
        }
        inp
    }

    /// Records that `input` came from the run, and how; the `measured` prefix is what
    /// [`Inputs::any_measured`] looks for.
    fn note_measured(&mut self, input: &'static str, how: impl std::fmt::Display) {
        self.sources.insert(input, format!("measured: {how}"));
    }

    /// Whether any input came from a run.
    pub fn any_measured(&self) -> bool {
        self.sources.values().any(|s| s.starts_with("measured"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_corpus_and_truncate() {
        assert_eq!(tokens(10), 15);
        assert_eq!(tokens(400), 512);
        assert_eq!(tokens(5000), 512);
    }

    #[test]
    fn the_fit_recovers_a_line_and_keeps_its_noise() {
        let pts: Vec<(f64, f64)> = (0..50)
            .map(|i| {
                let x = f64::from(i * 10);
                (x, (5.0 + 0.5 * x) * if i % 2 == 0 { 1.1 } else { 0.9 })
            })
            .collect();
        let f = Linear::fit(&pts).unwrap();
        assert!((f.b_ms_per_token - 0.5).abs() < 0.05, "{f:?}");
        assert!((f.a_ms - 5.0).abs() < 3.0, "{f:?}");
        assert_eq!(f.noise.len(), 50);
        assert!(Linear::fit(&pts[..3]).is_none());
    }

    #[test]
    fn the_default_batch_model_matches_model_cache() {
        let m = Inputs::default().k8s_batch;
        assert!((m.mean(16.0) - 9.7).abs() < 0.1);
        assert!((m.mean(128.0) - 46.9).abs() < 0.1);
        assert!((m.mean(8.0 * 16.0) - 46.2).abs() < 1.0);
    }
}
