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

/// A connection idle this long is not reused: the next request opens a new one. A
/// server closes an idle keep-alive connection on its own clock (actix-web after 5 s,
/// an ALB after 60 s), and a request written in the instant it does is lost, an error
/// that a client with a shorter idle timeout never meets; in `make bench` this was the
/// only k8s error (a connection idle 4.7 s). Below every server's keep-alive here, as
/// production clients set theirs (Go's `IdleConnTimeout`, reqwest's pool).
pub const IDLE_REUSE_LIMIT: Duration = Duration::from_secs(4);

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
        .pool_idle_timeout(IDLE_REUSE_LIMIT)
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
                path: path.parse().with_context(|| format!("{url}: a bad path"))?,
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
    /// When the open connection last carried anything (opened, or answered).
    last_active: Instant,
    /// See [`IDLE_REUSE_LIMIT`].
    idle_limit: Duration,
}

impl Conn {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            open: None,
            last_active: Instant::now(),
            idle_limit: IDLE_REUSE_LIMIT,
        }
    }

    /// Opens the connection ahead of the first request (plain http; reqwest opens its
    /// own). A failure is left for that request to meet and record.
    pub async fn connect(&mut self) {
        if let (None, Endpoint::Plain { addr, .. }) = (&self.open, &*self.endpoint) {
            self.open = Open::connect(addr).await.ok();
            self.last_active = Instant::now();
        }
    }

    /// Waits for `f` while keeping an idle connection driven, so that a server that
    /// closes it (a keep-alive timeout) is noticed before the next request, as a
    /// connection pool notices, instead of that request being written into a closed
    /// connection.
    pub async fn idle_until<F: Future>(&mut self, f: F) -> F::Output {
        match &mut self.open {
            Some(Open { conn, done, .. }) if !*done => Open::drive(conn, done, f).await,
            _ => f.await,
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
                    Ok(Ok(())) => self.last_active = Instant::now(),
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
            let idle_too_long = self.last_active.elapsed() >= self.idle_limit;
            if idle_too_long
                || self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.done || o.sender.is_closed())
            {
                self.open = None;
            }
            let open = match &mut self.open {
                Some(o) => o,
                None => {
                    let opened = Open::connect(addr).await.map_err(|_| Failure::Connect)?;
                    self.last_active = Instant::now();
                    self.open.insert(opened)
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server running `handle` on each connection; its `/predict` URL.
    async fn serve<F, Fut>(handle: F) -> String
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(handle(s));
            }
        });
        format!("http://{addr}/predict")
    }

    /// A server that answers each request on a connection with the next of `answers`
    /// (raw bytes), closing the connection after any answer that says so.
    async fn scripted(answers: Vec<&'static [u8]>) -> String {
        let answers = Arc::new(answers);
        serve(move |mut s| {
            let answers = answers.clone();
            async move {
                let mut n = 0;
                let mut buf = Vec::new();
                loop {
                    // Good enough for these requests: a head and a 2-byte body.
                    let mut chunk = [0u8; 4096];
                    let Ok(k) = s.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    if buf.len() < end + 4 + 2 {
                        continue;
                    }
                    buf.drain(..end + 6);
                    let a = answers[n % answers.len()];
                    n += 1;
                    s.write_all(a).await.unwrap();
                    if a.windows(17).any(|w| w == b"connection: close") {
                        return;
                    }
                }
            }
        })
        .await
    }

    /// Like a TCP proxy whose upstream closed an idle keep-alive connection: after one
    /// answer the server sends FIN but keeps the socket open, reading and answering
    /// nothing more. An idle connection that is driven sees the FIN and is not reused;
    /// one that is not gets its next request swallowed until the timeout.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_reused() {
        let url = serve(|mut s| async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..k]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            s.shutdown().await.unwrap();
            // Half-closed: whatever comes next is read and never answered.
            while s.read(&mut chunk).await.is_ok_and(|k| k > 0) {}
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut none = None;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, &mut none).unwrap()));
        for n in 0..3 {
            let mut rec = blank();
            conn.send(Bytes::from_static(b"{}"), Duration::from_secs(2), &mut rec)
                .await;
            assert_eq!((rec.status, rec.error), (Some(200), None), "request {n}");
            conn.idle_until(tokio::time::sleep(Duration::from_millis(100)))
                .await;
        }
    }

    /// A server that stops answering a connection once it has been idle 150 ms, and
    /// says nothing (a keep-alive close whose FIN crossed the next request, or an idle
    /// flow a middlebox dropped): a connection idle past the client's limit is not
    /// reused, so no request is lost to it.
    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_not_reused() {
        let url = serve(|mut s| async move {
            let mut last = std::time::Instant::now();
            let mut chunk = [0u8; 4096];
            loop {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(k) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                        _ => return,
                    }
                }
                if last.elapsed() > Duration::from_millis(150) {
                    // Expired: swallow this and everything after.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                s.write_all(ok).await.unwrap();
                last = std::time::Instant::now();
            }
        })
        .await;
        let mut none = None;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, &mut none).unwrap()));
        conn.idle_limit = Duration::from_millis(100);
        // Reused after 50 ms; after 300 ms a new connection (the old one would swallow it).
        for (n, idle_ms) in [50, 300, 0].into_iter().enumerate() {
            let mut rec = blank();
            conn.send(Bytes::from_static(b"{}"), Duration::from_secs(2), &mut rec)
                .await;
            assert_eq!((rec.status, rec.error), (Some(200), None), "request {n}");
            conn.idle_until(tokio::time::sleep(Duration::from_millis(idle_ms)))
                .await;
        }
    }

    fn blank() -> Record {
        Record::new(0, "x", "short", 1, 0.0, 0.0)
    }

    /// The records of `n` requests in a row on one connection of each client.
    async fn both(url: &str, n: usize) -> (Vec<Record>, Vec<Record>) {
        let mut none = None;
        let plain = Arc::new(Endpoint::new(url, &mut none).unwrap());
        assert!(matches!(*plain, Endpoint::Plain { .. }));
        let reqwest = Arc::new(Endpoint::Reqwest {
            client: reqwest_client().unwrap(),
            url: url.parse().unwrap(),
        });
        let mut out = (Vec::new(), Vec::new());
        for (endpoint, records) in [(plain, &mut out.0), (reqwest, &mut out.1)] {
            let mut conn = Conn::new(endpoint);
            for _ in 0..n {
                let mut rec = blank();
                conn.send(Bytes::from_static(b"{}"), Duration::from_secs(5), &mut rec)
                    .await;
                records.push(rec);
            }
        }
        out
    }

    fn fields(r: &Record) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            r.status,
            r.error,
            r.attempts,
            r.served_by,
            r.queue_ms,
            r.inference_ms,
            r.server_total_ms,
            r.cold,
            r.lambda_instance
        )
    }

    #[tokio::test]
    async fn both_clients_record_the_same_headers_and_error_classes() {
        let url = scripted(vec![
            b"HTTP/1.1 200 OK\r\nx-attempts: 2\r\nx-backend: k8s\r\nx-queue-time: 1.5\r\nx-inference-time:  7.25 \r\nx-total-time: 9\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nX-Lambda-Cold: TRUE\r\nx-lambda-instance: env-7\r\nx-attempts: two\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 500 Internal Server Error\r\nx-lambda-error-type: TooManyRequestsException\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nx-lambda-cold: false\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            // After a close, the next request goes out on a fresh connection.
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let (plain, reqwest) = both(&url, 7).await;
        let plain: Vec<String> = plain.iter().map(fields).collect();
        let reqwest: Vec<String> = reqwest.iter().map(fields).collect();
        assert_eq!(plain, reqwest);
        assert_eq!(
            plain[0],
            r#"Some(200) None Some(2) Some("k8s") Some(1.5) Some(7.25) Some(9.0) None None"#
        );
        assert_eq!(
            plain[1],
            r#"Some(200) None None None None None None Some(true) Some("env-7")"#
        );
        assert!(plain[2].starts_with("Some(429) Some(TooManyRequests)"));
        assert!(plain[3].starts_with("Some(500) Some(Throttled)"));
        assert!(plain[4].starts_with("Some(503) Some(Server5xx)"));
        assert!(plain[4].contains("Some(false)"));
        assert!(plain[5].starts_with("Some(404) Some(Client4xx)"));
        assert!(plain[6].starts_with("Some(200) None"));
    }

    #[tokio::test]
    async fn a_broken_answer_is_other_a_slow_one_a_timeout() {
        // A body shorter than its length, then the connection closes.
        let url = scripted(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let (plain, reqwest) = both(&url, 1).await;
        assert_eq!(plain[0].error, Some(ErrorKind::Other));
        assert_eq!(reqwest[0].error, Some(ErrorKind::Other));

        // A server that never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/predict", listener.local_addr().unwrap());
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let mut none = None;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, &mut none).unwrap()));
        let mut rec = blank();
        conn.send(
            Bytes::from_static(b"{}"),
            Duration::from_millis(100),
            &mut rec,
        )
        .await;
        assert_eq!((rec.status, rec.error), (None, Some(ErrorKind::Timeout)));
    }

    #[test]
    fn https_and_credentials_stay_with_reqwest() {
        let mut client = None;
        let e = Endpoint::new(
            "https://abc.execute-api.us-east-1.amazonaws.com/predict",
            &mut client,
        )
        .unwrap();
        assert!(matches!(e, Endpoint::Reqwest { .. }));
        assert!(client.is_some());
        let e = Endpoint::new("http://u:p@127.0.0.1:1/predict", &mut client).unwrap();
        assert!(matches!(e, Endpoint::Reqwest { .. }));
        match Endpoint::new("http://localhost:8080/predict?x=1", &mut None).unwrap() {
            Endpoint::Plain { addr, host, path } if !proxy_in_env() => {
                assert_eq!(addr, "localhost:8080");
                assert_eq!(host, "localhost:8080");
                assert_eq!(path, "/predict?x=1");
            }
            Endpoint::Plain { .. } => panic!("a proxy in the environment"),
            Endpoint::Reqwest { .. } => assert!(proxy_in_env()),
        }
        match Endpoint::new("http://example.com/predict", &mut None).unwrap() {
            Endpoint::Plain { addr, host, .. } => {
                assert_eq!(
                    (addr.as_str(), host.to_str().unwrap()),
                    ("example.com:80", "example.com")
                );
            }
            Endpoint::Reqwest { .. } => assert!(proxy_in_env()),
        }
    }
}
