//! Classifier hot paths on the full-size DistilBERT fixture (66 M parameters):
//! load time, RSS after load, batch-1 latency at ~16 and ~128 tokens, and
//! sequences/s at batch 8 and 32.
//!
//! `make bench` (or `MODEL_BENCH_DIR=<full fixture> cargo bench -p model-cache`).
//! `MODEL_BENCH_THREADS` sets the thread count (default 2, the setting).
//! `MODEL_BENCH_QUICK=1` skips criterion's sampling and prints only the summary.
//! `MODEL_BENCH_PRECISION=bf16` measures the opt-in AMX bf16 mode instead, and then
//! also reports its drift from f32 scores on the same checkpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use model_cache::fixture::{FixtureSize, FixtureSpec};
use model_cache::{Checkpoint, Classifier, ClassifierOptions, Precision};

fn fixture_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODEL_BENCH_DIR") {
        return dir.into();
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-fixtures/full-f32");
    if !dir.join("fixture.json").is_file() {
        eprintln!("writing the full-size fixture to {} (once)", dir.display());
        model_cache::fixture::write(&dir, &FixtureSpec::new(FixtureSize::Full)).unwrap();
    }
    dir
}

fn threads() -> usize {
    std::env::var("MODEL_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn precision() -> Precision {
    std::env::var("MODEL_BENCH_PRECISION")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or(Precision::F32, |v| v.parse().unwrap())
}

/// Largest score difference and label agreement of `classifier` against an f32
/// classifier of the same checkpoint, over texts of 4 to 200 tokens.
fn drift_from_f32(checkpoint: &Checkpoint, classifier: &Classifier) -> (f64, usize, usize) {
    let f32_classifier = Classifier::load(
        checkpoint,
        &ClassifierOptions {
            precision: Precision::F32,
            ..options()
        },
    )
    .unwrap();
    let words = [
        "terrible",
        "wonderful",
        "plot",
        "boring",
        "акт",
        "fine",
        "not",
        "great",
        "🙂",
        "slow",
        "the",
        "acting",
        "was",
        "moving",
        "awful",
        "brilliant",
        "café",
        "mediocre",
    ];
    let texts: Vec<String> = (0..64)
        .map(|i| {
            (0..(2 + i * 3))
                .map(|j| words[(i * 7 + j * 5) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (mut worst, mut same) = (0f64, 0);
    for chunk in refs.chunks(16) {
        let a = classifier.classify(chunk).unwrap();
        let b = f32_classifier.classify(chunk).unwrap();
        for (a, b) in a.iter().zip(&b) {
            if a.label == b.label {
                same += 1;
                worst = worst.max((a.score - b.score).abs() as f64);
            } else {
                worst = worst.max((a.score - (1.0 - b.score)).abs() as f64);
            }
        }
    }
    (worst, same, refs.len())
}

fn options() -> ClassifierOptions {
    ClassifierOptions {
        threads: Some(threads()),
        max_length: None,
        precision: precision(),
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Median of `runs` timings of `f`, after one warm-up call.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let dir = fixture_dir();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let weights_mib =
        std::fs::metadata(checkpoint.weights_path()).unwrap().len() as f64 / 1048576.0;
    // SAFETY: single-threaded here; candle's GEMM reads this to split work.
    unsafe { model_cache::threads::export_thread_count(threads()) };

    // Warm the page cache, then measure RSS of a process that has loaded once.
    let rss_before = rss_mib();
    let classifier = Classifier::load(&checkpoint, &options()).unwrap();
    let rss_after = rss_mib();
    let load = median_of(5, || {
        Classifier::load(&checkpoint, &options()).unwrap();
    });

    let short = model_cache::fixture::text_of_tokens(&classifier, 16, 0).unwrap();
    let long = model_cache::fixture::text_of_tokens(&classifier, 128, 0).unwrap();
    // MODEL_BENCH_QUICK=1: only the summary figures below, for quick A/B comparisons.
    let quick = std::env::var_os("MODEL_BENCH_QUICK").is_some();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    if !quick {
        let mut group = criterion.benchmark_group("batch1");
        for (name, text) in [("16_tokens", &short), ("128_tokens", &long)] {
            group.bench_function(name, |b| b.iter(|| classifier.classify(&[text]).unwrap()));
        }
        group.finish();
    }
    if !quick {
        let mut group = criterion.benchmark_group("throughput_16_tokens");
        for batch in [8usize, 32] {
            let texts: Vec<&str> = std::iter::repeat_n(short.as_str(), batch).collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &texts, |b, texts| {
                b.iter(|| classifier.classify(texts).unwrap())
            });
        }
        group.finish();
    }
    criterion.final_summary();

    // The figures the README's table quotes, measured directly (medians).
    let p50_short = median_of(31, || {
        classifier.classify(&[short.as_str()]).unwrap();
    });
    let p50_long = median_of(15, || {
        classifier.classify(&[long.as_str()]).unwrap();
    });
    let per_second = |batch: usize| {
        let texts: Vec<&str> = std::iter::repeat_n(short.as_str(), batch).collect();
        let t = median_of(7, || {
            classifier.classify(&texts).unwrap();
        });
        batch as f64 / t.as_secs_f64()
    };
    let (tp8, tp32) = (per_second(8), per_second(32));
    let info = classifier.info();
    println!(
        "\n== model-cache summary: full-size DistilBERT fixture, {} threads, {} ({}) ==",
        threads(),
        info.compute_dtype,
        info.kernel
    );
    println!(
        "load (warm page cache, median of 5) : {:>8.1} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "RSS after load                      : {:>8.1} MiB ({:.2}x the {:.0} MiB f32 weights; {:.0} MiB before load)",
        rss_after,
        rss_after / weights_mib,
        weights_mib,
        rss_before
    );
    println!(
        "batch 1, 16 tokens, p50             : {:>8.2} ms",
        p50_short.as_secs_f64() * 1e3
    );
    println!(
        "batch 1, 128 tokens, p50            : {:>8.2} ms",
        p50_long.as_secs_f64() * 1e3
    );
    println!("batch 8, 16 tokens                  : {tp8:>8.1} seq/s");
    println!("batch 32, 16 tokens                 : {tp32:>8.1} seq/s");
    let drift = (info.compute_dtype != "f32").then(|| drift_from_f32(&checkpoint, &classifier));
    if let Some((worst, same, total)) = drift {
        println!(
            "drift from f32 (64 texts)           : max |score diff| {worst:.2e}, same label {same}/{total}"
        );
    }

    if let Some(path) = std::env::var_os("MODEL_BENCH_JSON") {
        let summary = serde_json::json!({
            "engine": "candle (model-cache)",
            "threads": threads(),
            "precision": info.compute_dtype,
            "kernel": info.kernel,
            "max_score_drift_from_f32": drift.map(|d| d.0),
            "same_label_as_f32": drift.map(|d| format!("{}/{}", d.1, d.2)),
            "load_ms": load.as_secs_f64() * 1e3,
            "rss_after_load_mib": rss_after,
            "rss_before_load_mib": rss_before,
            "weights_mib": weights_mib,
            "batch1_16_p50_ms": p50_short.as_secs_f64() * 1e3,
            "batch1_128_p50_ms": p50_long.as_secs_f64() * 1e3,
            "batch8_seq_per_s": tp8,
            "batch32_seq_per_s": tp32,
        });
        std::fs::write(path, summary.to_string()).unwrap();
    }
}
