//! Detached processes of the local target (fronts, servers), tracked by pid files so
//! each `stack` run picks up what the last one started.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// SIGTERM, up to 10 s to exit (a server drains, a front flushes its logs), then
/// SIGKILL.
pub fn stop(pid: u32) {
    signal(pid, "TERM");
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        signal(pid, "KILL");
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// A loopback port nobody listens on now.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Waits until something accepts on `addr`; false after `within`.
pub fn listening(addr: SocketAddr, within: Duration) -> bool {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
