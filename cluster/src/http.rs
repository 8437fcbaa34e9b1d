//! Routes and handlers: thin adapters from HTTP to the shared wire types and the
//! batching queue. Every error answer is the shared `{"error", "detail"}` body with the
//! status [`ErrorKind::status`] gives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, web};
use sentiment_api::{self as wire, ErrorBody, ErrorKind, PredictRequest, PredictResponse};
use serde_json::json;
use tokio::sync::oneshot;

use crate::batcher::{Job, JobError, SubmitError};
use crate::state::{AppState, Phase};

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// Builds the application; called once per HTTP worker.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = Arc::clone(&state.metrics);
    App::new()
        .app_data(state)
        .wrap_fn(move |req, srv| {
            // Route patterns (not raw paths) and a closed set of methods keep the
            // label space fixed whatever clients send.
            let route = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let method: &'static str = match req.method().as_str() {
                "GET" => "GET",
                "POST" => "POST",
                "HEAD" => "HEAD",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                "PATCH" => "PATCH",
                "OPTIONS" => "OPTIONS",
                _ => "other",
            };
            let started = Instant::now();
            let metrics = Arc::clone(&metrics);
            let response = srv.call(req);
            async move {
                let response = response.await?;
                metrics.count_request(
                    &route,
                    method,
                    response.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
                Ok(response)
            }
        })
        .service(
            web::resource("/predict")
                .route(web::post().to(predict))
                .default_service(web::to(method_not_allowed)),
        )
        .service(get_only("/healthz", healthz))
        .service(get_only("/readyz", readyz))
        .service(get_only("/metrics", metrics_text))
        .service(get_only("/info", info))
        .service(get_only("/openapi.json", openapi))
        .default_service(web::to(not_found))
}

fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// An error answer: the shared body plus what HTTP needs around it.
struct ApiError {
    body: ErrorBody,
    retry_after: bool,
}

impl ApiError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            body: ErrorBody::new(kind, detail),
            retry_after: matches!(kind, ErrorKind::Overloaded | ErrorKind::NotReady),
        }
    }

    fn response(&self) -> HttpResponseBuilder {
        let status = StatusCode::from_u16(self.body.error.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        if self.retry_after {
            builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        builder
    }

    fn into_response(self) -> HttpResponse {
        self.response().json(&self.body)
    }
}

/// Timings for the `x-*-time` headers.
#[derive(Default)]
struct Timings {
    queue: Duration,
    inference: Duration,
}

/// Classify one text or a list of texts.
#[utoipa::path(
    post,
    path = "/predict",
    request_body = PredictRequest,
    responses(
        (status = 200, description = "One prediction for `text`, a list in request order for `inputs`",
         body = PredictResponse,
         headers(
             ("x-queue-time" = String, description = "Time waiting for a batch, in milliseconds"),
             ("x-inference-time" = String, description = "Tokenization and forward pass of the batch, in milliseconds"),
             ("x-total-time" = String, description = "Time in the server, in milliseconds"),
         )),
        (status = 400, description = "Body is not UTF-8 JSON", body = ErrorBody),
        (status = 405, description = "Method other than POST", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Content type is not application/json", body = ErrorBody),
        (status = 422, description = "Empty text, wrong field types, or too many inputs", body = ErrorBody),
        (status = 500, description = "Inference failed", body = ErrorBody),
        (status = 503, description = "Queue full or model not ready; see Retry-After", body = ErrorBody),
        (status = 504, description = "No answer within --request-timeout-ms", body = ErrorBody),
    )
)]
pub async fn predict(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let mut timings = Timings::default();
    let mut response = match predict_inner(&req, payload, &state, started, &mut timings).await {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(error) => {
            let draining = state.phase() == Phase::Draining;
            let mut builder = error.response();
            if draining {
                // Tell keep-alive clients to reconnect: to another pod, once this one
                // has left the Service's endpoints.
                builder.insert_header((header::CONNECTION, "close"));
            }
            builder.json(&error.body)
        }
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (wire::QUEUE_TIME_HEADER, timings.queue),
        (wire::INFERENCE_TIME_HEADER, timings.inference),
        (wire::TOTAL_TIME_HEADER, started.elapsed()),
    ] {
        let millis = format!("{:.3}", value.as_secs_f64() * 1e3);
        if let Ok(value) = HeaderValue::from_str(&millis) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    }
    response
}

async fn predict_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    started: Instant,
    timings: &mut Timings,
) -> Result<PredictResponse, ApiError> {
    match state.phase() {
        Phase::Ready => {}
        Phase::Loading => {
            return Err(ApiError::new(
                ErrorKind::NotReady,
                "the model is still loading; retry shortly",
            ));
        }
        Phase::Draining => {
            return Err(ApiError::new(
                ErrorKind::NotReady,
                "the server is shutting down; retry on another instance",
            ));
        }
    }
    check_content_type(req)?;
    let limit = state.batching.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    // Refuse a declared oversized body before reading a byte of it.
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let timeout = Duration::from_millis(state.batching.request_timeout_ms);
    let deadline = started + timeout;
    // The deadline covers the upload too: actix only times out a slow request head, and
    // a client stalling mid-body would otherwise hold its connection forever.
    let body = match tokio::time::timeout_at(deadline.into(), payload.to_bytes_limited(limit)).await
    {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(e))) => {
            return Err(ApiError::new(
                ErrorKind::InvalidJson,
                format!("reading the body failed: {e}"),
            ));
        }
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "the request body did not arrive within the request timeout of {} ms",
                    timeout.as_millis()
                ),
            ));
        }
    };
    let request = wire::parse_request(&body).map_err(|e| {
        let body = e.to_body();
        ApiError::new(body.error, body.detail)
    })?;

    let (reply, answer) = oneshot::channel();
    let job = Job {
        texts: request.texts().into_iter().map(str::to_owned).collect(),
        enqueued: Instant::now(),
        deadline,
        reply,
    };
    state.queue.submit(job).map_err(|e| match e {
        SubmitError::Full { .. } => ApiError::new(ErrorKind::Overloaded, e.to_string()),
        SubmitError::WorkerGone => ApiError::new(ErrorKind::NotReady, e.to_string()),
    })?;
    let timed_out = || {
        ApiError::new(
            ErrorKind::Timeout,
            format!(
                "no answer within the request timeout of {} ms; the server is overloaded",
                timeout.as_millis()
            ),
        )
    };
    let output = match tokio::time::timeout_at(deadline.into(), answer).await {
        Err(_) => {
            timings.queue = started.elapsed();
            return Err(timed_out());
        }
        Ok(Err(_)) => {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "the inference worker stopped before answering",
            ));
        }
        Ok(Ok(Err(JobError::Deadline { .. }))) => {
            timings.queue = started.elapsed();
            return Err(timed_out());
        }
        Ok(Ok(Err(e @ JobError::Inference(_)))) => {
            return Err(ApiError::new(ErrorKind::Internal, e.to_string()));
        }
        Ok(Ok(Ok(output))) => output,
    };
    timings.queue = output.queue_time;
    timings.inference = output.inference_time;
    let metrics = &state.metrics;
    metrics
        .queue_seconds
        .observe(output.queue_time.as_secs_f64());
    metrics
        .inference_seconds
        .observe(output.inference_time.as_secs_f64());
    metrics.tokens_per_request.observe(output.tokens as f64);
    Ok(PredictResponse::for_request(&request, output.predictions))
}

fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let value = req.headers().get(header::CONTENT_TYPE);
    let value = value.map(|v| v.to_str().unwrap_or("(not text)"));
    sentiment_api::check_content_type(value).map_err(|body| ApiError::new(body.error, body.detail))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// Model loaded, one forward pass succeeded, not draining.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Not ready", body = ErrorBody),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.phase() {
        Phase::Ready => HttpResponse::Ok().json(json!({"status": "ready"})),
        Phase::Loading => {
            ApiError::new(ErrorKind::NotReady, "the model is still loading").into_response()
        }
        Phase::Draining => {
            ApiError::new(ErrorKind::NotReady, "the server is shutting down").into_response()
        }
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text"),
))]
pub async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    match state.metrics.encode() {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => {
            ApiError::new(ErrorKind::Internal, format!("encoding metrics: {e}")).into_response()
        }
    }
}

/// Model, checkpoint sha256, dimensions, threads, batching settings, version.
#[utoipa::path(get, path = "/info", responses((status = 200, description = "Server and model description")))]
pub async fn info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "ready": state.phase() == Phase::Ready,
        "model": state.model.get(),
        "weights_sha256": state.weights_sha256.get(),
        "threads": state.threads,
        "http_workers": state.http_workers,
        "batching": state.batching,
        "limits": {
            "max_text_bytes": wire::MAX_TEXT_BYTES,
            "max_batch_inputs": wire::MAX_BATCH_INPUTS,
        },
    }))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no route {}; see /openapi.json",
            req.path().chars().take(200).collect::<String>()
        ),
    )
    .into_response()
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let allow = if req.path() == "/predict" {
        "POST"
    } else {
        "GET"
    };
    let mut response = ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
