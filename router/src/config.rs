//! The router's settings: [`Config`] for the library, [`Args`] for the binary (each
//! flag with a `ROUTER_*` environment fallback), and `--from-stack`, which reads the
//! backends' URLs from `stack outputs --json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::backend::HealthPolicy;
use crate::retry::RetryPolicy;
use crate::select::{Choice, Weights};

/// The largest request body forwarded, as the Kubernetes server's default
/// (`MAX_BODY_BYTES`, 1 MiB); larger bodies are refused with 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Everything the library needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Base URL of the Lambda front (`api_url`), e.g. `https://x.execute-api.../`.
    pub lambda_url: String,
    /// Base URL of the Kubernetes Service (`service_url`).
    pub k8s_url: String,
    /// The backend of a request without `?backend=`.
    pub default_choice: Choice,
    pub retry: RetryPolicy,
    pub health: HealthPolicy,
    /// Under `auto`, a weighted random split instead of the latency rule.
    pub weights: Option<Weights>,
    pub max_body_bytes: usize,
}

impl Config {
    /// Defaults for everything but the two URLs.
    pub fn new(lambda_url: impl Into<String>, k8s_url: impl Into<String>) -> Self {
        Self {
            lambda_url: lambda_url.into(),
            k8s_url: k8s_url.into(),
            default_choice: Choice::Auto,
            retry: RetryPolicy::default(),
            health: HealthPolicy::default(),
            weights: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The binary's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sentiment-router",
    version,
    about = "One endpoint in front of the Lambda and Kubernetes sentiment backends, with retries and failover"
)]
pub struct Args {
    /// Base URL of the Lambda front (the stack's `api_url`).
    #[arg(long, env = "ROUTER_LAMBDA_URL")]
    pub lambda_url: Option<String>,
    /// Base URL of the Kubernetes Service (the stack's `service_url`).
    #[arg(long, env = "ROUTER_K8S_URL")]
    pub k8s_url: Option<String>,
    /// Read missing URLs from `stack outputs --json` (`api_url`, `service_url`).
    #[arg(long, env = "ROUTER_FROM_STACK")]
    pub from_stack: bool,
    /// The `stack` binary for `--from-stack` [default: `stack` on PATH, else
    /// `target/debug/stack`].
    #[arg(long, env = "ROUTER_STACK_BIN")]
    pub stack_bin: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "ROUTER_BIND", default_value = "127.0.0.1:8090")]
    pub bind: SocketAddr,
    /// Backend of requests without `?backend=`: lambda, k8s or auto.
    #[arg(long, env = "ROUTER_DEFAULT_BACKEND", default_value = "auto")]
    pub default_backend: Choice,
    /// Most attempts per request, over both backends.
    #[arg(long, env = "ROUTER_MAX_ATTEMPTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Total time for a request, retries and waits included.
    #[arg(long, env = "ROUTER_DEADLINE_MS", default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Backoff ceiling of the first retry; doubles per retry.
    #[arg(long, env = "ROUTER_BASE_BACKOFF_MS", default_value_t = 50)]
    pub base_backoff_ms: u64,
    /// Largest backoff ceiling.
    #[arg(long, env = "ROUTER_MAX_BACKOFF_MS", default_value_t = 2_000)]
    pub max_backoff_ms: u64,
    /// Longest single attempt (clipped to the time left before the deadline).
    #[arg(long, env = "ROUTER_ATTEMPT_TIMEOUT_MS", default_value_t = 4_000)]
    pub attempt_timeout_ms: u64,
    /// Weighted split under auto, e.g. `lambda=1,k8s=3`.
    #[arg(long, env = "ROUTER_WEIGHTS")]
    pub weights: Option<Weights>,
    /// Largest request body; larger is 413.
    #[arg(long, env = "ROUTER_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Interval of the active `/healthz` probes; 0 turns them off.
    #[arg(long, env = "ROUTER_PROBE_INTERVAL_MS", default_value_t = 2_000)]
    pub probe_interval_ms: u64,
    /// Timeout of one probe.
    #[arg(long, env = "ROUTER_PROBE_TIMEOUT_MS", default_value_t = 1_000)]
    pub probe_timeout_ms: u64,
    /// Consecutive failed attempts that mark a backend down (a refused connection
    /// marks it down at once).
    #[arg(long, env = "ROUTER_UNHEALTHY_AFTER", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub unhealthy_after: u32,
    /// How long a backend marked down is left alone.
    #[arg(long, env = "ROUTER_COOL_DOWN_MS", default_value_t = 5_000)]
    pub cool_down_ms: u64,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "ROUTER_SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
    /// Log one JSON object per line.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Args {
    /// The library config, the URLs from the flags or, with `--from-stack`, from the
    /// stack's outputs (flags win).
    pub fn config(&self) -> anyhow::Result<Config> {
        let (lambda_url, k8s_url) = match (&self.lambda_url, &self.k8s_url) {
            (Some(l), Some(k)) => (l.clone(), k.clone()),
            (l, k) if self.from_stack => {
                let bin = match &self.stack_bin {
                    Some(bin) => bin.clone(),
                    None => default_stack_bin()?,
                };
                let (api_url, service_url) = urls_from_stack(&bin)?;
                (
                    l.clone().unwrap_or(api_url),
                    k.clone().unwrap_or(service_url),
                )
            }
            _ => bail!(
                "both --lambda-url and --k8s-url are needed (or ROUTER_LAMBDA_URL and \
                 ROUTER_K8S_URL), or --from-stack to read them from `stack outputs`"
            ),
        };
        if self.deadline_ms == 0 || self.attempt_timeout_ms == 0 {
            bail!("--deadline-ms and --attempt-timeout-ms must be above 0");
        }
        if self.base_backoff_ms > self.max_backoff_ms {
            bail!("--base-backoff-ms is above --max-backoff-ms");
        }
        let ms = Duration::from_millis;
        Ok(Config {
            lambda_url,
            k8s_url,
            default_choice: self.default_backend,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                deadline: ms(self.deadline_ms),
                base_backoff: ms(self.base_backoff_ms),
                max_backoff: ms(self.max_backoff_ms),
                attempt_timeout: ms(self.attempt_timeout_ms),
            },
            health: HealthPolicy {
                unhealthy_after: self.unhealthy_after,
                cool_down: ms(self.cool_down_ms),
                probe_interval: (self.probe_interval_ms > 0).then(|| ms(self.probe_interval_ms)),
                probe_timeout: ms(self.probe_timeout_ms),
                ..HealthPolicy::default()
            },
            weights: self.weights,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// `stack` on PATH, else `target/debug/stack` (a workspace build).
fn default_stack_bin() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("stack"))
            .find(|p| p.is_file())
    });
    let local = Path::new("target/debug/stack");
    on_path
        .or_else(|| local.is_file().then(|| local.to_path_buf()))
        .context("no `stack` on PATH and no target/debug/stack; pass --stack-bin")
}

/// Runs `bin <command> --json` (a `stack` subcommand), its messages going to `stderr`;
/// its stdout. Shared with the bench, which reads `stack status --json` the same way.
pub fn stack_json(bin: &Path, command: &str, stderr: Stdio) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .args([command, "--json"])
        .stderr(stderr)
        .output()
        .with_context(|| format!("running {} {command} --json", bin.display()))?;
    if !out.status.success() {
        bail!("{} {command} --json failed: {}", bin.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `bin outputs --json`; its stdout.
pub fn outputs_json_from_stack(bin: &Path) -> anyhow::Result<String> {
    stack_json(bin, "outputs", Stdio::inherit())
}

/// Runs `bin outputs --json` and reads its URL outputs (see [`url_outputs`]).
pub fn url_outputs_from_stack(bin: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    url_outputs(&outputs_json_from_stack(bin)?)
}

/// The http(s) URLs among `stack outputs --json`'s object (name → value), by output
/// name (`api_url`, `service_url`, `router_url`, …); other outputs are left out.
pub fn url_outputs(json: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let value: serde_json::Value =
        serde_json::from_str(json.trim()).context("stack outputs --json printed no JSON")?;
    let object = value
        .as_object()
        .context("stack outputs --json printed no JSON object")?;
    Ok(object
        .iter()
        .filter_map(|(name, v)| Some((name.clone(), v.as_str()?.to_string())))
        .filter(|(_, url)| url.starts_with("http://") || url.starts_with("https://"))
        .collect())
}

/// Runs `bin outputs --json` and takes `api_url` and `service_url` from its object.
pub fn urls_from_stack(bin: &Path) -> anyhow::Result<(String, String)> {
    backend_urls(url_outputs_from_stack(bin)?)
}

/// `api_url` and `service_url` from `stack outputs --json`'s object (name → value).
pub fn urls_from_outputs(json: &str) -> anyhow::Result<(String, String)> {
    backend_urls(url_outputs(json)?)
}

fn backend_urls(mut urls: BTreeMap<String, String>) -> anyhow::Result<(String, String)> {
    let mut take = |name: &str| {
        urls.remove(name)
            .with_context(|| format!("stack outputs has no URL named {name}: run `stack up` first"))
    };
    Ok((take("api_url")?, take("service_url")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    #[test]
    fn the_issue_cli_shape_parses() {
        let args = Args::try_parse_from([
            "sentiment-router",
            "--lambda-url",
            "http://127.0.0.1:1/",
            "--k8s-url",
            "http://127.0.0.1:2",
            "--bind",
            "127.0.0.1:8090",
            "--default-backend",
            "k8s",
            "--max-attempts",
            "5",
            "--deadline-ms",
            "3000",
            "--base-backoff-ms",
            "20",
            "--max-backoff-ms",
            "500",
            "--weights",
            "lambda=1,k8s=3",
        ])
        .unwrap();
        let c = args.config().unwrap();
        assert_eq!(c.lambda_url, "http://127.0.0.1:1/");
        assert_eq!(c.default_choice, Choice::Fixed(Backend::K8s));
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.retry.deadline, Duration::from_secs(3));
        assert_eq!(c.retry.base_backoff, Duration::from_millis(20));
        assert_eq!(c.retry.max_backoff, Duration::from_millis(500));
        assert_eq!(c.weights, Some(Weights { lambda: 1, k8s: 3 }));
    }

    #[test]
    fn urls_are_required_without_from_stack() {
        let args = Args::try_parse_from(["sentiment-router", "--lambda-url", "http://a"]).unwrap();
        if std::env::var_os("ROUTER_K8S_URL").is_none() {
            assert!(args.config().is_err());
        }
        assert!(Args::try_parse_from(["sentiment-router", "--max-attempts", "0"]).is_err());
        assert!(Args::try_parse_from(["sentiment-router", "--default-backend", "gpu"]).is_err());
    }

    #[test]
    fn stack_outputs_give_both_urls() {
        let json = r#"{
          "api_url": "http://127.0.0.1:9001/",
          "image_uri": "127.0.0.1:5000/sentiment:abc",
          "service_url": "http://127.0.0.1:9002/"
        }"#;
        assert_eq!(
            urls_from_outputs(json).unwrap(),
            (
                "http://127.0.0.1:9001/".to_string(),
                "http://127.0.0.1:9002/".to_string()
            )
        );
        let missing = urls_from_outputs(r#"{"api_url": "http://a/"}"#).unwrap_err();
        assert!(missing.to_string().contains("service_url"), "{missing}");
        assert!(urls_from_outputs("api_url = http://a").is_err());
        assert!(
            urls_from_outputs(r#"{"api_url": "(unknown)", "service_url": "http://b"}"#).is_err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn from_stack_runs_the_stack_binary() {
        let dir = std::env::temp_dir().join(format!("router-stack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("stack");
        test_support::write_executable(
            &bin,
            "#!/bin/sh\n[ \"$1 $2\" = \"outputs --json\" ] || exit 3\n\
             echo '{\"api_url\": \"http://127.0.0.1:7001/\", \"service_url\": \"http://127.0.0.1:7002/\"}'\n",
        );
        let args = Args::try_parse_from([
            "sentiment-router",
            "--from-stack",
            "--stack-bin",
            bin.to_str().unwrap(),
            "--k8s-url",
            "http://override:1",
        ])
        .unwrap();
        let c = args.config().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(c.lambda_url, "http://127.0.0.1:7001/");
        assert_eq!(c.k8s_url, "http://override:1");
    }
}
