//! The local data plane for the in-memory API: what a kubelet and kube-proxy would do
//! on this machine.
//!
//! For every Deployment of the stack the local kubelet ([`crate::local::kubelet`])
//! runs as many pods as `spec.replicas` says, each from the image the pod template
//! names (pulled from the registry `stack up` pushed it to) under runc, rolls a
//! changed template, restarts dead or unhealthy containers, and the rollout is
//! reported in the Deployment's status. A small front (`stack front`, a detached TCP
//! proxy) spreads connections over the Ready pods only. Scale-down stops the surplus;
//! a deleted Deployment (`stack down`) stops all of them and the front. Pods, images
//! and logs live under `<state dir>/dataplane/`, so each `stack` run picks up what the
//! last one started.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{FIELD_MANAGER, K8sError, LABEL_MANAGED_BY, LABEL_PART_OF};
use crate::local::kubelet::{Kubelet, Nodes, Pod, Template, requests, running};
use crate::local::process::{alive, free_port, listening, stop};

/// The front's process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replica {
    /// Process id.
    pub pid: u32,
    /// Loopback port it listens on.
    pub port: u16,
    /// Unused (kept so `front.json` files of earlier versions read).
    #[serde(default)]
    pub template: String,
}

/// The data plane rooted at a directory.
#[derive(Debug, Clone)]
pub struct DataPlane {
    /// What runs the pods, rooted where pods, images, logs and the backend list live
    /// (its `dir`).
    pub kubelet: Kubelet,
    /// Port of the front (0: any free port, recorded in `front.json`).
    pub front_port: u16,
    /// The executable that serves the front (`<exe> front --listen … --backends …`).
    pub front_exe: PathBuf,
    /// The node group pods are scheduled on (`None`: no capacity check).
    pub nodes: Option<Nodes>,
}

fn lerr(e: impl std::fmt::Display) -> K8sError {
    K8sError::Local(format!("data plane: {e}"))
}

/// `maxSurge` / `maxUnavailable` against `want` replicas: a percentage rounds up for
/// the surge and down for unavailability, as the Deployment controller does; both 0
/// (which the API refuses) is taken as a surge of 1 so a rollout can progress.
pub fn rolling_bounds(d: &Deployment, want: usize) -> (usize, usize) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let resolve = |v: Option<&IntOrString>, up: bool| -> usize {
        match v {
            None => (want * 25).div_ceil(100).max(usize::from(up)),
            Some(IntOrString::Int(n)) => usize::try_from(*n).unwrap_or(0),
            Some(IntOrString::String(s)) => {
                let pct: usize = s.trim_end_matches('%').parse().unwrap_or(25);
                if up {
                    (want * pct).div_ceil(100)
                } else {
                    want * pct / 100
                }
            }
        }
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), true);
    let unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), false);
    if surge == 0 && unavailable == 0 {
        (1, 0)
    } else {
        (surge, unavailable)
    }
}

/// Stops pods side by side (each may pause for its `preStop` and grace period).
async fn stop_all(k: &Kubelet, pods: Vec<Pod>) {
    if pods.is_empty() {
        return;
    }
    let k = k.clone();
    let _ = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for p in &pods {
                let k = &k;
                s.spawn(move || k.stop(p));
            }
        });
    })
    .await;
}

impl DataPlane {
    fn pods_file(&self, key: &str) -> PathBuf {
        self.kubelet.dir.join(format!("{key}.json"))
    }

    /// The pods recorded for a Deployment (records of earlier versions, host
    /// processes, read as pods with no name: a rollout replaces them).
    pub fn pods(&self, key: &str) -> Vec<Pod> {
        std::fs::read_to_string(self.pods_file(key))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<Pod>>(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self, key: &str, pods: &[&Pod]) -> Result<(), K8sError> {
        let text = serde_json::to_string(pods).map_err(lerr)?;
        std::fs::write(self.pods_file(key), text).map_err(lerr)
    }

    /// Brings the pods in line with the stack's Deployments and reports their status
    /// to the API. Returns the front's address when any pod is Ready.
    pub async fn reconcile(
        &self,
        client: &kube::Client,
        stack: &str,
    ) -> Result<Option<SocketAddr>, K8sError> {
        std::fs::create_dir_all(&self.kubelet.dir).map_err(lerr)?;
        let all: Api<Deployment> = Api::all(client.clone());
        let sel = format!("{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_PART_OF}={stack}");
        let deps = all
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(lerr)?;
        let mut keys = Vec::new();
        let mut failure = None;
        // Every Deployment's Ready pods as recorded, updated as pods come and go, so
        // the front follows a rollout while it happens.
        let mut eps = Endpoints {
            file: self.kubelet.dir.join("backends"),
            by_key: Default::default(),
        };
        for e in std::fs::read_dir(&self.kubelet.dir)
            .map_err(lerr)?
            .flatten()
        {
            let f = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = f.strip_suffix(".json").filter(|k| *k != "front") {
                let pods = self.pods(key);
                eps.set(key, pods.iter().filter(|p| running(p)));
            }
        }
        for d in deps.items {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            let key = format!("{ns}.{name}");
            keys.push(key.clone());
            let (pods, problem) = self.sync(&key, &ns, &d, &mut eps).await?;
            eps.set(&key, pods.iter());
            self.report(client, &d, &pods, problem.as_ref()).await?;
            if let Some(p) = problem
                && p.fatal
            {
                failure.get_or_insert(format!("deployment {ns}/{name}: {}", p.message));
            }
        }
        // Deployments that are gone: stop their pods.
        let k = &self.kubelet;
        for e in std::fs::read_dir(&self.kubelet.dir)
            .map_err(lerr)?
            .flatten()
        {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(key) = f.strip_suffix(".json") else {
                continue;
            };
            if key == "front" || keys.iter().any(|k| k == key) {
                continue;
            }
            eps.set(key, [].iter());
            stop_all(k, self.pods(key)).await;
            let _ = std::fs::remove_file(e.path());
        }
        if keys.is_empty() {
            // Nothing deployed (`stack down`): the pulled images go too.
            let _ = std::fs::remove_dir_all(self.kubelet.dir.join("images"));
        }
        eps.by_key.retain(|k, _| keys.contains(k));
        eps.write();
        let any = !eps.ready().is_empty();
        let front = self.front(any, &eps.file)?;
        match failure {
            Some(f) => Err(lerr(f)),
            None => Ok(front),
        }
    }

    /// Stops every pod and the front, whatever the API says (its state directory is
    /// gone: nobody else could).
    pub async fn stop_everything(&self) {
        let k = &self.kubelet;
        let Ok(entries) = std::fs::read_dir(&self.kubelet.dir) else {
            return;
        };
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = f.strip_suffix(".json").filter(|k| *k != "front") {
                stop_all(k, self.pods(key)).await;
            }
        }
        let _ = self.front(false, &self.kubelet.dir.join("backends"));
        let _ = std::fs::remove_dir_all(&self.kubelet.dir);
    }

    /// The Service's front, when it runs.
    pub fn front_addr(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(self.kubelet.dir.join("front.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Replica>(&t).ok())
            .filter(|r| alive(r.pid))
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
    }

    /// One Deployment: restarts, rollout, scale. Returns its pods and what keeps it
    /// from being available, if anything.
    async fn sync(
        &self,
        key: &str,
        ns: &str,
        d: &Deployment,
        eps: &mut Endpoints,
    ) -> Result<(Vec<Pod>, Option<Problem>), K8sError> {
        let k = &self.kubelet;
        let want =
            usize::try_from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
        let t = match Template::of(d) {
            Ok(t) => t,
            Err(e) => return Ok((self.pods(key), Some(Problem::fatal("InvalidTemplate", e)))),
        };
        let image = t.container.image.clone().unwrap_or_default();
        let (mut new, mut old): (Vec<Pod>, Vec<Pod>) = self
            .pods(key)
            .into_iter()
            .partition(|p| p.template == t.hash && !p.name.is_empty());
        // Old pods count as available only while they run and are ready.
        for p in &mut old {
            p.ready = running(p) && p.ready;
        }
        let readiness = t.container.readiness_probe.clone();
        let liveness = t.container.liveness_probe.clone();
        // The image is pulled only when a pod has to start.
        let mut pulled = None;
        macro_rules! image {
            () => {{
                if pulled.is_none() {
                    match k.pull(&image).await {
                        Ok(p) => pulled = Some(p),
                        Err(e) => {
                            let msg = format!("pulling the pod image: {e}");
                            eprintln!("WARNING: local kubelet: {key}: {msg}");
                            let all: Vec<Pod> = new.into_iter().chain(old).collect();
                            return Ok((all, Some(Problem::soft("ErrImagePull", msg))));
                        }
                    }
                }
                pulled.as_ref().expect("pulled above")
            }};
        }
        // Restarts: a container that exited, or failed its liveness probe.
        for i in 0..new.len() {
            if k.live(&new[i], liveness.as_ref()).await {
                let p = &mut new[i];
                if running(p) {
                    p.ready = match &readiness {
                        Some(r) => crate::local::kubelet::probe_http(r, p.port).await,
                        None => true,
                    };
                }
                continue;
            }
            let why = if running(&new[i]) {
                "failed its liveness probe"
            } else {
                "exited"
            };
            eprintln!(
                "local kubelet: pod {}: container {why}; restarting it",
                new[i].name
            );
            let img = image!();
            eps.set(
                key,
                new.iter().chain(&old).filter(|p| p.name != new[i].name),
            );
            stop_all(k, vec![new[i].clone()]).await;
            let restarts = new[i].restarts + 1;
            let (name, node) = (new[i].name.clone(), new[i].node);
            new[i] = k.start(ns, &t, &image, img, Some(&name)).map_err(lerr)?;
            new[i].restarts = restarts;
            // A restart stays on its node.
            new[i].node = node;
            self.save(key, &new.iter().chain(&old).collect::<Vec<_>>())?;
            if let Err(e) = k.wait_ready(&mut new[i], readiness.as_ref()).await {
                eprintln!("local kubelet: {e}");
            }
            eps.set(key, new.iter().chain(&old));
        }
        let (surge, unavailable) = rolling_bounds(d, want);
        let (cpu_m, memory) = requests(&t.container);
        loop {
            // Scale down surplus new pods, not-ready ones first.
            new.sort_by_key(|p| !p.ready);
            let surplus: Vec<Pod> = new.drain(want.min(new.len())..).collect();
            // Old pods go as far as availability allows: the not-ready ones always.
            let ready_now = new.iter().chain(&old).filter(|p| p.ready).count();
            let mut stoppable = ready_now.saturating_sub(want.saturating_sub(unavailable));
            let mut going = surplus;
            old.sort_by_key(|p| p.ready);
            old.retain(|p| {
                let go = !p.ready || stoppable > 0;
                if go {
                    if p.ready {
                        stoppable -= 1;
                    }
                    going.push(p.clone());
                }
                !go
            });
            let stopped = !going.is_empty();
            // Out of the front first, then stopped (what `preStop` pauses for).
            eps.set(key, new.iter().chain(&old));
            stop_all(k, going).await;
            self.save(key, &new.iter().chain(&old).collect::<Vec<_>>())?;
            if old.is_empty() && new.len() == want {
                break;
            }
            // Start new pods within the surge.
            let room = (want + surge).saturating_sub(new.len() + old.len());
            let n = room.min(want.saturating_sub(new.len()));
            if n == 0 && !stopped {
                // Nothing can move (e.g. new pods not ready): leave the rollout here.
                let msg = "the rollout cannot progress: new pods are not ready".to_string();
                return Ok((
                    new.into_iter().chain(old).collect(),
                    Some(Problem::fatal("ProgressDeadlineExceeded", msg)),
                ));
            }
            let mut fresh = Vec::new();
            let mut pending = None;
            for _ in 0..n {
                // Scheduled first: a pod whose requests fit no node stays Pending.
                let node = match &self.nodes {
                    None => 0,
                    Some(nodes) => {
                        let others = eps.by_key.iter().filter(|(k, _)| *k != key);
                        let placed = others
                            .flat_map(|(_, v)| v.iter())
                            .chain(new.iter())
                            .chain(old.iter());
                        match nodes.place(cpu_m, memory, placed) {
                            Ok(n) => n,
                            Err(why) => {
                                pending = Some(why);
                                break;
                            }
                        }
                    }
                };
                let img = image!();
                let mut p = k.start(ns, &t, &image, img, None).map_err(lerr)?;
                p.node = node;
                new.push(p.clone());
                fresh.push(p.name);
                self.save(key, &new.iter().chain(&old).collect::<Vec<_>>())?;
                eps.set(key, new.iter().chain(&old));
            }
            for i in 0..new.len() {
                if !fresh.contains(&new[i].name) {
                    continue;
                }
                if let Err(e) = k.wait_ready(&mut new[i], readiness.as_ref()).await {
                    self.save(key, &new.iter().chain(&old).collect::<Vec<_>>())?;
                    let all: Vec<Pod> = new.into_iter().chain(old).collect();
                    return Ok((all, Some(Problem::fatal("ProgressDeadlineExceeded", e))));
                }
                eps.set(key, new.iter().chain(&old));
            }
            self.save(key, &new.iter().chain(&old).collect::<Vec<_>>())?;
            if let Some(why) = pending {
                let waiting = want.saturating_sub(new.len());
                let msg = format!("{waiting} pod(s) Pending: {why}");
                eprintln!("WARNING: local kubelet: {key}: {msg}");
                let all: Vec<Pod> = new.into_iter().chain(old).collect();
                return Ok((all, Some(Problem::soft("Unschedulable", msg))));
            }
        }
        Ok((new, None))
    }

    /// The Deployment's status as the controller would write it.
    async fn report(
        &self,
        client: &kube::Client,
        d: &Deployment,
        pods: &[Pod],
        problem: Option<&Problem>,
    ) -> Result<(), K8sError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let hash = Template::of(d).map(|t| t.hash).unwrap_or_default();
        let want =
            usize::try_from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
        let ready = pods.iter().filter(|p| p.ready).count();
        let updated = pods.iter().filter(|p| p.template == hash).count();
        let (_, unavailable) = rolling_bounds(d, want);
        let available = ready >= want.saturating_sub(unavailable);
        let progressing = match problem {
            Some(p) => {
                json!({"type": "Progressing", "status": "False", "reason": p.reason, "message": p.message})
            }
            None => {
                json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                "message": format!("{updated} of {want} pods run the current template")})
            }
        };
        let status = json!({ "status": {
            "observedGeneration": d.metadata.generation.unwrap_or(1),
            "replicas": pods.len(), "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": want.saturating_sub(ready),
            "conditions": [
                {"type": "Available", "status": if available { "True" } else { "False" },
                 "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                progressing,
            ],
        }});
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(lerr)?;
        Ok(())
    }

    fn front(&self, want: bool, list: &Path) -> Result<Option<SocketAddr>, K8sError> {
        let f = self.kubelet.dir.join("front.json");
        let cur = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| serde_json::from_str::<Replica>(&t).ok())
            .filter(|r| alive(r.pid));
        match (want, cur) {
            (true, Some(r)) => Ok(Some(SocketAddr::from(([127, 0, 0, 1], r.port)))),
            (true, None) => {
                let port = if self.front_port == 0 {
                    free_port().map_err(lerr)?
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
                if !listening(addr, Duration::from_secs(10)) {
                    return Err(lerr(format!("the front did not listen on {addr}")));
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

/// Every Deployment's pods as they come and go: what the scheduler counts on the
/// nodes, and the front's backends (the Ready ones), written to the file the front
/// re-reads per connection whenever they change.
struct Endpoints {
    file: PathBuf,
    by_key: std::collections::BTreeMap<String, Vec<Pod>>,
}

impl Endpoints {
    fn set<'a>(&mut self, key: &str, pods: impl Iterator<Item = &'a Pod>) {
        self.by_key.insert(key.to_string(), pods.cloned().collect());
        self.write();
    }

    fn ready(&self) -> Vec<String> {
        self.by_key
            .values()
            .flatten()
            .filter(|p| p.ready)
            .map(|p| format!("127.0.0.1:{}", p.port))
            .collect()
    }

    fn write(&self) {
        let all = self.ready();
        // Written aside then renamed: the front never reads half a list. A list that
        // cannot be written leaves the front on the previous one.
        let tmp = self.file.with_extension("tmp");
        if std::fs::write(&tmp, all.join("\n")).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
    }
}

/// What keeps a Deployment from being available.
#[derive(Debug, Clone)]
struct Problem {
    /// The `Progressing` condition's reason.
    reason: &'static str,
    /// What happened.
    message: String,
    /// Whether `stack up` fails on it (a rollout that failed) or only warns (an image
    /// that cannot be pulled locally: the deployment itself is fine).
    fatal: bool,
}

impl Problem {
    fn fatal(reason: &'static str, message: String) -> Problem {
        Problem {
            reason,
            message,
            fatal: true,
        }
    }
    fn soft(reason: &'static str, message: String) -> Problem {
        Problem {
            reason,
            message,
            fatal: false,
        }
    }
}

/// The front: accepts on `listen` and forwards each connection to the next backend
/// listed (one `host:port` a line) in `backends`, re-read per connection; a backend
/// that refuses (a pod that died since the last sync) is skipped for the next.
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
        let first = next;
        next = next.wrapping_add(1);
        tokio::spawn(async move {
            for i in 0..list.len() {
                let target = &list[(first + i) % list.len()];
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    return;
                }
            }
        });
    }
}
