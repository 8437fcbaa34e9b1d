//! Backends that fail on purpose: a tiny hyper server on 127.0.0.1:0 answering
//! `POST /predict` from a script, and a router in front of two of them.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sentiment_router::{Config, Router, server};
use tokio::net::TcpListener;

/// One scripted answer to `POST /predict`.
#[derive(Clone, Debug)]
pub enum Step {
    /// Status, headers, body.
    Reply(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// The request body back, 200, with the services' timing headers.
    Echo,
    /// Wait, then do the inner step (longer than the attempt timeout: a hang).
    After(Duration, Box<Step>),
}

pub fn reply(status: u16, body: &'static str) -> Step {
    Step::Reply(status, vec![("content-type", "application/json")], body)
}

pub fn hang() -> Step {
    Step::After(Duration::from_secs(60), Box::new(reply(200, "{}")))
}

pub const OK_BODY: &str = r#"{"label":"POSITIVE","score":0.9998}"#;

/// What `/healthz` answers.
#[derive(Clone, Copy, Debug)]
pub enum Healthz {
    /// 200, like the Kubernetes server.
    Up,
    /// 404 `{"message":"Not Found"}`, like the API Gateway front.
    Absent,
    /// 500.
    Failing,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    /// `/predict` requests received.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

async fn run_step(step: Step, body: Bytes) -> Resp {
    let mut step = step;
    loop {
        match step {
            Step::After(wait, inner) => {
                tokio::time::sleep(wait).await;
                step = *inner;
            }
            Step::Echo => {
                return Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("x-queue-time", "0.100")
                    .header("x-inference-time", "1.500")
                    .header("x-total-time", "1.700")
                    .body(Full::new(body))
                    .unwrap();
            }
            Step::Reply(status, headers, text) => {
                let mut b = Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                return b
                    .body(Full::new(Bytes::from_static(text.as_bytes())))
                    .unwrap();
            }
        }
    }
}

/// Serves `script` in order, then `then` for every later request.
pub async fn backend(script: Vec<Step>, then: Step, healthz: Healthz) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let (h, s) = (hits.clone(), script.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (hits, script, then) = (h.clone(), s.clone(), then.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (hits, script, then) = (hits.clone(), script.clone(), then.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let resp = match path.as_str() {
                                "/predict" => {
                                    hits.fetch_add(1, Ordering::SeqCst);
                                    let step = script.lock().unwrap().pop_front().unwrap_or(then);
                                    run_step(step, body).await
                                }
                                "/healthz" => match healthz {
                                    Healthz::Up => {
                                        run_step(reply(200, r#"{"status":"ok"}"#), body).await
                                    }
                                    Healthz::Absent => {
                                        run_step(reply(404, r#"{"message":"Not Found"}"#), body)
                                            .await
                                    }
                                    Healthz::Failing => run_step(reply(500, "{}"), body).await,
                                },
                                _ => run_step(reply(404, "{}"), body).await,
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend { addr, hits, task }
}

/// Always answers `OK_BODY`.
pub async fn healthy(healthz: Healthz) -> TestBackend {
    backend(vec![], reply(200, OK_BODY), healthz).await
}

/// A loopback URL where nothing listens (connection refused).
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

/// A config with test-friendly timings: short backoff, a 5 s deadline, probes off.
pub fn config(lambda_url: &str, k8s_url: &str) -> Config {
    let mut c = Config::new(lambda_url, k8s_url);
    c.retry.base_backoff = Duration::from_millis(5);
    c.retry.max_backoff = Duration::from_millis(50);
    c.retry.deadline = Duration::from_secs(5);
    c.retry.attempt_timeout = Duration::from_secs(2);
    c.health.probe_interval = None;
    c
}

/// A router server in front of `config`.
pub async fn router(config: Config) -> server::Running {
    let router = Router::new(config).unwrap();
    server::spawn(
        router,
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// A healthy k8s backend (`/healthz` up, always `OK_BODY`) and a router over it and
/// `lambda`; the backend comes back first so it outlives the router, and its hits count.
pub async fn healthy_k8s_and_router(lambda: &TestBackend) -> (TestBackend, server::Running) {
    let k8s = healthy(Healthz::Up).await;
    let router = router(config(&lambda.url(), &k8s.url())).await;
    (k8s, router)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs `body` as JSON to the router's `/predict` with `query`.
pub async fn predict(router: &server::Running, query: &str, body: &str) -> reqwest::Response {
    client()
        .post(format!("http://{}/predict{query}", router.addr))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// The router's `/metrics` text.
pub async fn metrics(router: &server::Running) -> String {
    client()
        .get(format!("http://{}/metrics", router.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Asserts that the router answered 200 from `backend` after `attempts` attempts.
pub fn assert_answered(r: &reqwest::Response, backend: &str, attempts: u32) {
    assert_eq!(r.status(), 200);
    assert_eq!(header(r, "x-backend"), backend);
    assert_eq!(header(r, "x-attempts"), attempts.to_string());
}
