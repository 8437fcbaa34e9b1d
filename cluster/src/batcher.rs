//! The bounded queue and the batching worker. The worker owns the [`Classifier`] on its
//! own OS thread (HTTP workers never run the model) and is reached only through the
//! queue: it takes up to `max_batch` texts or waits at most `max_wait` after the first,
//! whichever comes first, skips callers that went away or ran out of time, runs one
//! forward pass and answers each caller on its own channel.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use model_cache::{Classifier, Prediction};
use tokio::sync::oneshot;

use crate::config::Batching;
use crate::metrics::Metrics;

/// One request's texts on their way to the model.
pub struct Job {
    pub texts: Vec<String>,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<JobOutput, JobError>>,
}

/// What the worker sends back for a [`Job`].
#[derive(Debug)]
pub struct JobOutput {
    pub predictions: Vec<Prediction>,
    /// From enqueue to the start of the batch's forward pass.
    pub queue_time: Duration,
    /// Tokenization plus forward pass of the whole batch.
    pub inference_time: Duration,
    /// Tokens of this job's texts after truncation.
    pub tokens: usize,
}

/// Why a queued job got no predictions.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's deadline passed before its batch ran.
    #[error("the request waited {waited_ms} ms in the queue, past its deadline")]
    Deadline { waited_ms: u128 },
    /// The forward pass failed (or panicked); every job in the batch gets this.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `capacity` jobs already.
    #[error("the queue is full ({capacity} requests waiting); retry shortly")]
    Full { capacity: usize },
    /// The worker is gone (its thread ended).
    #[error("the inference worker has stopped")]
    WorkerGone,
}

/// The sending side, shared by every HTTP worker.
pub struct Queue {
    tx: SyncSender<Job>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// A queue of `capacity` jobs and the receiver the worker will drain.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Self, Receiver<Job>) {
        let (tx, rx) = sync_channel(capacity);
        (
            Self {
                tx,
                capacity,
                metrics,
            },
            rx,
        )
    }

    /// Queues `job` without blocking: a full queue is the caller's 503, never a wait.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        // Counted before sending so the worker's decrement can never run first and
        // leave the gauge negative for a moment.
        self.metrics.queue_depth.inc();
        self.tx.try_send(job).map_err(|e| {
            self.metrics.queue_depth.dec();
            match e {
                TrySendError::Full(_) => SubmitError::Full {
                    capacity: self.capacity,
                },
                TrySendError::Disconnected(_) => SubmitError::WorkerGone,
            }
        })
    }
}

/// The batching loop; returns when every [`Queue`] is dropped and the queue is empty.
pub fn run_worker(
    classifier: &Classifier,
    rx: &Receiver<Job>,
    settings: &Batching,
    metrics: &Metrics,
) {
    let max_wait = Duration::from_millis(settings.max_wait_ms);
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => {
                    metrics.queue_depth.dec();
                    job
                }
                Err(_) => return,
            },
        };
        let mut texts = first.texts.len();
        let mut batch = vec![first];
        let window_end = Instant::now() + max_wait;
        while texts < settings.max_batch {
            let next = match window_end.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => rx.recv_timeout(left),
                _ => rx.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            };
            let Ok(job) = next else { break };
            metrics.queue_depth.dec();
            // A request is never split across passes: one that does not fit waits for
            // the next batch, where it goes first.
            if texts + job.texts.len() > settings.max_batch {
                held = Some(job);
                break;
            }
            texts += job.texts.len();
            batch.push(job);
        }
        run_batch(classifier, batch, settings, metrics);
    }
}

fn run_batch(classifier: &Classifier, batch: Vec<Job>, settings: &Batching, metrics: &Metrics) {
    if !settings.inference_delay.is_zero() {
        std::thread::sleep(settings.inference_delay);
    }
    let now = Instant::now();
    let mut live = Vec::with_capacity(batch.len());
    for job in batch {
        if job.reply.is_closed() {
            // The HTTP side dropped its receiver: the client disconnected or its
            // handler already answered 504. Running it would only delay the others.
            metrics.drop_request("client_gone");
        } else if now >= job.deadline {
            metrics.drop_request("deadline");
            let waited_ms = now.duration_since(job.enqueued).as_millis();
            let _ = job.reply.send(Err(JobError::Deadline { waited_ms }));
        } else {
            live.push(job);
        }
    }
    if live.is_empty() {
        return;
    }
    let texts: Vec<&str> = live
        .iter()
        .flat_map(|job| job.texts.iter().map(String::as_str))
        .collect();
    let n_texts = texts.len();
    metrics.batch_size.observe(n_texts as f64);
    let started = Instant::now();
    // A panic inside the model must not kill the only inference thread: every caller
    // would then hang until its deadline. Turn it into a 500 for this batch instead.
    let result = catch_unwind(AssertUnwindSafe(|| classifier.classify_with_stats(&texts)));
    let inference_time = started.elapsed();
    let outcome = match result {
        Ok(Ok((predictions, stats))) if predictions.len() == texts.len() => {
            Ok((predictions, stats.tokens))
        }
        Ok(Ok((predictions, _))) => Err(format!(
            "the model returned {} predictions for {} texts",
            predictions.len(),
            texts.len()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the model panicked".to_owned()),
    };
    match outcome {
        Ok((predictions, tokens)) => {
            let mut predictions = predictions.into_iter();
            let mut tokens = tokens.into_iter();
            for job in live {
                let n = job.texts.len();
                let output = JobOutput {
                    predictions: predictions.by_ref().take(n).collect(),
                    queue_time: started.duration_since(job.enqueued),
                    inference_time,
                    tokens: tokens.by_ref().take(n).sum(),
                };
                let _ = job.reply.send(Ok(output));
            }
        }
        Err(detail) => {
            tracing::error!(%detail, texts = n_texts, "forward pass failed");
            for job in live {
                let _ = job.reply.send(Err(JobError::Inference(detail.clone())));
            }
        }
    }
}
