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
    stop_within(pid, Duration::from_secs(10));
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop_within(pid: u32, grace: Duration) {
    signal(pid, "TERM");
    let start = Instant::now();
    while alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        signal(pid, "KILL");
    }
}

/// Starts `exe args` detached from the caller: its own process group (a Ctrl-C at the
/// terminal that ran `stack` does not reach it), stdin closed, stdout and stderr
/// appended to `log`. Returns its pid.
pub fn spawn_detached(exe: &Path, args: &[&std::ffi::OsStr], log: &Path) -> std::io::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(cmd.spawn()?.id())
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
