//! The local API Gateway: for every HTTP API the stack deployed, a front process
//! (`stack apigw-front`) that answers on a loopback port the way the API answers in
//! AWS and invokes the function that was deployed, not a host build:
//!
//! - what to serve is read back from the AWS APIs (moto here): the API's routes and
//!   their `AWS_PROXY` integrations (timeout included), the integrated function's
//!   memory, timeout, environment, `CodeSha256` and reserved concurrency;
//! - the code is the zip `stack up` uploaded, found through the state (the zip file
//!   or the S3 object the function was created from) and accepted only when its
//!   SHA-256 is the function's `CodeSha256` — moto does not serve code back;
//! - it runs under the [`lambda_emulator`] (one execution environment per concurrent
//!   request, cold starts, reaping, the concurrency limit, cgroup CPU and memory by
//!   memory size), and every log line (START/END/REPORT and the function's output)
//!   is shipped to the function's CloudWatch log group through the Logs API, one
//!   stream per environment, as Lambda does.
//!
//! A front is restarted only when what it serves changes; it keeps its port, so the
//! printed `api_url` stays valid across `stack up`s.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use lambda_emulator::{ApiConfig, Emulator, EmulatorConfig, LogLine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::daemon::Daemon;
use super::process;
use crate::engine::Resource;
use crate::engine::state::State;
use crate::providers::aws::apigw::Api;
use crate::providers::aws::lambda::{self, Code, Function};
use crate::providers::aws::{AwsResult, Clients};

/// Why a front could not be brought up; each names the API or function and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("{0}")]
    Aws(String),
    #[error("API {api}: {detail}")]
    Api { api: String, detail: String },
    #[error("function {function}: {detail}")]
    Code { function: String, detail: String },
    /// What the local front cannot run yet; the API is left unserved, with a warning.
    #[error("function {function}: {detail}")]
    Unsupported { function: String, detail: String },
    #[error("local API Gateway front: {0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> FrontError {
    FrontError::Io(e.to_string())
}

/// What one front serves: everything it needs, so it reads no state of its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrontSpec {
    /// The API's id.
    pub api_id: String,
    /// The API's endpoint in the cloud (`https://<id>.execute-api.<region>.amazonaws.com`).
    pub endpoint: String,
    /// Loopback port of the front.
    pub port: u16,
    /// Route keys integrated with the function.
    pub routes: Vec<String>,
    /// The integration's timeout.
    pub integration_timeout_ms: u64,
    /// The function behind the routes.
    pub function: FunctionSpec,
    /// Most environments at once: the function's reserved concurrency, else the
    /// account's limit.
    pub concurrency: usize,
    /// How long an idle environment lives.
    pub keep_alive_ms: u64,
    /// The AWS endpoint the logs go to, and the region.
    pub aws_endpoint: String,
    pub region: String,
}

/// The deployed function, as the Lambda API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    /// Base64 SHA-256 of the deployed zip.
    pub code_sha256: String,
    /// Where that zip is unpacked.
    pub code_dir: PathBuf,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub env: BTreeMap<String, String>,
    pub log_group: String,
}

/// The fronts of one stack, under `dir` (one folder per API: spec, pid, log).
#[derive(Debug, Clone)]
pub struct Fronts {
    /// Where specs, pids, logs and unpacked code live.
    pub dir: PathBuf,
    /// The executable that serves a front (`<exe> apigw-front --spec …`).
    pub exe: PathBuf,
    /// The AWS endpoint (moto) the fronts read and write.
    pub aws_endpoint: String,
    /// The account's concurrency limit (functions without reserved concurrency).
    pub account_concurrency: usize,
    /// Idle time before an environment is stopped.
    pub keep_alive: Duration,
    /// Port of the first front (0: any free port).
    pub port: u16,
}

/// A front that answers: the API's cloud endpoint and its local URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub api_id: String,
    pub endpoint: String,
    pub url: String,
}

/// How long a front has to flush its logs when it is stopped.
const FRONT_GRACE: Duration = Duration::from_secs(10);

impl Fronts {
    fn api_dir(&self, api_id: &str) -> PathBuf {
        self.dir.join(api_id)
    }

    /// The front of `api_id`: spec, `front.pid` and `front.log` in its directory.
    fn daemon(&self, api_id: &str) -> Daemon {
        Daemon {
            dir: self.api_dir(api_id),
            name: "front",
        }
    }

    fn running(&self, api_id: &str) -> Option<(u32, FrontSpec)> {
        self.daemon(api_id).running()
    }

    /// Brings the fronts in line with the HTTP APIs in `state`: starts or restarts
    /// what changed, stops fronts of APIs that are gone.
    pub async fn reconcile(
        &self,
        clients: &Clients,
        state: &State,
    ) -> Result<Vec<Served>, FrontError> {
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let apis: Vec<String> = state
            .resources
            .values()
            .filter(|r| r.kind == Api::KIND && !r.id.is_empty())
            .map(|r| r.id.clone())
            .collect();
        if apis.is_empty() {
            self.stop_all();
            return Ok(Vec::new());
        }
        let mut served = Vec::new();
        for (i, api_id) in apis.iter().enumerate() {
            let prior = self.running(api_id);
            let port = match (&prior, self.port) {
                (Some((_, spec)), _) => spec.port,
                (None, 0) => process::free_port().map_err(io)?,
                (None, p) => p + i as u16,
            };
            let spec = match self.resolve(clients, state, api_id, port).await {
                Ok(Some(spec)) => spec,
                Ok(None) => continue,
                Err(e @ FrontError::Unsupported { .. }) => {
                    eprintln!("WARNING: API {api_id}: {e}");
                    self.daemon(api_id).stop(FRONT_GRACE);
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.start(&spec)?;
            served.push(Served {
                api_id: api_id.clone(),
                endpoint: spec.endpoint.clone(),
                url: format!("http://127.0.0.1:{}/", spec.port),
            });
        }
        // Fronts of APIs no longer deployed.
        for entry in std::fs::read_dir(&self.dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && name != "code" && !apis.contains(&name) {
                self.daemon(&name).stop(FRONT_GRACE);
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(served)
    }

    /// Stops every front and removes the unpacked code.
    pub fn stop_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            self.daemon(&entry.file_name().to_string_lossy())
                .stop(FRONT_GRACE);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs the front for `spec` unless it already runs so (a changed spec restarts
    /// it on the same port).
    fn start(&self, spec: &FrontSpec) -> Result<(), FrontError> {
        let d = self.daemon(&spec.api_id);
        let spec_file = d.spec_file();
        d.ensure(
            spec,
            &self.exe,
            &[
                "apigw-front".as_ref(),
                "--spec".as_ref(),
                spec_file.as_os_str(),
            ],
            SocketAddr::from(([127, 0, 0, 1], spec.port)),
            FRONT_GRACE,
        )
        .map_err(|e| FrontError::Api {
            api: spec.api_id.clone(),
            detail: format!("the front: {e} (set --api-port if the port is taken)"),
        })?;
        Ok(())
    }

    /// What the front of `api_id` serves, read from the AWS APIs; `None` when the API
    /// has no Lambda route yet.
    async fn resolve(
        &self,
        clients: &Clients,
        state: &State,
        api_id: &str,
        port: u16,
    ) -> Result<Option<FrontSpec>, FrontError> {
        let api_err = |detail: String| FrontError::Api {
            api: api_id.to_string(),
            detail,
        };
        let aws = |e: crate::error::ProviderError| FrontError::Aws(e.to_string());
        let api = clients.apigw.get_api().api_id(api_id).send().await;
        let api = api.aws("apigateway:GetApi").map_err(aws)?;
        let endpoint = api.api_endpoint().unwrap_or_default().to_string();
        let integrations = clients.apigw.get_integrations().api_id(api_id).send().await;
        let integrations = integrations
            .aws("apigateway:GetIntegrations")
            .map_err(aws)?;
        let routes = clients.apigw.get_routes().api_id(api_id).send().await;
        let routes = routes.aws("apigateway:GetRoutes").map_err(aws)?;
        let mut function_arn: Option<String> = None;
        let mut timeout_ms = lambda_emulator::apigw::MAX_INTEGRATION_TIMEOUT.as_millis() as u64;
        let mut keys = Vec::new();
        for route in routes.items() {
            let key = route.route_key().unwrap_or_default().to_string();
            let Some(target) = route.target().and_then(|t| t.strip_prefix("integrations/")) else {
                continue;
            };
            let Some(integration) = integrations
                .items()
                .iter()
                .find(|i| i.integration_id() == Some(target))
            else {
                return Err(api_err(format!(
                    "route `{key}` targets integration {target}, which does not exist"
                )));
            };
            let uri = lambda_arn(integration.integration_uri().unwrap_or_default());
            match &function_arn {
                Some(arn) if *arn != uri => {
                    return Err(api_err(format!(
                        "routes integrate with two functions ({arn} and {uri}); the local front serves one function per API"
                    )));
                }
                _ => function_arn = Some(uri),
            }
            if let Some(ms) = integration.timeout_in_millis() {
                timeout_ms = u64::try_from(ms).unwrap_or(timeout_ms);
            }
            keys.push(key);
        }
        let Some(function_arn) = function_arn else {
            return Ok(None);
        };
        let f = clients
            .lambda
            .get_function()
            .function_name(&function_arn)
            .send()
            .await;
        let f = f.aws("lambda:GetFunction").map_err(aws)?;
        let conf = f.configuration().ok_or_else(|| {
            api_err(format!(
                "GetFunction({function_arn}) returned no configuration"
            ))
        })?;
        let name = conf.function_name().unwrap_or_default().to_string();
        let code_sha256 = conf.code_sha256().unwrap_or_default().to_string();
        let reserved = clients
            .lambda
            .get_function_concurrency()
            .function_name(&name)
            .send()
            .await;
        let reserved = reserved
            .aws("lambda:GetFunctionConcurrency")
            .map_err(aws)?
            .reserved_concurrent_executions()
            .and_then(|n| usize::try_from(n).ok());
        let code_dir = self.unpack(clients, state, &name, &code_sha256).await?;
        let env = conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let log_group = conf
            .logging_config()
            .and_then(|l| l.log_group())
            .map_or_else(|| format!("/aws/lambda/{name}"), str::to_string);
        Ok(Some(FrontSpec {
            api_id: api_id.to_string(),
            endpoint,
            port,
            routes: keys,
            integration_timeout_ms: timeout_ms,
            function: FunctionSpec {
                name,
                code_sha256,
                code_dir,
                memory_mb: conf
                    .memory_size()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(128),
                timeout_s: conf
                    .timeout()
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(3),
                env,
                log_group,
            },
            concurrency: reserved.unwrap_or(self.account_concurrency).max(1),
            keep_alive_ms: self.keep_alive.as_millis() as u64,
            aws_endpoint: self.aws_endpoint.clone(),
            region: clients.region.clone(),
        }))
    }

    /// The deployed zip of `function`, unpacked under `code/<sha256>/`.
    async fn unpack(
        &self,
        clients: &Clients,
        state: &State,
        function: &str,
        code_sha256: &str,
    ) -> Result<PathBuf, FrontError> {
        let code_err = |detail: String| FrontError::Code {
            function: function.to_string(),
            detail,
        };
        let dir = self.dir.join("code").join(hex::encode(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, code_sha256)
                .map_err(|e| code_err(format!("CodeSha256 `{code_sha256}` is not base64: {e}")))?,
        ));
        if dir.join("bootstrap").is_file() {
            return Ok(dir);
        }
        let declared = state
            .resources
            .values()
            .filter(|r| r.kind == Function::KIND)
            .filter_map(|r| serde_json::from_value::<Function>(r.props.clone()).ok())
            .find(|f| f.name == function)
            .ok_or_else(|| {
                code_err("not in this stack's state, so its code cannot be found".into())
            })?;
        let zip = match &declared.code {
            Code::Zip { path, .. } => std::fs::read(path)
                .map_err(|e| code_err(format!("reading the deployed zip {path}: {e}")))?,
            Code::S3 { bucket, key, .. } => {
                let (bucket, key) = (
                    bucket.value().cloned().unwrap_or_default(),
                    key.value().cloned().unwrap_or_default(),
                );
                let r = clients
                    .s3
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await;
                let r = r
                    .aws("s3:GetObject")
                    .map_err(|e| code_err(format!("s3://{bucket}/{key}: {e}")))?;
                r.body
                    .collect()
                    .await
                    .map_err(|e| code_err(format!("s3://{bucket}/{key}: {e}")))?
                    .to_vec()
            }
            Code::Image { .. } => {
                return Err(FrontError::Unsupported {
                    function: function.to_string(),
                    detail: "is a container image; the local API Gateway front runs zip packages only, so its API is not served locally (set lambda.package = \"zip\" to run it here)".into(),
                });
            }
        };
        let actual = lambda::b64(&Sha256::digest(&zip));
        if actual != code_sha256 {
            return Err(code_err(format!(
                "the deployed code has CodeSha256 {code_sha256} but the zip the state names now has {actual}: it was rebuilt after deploying; run `stack up` to deploy it"
            )));
        }
        let staging = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&staging);
        unzip(&zip, &staging).map_err(|e| code_err(format!("unpacking the deployed zip: {e}")))?;
        if !staging.join("bootstrap").is_file() {
            return Err(code_err(
                "the deployed zip has no `bootstrap` at its root (a provided.al2023 function needs one)".into(),
            ));
        }
        std::fs::rename(&staging, &dir).map_err(io)?;
        Ok(dir)
    }
}

/// The function ARN inside an integration URI (a bare ARN, or API Gateway's
/// `arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<arn>/invocations`).
fn lambda_arn(uri: &str) -> String {
    uri.split_once("/functions/")
        .map(|(_, rest)| rest.trim_end_matches("/invocations").to_string())
        .unwrap_or_else(|| uri.to_string())
}

/// Unpacks a zip with each file's Unix mode (a `bootstrap` must stay executable).
fn unzip(zip: &[u8], dest: &Path) -> std::io::Result<()> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(std::io::Error::other)?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(std::io::Error::other)?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(std::io::Error::other(format!(
                "unsafe path `{}`",
                entry.name()
            )));
        };
        let path = dest.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data)?;
        std::fs::write(&path, data)?;
        let mode = entry.unix_mode().unwrap_or(0o644) & 0o7777;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    Ok(())
}

/// Runs one front until SIGTERM or Ctrl-C: the emulator on the spec's port, its logs
/// shipped to CloudWatch Logs.
pub async fn serve(spec_file: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let spec: FrontSpec = serde_json::from_slice(
        &std::fs::read(spec_file).with_context(|| format!("reading {}", spec_file.display()))?,
    )
    .with_context(|| format!("parsing {}", spec_file.display()))?;
    let clients = Clients::new(
        &crate::providers::aws::AwsTarget::Local {
            endpoint: spec.aws_endpoint.clone(),
        },
        &spec.region,
    )
    .await;
    let (sink, lines) = mpsc::unbounded_channel();
    let shipper = tokio::spawn(ship_logs(
        clients.logs.clone(),
        spec.function.log_group.clone(),
        lines,
    ));
    let f = &spec.function;
    let mut config = EmulatorConfig::new(f.code_dir.join("bootstrap"));
    config.function_name = f.name.clone();
    config.memory_mb = f.memory_mb;
    config.timeout = Duration::from_secs(u64::from(f.timeout_s));
    config.env = f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    config.env.push(("AWS_REGION".into(), spec.region.clone()));
    config.max_concurrency = spec.concurrency;
    config.keep_alive = Duration::from_millis(spec.keep_alive_ms);
    config.limit_resources = true;
    config.log_sink = Some(sink);
    config.api = ApiConfig {
        api_id: spec.api_id.clone(),
        routes: spec.routes.clone(),
        integration_timeout: Duration::from_millis(spec.integration_timeout_ms),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], spec.port));
    let emulator = Emulator::start(config, addr)
        .await
        .with_context(|| format!("API {}: listening on {addr}", spec.api_id))?;
    eprintln!(
        "apigw-front: API {} ({}) at http://{addr}/ → function {} (code {}, {} MB, {} s, concurrency {})",
        spec.api_id,
        spec.routes.join(", "),
        f.name,
        f.code_sha256,
        f.memory_mb,
        f.timeout_s,
        spec.concurrency
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = gone(spec_file) => eprintln!("apigw-front: {} was removed; stopping", spec_file.display()),
    }
    drop(emulator);
    // Dropping the emulator stops its environments and closes the log sink; the
    // shipper flushes what is left and ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), shipper).await;
    Ok(())
}

/// Resolves when `spec_file` no longer exists: its state directory was deleted (a
/// test's temporary project, `rm -rf .stack`), so nobody could stop this front.
async fn gone(spec_file: &Path) {
    while spec_file.exists() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Ships log lines to `group` in batches (at most every 500 ms), creating each
/// environment's stream on first use, and the group if it is missing (as Lambda
/// does with the basic execution role).
async fn ship_logs(
    logs: aws_sdk_cloudwatchlogs::Client,
    group: String,
    mut lines: mpsc::UnboundedReceiver<LogLine>,
) {
    let mut created = BTreeSet::new();
    loop {
        let Some(first) = lines.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
            batch.push(line);
        }
        let mut by_stream: BTreeMap<String, Vec<LogLine>> = BTreeMap::new();
        for line in batch {
            by_stream.entry(line.stream.clone()).or_default().push(line);
        }
        for (stream, lines) in by_stream {
            if let Err(e) = put(&logs, &group, &stream, lines, &mut created).await {
                eprintln!("apigw-front: shipping logs to {group}/{stream}: {e}");
            }
        }
    }
}

async fn put(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    mut lines: Vec<LogLine>,
    created: &mut BTreeSet<String>,
) -> Result<(), crate::error::ProviderError> {
    if !created.contains(stream) {
        let r = logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
            .aws("logs:CreateLogStream");
        if let Err(e) = r {
            if e.is_not_found() {
                let g = logs.create_log_group().log_group_name(group).send().await;
                g.aws("logs:CreateLogGroup")?;
                let s = logs
                    .create_log_stream()
                    .log_group_name(group)
                    .log_stream_name(stream);
                s.send().await.aws("logs:CreateLogStream")?;
            } else if !e.to_string().contains("ResourceAlreadyExists") {
                return Err(e);
            }
        }
        created.insert(stream.to_string());
    }
    // CloudWatch Logs wants a batch in time order.
    lines.sort_by_key(|l| l.timestamp_ms);
    let events = lines
        .into_iter()
        .filter_map(|l| {
            InputLogEvent::builder()
                .timestamp(l.timestamp_ms)
                .message(l.message)
                .build()
                .ok()
        })
        .collect::<Vec<_>>();
    let r = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(events))
        .send()
        .await;
    r.aws("logs:PutLogEvents").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_uris_name_the_function() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        assert_eq!(lambda_arn(arn), arn);
        assert_eq!(
            lambda_arn(&format!(
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"
            )),
            arn
        );
    }
}
