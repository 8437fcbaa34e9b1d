//! Test harness: a tiny fixture checkpoint, the real binary on an ephemeral loopback
//! port, and a minimal HTTP/1.1 client over raw sockets (so tests can also send what
//! no well-behaved client library would: bad bytes, lying headers, half requests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use model_cache::fixture::{FixtureSize, FixtureSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tiny fixture, written once into cargo's per-target temp dir and reused by later
/// runs (it is deterministic); written beside and renamed so a concurrent run never
/// sees half of it.
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join("sentiment-server-fixture-tiny");
        if dir.join("fixture.json").exists() {
            return dir;
        }
        let scratch = root.join(format!(
            "sentiment-server-fixture-tiny.{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        model_cache::fixture::write(&scratch, &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
        if std::fs::rename(&scratch, &dir).is_err() {
            // Another run won the race; its copy is identical.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        dir
    })
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with the tiny fixture, one inference thread, and `extra` flags;
    /// returns once it logged its address (the model may still be loading).
    pub fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sentiment-server"))
            .arg("--model-dir")
            .arg(fixture())
            .args([
                "--bind",
                "127.0.0.1:0",
                "--threads",
                "1",
                "--http-workers",
                "2",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("MODEL_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sentiment-server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        // Keep draining stderr for the server's whole life: a full pipe would block
        // its logging and so the server.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server never logged its address")
            .parse()
            .unwrap();
        Server { child, addr, log }
    }

    /// Starts and waits until `/readyz` says 200.
    pub async fn ready(extra: &[&str]) -> Server {
        let server = Server::start(extra);
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = try_request(self.addr, "GET", "/readyz", &[], b"").await
                && r.status == 200
            {
                return;
            }
            assert!(Instant::now() < until, "not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < until,
                "server still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub async fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"").await
    }

    pub async fn post_json(&self, path: &str, body: &[u8]) -> Response {
        request(
            self.addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    pub async fn predict(&self, body: &serde_json::Value) -> Response {
        self.post_json("/predict", body.to_string().as_bytes())
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and the shared `{"error", "detail"}` body.
    #[track_caller]
    pub fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"], kind, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// POSTs `body` as JSON to `/predict` from its own task, for concurrent requests.
pub fn spawn_predict(
    addr: SocketAddr,
    body: &serde_json::Value,
) -> tokio::task::JoinHandle<Response> {
    let body = body.to_string();
    tokio::spawn(async move {
        request(
            addr,
            "POST",
            "/predict",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
    })
}

/// `count` predictions sent at once, the texts `"{label} 0"`, `"{label} 1"`, ...: a
/// burst for the queue and the drain to deal with.
pub fn spawn_predicts(
    addr: SocketAddr,
    label: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Response>> {
    (0..count)
        .map(|i| spawn_predict(addr, &serde_json::json!({"text": format!("{label} {i}")})))
        .collect()
}

/// One request on a fresh connection (`Connection: close`), read to the end. The body
/// is written from its own task so a server that answers early (413) and stops
/// reading cannot deadlock the test.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        // Keep the write half open until the response has been read: dropping it would
        // half-close, which is not what a waiting client does.
        writer
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut raw)).await;
    write.abort();
    match read {
        Ok(Ok(_)) => {}
        // A reset after a complete answer (server closed while we were still sending).
        Ok(Err(e)) if raw.is_empty() => return Err(e),
        Ok(Err(_)) => {}
        Err(_) => return Err(std::io::Error::other("no answer within 60 s")),
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad =
        |what: &str| std::io::Error::other(format!("{what}: {:?}", String::from_utf8_lossy(raw)));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Prometheus text → (series with labels, value). Panics on a line that does not parse.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF terminator");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The sum of every series whose text starts with `name` and contains every `label`.
pub fn metric(series: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(s, _)| {
            (s == name || s.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| s.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}
