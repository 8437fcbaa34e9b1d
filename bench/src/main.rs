//! `bench`: load generation and measurement against the sentiment backends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bench::check::{self, CheckConfig, Verdict};
use bench::corpus::{Corpus, Texts};
use bench::loopback::Loopback;
use bench::parse_duration;
use bench::runner::{self, DEFAULT_LATE_THRESHOLD, DEFAULT_MAX_IN_FLIGHT, Mode, RunConfig};
use bench::schedule::{self, Profile, Spec};
use bench::stats::{self, Summary};
use bench::targets::{self, Target};
use bench::{lambda_logs, platform, server_metrics};
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
    /// The integration suite against the live endpoints: known texts, a batch, every
    /// bad input class, probes, metrics, timing headers, the router's failover.
    Check(CheckArgs),
    /// What the platforms recorded: the Lambda's REPORT lines from CloudWatch Logs and
    /// the servers' Prometheus /metrics.
    Metrics(MetricsArgs),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Run(args) => rt.block_on(run(args)),
        Command::Selftest(args) => rt.block_on(selftest(args)),
        Command::Metrics(args) => rt.block_on(metrics(args)),
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
    let targets = targets::resolve(&a.targets, &a.stack_bin)?;
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
    let function = a.function.clone().or_else(|| {
        from_stack
            .then(|| platform::stack_output(&a.stack_bin, "function_name").ok())
            .flatten()
    });
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
    let targets = targets::resolve(&a.targets, &a.stack_bin)?;
    let function = match (&a.function, from_stack) {
        (Some(f), _) => Some(f.clone()),
        (None, true) => platform::stack_output(&a.stack_bin, "function_name").ok(),
        (None, false) => None,
    };
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
            println!(
                "  CloudWatch metrics (GetMetricData: Throttles, ConcurrentExecutions) are not read yet; throttles show as 429s in `bench run`"
            );
        }
        out.insert("lambda".into(), serde_json::to_value(&s)?);
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
        let schedule = schedule::generate(&Spec {
            profile: Profile::Constant,
            rate,
            duration,
            max_requests: None,
            steps: 1,
            burst: Duration::ZERO,
        })?;
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
