//! Helpers every crate's integration tests share (and `stack synth --requests`, which
//! rehearses a deployment against a throwaway moto), so each external service is started
//! one way: moto_server on a free loopback port ([`Moto`]), a registry ([`Registry`]),
//! free ports ([`free_port`]),
//! a raw HTTP/1.1 client that can also send what no client library would ([`http`]),
//! child processes that are stopped when the test lets go of them ([`ChildGuard`]),
//! and scripts that stand in for a binary the code under test runs
//! ([`write_executable`]).
//! Std only (plus serde_json for reading bodies): tests of light crates stay light.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now. Bind-and-release, so two callers can
/// race for it: start servers through something that retries on "address in use"
/// (as [`Moto::start`] does) where that matters.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `addr`; false after `within`.
pub fn wait_for_port(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Writes `script` (`#!/bin/sh ...`) to `path`, executable: a stand-in for a binary
/// that the code under test runs, such as `stack outputs --json`.
#[cfg(unix)]
pub fn write_executable(path: &std::path::Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A child process killed (and reaped) on drop, so a failing test leaves no server.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `moto_server` on a free loopback port, stopped on drop. AWS managed policies
/// (AWSLambdaBasicExecutionRole, AmazonEKS*) are loaded, as they exist in AWS.
pub struct Moto {
    child: ChildGuard,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl Moto {
    /// Ports are picked by binding and releasing, so two tests can race for one: the
    /// moto that loses exits at once ("address in use") while the port answers for
    /// the other test's server. Only a server that is still ours once it answers HTTP
    /// is used; otherwise, another port.
    pub fn start() -> Moto {
        Moto::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Moto::start`], with what went wrong as an error rather than a panic.
    pub fn try_start() -> Result<Moto, String> {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run moto_server ({e}): run scripts/test-deps.sh (pip install 'moto[server]')"))?;
            let mut moto = Moto {
                child: ChildGuard(child),
                url: format!("http://127.0.0.1:{port}"),
            };
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !moto.child.exited() && Instant::now() < deadline {
                if answers_http(addr, "/moto-api/") {
                    std::thread::sleep(Duration::from_millis(100));
                    if !moto.child.exited() {
                        return Ok(moto);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= deadline {
                return Err(format!("moto_server did not start on {addr} within 60 s"));
            }
        }
        Err("moto_server kept exiting at start (5 ports tried)".into())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Debian's `docker-registry` on a free loopback port, its storage in a fresh
/// directory; stopped and removed on drop.
pub struct Registry {
    _child: ChildGuard,
    dir: std::path::PathBuf,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl Registry {
    pub fn start() -> Registry {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("test-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("registry dir");
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run scripts/test-deps.sh");
        let registry = Registry {
            _child: ChildGuard(child),
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)),
            "docker-registry did not start on port {port}"
        );
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_http(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut head = [0u8; 5];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

/// One HTTP/1.1 exchange: status, lowercase header names, body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }
}

/// A blocking request with `Connection: close` and the given content type; raw
/// sockets, so a test can send any bytes.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> HttpReply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    parse_reply(&raw)
}

/// `POST /predict` with a JSON body.
pub fn predict(addr: SocketAddr, body: &str) -> HttpReply {
    http(
        addr,
        "POST",
        "/predict",
        "application/json",
        body.as_bytes(),
    )
}

fn parse_reply(raw: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_status_headers_and_body() {
        let reply = parse_reply(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nX-A: b\r\n\r\n{\"error\":\"throttled\"}");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.json()["error"], "throttled");
    }

    #[test]
    fn a_served_request_round_trips_and_a_dead_port_does_not_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request, head and body (they may come in two reads): closing
            // with unread bytes would reset the connection before the reply is read.
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n{}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&got).starts_with("POST /predict HTTP/1.1"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
        });
        assert_eq!(predict(addr, "{}").status, 200);
        server.join().unwrap();
        let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        assert!(!wait_for_port(dead, Duration::from_millis(100)));
    }
}
