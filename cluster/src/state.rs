//! What every HTTP worker shares: the lifecycle phase, the queue, the metrics and what
//! is known about the loaded model.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use model_cache::ClassifierInfo;
use serde::Serialize;

use crate::batcher::Queue;
use crate::config::Batching;
use crate::metrics::Metrics;

/// Where the server is in its life; only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Socket bound, model loading in the background: alive but not ready.
    Loading = 0,
    /// Model loaded and one real forward pass succeeded.
    Ready = 1,
    /// SIGTERM received: finishing what is in flight, refusing new work.
    Draining = 2,
}

/// The loaded model as `/info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `--model-dir` path, or `--model-id@revision`.
    pub source: String,
    pub dir: String,
    #[serde(flatten)]
    pub classifier: ClassifierInfo,
    pub warmup_seconds: f64,
}

pub struct AppState {
    phase: AtomicU8,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    pub batching: Batching,
    pub threads: usize,
    pub http_workers: usize,
    pub model: OnceLock<ModelInfo>,
    /// Filled in after readiness: hashing a 270 MB checkpoint would cost cold start.
    pub weights_sha256: OnceLock<String>,
}

impl AppState {
    pub fn new(
        queue: Queue,
        metrics: Arc<Metrics>,
        batching: Batching,
        threads: usize,
        http_workers: usize,
    ) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Loading as u8),
            queue,
            metrics,
            batching,
            threads,
            http_workers,
            model: OnceLock::new(),
            weights_sha256: OnceLock::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Loading → Ready; a server already draining stays draining.
    pub fn mark_ready(&self) -> bool {
        let flipped = self
            .phase
            .compare_exchange(
                Phase::Loading as u8,
                Phase::Ready as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if flipped {
            self.metrics.ready.set(1);
        }
        flipped
    }

    pub fn mark_draining(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::Release);
        self.metrics.ready.set(0);
    }
}
