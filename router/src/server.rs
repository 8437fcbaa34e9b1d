//! The HTTP front: `POST /predict?backend=lambda|k8s|auto`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`; JSON errors for everything else; graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sentiment_api::{ErrorBody, ErrorKind, check_content_type};
use serde_json::json;
use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::client::{ATTEMPTS_HEADER, BACKEND_HEADER, Router};
use crate::select::Choice;

pub type HttpResponse = Response<Full<Bytes>>;

/// The OpenMetrics text content type.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct App {
    router: Router,
    draining: AtomicBool,
}

fn json_response(status: u16, body: &impl serde::Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// How much of an over-limit body is read (and dropped) so its sender gets the 413.
fn drain_cap(limit: usize) -> usize {
    limit.saturating_mul(8).max(16 << 20)
}

enum BodyError {
    /// Over the limit; `drained` when it was read to its end.
    TooLarge {
        drained: bool,
    },
    Read(hyper::Error),
}

/// Reads a body of at most `limit` bytes; past it, reads on and drops up to
/// [`drain_cap`].
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                kept.extend_from_slice(&data);
            } else if total > drain_cap(limit) {
                return Err(BodyError::TooLarge { drained: false });
            }
        }
    }
    if total > limit {
        return Err(BodyError::TooLarge { drained: true });
    }
    Ok(Bytes::from(kept))
}

fn error(kind: ErrorKind, detail: impl Into<String>) -> HttpResponse {
    json_response(kind.status(), &ErrorBody::new(kind, detail))
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let path = req.uri().path();
        let allowed = match path {
            "/predict" => "POST",
            "/healthz" | "/readyz" | "/metrics" => "GET, HEAD",
            _ => {
                return error(
                    ErrorKind::NotFound,
                    format!("no route {path}; see /predict, /healthz, /readyz, /metrics"),
                );
            }
        };
        let method = req.method();
        let ok = if allowed == "POST" {
            method == Method::POST
        } else {
            method == Method::GET || method == Method::HEAD
        };
        if !ok {
            let mut r = error(
                ErrorKind::MethodNotAllowed,
                format!("{path} accepts {allowed}, not {method}"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
            return r;
        }
        match path {
            "/predict" => self.predict(req).await,
            "/healthz" => json_response(200, &json!({ "status": "ok" })),
            "/readyz" => self.readyz(),
            _ => {
                let mut r = Response::new(Full::new(Bytes::from(self.router.encode_metrics())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
                );
                r
            }
        }
    }

    fn readyz(&self) -> HttpResponse {
        let backends: serde_json::Map<String, serde_json::Value> = Backend::ALL
            .iter()
            .map(|b| {
                let s = self.router.snapshot(*b);
                (
                    b.to_string(),
                    json!({
                        "healthy": s.healthy,
                        "probe": format!("{:?}", s.probe).to_lowercase(),
                        "consecutive_failures": s.consecutive_failures,
                        "ewma_ms": s.ewma.map(|d| d.as_secs_f64() * 1000.0),
                    }),
                )
            })
            .collect();
        let draining = self.draining.load(Ordering::Relaxed);
        let ready = !draining && self.router.ready();
        let status = if draining {
            "draining"
        } else if ready {
            "ready"
        } else {
            "no backend healthy"
        };
        json_response(
            if ready { 200 } else { 503 },
            &json!({ "status": status, "backends": backends }),
        )
    }

    async fn predict(&self, req: Request<Incoming>) -> HttpResponse {
        let metrics = self.router.metrics();
        let refuse = |r: HttpResponse| {
            metrics.request("none", r.status().as_u16());
            r
        };
        let choice = match backend_param(req.uri().query()) {
            Ok(Some(c)) => c,
            Ok(None) => self.router.config().default_choice,
            Err(detail) => return refuse(error(ErrorKind::InvalidInput, detail)),
        };
        let content_type = match req.headers().get(header::CONTENT_TYPE) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(s) => Some(s.to_string()),
                Err(_) => {
                    return refuse(error(
                        ErrorKind::UnsupportedMediaType,
                        "the content type is not readable text; send application/json",
                    ));
                }
            },
        };
        // The same rule every backend applies: refusing here saves a hop, same answer.
        if let Err(body) = check_content_type(content_type.as_deref()) {
            return refuse(json_response(body.error.status(), &body));
        }
        let limit = self.router.config().max_body_bytes;
        let too_large = |drained: bool| {
            let mut r = error(
                ErrorKind::PayloadTooLarge,
                format!("the body is over the limit of {limit} bytes"),
            );
            // Unread bytes left on the socket make the close a reset, which a client
            // still writing sees instead of this answer; so the body is read and
            // dropped, and only a body too big even for that closes the connection.
            if !drained {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > drain_cap(limit) as u64) {
            return refuse(too_large(false));
        }
        // The deadline covers the upload too, so a stalled client cannot hold a slot.
        let deadline = self.router.config().retry.deadline;
        let body = match tokio::time::timeout(deadline, read_body(req.into_body(), limit)).await {
            Ok(Ok(body)) => body,
            Ok(Err(BodyError::TooLarge { drained })) => return refuse(too_large(drained)),
            Ok(Err(BodyError::Read(e))) => {
                return refuse(error(
                    ErrorKind::InvalidJson,
                    format!("reading the body failed: {e}"),
                ));
            }
            Err(_) => {
                return refuse(error(
                    ErrorKind::Timeout,
                    "the request body did not arrive within the deadline",
                ));
            }
        };
        match self
            .router
            .predict(choice, body, content_type.as_deref())
            .await
        {
            Ok(answer) => {
                let mut r = Response::new(Full::new(answer.body));
                *r.status_mut() =
                    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
                *r.headers_mut() = answer.headers;
                r
            }
            Err(e) => {
                let mut r = Response::new(Full::new(e.body_bytes()));
                *r.status_mut() =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(
                    BACKEND_HEADER,
                    HeaderValue::from_static(e.backend().as_str()),
                );
                h.insert(ATTEMPTS_HEADER, HeaderValue::from(e.attempts()));
                r
            }
        }
    }
}

/// `backend=` from the query string, if there.
fn backend_param(query: Option<&str>) -> Result<Option<Choice>, String> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "backend" {
            return value
                .parse()
                .map(Some)
                .map_err(|e: crate::select::UnknownChoice| e.to_string());
        }
    }
    Ok(None)
}

/// A server running in the background (tests, embedding).
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (within the grace period), and
    /// waits for that.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves in a background task (port 0 picks a free port).
pub async fn spawn(router: Router, addr: SocketAddr, grace: Duration) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        grace,
    ));
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Serves on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to `grace` to finish. Runs the health probes meanwhile.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let _probes = router.spawn_probes();
    let app = Arc::new(App {
        router,
        draining: AtomicBool::new(false),
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    app.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "stopping: draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with requests still in flight");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_parameter_parses() {
        assert_eq!(backend_param(None), Ok(None));
        assert_eq!(backend_param(Some("x=1")), Ok(None));
        assert_eq!(
            backend_param(Some("x=1&backend=k8s")),
            Ok(Some(Choice::Fixed(Backend::K8s)))
        );
        assert_eq!(backend_param(Some("backend=auto")), Ok(Some(Choice::Auto)));
        assert!(backend_param(Some("backend=gpu")).is_err());
    }
}
