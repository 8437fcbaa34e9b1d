//! The router on the local target: `sentiment-router` (crate `router/`) run detached
//! beside the fronts, in front of `api_url` and `service_url`, answering as
//! `router_url`. It runs while both backends are deployed, is restarted (on the same
//! port) only when a backend URL changes, and is stopped by `stack down`.

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::daemon::Daemon;
use super::process;

/// What the router runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The `sentiment-router` executable.
    pub exe: PathBuf,
    /// The Lambda through its HTTP API (`api_url`).
    pub lambda_url: String,
    /// The Kubernetes Service (`service_url`).
    pub k8s_url: String,
    /// Its loopback port.
    pub port: u16,
}

/// The router of one stack.
#[derive(Debug, Clone)]
pub struct LocalRouter {
    /// Spec, pid file and log (`<state>/<stack>.local.router`).
    pub dir: PathBuf,
    /// The executable; `None`: not built (the router is then skipped, with a warning).
    pub exe: Option<PathBuf>,
    /// Port to listen on; 0: the running one's, else any free one.
    pub port: u16,
}

impl LocalRouter {
    fn daemon(&self) -> Daemon {
        Daemon {
            dir: self.dir.clone(),
            name: "router",
        }
    }

    /// Runs the router over both backends, or stops it when either is missing.
    /// Returns its URL when it runs.
    pub fn reconcile(
        &self,
        lambda_url: Option<&str>,
        k8s_url: Option<&str>,
    ) -> Result<Option<String>, String> {
        let d = self.daemon();
        let (Some(lambda_url), Some(k8s_url)) = (lambda_url, k8s_url) else {
            d.stop(Duration::from_secs(15));
            return Ok(None);
        };
        let Some(exe) = &self.exe else {
            eprintln!(
                "WARNING: no sentiment-router executable beside stack (build it: `cargo build -p sentiment-router`, or set --router-bin); router_url is not served"
            );
            return Ok(None);
        };
        let port = match (self.port, d.running::<Spec>()) {
            (0, Some((_, running))) => running.port,
            (0, None) => process::free_port().map_err(|e| e.to_string())?,
            (p, _) => p,
        };
        let spec = Spec {
            exe: exe.clone(),
            lambda_url: lambda_url.to_string(),
            k8s_url: k8s_url.to_string(),
            port,
        };
        let bind = format!("127.0.0.1:{port}");
        d.ensure(
            &spec,
            exe,
            &[
                OsStr::new("--lambda-url"),
                OsStr::new(lambda_url),
                OsStr::new("--k8s-url"),
                OsStr::new(k8s_url),
                OsStr::new("--bind"),
                OsStr::new(&bind),
            ],
            SocketAddr::from(([127, 0, 0, 1], port)),
            // In-flight requests finish (the router's own grace is shorter).
            Duration::from_secs(15),
        )
        .map_err(|e| format!("the router ({}): {e}", exe.display()))?;
        Ok(Some(format!("http://{bind}/")))
    }

    /// Stops it.
    pub fn stop(&self) {
        self.daemon().stop(Duration::from_secs(15));
    }
}
