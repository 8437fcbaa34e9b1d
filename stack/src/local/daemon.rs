//! A detached process of the local target that outlives the `stack` run that started
//! it (the control plane, the router): a directory holds what it runs with (its spec),
//! its pid and its log, so each run picks up what the last one started, restarts it
//! only when the spec changed, and stops it by pid.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pid {
    pid: u32,
}

/// One daemon, by its directory.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Spec, pid file and log.
    pub dir: PathBuf,
    /// What it is: its pid file is `<name>.pid`, its log `<name>.log`.
    pub name: &'static str,
}

impl Daemon {
    /// What it runs with, as the process reads it.
    pub fn spec_file(&self) -> PathBuf {
        self.dir.join("spec.json")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    /// Its stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The running process and the spec it runs with.
    pub fn running<S: DeserializeOwned>(&self) -> Option<(u32, S)> {
        let pid: Pid = read_json(&self.pid_file())?;
        let spec: S = read_json(&self.spec_file())?;
        process::alive(pid.pid).then_some((pid.pid, spec))
    }

    /// Runs `exe args` with `spec` unless it already runs with it: a different spec
    /// stops the running one first (up to `grace`). A new process must accept on
    /// `listen` within 15 s. Returns whether it (re)started.
    pub fn ensure<S: Serialize + DeserializeOwned + PartialEq>(
        &self,
        spec: &S,
        exe: &Path,
        args: &[&OsStr],
        listen: SocketAddr,
        grace: Duration,
    ) -> Result<bool, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        match self.running::<S>() {
            Some((_, running)) if &running == spec => return Ok(false),
            Some((pid, _)) => process::stop_within(pid, grace),
            None => {}
        }
        let spec_json = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        std::fs::write(self.spec_file(), spec_json)
            .map_err(|e| format!("writing {}: {e}", self.spec_file().display()))?;
        let pid = process::spawn_detached(exe, args, &self.log())
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let pid_json = serde_json::to_vec(&Pid { pid }).map_err(|e| e.to_string())?;
        std::fs::write(self.pid_file(), pid_json)
            .map_err(|e| format!("writing {}: {e}", self.pid_file().display()))?;
        if !process::listening(listen, Duration::from_secs(15)) {
            return Err(format!(
                "it did not listen on {listen} within 15 s (port taken?); see {}:\n{}",
                self.log().display(),
                tail(&self.log())
            ));
        }
        Ok(true)
    }

    /// Stops it within `grace` (SIGTERM, then SIGKILL) and forgets its spec and pid;
    /// the log stays for a post-mortem.
    pub fn stop(&self, grace: Duration) {
        if let Some((pid, _)) = self.running::<serde_json::Value>() {
            process::stop_within(pid, grace);
        }
        for f in [self.spec_file(), self.pid_file()] {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The last lines of a log, for an error message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Spec {
        port: u16,
        version: u32,
    }

    /// A listener that runs until killed: python's http.server on `port`.
    fn ensure(d: &Daemon, spec: &Spec) -> Result<bool, String> {
        let port = spec.port.to_string();
        d.ensure(
            spec,
            Path::new("python3"),
            &[
                OsStr::new("-m"),
                OsStr::new("http.server"),
                OsStr::new("--bind"),
                OsStr::new("127.0.0.1"),
                OsStr::new(&port),
            ],
            SocketAddr::from(([127, 0, 0, 1], spec.port)),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn started_once_restarted_on_a_new_spec_stopped_by_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Daemon {
            dir: tmp.path().join("d"),
            name: "http",
        };
        let port = process::free_port().unwrap();
        let v1 = Spec { port, version: 1 };
        assert!(ensure(&d, &v1).unwrap(), "first ensure starts it");
        let (pid1, running) = d.running::<Spec>().unwrap();
        assert_eq!(running, v1);
        assert!(!ensure(&d, &v1).unwrap(), "same spec: left alone");
        assert_eq!(d.running::<Spec>().unwrap().0, pid1);
        let v2 = Spec { port, version: 2 };
        assert!(ensure(&d, &v2).unwrap(), "new spec: restarted");
        let (pid2, _) = d.running::<Spec>().unwrap();
        assert_ne!(pid1, pid2);
        assert!(!process::alive(pid1));
        d.stop(Duration::from_secs(5));
        assert!(!process::alive(pid2));
        assert!(d.running::<Spec>().is_none());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
