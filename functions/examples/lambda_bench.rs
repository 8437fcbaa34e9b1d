//! Init and latency of the Lambda function under the emulator, for one checkpoint:
//!
//! - init duration (process start → ready for the first event), median of `--cold` runs,
//!   each a fresh emulator and a fresh `bootstrap` process;
//! - the cold request end to end through the HTTP front (connect → answer);
//! - warm p50/p99 at concurrency 1 over `--warm` sequential requests.
//!
//! `cargo run --release -p sentiment-lambda --example lambda_bench -- \
//!    --bootstrap target/release/bootstrap --model-dir .cache/fixtures/full-f16`
//! (`scripts/bench-lambda.sh` runs it for the f32 and f16 checkpoints.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sentiment_lambda::emulator::{Emulator, EmulatorConfig};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    bootstrap: PathBuf,
    #[arg(long)]
    model_dir: PathBuf,
    /// Cold starts to take the median of.
    #[arg(long, default_value_t = 5)]
    cold: usize,
    /// Warm requests for p50/p99.
    #[arg(long, default_value_t = 200)]
    warm: usize,
    /// Function memory size (sets the thread count like Lambda: 1 vCPU per 1,769 MB).
    #[arg(long, default_value_t = 3538)]
    memory_mb: u32,
}

const BODY: &str = r#"{"text": "The film was a delight from start to finish, with sharp writing and a generous heart."}"#;

fn post(addr: SocketAddr) -> Result<(Duration, u16, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let elapsed = started.elapsed();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((elapsed, status, raw))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut config = EmulatorConfig::new(&cli.bootstrap);
    config.env = vec![
        ("MODEL_DIR".into(), cli.model_dir.display().to_string()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    config.memory_mb = cli.memory_mb;
    config.print_reports = false;

    let mut inits = Vec::new();
    let mut colds = Vec::new();
    let mut memory = 0;
    for _ in 0..cli.cold {
        let emulator = Emulator::start(config.clone(), "127.0.0.1:0".parse()?).await?;
        let addr = emulator.addr();
        let (elapsed, status, raw) = tokio::task::spawn_blocking(move || post(addr)).await??;
        if status != 200 {
            bail!("cold request failed: {raw}");
        }
        let report = emulator.reports().pop().context("no report")?;
        inits.push(ms(report
            .init_duration
            .context("cold start without init")?));
        colds.push(ms(elapsed));
        memory = report.max_memory_used_mb;
        emulator.shutdown();
        // Let the killed process exit before the next cold start measures.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let emulator = Emulator::start(config.clone(), "127.0.0.1:0".parse()?).await?;
    let addr = emulator.addr();
    let warm = cli.warm;
    let mut warms = tokio::task::spawn_blocking(move || -> Result<_> {
        post(addr)?; // the cold one
        let mut warms = Vec::with_capacity(warm);
        for _ in 0..warm {
            let (elapsed, status, raw) = post(addr)?;
            if status != 200 || !raw.contains("x-lambda-cold: false") {
                bail!("warm request was not a warm 200: {raw}");
            }
            warms.push(ms(elapsed));
        }
        Ok(warms)
    })
    .await??;
    let mut durations: Vec<f64> = emulator
        .reports()
        .iter()
        .skip(1)
        .map(|r| ms(r.duration))
        .collect();
    emulator.shutdown();

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 50.0)
    };
    warms.sort_by(f64::total_cmp);
    durations.sort_by(f64::total_cmp);
    println!(
        "| {} | {:.0} ({}) | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
        cli.model_dir.display(),
        median(&mut inits),
        inits
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        median(&mut colds),
        percentile(&warms, 50.0),
        percentile(&warms, 99.0),
        percentile(&durations, 50.0),
        memory,
    );
    Ok(())
}
