//! The function: a classifier loaded once during init and reused by every invocation of
//! this instance, and one structured log line per invocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use model_cache::Classifier;
use sentiment_api::{ErrorBody, ErrorKind, PredictResponse};
use serde_json::Value;

use crate::event::{self, Source};

/// What one invocation produced, for the log line and for tests.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub payload: Value,
    pub status: u16,
    pub source: Source,
    pub texts: usize,
}

/// The loaded function. Built in `main` before the runtime loop starts.
pub struct Function {
    classifier: Classifier,
    /// How long init took, logged on the first (cold) invocation.
    init_duration: Duration,
    served_first: AtomicBool,
}

impl Function {
    pub fn new(classifier: Classifier, init_duration: Duration) -> Self {
        Self {
            classifier,
            init_duration,
            served_first: AtomicBool::new(false),
        }
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Answers one invocation payload. Never fails: bad input and inference errors
    /// become error responses with the same bodies and statuses as the Kubernetes
    /// server, so Lambda never records them as function errors.
    pub fn handle(&self, event: &Value) -> Outcome {
        let invocation = event::parse(event);
        let source = invocation.source;
        let request = match invocation.request {
            Ok(request) => request,
            Err(error) => return error_outcome(source, &error, 0),
        };
        let texts = request.texts();
        match self.classifier.classify(&texts) {
            Ok(predictions) => {
                let body =
                    serde_json::to_value(PredictResponse::for_request(&request, predictions))
                        .unwrap_or(Value::Null);
                Outcome {
                    payload: event::respond(source, 200, &body),
                    status: 200,
                    source,
                    texts: texts.len(),
                }
            }
            Err(e) => {
                // The detail goes to the log, not only to the client: it is our bug or a
                // broken model, never the caller's input.
                tracing::error!(error = %e, "inference failed");
                let error = ErrorBody::new(ErrorKind::Internal, format!("inference failed: {e}"));
                error_outcome(source, &error, texts.len())
            }
        }
    }

    /// [`handle`](Self::handle) plus the per-invocation log line.
    pub fn handle_and_log(&self, event: &Value, request_id: &str) -> Value {
        let started = Instant::now();
        let cold = !self.served_first.swap(true, Ordering::Relaxed);
        let outcome = self.handle(event);
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        if cold {
            tracing::info!(
                request_id,
                cold,
                init_ms = self.init_duration.as_secs_f64() * 1e3,
                duration_ms,
                status = outcome.status,
                source = outcome.source.as_str(),
                texts = outcome.texts,
                "invocation"
            );
        } else {
            tracing::info!(
                request_id,
                cold,
                duration_ms,
                status = outcome.status,
                source = outcome.source.as_str(),
                texts = outcome.texts,
                "invocation"
            );
        }
        outcome.payload
    }
}

fn error_outcome(source: Source, error: &ErrorBody, texts: usize) -> Outcome {
    let (status, payload) = event::error_response(source, error);
    Outcome {
        payload,
        status,
        source,
        texts,
    }
}
