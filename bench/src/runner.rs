//! The load generator. Open loop: every request leaves at its scheduled time whether
//! or not the earlier ones have answered, and its latency is counted from that
//! scheduled time, so a slow backend cannot slow the offered load down and hide its
//! own queueing (coordinated omission). Closed loop: `concurrency` workers per
//! backend, each sending its next request as soon as the last one answered.
//!
//! Backends are interleaved: request `i` of the schedule goes to every backend at the
//! same scheduled time with the same text, so every backend sees the same offered
//! load over the same wall-clock window (the same network weather, the same idle time
//! before a spike) and their numbers compare directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use tokio::sync::mpsc;

use crate::corpus::{Corpus, text_of_words};
use crate::schedule::Planned;
use crate::stats::{BackendStats, ErrorKind, Record};
use crate::targets::Target;

/// A send more than this after its scheduled time counts as late. Tokio's timer
/// fires on whole milliseconds and rounds a deadline up, so a send up to ~1 ms after
/// its time is the timer's resolution, not the generator falling behind; 2 ms leaves
/// that out and still catches any real stall.
pub const DEFAULT_LATE_THRESHOLD: Duration = Duration::from_millis(2);

/// How requests leave.
#[derive(Debug, Clone)]
pub enum Mode {
    /// On this schedule, whatever the answers do.
    Open { schedule: Vec<Planned> },
    /// `concurrency` workers per backend back to back, until `duration` is over or
    /// `max_requests` per backend have been sent.
    Closed {
        concurrency: usize,
        duration: Duration,
        max_requests: Option<usize>,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub targets: Vec<Target>,
    pub mode: Mode,
    pub corpus: Corpus,
    /// Per request, connect to last body byte.
    pub timeout: Duration,
    pub late_threshold: Duration,
    /// Keep every request's [`Record`] (the histograms are kept anyway).
    pub keep_records: bool,
    /// Most requests in flight per backend. A request due while the backend has this
    /// many waits for one to finish; it then leaves late (and is counted late) and its
    /// latency still runs from its scheduled time. A bound on sockets, not on load.
    pub max_in_flight: usize,
}

/// The default [`RunConfig::max_in_flight`]: far above what a 2-core backend serves
/// at once, well below the ephemeral ports and file descriptors of one process.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    pub started_at: SystemTime,
    pub wall: Duration,
    pub stats: BTreeMap<String, BackendStats>,
    /// In completion order; empty without `keep_records`.
    pub records: Vec<Record>,
}

/// The request bodies: one per distinct text, built once and shared (Bytes clones
/// are a reference count).
struct Bodies {
    bodies: Vec<(Bytes, &'static str, usize)>,
}

impl Bodies {
    fn body(text: &str) -> Bytes {
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "text": text })).expect("json"))
    }

    fn new(corpus: &Corpus) -> Self {
        let bodies = corpus
            .texts
            .iter()
            .zip(&corpus.class)
            .map(|(t, c)| (Self::body(t), *c, t.split_whitespace().count()))
            .collect();
        Self { bodies }
    }

    /// Per planned request, the index of its body: the corpus's pick, or a text of
    /// the trace's length.
    fn for_schedule(&mut self, corpus: &Corpus, schedule: &[Planned]) -> Vec<usize> {
        use rand::SeedableRng;
        let mut by_words: HashMap<usize, usize> = HashMap::new();
        schedule
            .iter()
            .enumerate()
            .map(|(i, p)| match p.words {
                None => corpus.pick(i),
                Some(w) => *by_words.entry(w).or_insert_with(|| {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(w as u64);
                    self.bodies
                        .push((Self::body(&text_of_words(w, &mut rng)), "trace", w));
                    self.bodies.len() - 1
                }),
            })
            .collect()
    }
}

struct Shared {
    client: reqwest::Client,
    start: Instant,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Record>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn header_f64(h: &HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    Some(h.get(name)?.to_str().ok()?.to_string())
}

/// One backend as the sender sees it.
struct Backend {
    name: Arc<str>,
    url: reqwest::Url,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Sends one request due at `due` and reports its record.
async fn send_one(
    shared: Arc<Shared>,
    backend: Arc<Backend>,
    i: usize,
    due: Instant,
    body: (Bytes, &'static str, usize),
) {
    let _permit = backend.in_flight.acquire().await;
    let sent = Instant::now();
    let (bytes, text_class, words) = body;
    let mut rec = Record {
        i,
        backend: backend.name.to_string(),
        text_class,
        words,
        scheduled_ms: ms(due.saturating_duration_since(shared.start)),
        sent_ms: ms(sent.saturating_duration_since(shared.start)),
        latency_ms: 0.0,
        service_ms: 0.0,
        status: None,
        error: None,
        attempts: None,
        served_by: None,
        queue_ms: None,
        inference_ms: None,
        server_total_ms: None,
        cold: None,
        lambda_instance: None,
    };
    let answer = shared
        .client
        .post(backend.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(bytes)
        .timeout(shared.timeout)
        .send()
        .await;
    let classify = |e: &reqwest::Error| {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Other
        }
    };
    match answer {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let h = resp.headers();
            rec.status = Some(status);
            rec.error = ErrorKind::of_status(
                status,
                h.get("x-lambda-error-type").and_then(|v| v.to_str().ok()),
            );
            rec.attempts = header_str(h, "x-attempts").and_then(|v| v.parse().ok());
            rec.served_by = header_str(h, "x-backend");
            rec.queue_ms = header_f64(h, sentiment_api::QUEUE_TIME_HEADER);
            rec.inference_ms = header_f64(h, sentiment_api::INFERENCE_TIME_HEADER);
            rec.server_total_ms = header_f64(h, sentiment_api::TOTAL_TIME_HEADER);
            rec.cold = header_str(h, "x-lambda-cold").map(|v| v.eq_ignore_ascii_case("true"));
            rec.lambda_instance = header_str(h, "x-lambda-instance");
            // The latency ends with the last byte of the answer.
            if let Err(e) = resp.bytes().await {
                rec.error = Some(classify(&e));
            }
        }
        Err(e) => rec.error = Some(classify(&e)),
    }
    let done = Instant::now();
    rec.latency_ms = ms(done.saturating_duration_since(due));
    rec.service_ms = ms(done.saturating_duration_since(sent));
    let _ = shared.tx.send(rec);
}

/// The HTTP client: one for the run, connections kept and reused per backend.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// Runs the load and measures it. Stops by itself: after the schedule (or the closed
/// loop's bounds), every request in flight gets at most the per-request timeout.
pub async fn run(cfg: RunConfig) -> anyhow::Result<RunResult> {
    let client = client()?;
    let mut bodies = Bodies::new(&cfg.corpus);
    let picks = match &cfg.mode {
        Mode::Open { schedule } => bodies.for_schedule(&cfg.corpus, schedule),
        Mode::Closed { .. } => Vec::new(),
    };
    let bodies = Arc::new(bodies.bodies);
    let targets = cfg
        .targets
        .iter()
        .map(|t| {
            let url = t.predict_url();
            Ok(Arc::new(Backend {
                name: Arc::from(t.name.as_str()),
                url: url.parse().with_context(|| format!("{url} is not a URL"))?,
                in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1))),
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let late_ms = ms(cfg.late_threshold);
    let keep = cfg.keep_records;
    let collector = tokio::spawn(async move {
        let mut stats: BTreeMap<String, BackendStats> = BTreeMap::new();
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            stats
                .entry(r.backend.clone())
                .or_default()
                .record(&r, late_ms);
            if keep {
                records.push(r);
            }
        }
        (stats, records)
    });

    let started_at = SystemTime::now();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        start,
        timeout: cfg.timeout,
        tx,
    });
    // Request tasks are detached: each holds a sender of the collector's channel, so
    // the collector ends when the last of them has reported.
    match &cfg.mode {
        Mode::Open { schedule } => {
            for (i, p) in schedule.iter().enumerate() {
                let due = start + p.at;
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                for backend in &targets {
                    tokio::spawn(send_one(
                        shared.clone(),
                        backend.clone(),
                        i,
                        due,
                        bodies[picks[i]].clone(),
                    ));
                }
            }
        }
        Mode::Closed {
            concurrency,
            duration,
            max_requests,
        } => {
            let deadline = start + *duration;
            let max = max_requests.unwrap_or(usize::MAX);
            for backend in &targets {
                let next = Arc::new(AtomicUsize::new(0));
                for _ in 0..(*concurrency).max(1) {
                    let (shared, backend, next) = (shared.clone(), backend.clone(), next.clone());
                    let (corpus, bodies) = (cfg.corpus.clone(), bodies.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            if i >= max || now >= deadline {
                                break;
                            }
                            let body = bodies[corpus.pick(i)].clone();
                            send_one(shared.clone(), backend.clone(), i, now, body).await;
                        }
                    });
                }
            }
        }
    }
    drop(shared);
    let (stats, records) = collector.await.context("the collector task failed")?;
    let wall = start.elapsed();
    Ok(RunResult {
        started_at,
        wall,
        stats,
        records,
    })
}
