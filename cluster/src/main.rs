//! `sentiment-server`: DistilBERT sentiment over HTTP for Kubernetes. The socket is
//! bound first so `/healthz` answers at once; the model loads on the batching thread in
//! the background and `/readyz` turns 200 after a real forward pass. SIGTERM drains.

mod batcher;
mod config;
mod http;
mod metrics;
mod openapi;
mod state;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use actix_web::{HttpServer, web};
use anyhow::{Context, Result};
use clap::Parser;
use model_cache::threads;
use sentiment_api::logging::LogFormat;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::batcher::{Job, Queue};
use crate::config::Args;
use crate::metrics::Metrics;
use crate::state::{AppState, ModelInfo};

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = args.model.thread_count();
    // SAFETY: nothing else runs yet; candle reads RAYON_NUM_THREADS on every matmul.
    unsafe { threads::export_thread_count(threads) };
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    sentiment_api::logging::init(format, "info");
    actix_web::rt::System::new().block_on(serve(args, threads))
}

async fn serve(args: Args, threads: usize) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let batching = args.batching();
    let (queue, jobs) = Queue::new(batching.queue_capacity, Arc::clone(&metrics));
    let http_workers = args
        .http_workers
        .unwrap_or_else(threads::default_threads)
        .max(1);
    let state = web::Data::new(AppState::new(
        queue,
        Arc::clone(&metrics),
        batching,
        threads,
        http_workers,
    ));

    let bind = args.bind_addr();
    let listener = TcpListener::bind(&bind).with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app_state = state.clone();
    let server = HttpServer::new(move || http::app(app_state.clone()))
        .workers(http_workers)
        // Signals are ours: readiness must drop before actix stops accepting.
        .disable_signals()
        .shutdown_timeout(args.shutdown_grace_secs)
        // A client that closes its side has gone away: end its connection so the
        // handler is dropped and the worker skips its queued job.
        .h1_allow_half_closed(false)
        .listen(listener)
        .context("starting the HTTP server")?
        .run();
    tracing::info!("listening on http://{addr}");

    let (load_failed_tx, load_failed_rx) = oneshot::channel();
    let worker_state = state.clone().into_inner();
    std::thread::Builder::new()
        .name("batcher".into())
        .spawn(move || {
            if let Err(e) = load_and_serve(&args, threads, &worker_state, jobs) {
                let _ = load_failed_tx.send(e);
            }
        })
        .context("starting the batching thread")?;

    let handle = server.handle();
    let failure = Arc::new(std::sync::Mutex::new(None::<anyhow::Error>));
    let failure_slot = Arc::clone(&failure);
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    actix_web::rt::spawn(async move {
        let graceful = tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); true }
            _ = sigint.recv() => { tracing::info!("SIGINT: draining"); true }
            Ok(error) = load_failed_rx => {
                tracing::error!("model load failed: {error:#}");
                if let Ok(mut slot) = failure_slot.lock() {
                    *slot = Some(error);
                }
                false
            }
        };
        // Readiness first, so the endpoints controller stops routing here while
        // in-flight and queued requests finish.
        state.mark_draining();
        handle.stop(graceful).await;
    });

    server.await.context("running the HTTP server")?;
    let failure = failure.lock().ok().and_then(|mut slot| slot.take());
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("drained; exiting");
            Ok(())
        }
    }
}

/// Runs on the batching thread: resolve and load the model, prove it with one forward
/// pass, flip readiness, then batch until the queue closes.
fn load_and_serve(
    args: &Args,
    threads: usize,
    state: &Arc<AppState>,
    jobs: Receiver<Job>,
) -> Result<()> {
    if args.load_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.load_delay_ms));
    }
    let options = model_cache::ClassifierOptions {
        threads: Some(threads),
        ..args.model.classifier_options()
    };
    let loaded = model_cache::load(&args.model.source(), &options)?;
    let report = loaded.report;
    state.metrics.model_load_seconds.set(report.total_seconds);
    let info = ModelInfo {
        source: report.source.clone(),
        dir: report.dir.display().to_string(),
        classifier: loaded.classifier.info().clone(),
        warmup_seconds: report.warmup_seconds,
    };
    let _ = state.model.set(info);
    if state.mark_ready() {
        tracing::info!(
            max_batch = state.batching.max_batch,
            max_wait_ms = state.batching.max_wait_ms,
            "ready: model {} loaded in {:.3} s (warm-up pass included), {threads} inference threads",
            report.source,
            report.total_seconds,
        );
    }
    let hash_state = Arc::clone(state);
    let weights = loaded.checkpoint.weights_path();
    // Hashing the full checkpoint takes about a second: off the critical path.
    std::thread::Builder::new()
        .name("hash-weights".into())
        .spawn(move || match model_cache::sha256_file(&weights) {
            Ok(sha) => {
                let _ = hash_state.weights_sha256.set(sha);
            }
            Err(e) => tracing::warn!("hashing {}: {e}", weights.display()),
        })
        .context("starting the hashing thread")?;
    batcher::run_worker(&loaded.classifier, &jobs, &state.batching, &state.metrics);
    Ok(())
}
