//! The local data plane for the in-memory API: what a kubelet and kube-proxy would do,
//! reduced to processes on this machine.
//!
//! For every Deployment of the stack it runs as many server processes as
//! `spec.replicas` says, each as `<binary> --bind 127.0.0.1:<port> --model-dir <dir>`
//! on its own port, waits for `/readyz`, and reports the rollout in the Deployment's
//! status. A small front (`stack front`, a detached TCP proxy) spreads connections
//! over the ready processes. Scale-down stops the surplus; a deleted Deployment
//! (`stack down`) stops all of them and the front. Process ids and ports live under
//! `<state dir>/dataplane/`, so each `stack` run picks up what the last one started.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{FIELD_MANAGER, K8sError, LABEL_MANAGED_BY, LABEL_PART_OF};

/// One running process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replica {
    /// Process id.
    pub pid: u32,
    /// Loopback port it listens on.
    pub port: u16,
    /// Hash of the pod template it runs (a new template restarts it).
    pub template: String,
}

/// The data plane rooted at a directory.
#[derive(Debug, Clone)]
pub struct DataPlane {
    /// Where pids, ports, logs and the backend list live.
    pub dir: PathBuf,
    /// The server binary.
    pub binary: PathBuf,
    /// `--model-dir` passed to every process.
    pub model_dir: String,
    /// Port of the front (0: any free port, recorded in `front.json`).
    pub front_port: u16,
    /// The executable that serves the front (`<exe> front --listen … --backends …`).
    pub front_exe: PathBuf,
    /// How long a process may take to answer `/readyz`.
    pub ready_timeout: Duration,
}

fn lerr(e: impl std::fmt::Display) -> K8sError {
    K8sError::Local(format!("data plane: {e}"))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

fn stop(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

fn free_port() -> Result<u16, K8sError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(lerr)
}

async fn ready(port: u16, timeout: Duration) -> bool {
    let http = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < timeout {
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

impl DataPlane {
    fn replicas_file(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn load(&self, key: &str) -> Vec<Replica> {
        std::fs::read_to_string(self.replicas_file(key))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<Replica>>(&t).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| alive(r.pid))
            .collect()
    }

    fn save(&self, key: &str, rs: &[Replica]) -> Result<(), K8sError> {
        let text = serde_json::to_string(rs).map_err(lerr)?;
        std::fs::write(self.replicas_file(key), text).map_err(lerr)
    }

    fn spawn(&self, key: &str, template: &str) -> Result<Replica, K8sError> {
        let port = free_port()?;
        let log =
            std::fs::File::create(self.dir.join(format!("{key}-{port}.log"))).map_err(lerr)?;
        let err = log.try_clone().map_err(lerr)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--model-dir",
            &self.model_dir,
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| lerr(format!("{}: {e}", self.binary.display())))?;
        Ok(Replica {
            pid: child.id(),
            port,
            template: template.into(),
        })
    }

    /// Brings the processes in line with the stack's Deployments and reports their
    /// status to the API. Returns the front's address when anything runs.
    pub async fn reconcile(
        &self,
        client: &kube::Client,
        stack: &str,
    ) -> Result<Option<SocketAddr>, K8sError> {
        std::fs::create_dir_all(&self.dir).map_err(lerr)?;
        let all: Api<Deployment> = Api::all(client.clone());
        let sel = format!("{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_PART_OF}={stack}");
        let deps = all
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(lerr)?;
        let mut keys = Vec::new();
        let mut backends = Vec::new();
        for d in deps.items {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            let key = format!("{ns}.{name}");
            keys.push(key.clone());
            let spec = d.spec.clone().unwrap_or_default();
            let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
            let template = hex::encode(Sha256::digest(
                serde_json::to_vec(&spec.template).map_err(lerr)?,
            ));
            let mut rs = self.load(&key);
            // A new template: start fresh processes first, then stop the old ones
            // (maxUnavailable 0).
            let (mut keep, old): (Vec<Replica>, Vec<Replica>) =
                rs.drain(..).partition(|r| r.template == template);
            while keep.len() > want {
                if let Some(r) = keep.pop() {
                    stop(r.pid);
                }
            }
            let mut fresh = Vec::new();
            while keep.len() + fresh.len() < want {
                fresh.push(self.spawn(&key, &template)?);
            }
            keep.extend(fresh.iter().cloned());
            self.save(&key, &keep)?;
            for r in &fresh {
                if !ready(r.port, self.ready_timeout).await {
                    return Err(lerr(format!(
                        "{} on port {} did not answer /readyz within {}s (log: {})",
                        self.binary.display(),
                        r.port,
                        self.ready_timeout.as_secs(),
                        self.dir.join(format!("{key}-{}.log", r.port)).display()
                    )));
                }
            }
            for r in old {
                stop(r.pid);
            }
            backends.extend(keep.iter().map(|r| format!("127.0.0.1:{}", r.port)));
            let n = keep.len();
            let status = json!({ "status": {
                "observedGeneration": d.metadata.generation.unwrap_or(1),
                "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n
            }});
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(lerr)?;
        }
        // Deployments that are gone: stop their processes.
        for e in std::fs::read_dir(&self.dir).map_err(lerr)?.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(key) = f.strip_suffix(".json") else {
                continue;
            };
            if key == "front" || keys.iter().any(|k| k == key) {
                continue;
            }
            for r in self.load(key) {
                stop(r.pid);
            }
            let _ = std::fs::remove_file(e.path());
        }
        let list = self.dir.join("backends");
        std::fs::write(&list, backends.join("\n")).map_err(lerr)?;
        self.front(!backends.is_empty(), &list)
    }

    fn front(&self, want: bool, list: &Path) -> Result<Option<SocketAddr>, K8sError> {
        let f = self.dir.join("front.json");
        let cur = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| serde_json::from_str::<Replica>(&t).ok())
            .filter(|r| alive(r.pid));
        match (want, cur) {
            (true, Some(r)) => Ok(Some(SocketAddr::from(([127, 0, 0, 1], r.port)))),
            (true, None) => {
                let port = if self.front_port == 0 {
                    free_port()?
                } else {
                    self.front_port
                };
                let mut cmd = Command::new(&self.front_exe);
                cmd.args([
                    "front",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--backends",
                    &list.display().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                let child = cmd.spawn().map_err(lerr)?;
                let r = Replica {
                    pid: child.id(),
                    port,
                    template: String::new(),
                };
                std::fs::write(&f, serde_json::to_string(&r).map_err(lerr)?).map_err(lerr)?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let start = Instant::now();
                while std::net::TcpStream::connect(addr).is_err() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(lerr(format!("the front did not listen on {addr}")));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Some(addr))
            }
            (false, Some(r)) => {
                stop(r.pid);
                let _ = std::fs::remove_file(&f);
                Ok(None)
            }
            (false, None) => Ok(None),
        }
    }
}

/// The front: accepts on `listen` and forwards each connection to the next backend
/// listed (one `host:port` a line) in `backends`, re-read per connection.
pub async fn serve_front(listen: SocketAddr, backends: PathBuf) -> Result<(), K8sError> {
    let l = tokio::net::TcpListener::bind(listen).await.map_err(lerr)?;
    let mut next = 0usize;
    loop {
        let (mut inbound, _) = l.accept().await.map_err(lerr)?;
        let list: Vec<String> = std::fs::read_to_string(&backends)
            .unwrap_or_default()
            .lines()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() {
            continue;
        }
        let target = list[next % list.len()].clone();
        next = next.wrapping_add(1);
        tokio::spawn(async move {
            if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}
