//! Times several precisions on one checkpoint in one process, interleaved call by
//! call, so each sees the same fast and slow moments of a shared host (separate
//! processes here differ by 1.5-3x from minute to minute), and prints each one's
//! score drift from the first:
//!
//! `cargo run --release -p model-cache --example precision_ab -- <model dir> [tokens]
//! [calls] [precisions] [batch] [threads]`, e.g. `.cache/fixtures/full-f32 150 30
//! f32,bf16x3,bf16` (threads: the CPUs this process may use unless given).

use std::path::Path;
use std::time::Instant;

use model_cache::fixture::text_of_tokens;
use model_cache::{Checkpoint, Classifier, ClassifierOptions, Precision};

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let dir: String = arg(1, ".cache/fixtures/full-f32".to_string());
    let tokens: usize = arg(2, 150);
    let calls: usize = arg(3, 30);
    let precisions: Vec<Precision> = arg(4, "f32,bf16x3,bf16".to_string())
        .split(',')
        .map(|p| p.parse().expect("a precision"))
        .collect();
    let batch: usize = arg(5, 1);
    let threads = Some(arg(6, 0usize)).filter(|&n| n > 0);
    let checkpoint = Checkpoint::open(Path::new(&dir)).expect("a checkpoint directory");
    let classifiers: Vec<Classifier> = precisions
        .iter()
        .map(|&precision| {
            let options = ClassifierOptions {
                precision,
                threads,
                ..ClassifierOptions::default()
            };
            Classifier::load(&checkpoint, &options).expect("loads")
        })
        .collect();
    let texts: Vec<String> = (0..batch.max(16))
        .map(|i| text_of_tokens(&classifiers[0], tokens, i).unwrap())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let baseline = classifiers[0].classify(&refs).unwrap();
    for (precision, classifier) in precisions.iter().zip(&classifiers) {
        let got = classifier.classify(&refs).unwrap();
        let drift = got
            .iter()
            .zip(&baseline)
            .map(|(a, b)| {
                if a.label == b.label {
                    (a.score - b.score).abs()
                } else {
                    (a.score - (1.0 - b.score)).abs()
                }
            })
            .fold(0f32, f32::max);
        let kernel = &classifier.info().kernel;
        println!(
            "{precision} ({kernel}): max |score diff| vs {} over {} texts {drift:.1e}",
            precisions[0],
            refs.len()
        );
    }

    let mut times = vec![Vec::with_capacity(calls); classifiers.len()];
    for _ in 0..calls {
        for (classifier, times) in classifiers.iter().zip(&mut times) {
            let start = Instant::now();
            classifier.classify(&refs[..batch]).unwrap();
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (precision, times) in precisions.iter().zip(&mut times) {
        times.sort_by(f64::total_cmp);
        println!(
            "{precision}: batch {batch} x {tokens} tokens, p50 {:.1} ms, min {:.1} ms over {calls} interleaved calls",
            times[times.len() / 2],
            times[0]
        );
    }
}
