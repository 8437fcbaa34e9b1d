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
//!
//! With `--server <sentiment-server binary>` it measures the Kubernetes server instead,
//! with the same client, text and thread count, for the "warm p50 within 10% of the
//! server's" comparison: "init" is then spawn → first 200 and the function columns
//! are the server's `x-inference-time`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use lambda_emulator::{Emulator, EmulatorConfig};

#[derive(Parser)]
struct Cli {
    #[arg(long, required_unless_present = "server")]
    bootstrap: Option<PathBuf>,
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
    /// Measure this sentiment-server binary instead of the Lambda function.
    #[arg(long)]
    server: Option<PathBuf>,
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

/// The row for the sentiment-server: same client, text and threads as the function.
fn measure_server(cli: &Cli, server: &std::path::Path) -> Result<()> {
    let threads = model_cache::threads::lambda_vcpus(cli.memory_mb);
    let spawn = || -> Result<(std::process::Child, SocketAddr)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = std::process::Command::new(server)
            .args([
                "--bind",
                &addr.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .arg("--model-dir")
            .arg(&cli.model_dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        Ok((child, addr))
    };
    // Readiness is polled with GET /readyz, as a load balancer would: a POST /predict
    // refused before the model is ready leaves its body unread, and actix then holds
    // the connection for its 1 s client-disconnect timeout.
    let ready = |addr: SocketAddr| -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let mut raw = String::new();
        write!(
            stream,
            "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .is_ok()
            && stream.read_to_string(&mut raw).is_ok()
            && raw.starts_with("HTTP/1.1 200")
    };
    let first_200 = |addr: SocketAddr| -> Result<Duration> {
        let started = Instant::now();
        loop {
            if ready(addr) && matches!(post(addr), Ok((_, 200, _))) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the server never answered 200");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut inits = Vec::new();
    for _ in 0..cli.cold {
        let (mut child, addr) = spawn()?;
        let elapsed = first_200(addr);
        child.kill()?;
        child.wait()?;
        inits.push(ms(elapsed?));
    }
    let (mut child, addr) = spawn()?;
    first_200(addr)?;
    let mut warms = Vec::with_capacity(cli.warm);
    let mut inference = Vec::with_capacity(cli.warm);
    for _ in 0..cli.warm {
        let (elapsed, status, raw) = post(addr)?;
        if status != 200 {
            bail!("server request failed: {raw}");
        }
        warms.push(ms(elapsed));
        if let Some(v) = raw
            .lines()
            .find_map(|l| l.strip_prefix("x-inference-time: "))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            inference.push(v);
        }
    }
    child.kill()?;
    child.wait()?;
    for v in [&mut inits, &mut warms, &mut inference] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "| sentiment-server, {} threads, {} | {:.0} (spawn → first 200) | — | {:.1} | {:.1} | {} (inference) | — |",
        threads,
        cli.model_dir.display(),
        percentile(&inits, 50.0),
        percentile(&warms, 50.0),
        percentile(&warms, 99.0),
        if inference.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{:.1}", percentile(&inference, 50.0))
        },
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(server) = &cli.server {
        return tokio::task::block_in_place(|| measure_server(&cli, server));
    }
    let mut config = EmulatorConfig::new(cli.bootstrap.as_ref().context("--bootstrap")?);
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
