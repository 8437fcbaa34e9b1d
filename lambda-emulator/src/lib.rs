//! A local Lambda: the Runtime API per execution environment, Lambda's scheduling
//! rules, and the API Gateway HTTP API in front of it.
//!
//! What it reproduces, because the benchmark depends on it:
//! - each environment is a `bootstrap` process with its own Runtime API endpoint
//!   (`AWS_LAMBDA_RUNTIME_API`) and runs one invocation at a time;
//! - an invocation that finds no idle environment starts a new one (a cold start);
//!   idle ones are reused most-recently-used first and reaped after `keep_alive`;
//! - at `max_concurrency` live environments (initializing ones count, as in Lambda) a
//!   new invocation is throttled (`TooManyRequestsException`);
//! - each environment gets the CPU and memory its memory size buys in Lambda, as a
//!   cgroup ([`cgroup`]), when the machine allows it;
//! - START / END / REPORT lines per invocation (init duration: process start → first
//!   `/invocation/next`; duration: event handed out → response posted; billed duration
//!   at 1 ms granularity, init included as for custom runtimes; max memory used: the
//!   process's peak RSS), and the function's own output, go to stderr and, with a
//!   [`LogSink`], to whoever ships them (CloudWatch Logs in the stack's local target),
//!   one log stream per environment as in Lambda;
//! - a failed init (`/init/error`, or the process exiting before it asks for an event)
//!   fails that invocation at once and retires the environment.
//!
//! The HTTP front serves the Lambda Invoke API (`POST /2015-03-31/functions/NAME/invocations`,
//! Lambda's own status codes) and, for every other path, the API Gateway HTTP API
//! ([`apigw`]).

pub mod apigw;
pub mod cgroup;
mod output;

pub use apigw::ApiConfig;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

const RUNTIME_PREFIX: &str = "/2018-06-01/runtime";

/// How the emulated function is configured.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The function's `bootstrap` executable.
    pub bootstrap: PathBuf,
    /// Extra environment for every instance (the function's configuration).
    pub env: Vec<(String, String)>,
    pub function_name: String,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; sets the function's default thread count.
    pub memory_mb: u32,
    /// Longest an invocation may run.
    pub timeout: Duration,
    /// Longest init may take (Lambda: 10 s).
    pub init_timeout: Duration,
    /// How long an idle instance is kept before its process is stopped.
    pub keep_alive: Duration,
    /// Most instances alive at once; more concurrent invocations get 429.
    pub max_concurrency: usize,
    /// Print START/END/REPORT lines on stderr, as Lambda writes them to CloudWatch.
    pub print_reports: bool,
    /// The HTTP API in front of the function.
    pub api: ApiConfig,
    /// Hold each environment to the CPU and memory its memory size buys in Lambda
    /// (needs writable cgroups: root; without them it says so once and runs unlimited).
    pub limit_resources: bool,
    /// Where log lines go besides stderr (CloudWatch Logs, a test).
    pub log_sink: Option<LogSink>,
}

/// One line of a function's log: its environment's stream, when, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The log stream, one per environment (`2026/12/07/[$LATEST]<hex>`).
    pub stream: String,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub message: String,
}

/// Receives every log line of every environment.
pub type LogSink = mpsc::UnboundedSender<LogLine>;

impl EmulatorConfig {
    pub fn new(bootstrap: impl Into<PathBuf>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            env: Vec::new(),
            function_name: "sentiment".into(),
            memory_mb: 2048,
            timeout: Duration::from_secs(30),
            init_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(300),
            max_concurrency: 10,
            print_reports: true,
            api: ApiConfig::default(),
            limit_resources: false,
            log_sink: None,
        }
    }
}

/// Lambda's figures for one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub request_id: String,
    pub instance: u64,
    pub cold: bool,
    /// Process start → ready for the first event; cold invocations only.
    pub init_duration: Option<Duration>,
    /// Event handed to the function → its response posted.
    pub duration: Duration,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub max_memory_used_mb: u64,
}

impl Report {
    /// The line as Lambda writes it.
    pub fn line(&self) -> String {
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            self.request_id,
            ms(self.duration),
            self.billed_ms,
            self.memory_mb,
            self.max_memory_used_mb
        );
        if let Some(init) = self.init_duration {
            line.push_str(&format!("\tInit Duration: {:.2} ms", ms(init)));
        }
        line
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The payload posted to `/response`.
    Response(Bytes),
    /// The payload posted to `/error` (an unhandled function error).
    FunctionError(Bytes),
}

/// Why an invocation produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// Every allowed instance is busy or starting.
    #[error("rate exceeded: all {0} concurrent executions are in use")]
    Throttled(usize),
    /// The instance failed its init; the message is the function's own.
    #[error("the function failed to initialize: {0}")]
    InitFailed(String),
    /// No answer within the timeout; the instance was stopped.
    #[error("the function timed out after {0:.1?}")]
    Timeout(Duration),
    /// The process exited while handling the invocation.
    #[error("the function's process exited during the invocation: {0}")]
    Crashed(String),
    /// The process could not be started.
    #[error("starting {bootstrap}: {detail}")]
    Spawn { bootstrap: String, detail: String },
}

impl InvokeError {
    /// Lambda's name for the error (`errorType`, or the Invoke API's exception).
    pub fn error_type(&self) -> &'static str {
        match self {
            InvokeError::Throttled(_) => "TooManyRequestsException",
            InvokeError::InitFailed(_) => "Runtime.InitError",
            InvokeError::Timeout(_) => "Sandbox.Timedout",
            InvokeError::Crashed(_) => "Runtime.ExitError",
            InvokeError::Spawn { .. } => "ServiceException",
        }
    }
}

/// One invocation's result and, when an instance ran it, Lambda's figures.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub result: Result<Answer, InvokeError>,
    pub report: Option<Report>,
}

/// A running emulator. Dropping it (or its tokio runtime) stops every instance.
pub struct Emulator {
    shared: Arc<Shared>,
    front: SocketAddr,
    front_task: tokio::task::JoinHandle<()>,
    reaper_task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Starts the HTTP front on `bind` (port 0 picks a free one) and the reaper. No
    /// instance starts until the first invocation.
    /// A bad route key is an `InvalidInput` error naming it.
    pub async fn start(config: EmulatorConfig, bind: SocketAddr) -> std::io::Result<Self> {
        let routes = apigw::Routes::parse(&config.api.routes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(bind).await?;
        let front = listener.local_addr()?;
        let keep_alive = config.keep_alive;
        let shared = Arc::new(Shared {
            routes,
            config,
            pool: Mutex::new(Pool::default()),
            next_instance: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            reports: Mutex::new(Vec::new()),
        });
        let front_task = tokio::spawn(serve(listener, {
            let shared = Arc::clone(&shared);
            move |req| front_handler(Arc::clone(&shared), req)
        }));
        let reaper_task = tokio::spawn(reaper(Arc::downgrade(&shared), keep_alive));
        Ok(Self {
            shared,
            front,
            front_task,
            reaper_task,
        })
    }

    /// The HTTP front's address.
    pub fn addr(&self) -> SocketAddr {
        self.front
    }

    /// Invokes the function with `event` as the payload.
    pub async fn invoke(&self, event: Bytes) -> Invocation {
        self.shared.invoke(event).await
    }

    /// Every REPORT so far, oldest first.
    pub fn reports(&self) -> Vec<Report> {
        lock(&self.shared.reports).clone()
    }

    /// Live instances: (busy or starting, idle).
    pub fn instances(&self) -> (usize, usize) {
        let pool = lock(&self.shared.pool);
        let idle = pool.idle.len();
        (pool.all.len() + pool.starting - idle, idle)
    }

    /// Stops the front and every instance.
    pub fn shutdown(&self) {
        self.front_task.abort();
        self.reaper_task.abort();
        let all: Vec<_> = lock(&self.shared.pool).all.values().cloned().collect();
        for instance in all {
            self.shared.retire(&instance);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (plain inserts
    // and removals), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) struct Shared {
    routes: apigw::Routes,
    config: EmulatorConfig,
    pool: Mutex<Pool>,
    next_instance: AtomicU64,
    next_request: AtomicU64,
    reports: Mutex<Vec<Report>>,
}

#[derive(Default)]
struct Pool {
    all: HashMap<u64, Arc<Instance>>,
    /// Idle instance ids, most recently used last.
    idle: Vec<u64>,
    /// Processes being spawned, counted against the concurrency limit.
    starting: usize,
}

struct Pending {
    request_id: String,
    event: Bytes,
    done: oneshot::Sender<(Answer, Duration)>,
}

struct Active {
    request_id: String,
    started: Instant,
    done: oneshot::Sender<(Answer, Duration)>,
}

struct Instance {
    id: u64,
    /// Its log stream's name.
    stream: String,
    pid: Option<u32>,
    spawned_at: Instant,
    queue: mpsc::Sender<Pending>,
    active: Mutex<Option<Active>>,
    init_duration: OnceLock<Duration>,
    init_error: Mutex<Option<String>>,
    /// `Some(how it exited)` once the process is gone.
    exited: watch::Receiver<Option<String>>,
    last_used: Mutex<Instant>,
    retired: AtomicBool,
    /// Its stdout and stderr readers, flushed before each `END` line.
    output: Vec<output::Flush>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Shared {
    /// A line of the function's log: on stderr when asked, and to the sink.
    fn log(&self, stream: &str, message: String) {
        if self.config.print_reports {
            eprintln!("{message}");
        }
        if let Some(sink) = &self.config.log_sink {
            let _ = sink.send(LogLine {
                stream: stream.to_string(),
                timestamp_ms: now_ms(),
                message,
            });
        }
    }

    fn request_id(&self) -> String {
        let seq = self.next_request.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (nanos >> 16) as u32,
            (nanos & 0xffff) as u16,
            (seq >> 12) & 0xfff,
            seq & 0xfff,
            seq
        )
    }

    pub(crate) async fn invoke(self: &Arc<Self>, event: Bytes) -> Invocation {
        let request_id = self.request_id();
        let (instance, cold) = match self.acquire().await {
            Ok(acquired) => acquired,
            Err(e) => {
                return Invocation {
                    request_id,
                    result: Err(e),
                    report: None,
                };
            }
        };
        self.log(
            &instance.stream,
            format!("START RequestId: {request_id} Version: $LATEST"),
        );
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            request_id: request_id.clone(),
            event,
            done,
        };
        // The instance is ours alone until released, so its one-slot queue is empty.
        if instance.queue.try_send(pending).is_err() {
            self.retire(&instance);
            return Invocation {
                request_id,
                result: Err(InvokeError::Crashed(
                    "the instance stopped accepting events".into(),
                )),
                report: None,
            };
        }
        let limit = self.config.timeout
            + if cold {
                self.config.init_timeout
            } else {
                Duration::ZERO
            };
        let mut exited = instance.exited.clone();
        let outcome = tokio::select! {
            answer = answer => answer.map_err(|_| failure(&instance, &self.config)),
            _ = exited.wait_for(Option::is_some) => Err(failure(&instance, &self.config)),
            () = tokio::time::sleep(limit) => Err(if instance.init_duration.get().is_none() {
                InvokeError::InitFailed(format!("init did not finish within {:.1?}", self.config.init_timeout))
            } else {
                InvokeError::Timeout(self.config.timeout)
            }),
        };
        for pipe in &instance.output {
            pipe.written_so_far().await;
        }
        match outcome {
            Ok((answer, duration)) => {
                let init_duration = if cold {
                    instance.init_duration.get().copied()
                } else {
                    None
                };
                let billed = duration + init_duration.unwrap_or_default();
                let report = Report {
                    request_id: request_id.clone(),
                    instance: instance.id,
                    cold,
                    init_duration,
                    duration,
                    billed_ms: billed.as_nanos().div_ceil(1_000_000) as u64,
                    memory_mb: self.config.memory_mb,
                    max_memory_used_mb: instance.pid.and_then(peak_rss_mb).unwrap_or(0),
                };
                self.log(&instance.stream, format!("END RequestId: {request_id}"));
                self.log(&instance.stream, report.line());
                lock(&self.reports).push(report.clone());
                self.release(&instance);
                Invocation {
                    request_id,
                    result: Ok(answer),
                    report: Some(report),
                }
            }
            Err(error) => {
                self.log(&instance.stream, format!("END RequestId: {request_id}"));
                self.log(
                    &instance.stream,
                    format!(
                        "REPORT RequestId: {request_id}\tStatus: error\tError Type: {}\t{error}",
                        error.error_type()
                    ),
                );
                self.retire(&instance);
                Invocation {
                    request_id,
                    result: Err(error),
                    report: None,
                }
            }
        }
    }

    /// An idle instance (warm), else a new one (cold), else throttled.
    async fn acquire(self: &Arc<Self>) -> Result<(Arc<Instance>, bool), InvokeError> {
        {
            let mut pool = lock(&self.pool);
            while let Some(id) = pool.idle.pop() {
                if let Some(instance) = pool.all.get(&id)
                    && instance.exited.borrow().is_none()
                {
                    return Ok((Arc::clone(instance), false));
                }
            }
            if pool.all.len() + pool.starting >= self.config.max_concurrency {
                return Err(InvokeError::Throttled(self.config.max_concurrency));
            }
            pool.starting += 1;
        }
        let spawned = self.spawn().await;
        let mut pool = lock(&self.pool);
        pool.starting -= 1;
        let instance = spawned?;
        pool.all.insert(instance.id, Arc::clone(&instance));
        Ok((instance, true))
    }

    fn release(&self, instance: &Arc<Instance>) {
        *lock(&instance.last_used) = Instant::now();
        let mut pool = lock(&self.pool);
        if !instance.retired.load(Ordering::SeqCst) {
            pool.idle.push(instance.id);
        }
    }

    /// Removes an instance from the pool and stops its process; idempotent.
    fn retire(&self, instance: &Instance) {
        if instance.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let mut pool = lock(&self.pool);
            pool.all.remove(&instance.id);
            pool.idle.retain(|&id| id != instance.id);
        }
        if let Some(kill) = lock(&instance.kill).take() {
            let _ = kill.send(());
        }
        if let Some(server) = lock(&instance.server).take() {
            server.abort();
        }
    }

    async fn spawn(self: &Arc<Self>) -> Result<Arc<Instance>, InvokeError> {
        let config = &self.config;
        let spawn_err = |detail: String| InvokeError::Spawn {
            bootstrap: config.bootstrap.display().to_string(),
            detail,
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| spawn_err(format!("binding the Runtime API: {e}")))?;
        let api = listener
            .local_addr()
            .map_err(|e| spawn_err(e.to_string()))?;
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let stream = log_stream_name(id);
        let task_root = config
            .bootstrap
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ".".into());
        let mut command = tokio::process::Command::new(&config.bootstrap);
        command
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.function_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                config.memory_mb.to_string(),
            )
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", config.function_name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", &stream)
            .env("LAMBDA_TASK_ROOT", task_root)
            .env("_HANDLER", "bootstrap")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("AWS_REGION").is_none() {
            command.env("AWS_REGION", "us-east-1");
        }
        for (key, value) in &config.env {
            command.env(key, value);
        }
        let spawned_at = Instant::now();
        let mut child = command.spawn().map_err(|e| spawn_err(e.to_string()))?;
        // Joined right after the fork: the process has not loaded its model yet, so its
        // init runs under the limits.
        let cgroup = self.cgroup_for(id, child.id());
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            output.push(self.forward_output(out, stream.clone()));
        }
        if let Some(err) = child.stderr.take() {
            output.push(self.forward_output(err, stream.clone()));
        }
        let (queue, events) = mpsc::channel(1);
        let (exited_tx, exited) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        let instance = Arc::new(Instance {
            id,
            stream,
            pid: child.id(),
            spawned_at,
            queue,
            active: Mutex::new(None),
            init_duration: OnceLock::new(),
            init_error: Mutex::new(None),
            exited,
            last_used: Mutex::new(spawned_at),
            retired: AtomicBool::new(false),
            output,
            kill: Mutex::new(Some(kill)),
            server: Mutex::new(None),
        });
        let events = Arc::new(tokio::sync::Mutex::new(events));
        let server = tokio::spawn(serve(listener, {
            let instance = Arc::clone(&instance);
            move |req| runtime_api(Arc::clone(&instance), Arc::clone(&events), req)
        }));
        *lock(&instance.server) = Some(server.abort_handle());
        let weak = Arc::downgrade(self);
        let watched = Arc::clone(&instance);
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let described = match status {
                Ok(status) => format!("exited ({status})"),
                Err(e) => format!("could not be waited for: {e}"),
            };
            drop(cgroup);
            let _ = exited_tx.send(Some(described));
            if let Some(shared) = weak.upgrade() {
                shared.retire(&watched);
            }
        });
        Ok(instance)
    }

    /// The cgroup holding environment `id`, when resources are limited and the
    /// machine allows it; the first failure is said once, loudly.
    fn cgroup_for(&self, id: u64, pid: Option<u32>) -> Option<cgroup::Cgroup> {
        if !self.config.limit_resources {
            return None;
        }
        let pid = pid?;
        let limits = cgroup::Limits::lambda(self.config.memory_mb);
        let name = format!(
            "lambda-{}-{}-{id}",
            self.config.function_name,
            std::process::id()
        );
        let joined = cgroup::Cgroup::create(&name, limits).and_then(|g| g.add(pid).map(|()| g));
        match joined {
            Ok(group) => Some(group),
            Err(e) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "lambda-emulator: WARNING: cannot limit environments to their memory size's CPU and memory ({e}); they run unlimited, so timings flatter Lambda. Run as root on a machine with cgroups."
                    );
                });
                None
            }
        }
    }

    /// Sends each line the function writes to the log, in its environment's stream.
    fn forward_output<R>(self: &Arc<Self>, output: R, stream: String) -> output::Flush
    where
        R: tokio::io::AsyncRead + std::os::fd::AsRawFd + Unpin + Send + 'static,
    {
        let weak = Arc::downgrade(self);
        output::forward(output, move |line| match weak.upgrade() {
            Some(shared) => {
                // The function's own output always reaches stderr, as before.
                if !shared.config.print_reports {
                    eprintln!("{line}");
                }
                shared.log(&stream, line);
                true
            }
            None => false,
        })
    }
}

/// Lambda's log stream name for an environment: `YYYY/MM/DD/[$LATEST]<32 hex>`.
fn log_stream_name(id: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, d) = apigw::civil_from_days((now.as_secs() / 86_400) as i64);
    let unique = (u128::from(std::process::id()) << 96) ^ (u128::from(id) << 64) ^ now.as_nanos();
    format!("{y:04}/{m:02}/{d:02}/[$LATEST]{unique:032x}")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why an instance stopped without answering: a failed init (with the function's own
/// message when it posted one to `/init/error`) or a crash mid-invocation. The process
/// exit and the dropped invocation race; both land here so either gives the same answer.
fn failure(instance: &Instance, config: &EmulatorConfig) -> InvokeError {
    let status = instance
        .exited
        .borrow()
        .clone()
        .unwrap_or_else(|| "stopped".into());
    if instance.init_duration.get().is_none() {
        let reported = lock(&instance.init_error).clone();
        InvokeError::InitFailed(reported.unwrap_or_else(|| {
            format!(
                "{} {status} before asking for an event",
                config.bootstrap.display()
            )
        }))
    } else {
        InvokeError::Crashed(status)
    }
}

/// Stops instances idle for longer than `keep_alive`.
async fn reaper(shared: Weak<Shared>, keep_alive: Duration) {
    let tick = (keep_alive / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let expired: Vec<Arc<Instance>> = {
            let pool = lock(&shared.pool);
            pool.idle
                .iter()
                .filter_map(|id| pool.all.get(id))
                .filter(|i| lock(&i.last_used).elapsed() >= keep_alive)
                .cloned()
                .collect()
        };
        for instance in expired {
            if shared.config.print_reports {
                eprintln!(
                    "instance {} stopped after {:.1?} idle",
                    instance.id, keep_alive
                );
            }
            shared.retire(&instance);
        }
    }
}

/// Peak resident memory of a process in MB, from /proc (Linux only; elsewhere None).
fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb.div_ceil(1024))
}

pub(crate) type HttpResponse = Response<Full<Bytes>>;

pub(crate) fn response(status: u16, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

pub(crate) fn json_response(status: u16, body: &impl Serialize) -> HttpResponse {
    let mut response = response(status, serde_json::to_vec(body).unwrap_or_default());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves HTTP/1.1 on `listener` until the task is aborted.
async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let handler = handler.clone();
        // Connections live in this task's JoinSet so aborting the server closes them.
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// One instance's Runtime API.
async fn runtime_api(
    instance: Arc<Instance>,
    events: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    req: Request<Incoming>,
) -> HttpResponse {
    let path = req.uri().path().to_string();
    let Some(route) = path.strip_prefix(RUNTIME_PREFIX) else {
        return response(404, "unknown path");
    };
    match (req.method().clone(), route) {
        (Method::GET, "/invocation/next") => {
            instance
                .init_duration
                .get_or_init(|| instance.spawned_at.elapsed());
            let Some(pending) = events.lock().await.recv().await else {
                return response(410, "instance stopped");
            };
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                + instance_timeout_ms(&instance);
            *lock(&instance.active) = Some(Active {
                request_id: pending.request_id.clone(),
                started: Instant::now(),
                done: pending.done,
            });
            let mut response = response(200, pending.event);
            let headers = response.headers_mut();
            let mut set = |name: &'static str, value: String| {
                if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            };
            set("lambda-runtime-aws-request-id", pending.request_id.clone());
            set("lambda-runtime-deadline-ms", deadline.to_string());
            set(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:local".into(),
            );
            set(
                "lambda-runtime-trace-id",
                format!("Root=1-00000000-{}", pending.request_id.replace('-', "")),
            );
            set("content-type", "application/json".into());
            response
        }
        (Method::POST, "/init/error") => {
            let body = read_body(req).await;
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("errorMessage")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            *lock(&instance.init_error) = Some(message);
            json_response(202, &json!({"status": "OK"}))
        }
        (Method::POST, route) if route.starts_with("/invocation/") => {
            let rest = &route["/invocation/".len()..];
            let (request_id, kind) = rest.rsplit_once('/').unwrap_or((rest, ""));
            let body = read_body(req).await;
            let answer = match kind {
                "response" => Answer::Response(body),
                "error" => Answer::FunctionError(body),
                _ => return response(404, "unknown invocation path"),
            };
            let active = {
                let mut slot = lock(&instance.active);
                match slot.as_ref() {
                    Some(active) if active.request_id == request_id => slot.take(),
                    _ => None,
                }
            };
            let Some(active) = active else {
                return json_response(
                    400,
                    &json!({"errorMessage": format!("{request_id} is not the active invocation"), "errorType": "InvalidRequestID"}),
                );
            };
            let _ = active.done.send((answer, active.started.elapsed()));
            json_response(202, &json!({"status": "OK"}))
        }
        _ => response(404, "unknown path"),
    }
}

fn instance_timeout_ms(_instance: &Instance) -> u128 {
    // The emulator enforces the timeout itself; the deadline header only has to be in
    // the future for the runtime client.
    15 * 60 * 1000
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// The HTTP front: the Lambda Invoke API for direct invocations, everything else
/// through the API Gateway HTTP API.
async fn front_handler(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path();
    if req.method() == Method::POST
        && path.starts_with("/2015-03-31/functions/")
        && path.ends_with("/invocations")
    {
        return invoke_api(shared, req).await;
    }
    apigw::handle(shared, req).await
}

/// Lambda's `Invoke` (RequestResponse): the payload back with 200, a function error as
/// 200 with `X-Amz-Function-Error: Unhandled`, throttling as 429
/// `TooManyRequestsException`, an oversized payload as 413.
async fn invoke_api(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let body = match http_body_util::Limited::new(req.into_body(), apigw::MAX_PAYLOAD_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return lambda_exception(
                413,
                "RequestEntityTooLargeException",
                &format!(
                    "Request must be smaller than {} bytes for the InvokeFunction operation",
                    apigw::MAX_PAYLOAD_BYTES
                ),
            );
        }
    };
    let invocation = shared.invoke(body).await;
    let unhandled = |payload: Bytes| {
        let mut r = response(200, payload);
        r.headers_mut().insert(
            "x-amz-function-error",
            hyper::header::HeaderValue::from_static("Unhandled"),
        );
        r
    };
    let answer = match &invocation.result {
        Ok(Answer::Response(payload)) => response(200, payload.clone()),
        Ok(Answer::FunctionError(payload)) => unhandled(payload.clone()),
        Err(InvokeError::Throttled(_)) => {
            lambda_exception(429, "TooManyRequestsException", "Rate Exceeded.")
        }
        Err(e @ InvokeError::Spawn { .. }) => lambda_exception(500, e.error_type(), &e.to_string()),
        Err(e) => unhandled(Bytes::from(
            json!({"errorType": e.error_type(), "errorMessage": e.to_string()}).to_string(),
        )),
    };
    with_lambda_headers(answer, &invocation)
}

/// An error of the Lambda API itself (`x-amzn-ErrorType` and a `Type`/`message` body).
fn lambda_exception(status: u16, error_type: &str, message: &str) -> HttpResponse {
    let kind = if status < 500 { "User" } else { "Service" };
    let mut r = json_response(status, &json!({"Type": kind, "message": message}));
    if let Ok(v) = hyper::header::HeaderValue::from_str(error_type) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// Adds the emulator's own headers: which instance ran the request, cold or warm,
/// init and run durations. Useful to tests and the benchmark; Lambda has no such thing.
pub(crate) fn with_lambda_headers(
    mut response: HttpResponse,
    invocation: &Invocation,
) -> HttpResponse {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-lambda-request-id", invocation.request_id.clone());
    if let Some(report) = &invocation.report {
        set("x-lambda-instance", report.instance.to_string());
        set("x-lambda-cold", report.cold.to_string());
        set(
            "x-lambda-duration-ms",
            format!("{:.3}", ms(report.duration)),
        );
        set("x-lambda-billed-ms", report.billed_ms.to_string());
        set(
            "x-lambda-max-memory-mb",
            report.max_memory_used_mb.to_string(),
        );
        if let Some(init) = report.init_duration {
            set("x-lambda-init-duration-ms", format!("{:.3}", ms(init)));
        }
    }
    response
}
