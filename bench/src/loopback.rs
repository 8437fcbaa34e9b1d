//! A tiny HTTP/1.1 server on 127.0.0.1 that answers every request like `/predict`
//! (200, `{"label":"POSITIVE","score":0.99}`, the timing headers) after a fixed delay,
//! and counts what it got. For the tests and `bench selftest`: the generator's
//! accuracy and its top rate are measured against it, not against a model.
//!
//! It is deliberately cheap, because in `selftest` it shares the machine with the
//! generator it measures: the answer's bytes are built once, and each connection
//! parses its requests with `httparse` (keep-alive, pipelining, `Content-Length` and
//! chunked bodies, `Connection: close`, HTTP/1.0) and writes the prepared answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &[u8] = br#"{"label":"POSITIVE","score":0.99}"#;

/// The whole answer, status line to body, for a server whose answers take `delay`.
fn answer(delay: Duration, close: bool) -> Vec<u8> {
    let ms = format!("{:.3}", delay.as_secs_f64() * 1000.0);
    let mut a = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{}: 0.000\r\n{}: {ms}\r\n{}: {ms}\r\ncontent-length: {}\r\n",
        sentiment_api::QUEUE_TIME_HEADER,
        sentiment_api::INFERENCE_TIME_HEADER,
        sentiment_api::TOTAL_TIME_HEADER,
        ANSWER.len()
    );
    if close {
        a.push_str("connection: close\r\n");
    }
    a.push_str("\r\n");
    let mut a = a.into_bytes();
    a.extend_from_slice(ANSWER);
    a
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How a server stops when its [`Loopback`] is dropped.
enum Stop {
    /// A task on the caller's runtime: aborted.
    Task(tokio::task::JoinHandle<()>),
    /// Its own thread and runtime: told to stop (the thread then drops its runtime and
    /// every connection with it).
    Thread(Option<tokio::sync::oneshot::Sender<()>>),
}

/// A running loopback server; stopped when dropped.
pub struct Loopback {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    stop: Stop,
}

struct Server {
    hits: Arc<AtomicU64>,
    delay: Duration,
    keep_alive: Vec<u8>,
    close: Vec<u8>,
}

impl Loopback {
    /// Starts a server whose answers each take `delay`, on the caller's runtime.
    pub async fn start(delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let server = Arc::new(Server::new(hits.clone(), delay));
        let task = tokio::spawn(server.accept(listener));
        Ok(Self {
            addr,
            hits,
            stop: Stop::Task(task),
        })
    }

    /// Starts a server whose answers each take `delay` on its own thread, with its own
    /// single-threaded runtime: `selftest` measures the generator on the caller's
    /// runtime without the server's work queued among the generator's tasks.
    pub fn start_on_thread(delay: Duration) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let server = Arc::new(Server::new(hits.clone(), delay));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("loopback".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = server.accept(listener) => {}
                        _ = rx => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            hits,
            stop: Stop::Thread(Some(tx)),
        })
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
        match &mut self.stop {
            Stop::Task(task) => task.abort(),
            Stop::Thread(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// A request's head as far as the server cares.
struct Head {
    /// Bytes of the head, request line to the blank line.
    len: usize,
    body: BodyLen,
    close: bool,
}

enum BodyLen {
    Length(usize),
    Chunked,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    // HTTP/1.0 closes unless it asks to keep alive; 1.1 keeps alive unless it asks to
    // close.
    let mut close = req.version != Some(1);
    let mut body = BodyLen::Length(0);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| ())?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            if matches!(body, BodyLen::Length(n) if n != 0) {
                return Err(());
            }
            body = BodyLen::Length(value.parse().map_err(|_| ())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
            {
                body = BodyLen::Chunked;
            } else {
                return Err(());
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    Ok(Some(Head { len, body, close }))
}

impl Server {
    fn new(hits: Arc<AtomicU64>, delay: Duration) -> Self {
        Self {
            hits,
            delay,
            keep_alive: answer(delay, false),
            close: answer(delay, true),
        }
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().serve(stream));
        }
    }

    /// Reads more into `buf`; `false` at the end of the stream (or an error).
    async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
    }

    /// Drops `n` body bytes from the stream, `false` if it ended first.
    async fn skip(stream: &mut TcpStream, buf: &mut BytesMut, mut n: usize) -> bool {
        loop {
            let here = n.min(buf.len());
            buf.advance(here);
            n -= here;
            if n == 0 {
                return true;
            }
            if !Self::fill(stream, buf).await {
                return false;
            }
        }
    }

    /// Drops a chunked body (its chunks and trailers), `false` if the stream ended or
    /// the body was malformed.
    async fn skip_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
        loop {
            let size = match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((n, size))) => {
                    buf.advance(n);
                    size
                }
                Ok(httparse::Status::Partial) => {
                    if !Self::fill(stream, buf).await {
                        return false;
                    }
                    continue;
                }
                Err(_) => return false,
            };
            if size == 0 {
                break;
            }
            let Ok(size) = usize::try_from(size) else {
                return false;
            };
            // The chunk and its CRLF.
            if !Self::skip(stream, buf, size.saturating_add(2)).await {
                return false;
            }
        }
        // Trailer lines up to the blank one.
        loop {
            match buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    buf.advance(2);
                    return true;
                }
                Some(i) => buf.advance(i + 2),
                None => {
                    if !Self::fill(stream, buf).await {
                        return false;
                    }
                }
            }
        }
    }

    /// One connection's requests, one after the other.
    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        let mut buf = BytesMut::with_capacity(2048);
        loop {
            let head = loop {
                match parse_head(&buf) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {
                        if !Self::fill(&mut stream, &mut buf).await {
                            return;
                        }
                    }
                    Err(()) => {
                        let _ = stream.write_all(BAD_REQUEST).await;
                        return;
                    }
                }
            };
            self.hits.fetch_add(1, Ordering::Relaxed);
            buf.advance(head.len);
            let read = match head.body {
                BodyLen::Length(n) => Self::skip(&mut stream, &mut buf, n).await,
                BodyLen::Chunked => Self::skip_chunked(&mut stream, &mut buf).await,
            };
            if !read {
                return;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let answer = if head.close {
                &self.close
            } else {
                &self.keep_alive
            };
            if stream.write_all(answer).await.is_err() || head.close {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(server: &Loopback, request: &[u8]) -> String {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn parses_keep_alive_pipelined_chunked_and_closing_requests() {
        let server = Loopback::start(Duration::ZERO).await.unwrap();
        // Two pipelined requests (one with a length, one chunked with a trailer), then
        // a third that closes the connection.
        let req = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd\
POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n\
GET /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let out = exchange(&server, req).await;
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
        assert_eq!(
            out.matches(r#"{"label":"POSITIVE","score":0.99}"#).count(),
            3
        );
        assert!(out.contains("x-total-time: 0.000\r\n"), "{out}");
        assert!(out.ends_with("connection: close\r\n\r\n{\"label\":\"POSITIVE\",\"score\":0.99}"));
        assert_eq!(server.hits(), 3);

        // HTTP/1.0 without keep-alive gets one answer and the connection closes.
        let out = exchange(&server, b"POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nx").await;
        assert_eq!(out.matches("200 OK").count(), 1, "{out}");
        // Garbage gets a 400 and the connection closes.
        let out = exchange(&server, b"\x01\x02 nonsense\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert_eq!(server.hits(), 4);
    }

    #[test]
    fn a_server_on_its_own_thread_answers_and_stops() {
        let server = Loopback::start_on_thread(Duration::from_millis(1)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(exchange(
            &server,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ));
        assert!(out.contains("x-inference-time: 1.000\r\n"), "{out}");
        assert_eq!(server.hits(), 1);
        let addr = server.addr;
        drop(server);
        // The listener goes with its thread's runtime.
        let mut refused = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(refused, "still listening on {addr}");
    }
}
