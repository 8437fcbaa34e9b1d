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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::client::{Conn, Endpoint};

use crate::corpus::{Corpus, text_of_words};
use crate::schedule::Planned;
use crate::stats::{BackendStats, Record};
use crate::targets::Target;

/// A send more than this after its scheduled time counts as late: it catches any real
/// stall, and leaves out the thread sleep's slack (~0.1 ms, see [`TIMER_LEAD`]).
pub const DEFAULT_LATE_THRESHOLD: Duration = Duration::from_millis(2);

/// How long before a send is due tokio's timer wakes the dispatcher, which then waits
/// out the rest with a thread sleep (nanosleep: ~0.05 ms of slack). Tokio's timer fires
/// on whole milliseconds and rounds a deadline up, so a send it timed left up to ~2 ms
/// late, and every latency (counted from the scheduled time) carried that lag. The
/// thread sleep blocks the dispatcher's runtime thread for at most this long, while
/// nothing is due; the connection workers run on the other threads meanwhile, and on
/// its own at least every `TIMER_LEAD`.
const TIMER_LEAD: Duration = Duration::from_millis(1);

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The HTTP client of the https path: one for the run, connections kept and reused per
/// backend.
pub fn client() -> anyhow::Result<reqwest::Client> {
    crate::client::reqwest_client()
}

/// A fresh record for request `i` to `backend`, due at `due` and leaving now.
fn record(start: Instant, backend: &str, i: usize, due: Instant, body: &Body) -> Record {
    let sent = Instant::now();
    let (_, text_class, words) = *body;
    Record::new(
        i,
        backend,
        text_class,
        words,
        ms(due.saturating_duration_since(start)),
        ms(sent.saturating_duration_since(start)),
    )
}

/// A request body with its text's class and length in words.
type Body = (Bytes, &'static str, usize);

/// Sends one request due at `due` on `conn`, now, and returns its record.
async fn send_one(
    conn: &mut Conn,
    start: Instant,
    backend: &str,
    timeout: Duration,
    i: usize,
    due: Instant,
    body: &Body,
) -> Record {
    let mut rec = record(start, backend, i, due, body);
    let sent = Instant::now();
    conn.send(body.0.clone(), timeout, &mut rec).await;
    let done = Instant::now();
    rec.latency_ms = ms(done.saturating_duration_since(due));
    rec.service_ms = ms(done.saturating_duration_since(sent));
    rec
}

/// A request handed to a connection worker.
struct Job {
    i: usize,
    due: Instant,
    body: usize,
}

/// A worker's report: which worker is free again, and the record of its request.
struct Done {
    backend: usize,
    worker: usize,
    /// `None` when a new worker is ready (its connection open, or failed: then its
    /// first request tries again and records the failure).
    record: Option<Record>,
}

/// One backend as the open loop's dispatcher sees it: its connection workers (each
/// one connection, one request at a time), the free ones, and the requests due that
/// wait for a free one because `max_in_flight` workers are busy.
struct Pool {
    name: Arc<str>,
    endpoint: Arc<Endpoint>,
    workers: Vec<mpsc::UnboundedSender<Job>>,
    idle: Vec<usize>,
    /// Workers started and not yet ready.
    connecting: usize,
    waiting: VecDeque<Job>,
}

/// Everything a connection worker shares with the others.
struct WorkerCtx {
    start: Instant,
    timeout: Duration,
    bodies: Arc<Vec<Body>>,
    done: mpsc::UnboundedSender<Done>,
}

/// A connection worker: takes its jobs one at a time, sends each when it gets it (the
/// send time is taken there, so a job that waited shows as a late send) and reports.
async fn worker(
    ctx: Arc<WorkerCtx>,
    backend: usize,
    name: Arc<str>,
    endpoint: Arc<Endpoint>,
    me: usize,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut conn = Conn::new(endpoint);
    let _ = tokio::time::timeout(ctx.timeout, conn.connect()).await;
    let ready = Done {
        backend,
        worker: me,
        record: None,
    };
    if ctx.done.send(ready).is_err() {
        return;
    }
    while let Some(job) = conn.idle_until(jobs.recv()).await {
        let body = &ctx.bodies[job.body];
        let record = send_one(
            &mut conn,
            ctx.start,
            &name,
            ctx.timeout,
            job.i,
            job.due,
            body,
        )
        .await;
        let done = Done {
            backend,
            worker: me,
            record: Some(record),
        };
        if ctx.done.send(done).is_err() {
            return;
        }
    }
}

impl Pool {
    /// Hands the waiting jobs to free workers, starting new ones up to `cap`.
    fn dispatch(&mut self, me: usize, cap: usize, ctx: &Arc<WorkerCtx>) {
        while !self.waiting.is_empty() {
            let Some(w) = self.idle.pop() else { break };
            let job = self.waiting.pop_front().expect("not empty");
            // A worker only ends when its sender is dropped.
            let _ = self.workers[w].send(job);
        }
        // More connections for the requests still waiting, up to the cap. A new
        // worker opens its connection first and then takes whichever request waits
        // longest: a request is not tied to a connection being opened while another
        // one frees up sooner (as in reqwest's pool), so a burst of new connections
        // cannot hold the sends back.
        while self.waiting.len() > self.connecting && self.workers.len() < cap {
            let (tx, rx) = mpsc::unbounded_channel();
            let w = self.workers.len();
            self.workers.push(tx);
            self.connecting += 1;
            tokio::spawn(worker(
                ctx.clone(),
                me,
                self.name.clone(),
                self.endpoint.clone(),
                w,
                rx,
            ));
        }
    }
}

/// The open loop: one dispatcher (this task) wakes when requests are due, sends all
/// that are due at once to free connection workers, and takes the workers' reports
/// (their records into the statistics, the workers back to the free list) in batches
/// at each wakeup, or as they come while requests wait for a free worker.
async fn open_loop(
    schedule: &[Planned],
    picks: &[usize],
    pools: &mut [Pool],
    ctx: Arc<WorkerCtx>,
    mut reports: mpsc::UnboundedReceiver<Done>,
    cap: usize,
    mut report: impl FnMut(Record),
) {
    let start = ctx.start;
    let mut next = 0;
    let mut in_flight = 0usize;
    // When the dispatcher last awaited.
    let mut gave_way = Instant::now();
    let mut take = |d: Done, pools: &mut [Pool], in_flight: &mut usize| {
        let pool = &mut pools[d.backend];
        pool.idle.push(d.worker);
        match d.record {
            Some(r) => {
                *in_flight -= 1;
                report(r);
            }
            None => pool.connecting -= 1,
        }
    };
    loop {
        while let Ok(d) = reports.try_recv() {
            take(d, pools, &mut in_flight);
        }
        let now = Instant::now();
        while next < schedule.len() && start + schedule[next].at <= now {
            let due = start + schedule[next].at;
            for pool in pools.iter_mut() {
                pool.waiting.push_back(Job {
                    i: next,
                    due,
                    body: picks[next],
                });
                in_flight += 1;
            }
            next += 1;
        }
        for (b, pool) in pools.iter_mut().enumerate() {
            pool.dispatch(b, cap, &ctx);
        }
        let waiting = pools.iter().any(|p| !p.waiting.is_empty());
        if next == schedule.len() && in_flight == 0 {
            return;
        }
        // Wake for the next due time; for the reports only when a request waits for
        // a free worker, or when nothing is left to send. Tokio's timer wakes the
        // dispatcher [`TIMER_LEAD`] early; a thread sleep finishes the wait.
        let due = schedule.get(next).map(|p| start + p.at);
        if let Some(due) = due {
            let wait = due.saturating_duration_since(Instant::now());
            if wait <= TIMER_LEAD {
                std::thread::sleep(wait);
                // Past 1,000 req/s the dispatcher may never await: give the workers
                // that share its thread a turn every TIMER_LEAD (on a one-thread
                // runtime they run only then). Not at every send: a yield each time
                // costs the dispatcher its place behind the workers it just woke.
                if gave_way.elapsed() >= TIMER_LEAD {
                    tokio::task::yield_now().await;
                    gave_way = Instant::now();
                }
                continue;
            }
        }
        match due.map(|due| due - TIMER_LEAD) {
            Some(due) if !waiting => tokio::time::sleep_until(due.into()).await,
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    d = reports.recv() => if let Some(d) = d { take(d, pools, &mut in_flight) },
                }
            }
            None => match reports.recv().await {
                Some(d) => take(d, pools, &mut in_flight),
                None => return,
            },
        }
        gave_way = Instant::now();
    }
}

/// Runs the load and measures it. Stops by itself: after the schedule (or the closed
/// loop's bounds), every request in flight gets at most the per-request timeout.
pub async fn run(cfg: RunConfig) -> anyhow::Result<RunResult> {
    let mut bodies = Bodies::new(&cfg.corpus);
    let picks = match &cfg.mode {
        Mode::Open { schedule } => bodies.for_schedule(&cfg.corpus, schedule),
        Mode::Closed { .. } => Vec::new(),
    };
    let bodies = Arc::new(bodies.bodies);
    let mut https = None;
    let targets = cfg
        .targets
        .iter()
        .map(|t| {
            let endpoint = Endpoint::new(&t.predict_url(), &mut https)?;
            Ok((Arc::<str>::from(t.name.as_str()), Arc::new(endpoint)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let late_ms = ms(cfg.late_threshold);
    let keep = cfg.keep_records;
    // Per backend, in the order of the targets.
    let mut stats: Vec<BackendStats> = targets.iter().map(|_| BackendStats::default()).collect();
    let mut records = Vec::new();
    let index: HashMap<Arc<str>, usize> = targets
        .iter()
        .enumerate()
        .map(|(b, (name, _))| (name.clone(), b))
        .collect();

    let started_at = SystemTime::now();
    let start = Instant::now();
    let cap = cfg.max_in_flight.max(1);
    match &cfg.mode {
        Mode::Open { schedule } => {
            let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
            let ctx = Arc::new(WorkerCtx {
                start,
                timeout: cfg.timeout,
                bodies: bodies.clone(),
                done: done_tx,
            });
            let mut pools: Vec<Pool> = targets
                .iter()
                .map(|(name, endpoint)| Pool {
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                    workers: Vec::new(),
                    idle: Vec::new(),
                    connecting: 0,
                    waiting: VecDeque::new(),
                })
                .collect();
            open_loop(schedule, &picks, &mut pools, ctx, done_rx, cap, |r| {
                stats[index[&*r.backend]].record(&r, late_ms);
                if keep {
                    records.push(r);
                }
            })
            .await;
        }
        Mode::Closed {
            concurrency,
            duration,
            max_requests,
        } => {
            let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
            let deadline = start + *duration;
            let max = max_requests.unwrap_or(usize::MAX);
            for (name, endpoint) in &targets {
                let next = Arc::new(AtomicUsize::new(0));
                for _ in 0..(*concurrency).max(1) {
                    let (name, endpoint, next, tx) =
                        (name.clone(), endpoint.clone(), next.clone(), tx.clone());
                    let (corpus, bodies) = (cfg.corpus.clone(), bodies.clone());
                    let timeout = cfg.timeout;
                    tokio::spawn(async move {
                        let mut conn = Conn::new(endpoint);
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            if i >= max || now >= deadline {
                                break;
                            }
                            let body = &bodies[corpus.pick(i)];
                            let r = send_one(&mut conn, start, &name, timeout, i, now, body).await;
                            if tx.send(r).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            // The workers hold the senders: the channel ends when the last is done.
            drop(tx);
            while let Some(r) = rx.recv().await {
                stats[index[&*r.backend]].record(&r, late_ms);
                if keep {
                    records.push(r);
                }
            }
        }
    }
    let wall = start.elapsed();
    // A backend that got no request is left out, as before.
    let stats = targets
        .iter()
        .zip(stats)
        .filter(|(_, s)| s.summary().requests > 0)
        .map(|((name, _), s)| (name.to_string(), s))
        .collect();
    Ok(RunResult {
        started_at,
        wall,
        stats,
        records,
    })
}
