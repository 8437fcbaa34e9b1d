//! `bench`: load generation and measurement against the sentiment backends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bench::check::{self, CheckConfig, Verdict};
use bench::corpus::{Corpus, Texts};
use bench::cost;
use bench::loopback::Loopback;
use bench::parse_duration;
use bench::runner::{self, DEFAULT_LATE_THRESHOLD, DEFAULT_MAX_IN_FLIGHT, Mode, RunConfig};
use bench::schedule::{self, Profile, Spec};
use bench::simulate;
use bench::stats::{self, Summary};
use bench::targets::{self, Target};
use bench::{lambda_logs, lambda_metrics, platform, server_metrics};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    about = "Load and measure the Lambda, Kubernetes and router endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send load to the backends and measure it.
    Run(RunArgs),
    /// Measure the highest open-loop rate this process keeps to, against an
    /// in-process loopback server.
    Selftest(SelftestArgs),
    /// Write the Markdown report and the SVG/PNG plots of a run's results.json.
    Report(ReportArgs),
    /// The integration suite against the live endpoints: known texts, a batch, every
    /// bad input class, probes, metrics, timing headers, the router's failover.
    Check(CheckArgs),
    /// What the platforms recorded: the Lambda's REPORT lines from CloudWatch Logs and
    /// the servers' Prometheus /metrics.
    Metrics(MetricsArgs),
    /// A month of traffic on each side: cost per month and per million requests, and
    /// the break-even rate, from a run's measurements and the prices file.
    Cost(CostArgs),
    /// A discrete-event simulation of both sides at rates past what one machine can
    /// serve (1 to 10,000 req/s), driven by a live run's distributions or defaults:
    /// latency percentiles, 429/503 shares, cold starts, instances over time, cost.
    Simulate(SimulateArgs),
    /// Simulate a live run with its own distributions and schedule and compare p50/p99
    /// per backend; exit 1 beyond the tolerance.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[arg(long, value_enum, default_value = "constant")]
    profile: simulate::arrivals::SimProfile,
    /// Requests per second (the peak for step, ramp, spike and daily).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: Duration,
    /// Steps of the step profile.
    #[arg(long, default_value_t = 4)]
    steps: u32,
    /// Burst of the spike profile (at the end of the duration).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    burst: Duration,
    /// Daily profile: the trough as a share of the peak (at 0 h; the peak at 12 h).
    #[arg(long, default_value_t = 0.2)]
    trough: f64,
    /// Trace profile: one send time per line, seconds (as `bench run --trace`).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Arrival spacing: exponential gaps (poisson) or exactly 1/rate (uniform, as
    /// `bench run` sends).
    #[arg(long, value_enum, default_value = "poisson")]
    arrivals: simulate::arrivals::Spacing,
    /// Text lengths: short (10 words), medium (60), long (400), mix (6:3:1), mix=S:M:L
    /// [default: --inputs' lengths, else mix].
    #[arg(long)]
    texts: Option<Texts>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A `bench run` folder (or its results.json) whose distributions drive the model;
    /// without, hand-entered defaults (the output says which).
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Where simulate.json, simulate.md and the plots go [default:
    /// bench/results/sim-<profile>-<rate>-s<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Timeline bucket [default: duration / 600, at least 1 s].
    #[arg(long, value_parser = parse_duration)]
    bucket: Option<Duration>,
    /// Lambda: the account's (or reserved) concurrency.
    #[arg(long, default_value_t = 1000)]
    lambda_concurrency: u64,
    /// Lambda: how long an idle environment lives.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    keep_alive: Duration,
    /// Lambda: new environments per 10 s (AWS: 1,000).
    #[arg(long, default_value_t = 1000.0)]
    burst_scaling: f64,
    /// Kubernetes: the HPA's minimum and maximum replicas (the stack's 2 and 6).
    #[arg(long, default_value_t = 2)]
    min_replicas: u32,
    #[arg(long, default_value_t = 6)]
    max_replicas: u32,
    /// Kubernetes: HPA off, this many replicas.
    #[arg(long)]
    replicas: Option<u32>,
    /// The HPA's CPU target, percent of the request.
    #[arg(long, default_value_t = 70.0)]
    cpu_target: f64,
    /// The HPA's scale-down stabilization window.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    scale_down_window: Duration,
    /// The server's batching (cluster/src/config.rs defaults).
    #[arg(long, default_value_t = 32)]
    max_batch: u32,
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    max_wait: Duration,
    #[arg(long, default_value_t = 256)]
    queue_capacity: u32,
    /// How the Service spreads requests over ready pods.
    #[arg(long, value_enum, default_value = "round-robin")]
    balancing: simulate::k8s::Balancing,
    /// Node group: instance type (priced from the prices file), min, initial, max nodes.
    #[arg(long, default_value = "c5.2xlarge")]
    instance_type: String,
    #[arg(long, default_value_t = 2000)]
    pod_cpu_m: u32,
    #[arg(long, default_value_t = 1)]
    min_nodes: u32,
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    #[arg(long, default_value_t = 3)]
    max_nodes: u32,
    /// A new node: scan, EC2 launch, join, Ready.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    node_delay: Duration,
    /// Image pull on a node without the image.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    image_pull: Duration,
    /// Container start, model load, first readiness probe.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pod_start: Duration,
    /// A prices file [default: the built-in bench/prices/aws-us-east-1.toml].
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Print simulate.json on stdout too.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// A `bench run` folder (or its results.json), open loop, with records.
    #[arg(value_name = "RUN_DIR")]
    run: PathBuf,
    /// Largest accepted |simulated − live| / live of p50 and p99.
    #[arg(long, default_value_t = 0.2)]
    tolerance: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pods when the run does not say (platform.k8s.pods_max).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// The Lambda's concurrency limit in the run (the local stack's is 10).
    #[arg(long, default_value_t = 1000)]
    lambda_concurrency: u64,
    /// Write the simulation's report here too.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

/// `daily`: a day between 20% of the peak and the peak (mean 60% of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CostProfile {
    Constant,
    Daily,
}

#[derive(Debug, Args)]
struct CostArgs {
    /// Mean request rates to price, req/s.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 10.0, 100.0, 1000.0, 10000.0])]
    rate: Vec<f64>,
    /// Traffic shape: nodes are sized for its peak.
    #[arg(long, value_enum, default_value = "constant")]
    profile: CostProfile,
    /// A `bench run` folder (or its results.json): billed ms per invocation and memory
    /// from its REPORT lines, per-pod throughput at the p99 target, request sizes.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Billed ms per invocation, init included [default: measured by --inputs].
    #[arg(long)]
    lambda_ms: Option<f64>,
    /// The function's memory, MB [default: measured by --inputs, else 2048].
    #[arg(long)]
    lambda_memory: Option<f64>,
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: cost::Arch,
    #[arg(long, default_value = "t3.large")]
    instance_type: String,
    /// Nodes: a count, or `auto` for enough pods for the peak at --pod-rps each.
    #[arg(long, default_value = "auto")]
    nodes: String,
    /// The node group's minimum (auto sizing never goes below it).
    #[arg(long, default_value_t = 2)]
    min_nodes: u32,
    /// Requests per second one pod serves within --p99-target [default: measured by
    /// --inputs].
    #[arg(long)]
    pod_rps: Option<f64>,
    /// CPU one pod requests, millicores (the Deployment's request).
    #[arg(long, default_value_t = 1000)]
    pod_cpu_m: u32,
    /// The latency a second must meet for its throughput to count as the pod's.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    p99_target: Duration,
    /// Mean request body, KB [default: measured by --inputs, else 0.5].
    #[arg(long)]
    request_kb: Option<f64>,
    /// Mean response, KB (body and headers).
    #[arg(long, default_value_t = 0.4)]
    response_kb: f64,
    /// New load balancer connections per request (1: clients without keep-alive).
    #[arg(long, default_value_t = 0.1)]
    new_connections_per_request: f64,
    /// Take the monthly free tiers off (Lambda requests and GB-s, data out).
    #[arg(long)]
    free_tier: bool,
    /// A prices file [default: the built-in bench/prices/aws-us-east-1.toml].
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// A backend, NAME=URL with NAME lambda, k8s or router (repeat for more);
    /// without, the URLs come from `stack outputs --json`.
    #[arg(long = "target", value_parser = targets::parse_target)]
    targets: Vec<Target>,
    /// The `stack` binary that prints the outputs.
    #[arg(long, env = "BENCH_STACK_BIN", default_value = "target/debug/stack")]
    stack_bin: PathBuf,
    /// The known texts, one per line [default: the built-in bench/check/texts.txt].
    #[arg(long)]
    texts: Option<PathBuf>,
    /// The model's answers to the texts, as `model-cache predict` writes them (one JSON
    /// line per text); without it the backends are compared with each other only.
    #[arg(long, env = "BENCH_EXPECT")]
    expect: Option<PathBuf>,
    /// Largest accepted difference of a score from the expected one.
    #[arg(long, default_value_t = 1e-4)]
    score_tolerance: f32,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the outcomes as JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A backend, NAME=URL with NAME lambda, k8s or router (repeat for more);
    /// without, the URLs come from `stack outputs --json`.
    #[arg(long = "target", value_parser = targets::parse_target)]
    targets: Vec<Target>,
    /// The `stack` binary that prints the outputs.
    #[arg(long, env = "BENCH_STACK_BIN", default_value = "target/debug/stack")]
    stack_bin: PathBuf,
    /// Load profile (open loop); ignored with --concurrency.
    #[arg(long, env = "BENCH_PROFILE", value_enum, default_value = "constant")]
    profile: Profile,
    /// Requests per second (the peak for step, ramp and spike), to each backend.
    #[arg(long, env = "BENCH_RATE", default_value_t = 10.0)]
    rate: f64,
    /// Closed loop instead: this many workers per backend, back to back.
    #[arg(long, env = "BENCH_CONCURRENCY")]
    concurrency: Option<usize>,
    /// How long the load lasts.
    #[arg(long, env = "BENCH_DURATION", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// At most this many requests per backend.
    #[arg(long, env = "BENCH_REQUESTS")]
    requests: Option<usize>,
    /// Steps of the step profile.
    #[arg(long, default_value_t = 4)]
    steps: u32,
    /// Burst length of the spike profile (at the end of the duration).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    burst: Duration,
    /// Send times for the trace profile: seconds per line, optionally a word count.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// short, medium, long, mix (6:3:1), mix=S:M:L, or a file with one text per line.
    #[arg(long, env = "BENCH_TEXTS", default_value = "mix")]
    texts: Texts,
    /// Seed of the text choice.
    #[arg(long, env = "BENCH_SEED", default_value_t = 1)]
    seed: u64,
    /// Per-request timeout, connect to last byte.
    #[arg(long, env = "BENCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// A send this much later than scheduled counts as late.
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    late_threshold: Duration,
    /// Most requests in flight per backend; a request due beyond it waits and is
    /// counted as a late send (its latency still runs from its scheduled time).
    #[arg(long, env = "BENCH_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Where results.json goes [default: bench/results/run-<UTC timestamp>].
    #[arg(long, env = "BENCH_OUT")]
    out: Option<PathBuf>,
    /// The Lambda function whose REPORT lines give billed duration and cold starts
    /// [default: the stack's function_name output, when the endpoints come from it].
    #[arg(long, env = "BENCH_FUNCTION")]
    function: Option<String>,
    /// The region of the function's logs [default: AWS_REGION, the profile's, us-east-1].
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// How long to wait after the load for the REPORT lines to reach CloudWatch.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    logs_wait: Duration,
}

#[derive(Debug, Args)]
struct MetricsArgs {
    /// A backend, NAME=URL (k8s and router are scraped for /metrics); without, the
    /// URLs come from `stack outputs --json`.
    #[arg(long = "target", value_parser = targets::parse_target)]
    targets: Vec<Target>,
    /// The `stack` binary that prints the outputs and lists the pods.
    #[arg(long, env = "BENCH_STACK_BIN", default_value = "target/debug/stack")]
    stack_bin: PathBuf,
    /// The Lambda function [default: the stack's function_name output].
    #[arg(long, env = "BENCH_FUNCTION")]
    function: Option<String>,
    /// The region of the function's logs [default: AWS_REGION, the profile's, us-east-1].
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// How far back to read the REPORT lines.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    since: Duration,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SelftestArgs {
    /// The rates to try, requests per second.
    #[arg(long, value_delimiter = ',', default_values_t = [5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0])]
    rates: Vec<f64>,
    /// How long each rate runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Most requests in flight.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Highest share of late sends for a rate to count as kept.
    #[arg(long, default_value_t = 0.01)]
    max_late_share: f64,
    /// An unmeasured run at the first rate before the table, so that the process's
    /// one-time costs (first-touch memory, the first connections) do not land on the
    /// first measured rate; 0 to leave it out.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The run's results.json.
    #[arg(value_name = "RUN.json")]
    results: PathBuf,
    /// Where report.md and the plots go [default: the folder of RUN.json].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Run(args) => rt.block_on(run(args)),
        Command::Selftest(args) => rt.block_on(selftest(args)),
        Command::Report(args) => report(args),
        Command::Metrics(args) => rt.block_on(metrics(args)),
        Command::Cost(args) => cost_command(args),
        Command::Simulate(args) => simulate_command(args),
        Command::Validate(args) => {
            if !validate_command(args)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Check(args) => {
            if !rt.block_on(check(args))? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` of a time (UTC), for the results folder.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let endpoints = targets::endpoints(&a.targets, &a.stack_bin)?;
    let targets = endpoints.targets.clone();
    let corpus = Corpus::new(&a.texts, a.seed)?;
    let mode = match a.concurrency {
        Some(0) => bail!("--concurrency must be above 0"),
        Some(c) => Mode::Closed {
            concurrency: c,
            duration: a.duration,
            max_requests: a.requests,
        },
        None => {
            let schedule = match (a.profile, &a.trace) {
                (Profile::Trace, Some(path)) => {
                    schedule::from_trace(path, Some(a.duration), a.requests)?
                }
                (Profile::Trace, None) => bail!("--profile trace needs --trace FILE"),
                (profile, _) => schedule::generate(&Spec {
                    profile,
                    rate: a.rate,
                    duration: a.duration,
                    max_requests: a.requests,
                    steps: a.steps,
                    burst: a.burst,
                })?,
            };
            if schedule.is_empty() {
                bail!("the schedule is empty: raise --rate or --duration");
            }
            Mode::Open { schedule }
        }
    };
    let planned = match &mode {
        Mode::Open { schedule } => format!("{} requests", schedule.len()),
        Mode::Closed { concurrency, .. } => format!("closed loop, {concurrency} workers"),
    };
    eprintln!(
        "bench run: {} for {:?} ({planned} per backend) against {}",
        if a.concurrency.is_some() {
            "closed loop".to_string()
        } else {
            format!("{:?} {} req/s", a.profile, a.rate)
        },
        a.duration,
        targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.url))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let result = runner::run(RunConfig {
        targets: targets.clone(),
        mode,
        corpus,
        timeout: a.timeout,
        late_threshold: a.late_threshold,
        keep_records: true,
        max_in_flight: a.max_in_flight,
    })
    .await?;

    let summaries: BTreeMap<String, Summary> = result
        .stats
        .iter()
        .map(|(k, v)| (k.clone(), v.summary()))
        .collect();
    // What the platforms recorded over the run: only for endpoints of the stack (or a
    // function named by --function), since a URL alone says nothing of its logs.
    let from_stack = a.targets.is_empty();
    let function = a.function.clone().or(endpoints.function_name);
    let observed = platform::observe(
        function.as_deref(),
        a.region.as_deref(),
        from_stack.then_some(a.stack_bin.as_path()),
        result.started_at,
        result.wall,
        &result.records,
        a.logs_wait,
    )
    .await;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "bench/results/run-{}",
            utc_stamp(result.started_at)
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({
        "version": 1,
        "started_at": utc_stamp(result.started_at),
        "started_unix_s": result.started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
        "wall_s": result.wall.as_secs_f64(),
        "config": {
            "mode": if a.concurrency.is_some() { "closed" } else { "open" },
            "profile": a.profile,
            "rate": a.rate,
            "concurrency": a.concurrency,
            "duration_s": a.duration.as_secs_f64(),
            "requests": a.requests,
            "steps": a.steps,
            "burst_s": a.burst.as_secs_f64(),
            "trace": a.trace,
            "texts": format!("{:?}", a.texts),
            "seed": a.seed,
            "timeout_s": a.timeout.as_secs_f64(),
            "late_threshold_ms": a.late_threshold.as_secs_f64() * 1000.0,
            "max_in_flight": a.max_in_flight,
            "targets": targets,
        },
        "backends": summaries,
        "cold_starts": observed.cold_starts,
        "platform": observed.platform,
        "notes": observed.notes,
        "records": result.records,
    });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_vec(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print!("{}", stats::table(&summaries));
    print_platform(&observed);
    println!(
        "wall {:.1} s; results in {}",
        result.wall.as_secs_f64(),
        path.display()
    );
    bench::report::write_value(&json, &out).with_context(|| {
        format!(
            "writing the report (the results are in {}; retry with `bench report`)",
            path.display()
        )
    })?;
    println!("report in {}", out.join("report.md").display());
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let out = a.out.unwrap_or_else(|| match a.results.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    bench::report::write(&a.results, &out)?;
    println!("report in {}", out.join("report.md").display());
    Ok(())
}

fn print_platform(seen: &platform::Observed) {
    if let Some(l) = &seen.platform.lambda {
        println!(
            "lambda {}: {} invocations, {} cold (init p50 {:.0} ms, max {:.0} ms), billed {:.1} s at {} MB = {:.3} GB-s",
            l.function_name,
            l.invocations,
            l.report.cold_starts,
            l.report.init_ms.p50,
            l.report.init_ms.max,
            l.billed_ms / 1000.0,
            l.memory_mb,
            l.billed_gb_s
        );
    }
    if let Some(k) = &seen.platform.k8s {
        println!(
            "k8s: {} pod(s) at the end, {} started during the run, {:.1} pod-seconds",
            k.pods_max, k.pods_started, k.pod_seconds
        );
    }
    let matched = seen
        .cold_starts
        .iter()
        .filter(|c| !c.requests.is_empty())
        .count();
    if !seen.cold_starts.is_empty() {
        println!(
            "cold starts: {} ({} matched to the request they delayed)",
            seen.cold_starts.len(),
            matched
        );
    }
    for n in &seen.notes {
        println!("note: {n}");
    }
}

/// `bench metrics`: the REPORT lines of the last `--since` and each server's /metrics.
async fn metrics(a: MetricsArgs) -> anyhow::Result<()> {
    let from_stack = a.targets.is_empty();
    let targets::Endpoints {
        targets,
        function_name,
    } = targets::endpoints(&a.targets, &a.stack_bin)?;
    let function = a.function.clone().or(function_name);
    let mut out = serde_json::Map::new();
    if let Some(name) = &function {
        let endpoint = lambda_logs::endpoint_from_env();
        let logs = lambda_logs::client(endpoint.as_deref(), a.region.as_deref()).await;
        let group = lambda_logs::log_group_of(name);
        let end = SystemTime::now();
        let lines = lambda_logs::fetch(&logs, &group, end - a.since, end).await?;
        let s = lambda_logs::summarize(&lines);
        if !a.json {
            println!(
                "Lambda {name}: REPORT lines of the last {:?} in {group}",
                a.since
            );
            println!(
                "  invocations {}  errors {}  cold starts {}  init p50/max {:.0}/{:.0} ms",
                s.invocations, s.errors, s.cold_starts, s.init_ms.p50, s.init_ms.max
            );
            println!(
                "  duration p50 {:.1} ms  p90 {:.1}  p99 {:.1}  max {:.1}",
                s.duration_ms.p50, s.duration_ms.p90, s.duration_ms.p99, s.duration_ms.max
            );
            println!(
                "  billed {:.1} s at {} MB = {:.3} GB-s; max memory used {} MB",
                s.billed_ms / 1000.0,
                s.memory_mb,
                s.billed_gb_s,
                s.max_memory_used_mb
            );
        }
        out.insert("lambda".into(), serde_json::to_value(&s)?);
        let cw = lambda_metrics::client(endpoint.as_deref(), a.region.as_deref()).await;
        let m = lambda_metrics::fetch(&cw, name, end - a.since, end).await?;
        if !a.json {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
            if m.is_empty() {
                println!(
                    "  CloudWatch metrics (AWS/Lambda): no datapoints in the window{}",
                    if endpoint.is_some() {
                        " (the local stand-in publishes none)"
                    } else {
                        " (they lag a minute or two)"
                    }
                );
            } else {
                println!(
                    "  CloudWatch: invocations {}  errors {}  throttles {}  duration p50 {} ms  p99 {} ms  concurrency max {}",
                    opt(m.invocations),
                    opt(m.errors),
                    opt(m.throttles),
                    opt(m.duration_p50_ms),
                    opt(m.duration_p99_ms),
                    opt(m.concurrent_executions_max)
                );
            }
        }
        out.insert("cloudwatch".into(), serde_json::to_value(&m)?);
    } else if !a.json {
        println!("Lambda: no function name (--function, or the stack's function_name output)");
    }
    // Each server: the pods one by one where their addresses answer from here (the
    // local default), else the Service (one pod per scrape behind it).
    let mut scrapes: Vec<(String, String)> = Vec::new();
    if from_stack && let Ok(pods) = platform::pods(&a.stack_bin) {
        for p in pods.iter().filter(|p| p.phase == "Running") {
            if let Some(addr) = &p.address
                && addr.contains(':')
            {
                scrapes.push((format!("pod {}", p.name), format!("http://{addr}/metrics")));
            }
        }
    }
    if scrapes.is_empty()
        && let Some(t) = targets.iter().find(|t| t.name == "k8s")
    {
        scrapes.push((
            "k8s (one pod, through the Service)".into(),
            format!("{}/metrics", t.url.trim_end_matches('/')),
        ));
    }
    let client = runner::client()?;
    let mut servers = serde_json::Map::new();
    for (name, url) in scrapes {
        let text = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => {
                println!("{name}: {url} answered {}", r.status());
                continue;
            }
            Err(e) => {
                println!("{name}: {url}: {e}");
                continue;
            }
        };
        let s = server_metrics::summarize(&server_metrics::parse(&text));
        if !a.json {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
            println!(
                "{name}: /predict {} ({}), p50 ≤ {} ms, p99 ≤ {} ms, mean {} ms; batch size mean {}, queue depth {}, dropped {}, ready {}",
                s.predict_requests,
                s.predict_by_status
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                opt(s.predict_p50_ms),
                opt(s.predict_p99_ms),
                opt(s.predict_mean_ms),
                opt(s.batch_size_mean),
                opt(s.queue_depth),
                s.dropped,
                opt(s.ready)
            );
        }
        servers.insert(name, serde_json::to_value(&s)?);
    }
    out.insert("servers".into(), servers.into());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// `bench cost`: the bill at each rate, the break-even, the inputs and the sources.
fn cost_command(a: CostArgs) -> anyhow::Result<()> {
    let prices = cost::Prices::load(a.prices.as_deref())?;
    let measured = match &a.inputs {
        Some(path) => cost::measured(
            &simulate::validate::read_run(path)?,
            a.p99_target.as_secs_f64() * 1000.0,
        ),
        None => cost::Measured::default(),
    };
    let source = |flag: Option<f64>, measured: Option<f64>| match (flag, measured) {
        (Some(v), _) => Some((v, "flag")),
        (None, Some(v)) => Some((v, "measured")),
        (None, None) => None,
    };
    let Some((lambda_ms, lambda_ms_from)) = source(a.lambda_ms, measured.lambda_ms) else {
        bail!(
            "no Lambda duration: pass --inputs RUN_DIR (a bench run with the stack's REPORT lines) or --lambda-ms"
        );
    };
    let nodes = match a.nodes.as_str() {
        "auto" => None,
        n => Some(
            n.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--nodes {n:?} is neither auto nor a count above 0"))?,
        ),
    };
    let pod = source(a.pod_rps, measured.pod_rps);
    let (pod_rps, pod_rps_from) = match (pod, nodes) {
        (Some(p), _) => p,
        (None, Some(_)) => (0.0, "unused"),
        (None, None) => bail!(
            "no per-pod throughput for --nodes auto: pass --inputs RUN_DIR (a run with a k8s backend whose seconds met --p99-target) or --pod-rps"
        ),
    };
    let (memory, memory_from) =
        source(a.lambda_memory, measured.lambda_memory_mb).unwrap_or((2048.0, "default"));
    let (request_kb, request_kb_from) =
        source(a.request_kb, measured.request_kb).unwrap_or((0.5, "default"));
    let w = cost::Workload {
        lambda_ms,
        lambda_memory_mb: memory,
        arch: a.arch,
        request_kb,
        response_kb: a.response_kb,
        instance_type: a.instance_type.clone(),
        nodes,
        pod_rps,
        pod_cpu_m: a.pod_cpu_m,
        min_nodes: a.min_nodes,
        peak_factor: match a.profile {
            CostProfile::Constant => 1.0,
            CostProfile::Daily => 1.0 / 0.6,
        },
        new_connections_per_request: a.new_connections_per_request,
        free_tier: a.free_tier,
    };
    let bills = a
        .rate
        .iter()
        .map(|r| cost::bill(*r, &w, &prices))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let max_rate = a.rate.iter().copied().fold(10_000.0, f64::max) * 10.0;
    let break_even = cost::break_even(&w, &prices, max_rate)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "workload": w,
                "inputs": {
                    "lambda_ms": lambda_ms_from, "lambda_memory_mb": memory_from,
                    "pod_rps": pod_rps_from, "request_kb": request_kb_from,
                },
                "bills": bills,
                "break_even_rps": break_even,
                "region": prices.region,
                "sources": prices.sources(),
            }))?
        );
        return Ok(());
    }
    println!(
        "{:>9} {:>14} {:>6} {:>14} {:>14} {:>10} {:>10}  cheaper",
        "req/s", "requests/mo", "nodes", "Lambda $/mo", "k8s $/mo", "Lambda $/M", "k8s $/M"
    );
    for b in &bills {
        println!(
            "{:>9} {:>14.0} {:>6} {:>14.2} {:>14.2} {:>10.2} {:>10.2}  {}",
            b.rate,
            b.requests_per_month,
            b.nodes,
            b.lambda_total,
            b.k8s_total,
            b.lambda_per_million,
            b.k8s_per_million,
            if b.lambda_total <= b.k8s_total {
                "Lambda"
            } else {
                "Kubernetes"
            }
        );
    }
    match break_even {
        Some(r) => println!(
            "break-even: Kubernetes costs no more than Lambda from {r:.1} req/s ({:.1} M requests a month)",
            r * prices.seconds_per_month() / 1e6
        ),
        None => println!("break-even: Lambda stays cheaper up to {max_rate} req/s"),
    }
    println!(
        "inputs: {lambda_ms:.1} ms billed per invocation ({lambda_ms_from}) at {memory} MB ({memory_from}), {}; \
         {} x {} with pods of {}m CPU serving {pod_rps:.1} req/s each ({pod_rps_from}, p99 within {:?}), at least {} node(s){}; \
         requests {request_kb:.2} KB ({request_kb_from}), responses {} KB; {} new LB connection(s) per request; free tier {}",
        match a.arch {
            cost::Arch::X86_64 => "x86_64",
            cost::Arch::Arm64 => "arm64",
        },
        nodes.map_or("auto".to_string(), |n| n.to_string()),
        a.instance_type,
        a.pod_cpu_m,
        a.p99_target,
        a.min_nodes,
        if a.profile == CostProfile::Daily {
            ", sized for the daily peak (1.67 x the mean)"
        } else {
            ""
        },
        a.response_kb,
        a.new_connections_per_request,
        if a.free_tier { "on" } else { "off" }
    );
    println!("prices ({}):", prices.region);
    for s in prices.sources() {
        println!("  {s}");
    }
    Ok(())
}

/// Runs `bench check`; whether every check passed.
async fn check(a: CheckArgs) -> anyhow::Result<bool> {
    let targets = targets::resolve(&a.targets, &a.stack_bin)?;
    let texts = match &a.texts {
        Some(path) => check::parse_texts(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading the texts {}", path.display()))?,
        ),
        None => check::parse_texts(check::KNOWN_TEXTS),
    };
    let expected = match &a.expect {
        Some(path) => Some(check::read_expected(path, texts.len())?),
        None => None,
    };
    let outcomes = check::run(&CheckConfig {
        targets: targets.clone(),
        texts,
        expected,
        score_tolerance: a.score_tolerance,
        timeout: a.timeout,
    })
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for o in &outcomes {
            let verdict = match o.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            println!("{verdict} {:<6} {:<44} {}", o.backend, o.check, o.detail);
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let passed = check::all_passed(&outcomes);
    let line = format!(
        "bench check: {} against {}{}",
        check::summary(&outcomes),
        names.join(", "),
        if a.expect.is_none() {
            " (no --expect: answers compared across backends, not with the model)"
        } else {
            ""
        }
    );
    // The summary closes the table; with --json it goes to stderr, out of the JSON.
    if a.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(passed)
}

fn simulate_command(a: SimulateArgs) -> anyhow::Result<()> {
    use simulate::arrivals::SimProfile;
    let prices = cost::Prices::load(a.prices.as_deref())?;
    let mut c = simulate::SimConfig::new(a.profile, a.rate, a.duration.as_secs_f64(), a.seed);
    c.curve.steps = a.steps;
    c.curve.burst_s = a.burst.as_secs_f64();
    c.curve.trough = a.trough;
    c.spacing = a.arrivals;
    c.bucket_s = a.bucket.map_or(0.0, |b| b.as_secs_f64());
    match (a.profile, &a.trace) {
        (SimProfile::Trace, Some(path)) => {
            let planned = schedule::from_trace(path, Some(a.duration), None)?;
            c.trace = Some(planned.iter().map(|p| p.at.as_secs_f64()).collect());
        }
        (SimProfile::Trace, None) => bail!("--profile trace needs --trace FILE"),
        _ => {}
    }
    if let Some(dir) = &a.inputs {
        c.inputs = simulate::inputs::Inputs::from_run(&simulate::validate::read_run(dir)?);
    }
    if let Some(t) = &a.texts {
        let (short, medium, long) = match t {
            Texts::Short => (1, 0, 0),
            Texts::Medium => (0, 1, 0),
            Texts::Long => (0, 0, 1),
            Texts::Mix {
                short,
                medium,
                long,
            } => (*short, *medium, *long),
            Texts::File(_) => bail!("bench simulate takes short, medium, long or mix=S:M:L"),
        };
        c.inputs.words = simulate::inputs::Words::Mix {
            short,
            medium,
            long,
        };
        c.inputs.sources.insert(
            "words",
            format!("--texts {short}:{medium}:{long} (short:medium:long)"),
        );
    }
    c.lambda.concurrency = a.lambda_concurrency;
    c.lambda.keep_alive_s = a.keep_alive.as_secs_f64();
    c.lambda.burst = a.burst_scaling;
    let k = &mut c.k8s;
    k.min_replicas = a.min_replicas.max(1);
    k.max_replicas = a.max_replicas.max(k.min_replicas);
    k.fixed_replicas = a.replicas;
    k.cpu_target = a.cpu_target / 100.0;
    k.stabilization_s = a.scale_down_window.as_secs_f64();
    k.max_batch = a.max_batch.max(1);
    k.max_wait_ms = a.max_wait.as_secs_f64() * 1000.0;
    k.queue_capacity = a.queue_capacity.max(1);
    k.balancing = a.balancing;
    k.instance_type = a.instance_type.clone();
    k.pod_cpu_m = a.pod_cpu_m;
    k.min_nodes = a.min_nodes;
    k.initial_nodes = a.nodes;
    k.max_nodes = a.max_nodes.max(a.nodes);
    k.node_delay_s = a.node_delay.as_secs_f64();
    k.image_pull_s = a.image_pull.as_secs_f64();
    k.pod_start_s = a.pod_start.as_secs_f64();
    let started = std::time::Instant::now();
    let r = simulate::run(&c, &prices)?;
    let wall = started.elapsed().as_secs_f64();
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(
            format!("bench/results/sim-{:?}-{}-s{}", a.profile, a.rate, a.seed).to_lowercase(),
        )
    });
    let written = simulate::report::write(&r, &out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    print!("{}", simulate::table(&r));
    for n in &r.notes {
        println!("note: {n}");
    }
    println!(
        "simulated {} + {} requests in {wall:.2} s of wall time; wrote {} files to {}",
        r.lambda.summary.requests,
        r.k8s.summary.requests,
        written.len(),
        out.display()
    );
    Ok(())
}

fn validate_command(a: ValidateArgs) -> anyhow::Result<bool> {
    let prices = cost::Prices::load(a.prices.as_deref())?;
    let run = simulate::validate::read_run(&a.run)?;
    let cfg = simulate::validate::config_for(&run, a.seed, a.replicas, a.lambda_concurrency)?;
    let v = simulate::validate::validate(&run, &cfg, &prices, a.tolerance)?;
    if let (Some(out), Some(sim)) = (&a.out, &v.simulation) {
        simulate::report::write(sim, out)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", simulate::validate::table(&v));
    }
    Ok(v.passed)
}

async fn selftest(a: SelftestArgs) -> anyhow::Result<()> {
    // The server on a thread and runtime of its own: the generator keeps the runtime
    // that `bench run` gives it, and the server's work is not queued among its tasks.
    let server = Loopback::start_on_thread(Duration::ZERO)?;
    let target = Target {
        name: "loopback".into(),
        url: server.url(),
    };
    let corpus = Corpus::new(&Texts::Short, 1)?;
    let config = |rate: f64, duration: Duration| -> anyhow::Result<RunConfig> {
        let schedule = schedule::generate(&Spec::constant(rate, duration))?;
        Ok(RunConfig {
            targets: vec![target.clone()],
            mode: Mode::Open { schedule },
            corpus: corpus.clone(),
            timeout: Duration::from_secs(10),
            late_threshold: DEFAULT_LATE_THRESHOLD,
            keep_records: false,
            max_in_flight: a.max_in_flight,
        })
    };
    if let Some(&rate) = a.rates.first().filter(|_| !a.warmup.is_zero()) {
        runner::run(config(rate, a.warmup)?).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warmup_hits = server.hits();
    println!(
        "{:>9} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "rate",
        "planned",
        "answered",
        "late",
        "late%",
        "lag p99ms",
        "lag max",
        "errors",
        "lat p99ms"
    );
    let mut best = None;
    for &rate in &a.rates {
        let cfg = config(rate, a.duration)?;
        let planned = match &cfg.mode {
            Mode::Open { schedule } => schedule.len(),
            Mode::Closed { .. } => 0,
        };
        let result = runner::run(cfg).await?;
        let s = result.stats.get("loopback").map(|s| s.summary());
        let Some(s) = s else { continue };
        let late_share = s.late_sends as f64 / planned.max(1) as f64;
        let errors = s.requests - s.ok;
        let kinds = s
            .errors
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:>9.0} {:>8} {:>8} {:>8} {:>9.2}% {:>10.2} {:>10.2} {:>8} {:>10.2} {}",
            rate,
            planned,
            s.ok,
            s.late_sends,
            late_share * 100.0,
            s.send_lag_ms.p99,
            s.send_lag_ms.max,
            errors,
            s.latency_ms.p99,
            kinds
        );
        if late_share <= a.max_late_share && errors == 0 {
            best = Some(rate);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match best {
        Some(r) => println!(
            "highest rate kept (late sends <= {:.1}%, no errors): {r:.0} req/s",
            a.max_late_share * 100.0
        ),
        None => println!("no rate tried was kept"),
    }
    println!(
        "loopback server answered {} requests",
        server.hits() - warmup_hits
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        let at = |s| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_700_000_000), "20231114T221320Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn the_issue_cli_shape_parses() {
        let cli = Cli::try_parse_from([
            "bench",
            "run",
            "--target",
            "lambda=http://a",
            "--target",
            "k8s=http://b",
            "--profile",
            "spike",
            "--rate",
            "50",
            "--duration",
            "10s",
            "--out",
            "x",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.targets.len(), 2);
        assert_eq!(a.profile, Profile::Spike);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.texts, Texts::DEFAULT_MIX);
    }
}
