//! A tiny HTTP/1.1 server on 127.0.0.1 that answers every request like `/predict`
//! (200, `{"label":"POSITIVE","score":0.99}`, the timing headers) after a fixed delay,
//! and counts what it got. For the tests and `bench selftest`: the generator's
//! accuracy and its top rate are measured against it, not against a model.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const ANSWER: &[u8] = br#"{"label":"POSITIVE","score":0.99}"#;

/// A running loopback server; stopped when dropped.
pub struct Loopback {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// Starts a server whose answers each take `delay`.
    pub async fn start(delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            let _ = req.into_body().collect().await;
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let ms = format!("{:.3}", delay.as_secs_f64() * 1000.0);
                            let resp = Response::builder()
                                .header("content-type", "application/json")
                                .header(sentiment_api::QUEUE_TIME_HEADER, "0.000")
                                .header(sentiment_api::INFERENCE_TIME_HEADER, ms.as_str())
                                .header(sentiment_api::TOTAL_TIME_HEADER, ms.as_str())
                                .body(Full::new(Bytes::from_static(ANSWER)))
                                .expect("static response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, hits, task })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.task.abort();
    }
}
