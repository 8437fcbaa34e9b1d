//! Benchmark of the CLI against a moto server on loopback: `stack up` from nothing and
//! `stack diff` on the converged stack (targets: ≤ 15 s and ≤ 1.5 s).
//!
//! Run with `cargo bench -p stack --bench stack_cli`. Under `cargo test --all-targets`
//! (no `--bench` flag) it only checks that it starts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn stats(name: &str, mut xs: Vec<Duration>, target: f64) {
    xs.sort();
    let secs = |d: &Duration| d.as_secs_f64();
    let median = secs(&xs[xs.len() / 2]);
    println!(
        "{name:<32} n={:<3} min {:>6.3}s  median {:>6.3}s  max {:>6.3}s  (target ≤ {target}s: {})",
        xs.len(),
        secs(&xs[0]),
        median,
        secs(&xs[xs.len() - 1]),
        if median <= target { "met" } else { "MISSED" }
    );
}

fn timed(p: &common::Project, args: &[&str], expect: i32) -> Duration {
    let t = Instant::now();
    let out = p
        .cmd(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run stack");
    let d = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(expect),
        "stack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stack_cli: benchmark skipped (run `cargo bench -p stack --bench stack_cli`)");
        return;
    }
    let m = common::moto();
    let p = common::Project::new(&m.url, "bench");
    let rounds = std::env::var("STACK_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    let mut diffs = Vec::new();
    for _ in 0..rounds {
        ups.push(timed(&p, &["up", "--yes"], 0));
        for _ in 0..5 {
            diffs.push(timed(&p, &["diff"], 0));
        }
        downs.push(timed(&p, &["down", "--yes"], 0));
    }
    println!(
        "stack CLI against moto on loopback, {} resources:",
        common::ALL_RESOURCES
    );
    stats("stack up --yes (from nothing)", ups, 15.0);
    stats("stack diff (converged)", diffs, 1.5);
    stats("stack down --yes", downs, 15.0);
}
