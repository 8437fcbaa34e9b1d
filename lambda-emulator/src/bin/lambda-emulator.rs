//! `lambda-emulator`: runs the `bootstrap` function locally the way Lambda runs it,
//! behind an API Gateway-like HTTP front (`curl -X POST localhost:9000/predict`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use lambda_emulator::{ApiConfig, Emulator, EmulatorConfig};

#[derive(Parser)]
#[command(
    version,
    about = "A local AWS Lambda for the sentiment function: Runtime API per instance, cold starts, keep-alive, throttling, REPORT lines"
)]
struct Cli {
    /// The function's bootstrap executable [default: `bootstrap` beside this binary]
    #[arg(long, env = "LAMBDA_BOOTSTRAP")]
    bootstrap: Option<PathBuf>,
    /// Address of the HTTP front.
    #[arg(long, env = "LAMBDA_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The function's memory size in MB (sets its default thread count: 1 vCPU per 1,769 MB).
    #[arg(long, env = "LAMBDA_MEMORY_MB", default_value_t = 2048)]
    memory_mb: u32,
    /// Invocation timeout in seconds.
    #[arg(long, env = "LAMBDA_TIMEOUT_S", default_value_t = 30.0)]
    timeout_s: f64,
    /// Init timeout in seconds (Lambda: 10).
    #[arg(long, env = "LAMBDA_INIT_TIMEOUT_S", default_value_t = 10.0)]
    init_timeout_s: f64,
    /// Seconds an idle instance is kept warm before its process is stopped.
    #[arg(long, env = "LAMBDA_KEEP_ALIVE_S", default_value_t = 300.0)]
    keep_alive_s: f64,
    /// Most concurrent instances; further concurrent requests get 429.
    #[arg(long, env = "LAMBDA_MAX_CONCURRENCY", default_value_t = 10)]
    max_concurrency: usize,
    /// Function name (AWS_LAMBDA_FUNCTION_NAME).
    #[arg(long, default_value = "sentiment")]
    function_name: String,
    /// Environment for the function, KEY=VALUE, repeatable (e.g. MODEL_DIR=/path).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// API Gateway route keys that invoke the function, repeatable
    /// (`POST /predict`, `GET /items/{id}`, `$default`).
    #[arg(long = "route", default_value = "$default")]
    routes: Vec<String>,
    /// Seconds API Gateway waits for the function before answering 503 (at most 30).
    #[arg(long, env = "LAMBDA_INTEGRATION_TIMEOUT_S", default_value_t = 30.0)]
    integration_timeout_s: f64,
    /// Run each environment without the CPU and memory limits of its memory size.
    #[arg(long, env = "LAMBDA_UNLIMITED")]
    unlimited: bool,
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {value:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bootstrap = match cli.bootstrap {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this executable's directory")?
            .with_file_name("bootstrap"),
    };
    anyhow::ensure!(
        bootstrap.is_file(),
        "{} does not exist; build it (`cargo build -p sentiment-lambda --bin bootstrap`) or pass --bootstrap",
        bootstrap.display()
    );
    let seconds = |s: f64, flag: &str| {
        Duration::try_from_secs_f64(s).with_context(|| format!("--{flag} {s} is not a duration"))
    };
    let config = EmulatorConfig {
        bootstrap: bootstrap.clone(),
        env: cli.env,
        function_name: cli.function_name,
        memory_mb: cli.memory_mb,
        timeout: seconds(cli.timeout_s, "timeout-s")?,
        init_timeout: seconds(cli.init_timeout_s, "init-timeout-s")?,
        keep_alive: seconds(cli.keep_alive_s, "keep-alive-s")?,
        max_concurrency: cli.max_concurrency.max(1),
        print_reports: true,
        api: ApiConfig {
            api_id: "local".into(),
            routes: cli.routes,
            integration_timeout: seconds(cli.integration_timeout_s, "integration-timeout-s")?,
        },
        limit_resources: !cli.unlimited,
        log_sink: None,
    };
    let emulator = Emulator::start(config, cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    eprintln!(
        "lambda-emulator: {} behind http://{}/predict (Invoke API: POST /2015-03-31/functions/NAME/invocations)",
        bootstrap.display(),
        emulator.addr()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emulator.shutdown();
    Ok(())
}
