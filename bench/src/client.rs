//! The generator's HTTP client: one connection with at most one request in flight.
//!
//! Plain `http://` endpoints go over a hyper `client::conn::http1` connection that the
//! caller's task owns and drives itself (no connection task, no pool, no per-request
//! URL parsing or header building beyond the request's own); this is the fast path
//! that lets one process keep a 20,000 req/s schedule. `https://` endpoints (the API
//! Gateway URL on AWS), and any endpoint while an HTTP proxy is configured in the
//! environment, go through reqwest with rustls as before: they run at tens to hundreds
//! of requests per second, where TLS and the network, not the client's CPU, set the
//! pace, and reqwest already brings the TLS and proxy handling.
//!
//! Either way one call of [`Conn::send`] is one attempt (no retries, except that a
//! request hyper had not written yet on a connection the server had closed goes out on
//! a fresh connection, as reqwest's pool does), and its answer fills the [`Record`]
//! the same way: status, error class, the router's and the fronts' headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{TrySendError, http1};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::{ErrorKind, Record};

fn header_f64(h: &HeaderMap, name: &str) -> Option<f64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    Some(h.get(name)?.to_str().ok()?.to_string())
}

/// The status and headers of an answer into its record (both clients).
fn fill(rec: &mut Record, status: u16, h: &HeaderMap) {
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
}

/// The reqwest client of the https path: one for the run, connections kept and reused
/// per backend.
pub fn reqwest_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// Where one backend's requests go, parsed once per run.
pub enum Endpoint {
    /// `http://host:port/path`: hyper over our own TCP connections.
    Plain {
        /// `host:port` to connect to.
        addr: String,
        /// The `Host` header (the URL's authority, as reqwest sends it).
        host: HeaderValue,
        /// The request target, `/predict`.
        path: hyper::Uri,
    },
    /// https (or a proxy in the environment): reqwest.
    Reqwest {
        client: reqwest::Client,
        url: reqwest::Url,
    },
}

/// Whether reqwest would send plain http through a proxy taken from the environment:
/// then the fast path would bypass it, so reqwest keeps the request.
fn proxy_in_env() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

impl Endpoint {
    /// The endpoint of a URL. `reqwest` is built on the first https URL and shared.
    pub fn new(url: &str, reqwest: &mut Option<reqwest::Client>) -> anyhow::Result<Self> {
        let parsed: reqwest::Url = url.parse().with_context(|| format!("{url} is not a URL"))?;
        let plain = parsed.scheme() == "http"
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && !proxy_in_env();
        if plain {
            let host = parsed.host_str().context("an http URL without a host")?;
            let port = parsed.port_or_known_default().unwrap_or(80);
            // The authority as the URL spells it (reqwest's Host header), and the
            // address to connect to (IPv6 literals keep their brackets).
            let authority = match parsed.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            let path = match parsed.query() {
                Some(q) => format!("{}?{q}", parsed.path()),
                None => parsed.path().to_string(),
            };
            return Ok(Endpoint::Plain {
                addr: format!("{host}:{port}"),
                host: HeaderValue::from_str(&authority)
                    .with_context(|| format!("{url}: a bad host"))?,
                path: path
                    .parse()
                    .with_context(|| format!("{url}: a bad path"))?,
            });
        }
        let client = match reqwest {
            Some(c) => c.clone(),
            None => reqwest.insert(reqwest_client()?).clone(),
        };
        Ok(Endpoint::Reqwest {
            client,
            url: parsed,
        })
    }
}

type Body = Full<Bytes>;

/// An open hyper connection: the request handle and the connection future, which the
/// owner polls while it waits for an answer (in its own task: no wakeup of another).
struct Open {
    sender: http1::SendRequest<Body>,
    conn: Pin<Box<http1::Connection<TokioIo<TcpStream>, Body>>>,
    /// The connection future has ended (closed or failed).
    done: bool,
}

impl Open {
    async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Self {
            sender,
            conn: Box::pin(conn),
            done: false,
        })
    }

    /// Runs `f` while driving the connection.
    async fn drive<F: Future>(
        conn: &mut Pin<Box<http1::Connection<TokioIo<TcpStream>, Body>>>,
        done: &mut bool,
        f: F,
    ) -> F::Output {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = f.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if !*done && conn.as_mut().poll(cx).is_ready() {
                *done = true;
                // The connection's end settles the request (an error, or its last
                // bytes): look again.
                return f.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}

/// What went wrong with a plain request.
enum Failure {
    Connect,
    Other,
}

/// One connection to one backend, one request at a time.
pub struct Conn {
    endpoint: Arc<Endpoint>,
    open: Option<Open>,
}

impl Conn {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            open: None,
        }
    }

    /// Sends `body` now and fills `rec`'s answer fields (status, headers, error); the
    /// answer's last byte has arrived (or the request failed) when it returns. The
    /// timeout covers connecting, sending and the whole answer.
    pub async fn send(&mut self, body: Bytes, timeout: Duration, rec: &mut Record) {
        let endpoint = self.endpoint.clone();
        match &*endpoint {
            Endpoint::Plain { addr, host, path } => {
                let deadline = Instant::now() + timeout;
                let sent = tokio::time::timeout_at(
                    deadline.into(),
                    self.send_plain(addr, host, path, body, rec),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(f)) => {
                        self.open = None;
                        rec.error = Some(match f {
                            Failure::Connect => ErrorKind::Connect,
                            Failure::Other => ErrorKind::Other,
                        });
                    }
                    Err(_) => {
                        // The connection is mid-request: a fresh one for the next.
                        self.open = None;
                        rec.error = Some(ErrorKind::Timeout);
                    }
                }
            }
            Endpoint::Reqwest { client, url } => {
                send_reqwest(client, url, body, timeout, rec).await;
            }
        }
    }

    async fn send_plain(
        &mut self,
        addr: &str,
        host: &HeaderValue,
        path: &hyper::Uri,
        body: Bytes,
        rec: &mut Record,
    ) -> Result<(), Failure> {
        let request = |body: Bytes| {
            let mut req = hyper::Request::new(Full::new(body));
            *req.method_mut() = hyper::Method::POST;
            *req.uri_mut() = path.clone();
            let h = req.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(ACCEPT, HeaderValue::from_static("*/*"));
            h.insert(HOST, host.clone());
            req
        };
        let mut req = request(body);
        // At most two tries: the second only when the first connection turned out
        // closed before the request was written (nothing reached the server).
        for _ in 0..2 {
            if self.open.as_ref().is_some_and(|o| o.done || o.sender.is_closed()) {
                self.open = None;
            }
            let open = match &mut self.open {
                Some(o) => o,
                None => self
                    .open
                    .insert(Open::connect(addr).await.map_err(|_| Failure::Connect)?),
            };
            let Open { sender, conn, done } = open;
            let answer = Open::drive(conn, done, async {
                let resp = sender.try_send_request(req).await?;
                let (parts, mut body) = resp.into_parts();
                fill(rec, parts.status.as_u16(), &parts.headers);
                // The latency ends with the last byte of the answer.
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        return Ok(Err(Failure::Other));
                    }
                }
                Ok::<_, TrySendError<hyper::Request<Body>>>(Ok(()))
            })
            .await;
            match answer {
                Ok(r) => return r,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        self.open = None;
                        req = unsent;
                    }
                    None => return Err(Failure::Other),
                },
            }
        }
        Err(Failure::Other)
    }
}

/// The https path, exactly the client of before.
async fn send_reqwest(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: Bytes,
    timeout: Duration,
    rec: &mut Record,
) {
    let answer = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout)
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
            fill(rec, resp.status().as_u16(), resp.headers());
            if let Err(e) = resp.bytes().await {
                rec.error = Some(classify(&e));
            }
        }
        Err(e) => rec.error = Some(classify(&e)),
    }
}
