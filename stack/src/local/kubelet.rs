//! A local kubelet: runs the Pods of a Deployment from the image its pod template
//! names, pulled from the registry it was pushed to, under `runc`.
//!
//! Per pod: the image's layers are unpacked into a bundle of its own
//! (`<dir>/pods/<pod>/rootfs`, fresh on every start, as a container's writable layer
//! is), `config.json` is built from the image config and the pod's container
//! (command, args, env, CPU and memory limits as cgroup limits, host network) and
//! `runc run --detach` starts it under a unique container id. Pods share the host's
//! network, so each gets its own loopback port, passed as `PORT` (which wins over the
//! manifest's `PORT`, the containerPort on a real cluster); probes and the front
//! reach the pod there, whatever port the probe names.
//!
//! There is no long-running kubelet: each `stack` run syncs once. It restarts
//! containers that exited or fail their liveness probe `failureThreshold` times in a
//! row, rolls a changed template as the Deployment's `maxSurge`/`maxUnavailable` allow
//! (new pods Ready before old ones go), and stops pods as Kubernetes does: `preStop`,
//! SIGTERM, `terminationGracePeriodSeconds`, SIGKILL, `runc delete`.
//!
//! Where runc cannot run (no binary, not root) the pod's entrypoint from the unpacked
//! rootfs runs as a plain process instead (still the image's code; no isolation, no
//! limits), said once, loudly.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, PodSpec, Probe};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{alive, free_port};
use crate::artifacts::bundle::{self, RunOptions};
use crate::artifacts::oci::{self, Blob, ImageRef, LAYER_TYPE, Registry};

/// How pods run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// Under `runc`: namespaces, cgroup limits, the image's root filesystem.
    Runc,
    /// The unpacked image's entrypoint as a plain process (runc cannot run here).
    #[default]
    Process,
}

/// Why runc cannot run pods here, or `None` when it can.
fn runc_unusable() -> Option<String> {
    let there = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        return Some("no `runc` on PATH".into());
    }
    // /proc/self belongs to the process's effective uid.
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if euid.ok() != Some(0) {
        return Some("not root (runc needs root for namespaces and cgroups)".into());
    }
    None
}

/// The runtime of this machine, decided (and, for the fallback, said) once.
pub fn detect() -> Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    *RT.get_or_init(|| match runc_unusable() {
        None => Runtime::Runc,
        Some(why) => {
            eprintln!(
                "WARNING: local kubelet: runc cannot run pods here ({why}). Each pod runs \
                 its image's entrypoint from the unpacked root filesystem as a plain \
                 process instead: no isolation, no CPU or memory limits. Run as root \
                 with runc installed for containers."
            );
            Runtime::Process
        }
    })
}

/// One pod of a Deployment, as recorded under the state directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pod {
    /// Pod name: `<deployment>-<template hash>-<random>`.
    pub name: String,
    /// runc container id (unique on this machine).
    pub container_id: String,
    /// How it runs.
    pub runtime: Runtime,
    /// The container's process id on the host.
    pub pid: u32,
    /// Loopback port it listens on (`PORT`).
    pub port: u16,
    /// Hash of the pod template it runs (a new template rolls it).
    pub template: String,
    /// The image it runs.
    pub image: String,
    /// Times its container was restarted (exited, or failed its liveness probe).
    pub restarts: u32,
    /// Whether its readiness probe passed at the last sync.
    pub ready: bool,
    /// Its `preStop` hook.
    pub pre_stop: Option<LifecycleHandler>,
    /// `terminationGracePeriodSeconds`.
    pub grace_s: i64,
    /// The node it was scheduled on (index into the node group).
    pub node: usize,
    /// Its CPU request, millicores (what scheduling counts).
    pub cpu_request_m: u64,
    /// Its memory request, bytes.
    pub memory_request: i64,
}

/// The node group the pods are scheduled on: what each node of the instance type
/// leaves allocatable to pods after what the EKS AMI reserves.
#[derive(Debug, Clone, PartialEq)]
pub struct Nodes {
    /// The instance type.
    pub instance_type: String,
    /// Nodes in the group.
    pub count: usize,
    /// Allocatable CPU per node, millicores.
    pub cpu_m: u64,
    /// Allocatable memory per node, bytes.
    pub memory: i64,
}

/// Instance types: vCPUs, memory (MiB), max pods. Max pods is the VPC CNI's ENI limit
/// from the EKS AMI's `eni-max-pods.txt`
/// (<https://github.com/awslabs/amazon-eks-ami/blob/main/templates/shared/runtime/eni-max-pods.txt>).
const INSTANCE_TYPES: &[(&str, u64, u64, u64)] = &[
    ("t3.medium", 2, 4096, 17),
    ("t3.large", 2, 8192, 35),
    ("t3.xlarge", 4, 16384, 58),
    ("t3.2xlarge", 8, 32768, 58),
    ("m5.large", 2, 8192, 29),
    ("m5.xlarge", 4, 16384, 58),
    ("m5.2xlarge", 8, 32768, 58),
    ("m6i.large", 2, 8192, 29),
    ("m6i.xlarge", 4, 16384, 58),
    ("c5.large", 2, 4096, 29),
    ("c5.xlarge", 4, 8192, 58),
    ("c5.2xlarge", 8, 16384, 58),
    ("c6i.large", 2, 4096, 29),
    ("c6i.xlarge", 4, 8192, 58),
];

impl Nodes {
    /// `count` nodes of `instance_type`, or `None` for a type not in the table (then
    /// nothing is checked). Allocatable follows the EKS AMI's bootstrap
    /// (<https://github.com/awslabs/amazon-eks-ami/blob/main/templates/al2/runtime/bootstrap.sh>,
    /// `get_cpu_millicores_to_reserve` and `get_memory_mebibytes_to_reserve`):
    /// kube-reserved CPU is 6% of the first core, 1% of the second, 0.5% of the next
    /// two and 0.25% of the rest; kube-reserved memory is 255 MiB + 11 MiB per pod the
    /// node can hold; the kubelet's hard eviction threshold keeps 100 MiB more. So a
    /// t3.large has 1930m CPU and 7452 MiB allocatable of its nominal 2 vCPU / 8 GiB
    /// (a running node reports a little less memory: the kernel keeps some).
    pub fn of(instance_type: &str, count: i32) -> Option<Nodes> {
        let &(_, vcpus, mib, max_pods) = INSTANCE_TYPES.iter().find(|t| t.0 == instance_type)?;
        let reserved_m: f64 = (0..vcpus)
            .map(|core| match core {
                0 => 60.0,
                1 => 10.0,
                2 | 3 => 5.0,
                _ => 2.5,
            })
            .sum();
        let cpu_m = vcpus * 1000 - reserved_m.round() as u64;
        let memory_mib = mib - (255 + 11 * max_pods) - 100;
        Some(Nodes {
            instance_type: instance_type.into(),
            count: usize::try_from(count).unwrap_or(1).max(1),
            cpu_m,
            memory: i64::try_from(memory_mib << 20).unwrap_or(i64::MAX),
        })
    }

    /// The first node with room for a pod requesting `cpu_m` and `memory` besides
    /// `placed` (every pod running, of any Deployment), or why none has it (the
    /// scheduler's `FailedScheduling` message, with the numbers).
    pub fn place<'a>(
        &self,
        cpu_m: u64,
        memory: i64,
        placed: impl Iterator<Item = &'a Pod> + Clone,
    ) -> Result<usize, String> {
        let mut short_cpu = 0;
        let mut short_mem = 0;
        for n in 0..self.count {
            let on = placed.clone().filter(|p| p.node == n);
            let used_cpu: u64 = on.clone().map(|p| p.cpu_request_m).sum();
            let used_mem: i64 = on.map(|p| p.memory_request).sum();
            let cpu_ok = used_cpu + cpu_m <= self.cpu_m;
            let mem_ok = used_mem + memory <= self.memory;
            if cpu_ok && mem_ok {
                return Ok(n);
            }
            short_cpu += usize::from(!cpu_ok);
            short_mem += usize::from(!mem_ok);
        }
        let mut why = Vec::new();
        if short_cpu > 0 {
            why.push(format!("{short_cpu} Insufficient cpu"));
        }
        if short_mem > 0 {
            why.push(format!("{short_mem} Insufficient memory"));
        }
        Err(format!(
            "0/{} nodes are available: {} (the pod requests {cpu_m}m CPU and {} MiB; a {} \
             node has {}m and {} MiB allocatable): lower the container's requests or use a \
             larger instance type or more nodes",
            self.count,
            why.join(", "),
            memory >> 20,
            self.instance_type,
            self.cpu_m,
            self.memory >> 20
        ))
    }
}

/// A container's CPU (millicores) and memory (bytes) requests; a resource with a
/// limit and no request requests its limit, as the API server defaults it.
pub fn requests(c: &Container) -> (u64, i64) {
    let r = c.resources.as_ref();
    let get = |k: &str| {
        r.and_then(|r| r.requests.as_ref().and_then(|q| q.get(k)))
            .or_else(|| r.and_then(|r| r.limits.as_ref().and_then(|q| q.get(k))))
            .map(|q| q.0.clone())
    };
    (
        get("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0),
        get("memory").and_then(|q| memory_bytes(&q)).unwrap_or(0),
    )
}

/// An image pulled for pods: its config and layers.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image config.
    pub config: oci_spec::image::ImageConfiguration,
    /// Layers, bottom first.
    pub layers: Vec<Blob>,
}

/// The kubelet over a directory of pods, images and logs.
#[derive(Debug, Clone)]
pub struct Kubelet {
    /// `<state dir>/dataplane`.
    pub dir: PathBuf,
    /// The local registry images were pushed to (`--registry`): the image's repository
    /// path is pulled from it whatever host the image names (an ECR URL on the local
    /// target). `None`: only images on a loopback registry can be pulled.
    pub registry: Option<String>,
    /// How pods run (`None`: runc where it can, see [`detect`]).
    pub runtime: Option<Runtime>,
    /// How long a new pod may take to pass its readiness probe.
    pub ready_timeout: Duration,
}

/// The single container of a pod template, and the template's hash.
pub struct Template {
    /// The pod spec.
    pub spec: PodSpec,
    /// Its container (the first; others are not run locally).
    pub container: Container,
    /// Hash of the whole template.
    pub hash: String,
    /// Pod name prefix.
    pub prefix: String,
}

impl Template {
    /// The template of `d`, or why it cannot run.
    pub fn of(d: &Deployment) -> Result<Template, String> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let hash = hex::encode(Sha256::digest(
            serde_json::to_vec(&spec.template).map_err(|e| e.to_string())?,
        ));
        let pod = spec.template.spec.unwrap_or_default();
        let Some(container) = pod.containers.first().cloned() else {
            return Err(format!(
                "deployment {name}: the pod template has no container"
            ));
        };
        if pod.containers.len() > 1 {
            eprintln!(
                "local kubelet: deployment {name}: only the first container (`{}`) of each \
                 pod runs locally",
                container.name
            );
        }
        Ok(Template {
            prefix: format!("{name}-{}", &hash[..10]),
            spec: pod,
            container,
            hash,
        })
    }
}

/// CPU quantity (`2`, `500m`, `1.5`) in millicores.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    q.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| (v * 1000.0).round() as u64)
}

/// Memory quantity (`1Gi`, `512Mi`, `1G`, `1000`) in bytes.
pub fn memory_bytes(q: &str) -> Option<i64> {
    let q = q.trim();
    let units: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| q.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((q, 1.0));
    num.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| (v * mult) as i64)
}

/// One HTTP GET of a probe against the pod's port: a 2xx or 3xx passes (as the
/// kubelet's). Every probe goes to the pod's one local port, whatever port it names.
/// Probes other than `httpGet` pass (not run locally).
pub async fn probe_http(p: &Probe, port: u16) -> bool {
    let Some(h) = &p.http_get else {
        return true;
    };
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let timeout = Duration::from_secs(u64::try_from(p.timeout_seconds.unwrap_or(1)).unwrap_or(1));
    let http = reqwest::Client::new();
    http.get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(timeout.max(Duration::from_secs(1)))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
}

/// The last lines of a pod's log, for errors.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// A short random suffix for pod names (time and a counter: unique on this machine).
fn suffix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = Sha256::digest(format!("{t}.{n}.{}", std::process::id()));
    hex::encode(&h[..3])
}

/// CPU time the pod's container has used, in nanoseconds: its cgroup's usage counter
/// under runc (what cAdvisor, and so metrics-server, reads), the process's own user and
/// system time under the plain-process fallback. `None` when it does not run.
pub fn cpu_usage_ns(p: &Pod) -> Option<u64> {
    if !running(p) {
        return None;
    }
    if p.runtime == Runtime::Runc
        && let Some(ns) = cgroup_cpu_ns(p.pid)
    {
        return Some(ns);
    }
    // Fields 14 and 15 after the command's closing parenthesis: utime and stime, in
    // USER_HZ (100 per second on Linux).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// The usage counter of `pid`'s CPU cgroup: `cpuacct.usage` (v1) or `cpu.stat`'s
/// `usage_usec` (v2).
fn cgroup_cpu_ns(pid: u32) -> Option<u64> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let root = Path::new("/sys/fs/cgroup");
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "cpuacct") {
            for mount in ["cpuacct", controllers, "cpu,cpuacct"] {
                let f = root.join(mount).join(rel).join("cpuacct.usage");
                if let Some(v) = std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    return Some(v);
                }
            }
        } else if controllers.is_empty() {
            let text = std::fs::read_to_string(root.join(rel).join("cpu.stat")).ok();
            let usec = text.as_deref().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            if let Some(us) = usec {
                return Some(us * 1000);
            }
        }
    }
    None
}

/// Whether the pod's container process runs.
pub fn running(p: &Pod) -> bool {
    p.pid != 0 && alive(p.pid)
}

fn runc(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("runc")
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// The containers runc knows by id (with the default root, as `runc list` shows).
pub fn runc_ids() -> Vec<String> {
    runc(&["list", "--quiet"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Kubelet {
    fn runtime(&self) -> Runtime {
        self.runtime.unwrap_or_else(detect)
    }

    fn bundle(&self, pod: &str) -> PathBuf {
        self.dir.join("pods").join(pod)
    }

    /// The pod's log file.
    pub fn log(&self, pod: &str) -> PathBuf {
        self.bundle(pod).join("log")
    }

    /// Pulls `image` (cached under `<dir>/images` by digest), from the local registry
    /// when one is set.
    pub async fn pull(&self, image: &str) -> Result<Pulled, String> {
        let r = ImageRef::parse(image).map_err(|e| e.to_string())?;
        let base = match &self.registry {
            Some(b) => b.clone(),
            None if r.base.starts_with("http://") => r.base.clone(),
            None => {
                return Err(format!(
                    "image {image} is not on a local registry; on the local target set \
                     --registry / STACK_REGISTRY (e.g. a `docker-registry` on loopback) so \
                     `stack up` pushes images where the kubelet can pull them"
                ));
            }
        };
        let key = r.reference.trim_start_matches("sha256:").to_string();
        let cache = self.dir.join("images").join(&key);
        let digest_ref = r.reference.starts_with("sha256:");
        if digest_ref && let Some(p) = load_cached(&cache) {
            return Ok(p);
        }
        let (_, config, layers) = Registry::new(&base, None)
            .pull(&r.repo, &r.reference)
            .await
            .map_err(|e| format!("pulling {} from {base}: {e}", r.repo))?;
        let cfg: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&config.data).map_err(|e| format!("image config: {e}"))?;
        if digest_ref {
            // A cache that cannot be written only costs a pull next time.
            let _ = save_cached(&cache, &config, &layers);
        }
        Ok(Pulled {
            config: cfg,
            layers,
        })
    }

    /// Starts a pod of `t` from `img` (a fresh root filesystem); `name` reuses a pod's
    /// name (a restart).
    pub fn start(
        &self,
        ns: &str,
        t: &Template,
        image: &str,
        img: &Pulled,
        name: Option<&str>,
    ) -> Result<Pod, String> {
        let name = name.map_or_else(|| format!("{}-{}", t.prefix, suffix()), str::to_string);
        let bundle = std::path::absolute(self.bundle(&name)).map_err(|e| e.to_string())?;
        let ctx = |what: &str, e: &dyn std::fmt::Display| format!("pod {name}: {what}: {e}");
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle).map_err(|e| ctx("clearing its bundle", &e))?;
        }
        let rootfs = bundle.join("rootfs");
        bundle::unpack(img.layers.iter(), &rootfs).map_err(|e| ctx("unpacking the image", &e))?;
        let port = free_port().map_err(|e| ctx("picking a port", &e))?;
        let c = &t.container;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in c.env.iter().flatten() {
            match &e.value {
                Some(v) => {
                    env.insert(e.name.clone(), v.clone());
                }
                None if e.value_from.is_some() => eprintln!(
                    "local kubelet: pod {name}: env {} uses valueFrom, which is not resolved \
                     locally; left unset",
                    e.name
                ),
                None => {
                    env.insert(e.name.clone(), String::new());
                }
            }
        }
        env.insert("PORT".into(), port.to_string());
        let limits = c.resources.as_ref().and_then(|r| r.limits.clone());
        let limit = |k: &str| limits.as_ref().and_then(|l| l.get(k)).map(|q| q.0.clone());
        let sc = t.spec.security_context.as_ref();
        let csc = c.security_context.as_ref();
        let uid = csc
            .and_then(|s| s.run_as_user)
            .or(sc.and_then(|s| s.run_as_user));
        let gid = csc
            .and_then(|s| s.run_as_group)
            .or(sc.and_then(|s| s.run_as_group));
        let user = match (uid, gid) {
            (Some(u), g) => Some((
                u32::try_from(u).unwrap_or(65534),
                u32::try_from(g.unwrap_or(u)).unwrap_or(65534),
            )),
            _ => None,
        };
        let opts = RunOptions {
            command: c.command.clone().filter(|v| !v.is_empty()),
            args: c.args.clone().filter(|v| !v.is_empty()),
            env,
            cwd: c.working_dir.clone(),
            user,
            cpu_millis: limit("cpu").and_then(|q| cpu_millis(&q)),
            memory_bytes: limit("memory").and_then(|q| memory_bytes(&q)),
            hostname: Some(name.chars().take(63).collect()),
        };
        let spec = bundle::runtime_spec(&img.config, &rootfs, &opts)
            .map_err(|e| ctx("building its runtime config", &e))?;
        bundle::write_config(&bundle, &spec).map_err(|e| ctx("writing config.json", &e))?;
        let log_path = bundle.join("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ctx("opening its log", &e))?;
        let err = log.try_clone().map_err(|e| ctx("opening its log", &e))?;
        let runtime = self.runtime();
        let container_id = format!("stack-{ns}-{name}");
        let pid = match runtime {
            Runtime::Runc => {
                let pid_file = bundle.join("pid");
                // `--detach`: runc exits once the container runs; the container keeps
                // the log as its stdout and stderr.
                let st = Command::new("runc")
                    .args(["run", "--detach", "--pid-file"])
                    .arg(&pid_file)
                    .arg("--bundle")
                    .arg(&bundle)
                    .arg(&container_id)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .status()
                    .map_err(|e| ctx("running runc", &e))?;
                if !st.success() {
                    let _ = runc(&["delete", "--force", &container_id]);
                    return Err(format!(
                        "pod {name}: `runc run` failed ({st}): {}\n(bundle {}; check the \
                         runtime config and that runc works here, or run without root to \
                         fall back to plain processes)",
                        log_tail(&log_path),
                        bundle.display()
                    ));
                }
                std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| format!("pod {name}: runc wrote no pid file"))?
            }
            Runtime::Process => {
                let p = spec.process().clone().unwrap_or_default();
                let argv = p.args().clone().unwrap_or_default();
                // The image's absolute paths (the entrypoint, `MODEL_DIR`…) are under
                // its unpacked root here, not in the host's.
                let inside = |s: &str| {
                    let rel = s.trim_start_matches('/');
                    if s.starts_with('/') && !rel.is_empty() && rootfs.join(rel).exists() {
                        rootfs.join(rel).display().to_string()
                    } else {
                        s.to_string()
                    }
                };
                let Some((prog, rest)) = argv.split_first() else {
                    return Err(format!("pod {name}: nothing to run"));
                };
                let mut cmd = Command::new(inside(prog));
                cmd.args(rest.iter().map(|a| inside(a)))
                    .env_clear()
                    .envs(p.env().iter().flatten().filter_map(|kv| {
                        kv.split_once('=').map(|(k, v)| (k.to_string(), inside(v)))
                    }))
                    .current_dir(rootfs.join(p.cwd().strip_prefix("/").unwrap_or(p.cwd())))
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err);
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                cmd.spawn()
                    .map_err(|e| ctx(&format!("starting {prog} from the image"), &e))?
                    .id()
            }
        };
        let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let (cpu_request_m, memory_request) = requests(c);
        Ok(Pod {
            name,
            container_id,
            runtime,
            pid,
            port,
            template: t.hash.clone(),
            image: image.to_string(),
            restarts: 0,
            ready: false,
            pre_stop,
            grace_s: t.spec.termination_grace_period_seconds.unwrap_or(30),
            node: 0,
            cpu_request_m,
            memory_request,
        })
    }

    /// Waits for a new pod's readiness probe (after its `initialDelaySeconds`), up to
    /// the kubelet's ready timeout; fails early when its container exits.
    pub async fn wait_ready(&self, pod: &mut Pod, probe: Option<&Probe>) -> Result<(), String> {
        let start = Instant::now();
        if let Some(p) = probe {
            tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        }
        // Polled faster than `periodSeconds` while starting: a local rollout should
        // not wait a whole period for each pod.
        let every = probe
            .map(|p| secs(p.period_seconds, 10))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_millis(200));
        loop {
            if !running(pod) {
                return Err(format!(
                    "pod {}: its container exited before it was ready; last log lines \
                     ({}):\n{}",
                    pod.name,
                    self.log(&pod.name).display(),
                    log_tail(&self.log(&pod.name))
                ));
            }
            let ok = match probe {
                Some(p) => probe_http(p, pod.port).await,
                // No readiness probe: ready once it accepts connections.
                None => std::net::TcpStream::connect(("127.0.0.1", pod.port)).is_ok(),
            };
            if ok {
                pod.ready = true;
                return Ok(());
            }
            if start.elapsed() > self.ready_timeout {
                return Err(format!(
                    "pod {} (port {}) did not pass its readiness probe within {}s; raise \
                     STACK_READY_TIMEOUT_SECS or see its log {}:\n{}",
                    pod.name,
                    pod.port,
                    self.ready_timeout.as_secs(),
                    self.log(&pod.name).display(),
                    log_tail(&self.log(&pod.name))
                ));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Whether a running pod is alive by its liveness probe: up to `failureThreshold`
    /// probes `periodSeconds` apart, the first pass ending it.
    pub async fn live(&self, pod: &Pod, probe: Option<&Probe>) -> bool {
        if !running(pod) {
            return false;
        }
        let Some(p) = probe else {
            return true;
        };
        let tries = p.failure_threshold.unwrap_or(3).max(1);
        for i in 0..tries {
            if probe_http(p, pod.port).await {
                return true;
            }
            if i + 1 < tries {
                tokio::time::sleep(secs(p.period_seconds, 10)).await;
            }
        }
        false
    }

    /// Stops a pod as Kubernetes does: `preStop`, SIGTERM, the grace period (which the
    /// hook's time counts against), SIGKILL; then deletes the container and its bundle.
    pub fn stop(&self, pod: &Pod) {
        let grace = Duration::from_secs(u64::try_from(pod.grace_s).unwrap_or(30));
        let deadline = Instant::now() + grace;
        if running(pod)
            && let Some(h) = &pod.pre_stop
        {
            self.pre_stop(pod, h, grace);
        }
        let signal = |sig: &str| match pod.runtime {
            Runtime::Runc => {
                let _ = runc(&["kill", &pod.container_id, sig]);
            }
            Runtime::Process if pod.pid != 0 => {
                let _ = Command::new("kill")
                    .args([&format!("-{sig}"), &pod.pid.to_string()])
                    .status();
            }
            Runtime::Process => {}
        };
        if running(pod) {
            signal("TERM");
            while running(pod) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if running(pod) {
                signal("KILL");
                let t = Instant::now();
                while running(pod) && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if pod.runtime == Runtime::Runc && !pod.container_id.is_empty() {
            let _ = runc(&["delete", "--force", &pod.container_id]);
        }
        if !pod.name.is_empty() {
            let _ = std::fs::remove_dir_all(self.bundle(&pod.name));
        }
    }

    fn pre_stop(&self, pod: &Pod, h: &LifecycleHandler, grace: Duration) {
        if let Some(s) = &h.sleep {
            let d = Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0));
            std::thread::sleep(d.min(grace));
        } else if let Some(e) = &h.exec {
            let cmd = e.command.clone().unwrap_or_default();
            match pod.runtime {
                Runtime::Runc if !cmd.is_empty() => {
                    let mut args = vec!["exec", &pod.container_id];
                    args.extend(cmd.iter().map(String::as_str));
                    if let Ok(o) = runc(&args)
                        && !o.status.success()
                    {
                        eprintln!(
                            "local kubelet: pod {}: preStop exec failed: {}",
                            pod.name,
                            String::from_utf8_lossy(&o.stderr).trim()
                        );
                    }
                }
                _ => eprintln!(
                    "local kubelet: pod {}: preStop exec is not run outside runc",
                    pod.name
                ),
            }
        } else if let Some(g) = &h.http_get {
            let url = format!(
                "http://127.0.0.1:{}{}",
                pod.port,
                g.path.clone().unwrap_or_else(|| "/".into())
            );
            let _ = http_get_blocking(&url, grace);
        }
    }
}

/// A blocking GET for `preStop` httpGet hooks (stop runs off the async runtime).
fn http_get_blocking(url: &str, within: Duration) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(within))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Ok(())
}

fn load_cached(dir: &Path) -> Option<Pulled> {
    let index: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.join("layers.json")).ok()?).ok()?;
    let config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
    let mut layers = Vec::new();
    for d in index {
        let data = std::fs::read(dir.join(d.trim_start_matches("sha256:"))).ok()?;
        // A damaged cache is pulled again.
        if oci::digest(&data) != d {
            return None;
        }
        layers.push(Blob {
            media_type: LAYER_TYPE.into(),
            digest: d,
            data,
        });
    }
    Some(Pulled { config, layers })
}

fn save_cached(dir: &Path, config: &Blob, layers: &[Blob]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for l in layers {
        std::fs::write(dir.join(l.digest.trim_start_matches("sha256:")), &l.data)?;
    }
    std::fs::write(dir.join("config.json"), &config.data)?;
    let index: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    std::fs::write(
        dir.join("layers.json"),
        serde_json::to_vec(&index).map_err(std::io::Error::other)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1000"), Some(1000));
        assert_eq!(memory_bytes("x"), None);
    }

    #[test]
    fn allocatable_follows_the_eks_ami_reservations() {
        let n = Nodes::of("t3.large", 2).unwrap();
        assert_eq!(n.cpu_m, 1930);
        assert_eq!(n.memory >> 20, 8192 - 255 - 11 * 35 - 100);
        let x = Nodes::of("t3.xlarge", 1).unwrap();
        assert_eq!(x.cpu_m, 4000 - 80);
        assert!(Nodes::of("z9.huge", 1).is_none());
        // Two 1-CPU pods: one per node; a third fits nowhere.
        let pod = |node| Pod {
            node,
            cpu_request_m: 1000,
            memory_request: 1 << 30,
            ..Pod::default()
        };
        let placed = [pod(0)];
        assert_eq!(n.place(1000, 1 << 30, placed.iter()), Ok(1));
        let placed = [pod(0), pod(1)];
        let err = n.place(1000, 1 << 30, placed.iter()).unwrap_err();
        assert!(
            err.starts_with("0/2 nodes are available: 2 Insufficient cpu"),
            "{err}"
        );
        assert!(n.place(2000, 0, [].iter()).is_err(), "2 CPUs > 1930m");
    }
}
