//! The local control plane: what EKS's control plane and nodes keep doing between
//! `stack` runs, as one long-running process per stack (`stack control-plane`).
//!
//! - **API server.** The in-memory Kubernetes API, served on a loopback port that is
//!   kept across restarts, its objects in the snapshot beside the state; a kubeconfig
//!   for it is written beside the state too, so `kubectl --kubeconfig …` and `stack`
//!   both talk to it over HTTP, as they would to EKS.
//! - **Kubelet.** Every `kubelet_sync` the data plane ([`DataPlane::reconcile`]) brings
//!   the pods in line with the Deployments (start, restart, roll, scale, Pending) and
//!   writes their status to the API, which is what `stack up` waits on.
//! - **HPA controller.** Every `hpa_sync` (15 s, as kube-controller-manager) each
//!   HorizontalPodAutoscaler of the stack samples its target's pods' CPU (their
//!   cgroups' usage counters, as metrics-server reads them through the kubelet),
//!   runs the v2 algorithm ([`super::hpa`]) and sets the Deployment's `spec.replicas`;
//!   its status (current and desired replicas, utilization, last scale time,
//!   conditions) is written back, and every scale is logged.
//!
//! `stack up` and `stack down` start it when it is not running and restart it when its
//! settings change; `stack down` stops it once nothing is deployed, after a last sync
//! has stopped every pod. It also stops by itself when its spec file disappears (the
//! state directory was deleted), so nothing it started outlives its state.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::hpa::{Autoscaler, PodSample, Policy, cpu_target_percent};
use super::kubelet::{Kubelet, Nodes, cpu_usage_ns, running};
use super::process;
use crate::providers::k8s::dataplane::DataPlane;
use crate::providers::k8s::{FIELD_MANAGER, K8sError, LABEL_MANAGED_BY, LABEL_PART_OF, fake};

/// What the control plane runs with (written by `stack`, read by the process).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    /// The stack whose objects it manages (their `part-of` label).
    pub stack: String,
    /// Loopback port of the API.
    pub port: u16,
    /// The API's snapshot file.
    pub snapshot: PathBuf,
    /// Pods, images and logs.
    pub dataplane_dir: PathBuf,
    /// The registry images are pulled from.
    pub registry: Option<String>,
    /// Port of the Service's front (0: any free port).
    pub front_port: u16,
    /// The `stack` executable (it serves the front).
    pub exe: PathBuf,
    /// How long a new pod may take to pass its readiness probe.
    pub ready_timeout_s: u64,
    /// The node group's instance type and size (pods are scheduled on it).
    pub instance_type: String,
    /// Nodes in the group.
    pub nodes: i32,
    /// The kubelet's sync period.
    pub kubelet_sync_ms: u64,
    /// The HPA controller's sync period.
    pub hpa_sync_ms: u64,
    /// The HPA controller's tolerance.
    pub hpa_tolerance: f64,
}

impl Spec {
    /// The data plane its kubelet runs.
    pub fn dataplane(&self) -> DataPlane {
        DataPlane {
            kubelet: Kubelet {
                dir: self.dataplane_dir.clone(),
                registry: self.registry.clone(),
                runtime: None,
                ready_timeout: Duration::from_secs(self.ready_timeout_s),
            },
            front_port: self.front_port,
            front_exe: self.exe.clone(),
            nodes: Nodes::of(&self.instance_type, self.nodes),
        }
    }
}

fn lerr(e: impl std::fmt::Display) -> K8sError {
    K8sError::Local(format!("control plane: {e}"))
}

/// The control plane of one stack, by its directory (`<state>/<stack>.local.control-plane`).
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Spec, pid file, log and kubeconfig.
    pub dir: PathBuf,
}

impl ControlPlane {
    fn daemon(&self) -> Daemon {
        Daemon {
            dir: self.dir.clone(),
            name: "control-plane",
        }
    }

    /// Its log: every scale, restart and sync error.
    pub fn log(&self) -> PathBuf {
        self.daemon().log()
    }

    /// A kubeconfig for its API.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The running process and what it runs with.
    pub fn running(&self) -> Option<(u32, Spec)> {
        self.daemon().running()
    }

    /// The API's URL when it runs.
    pub fn url(&self) -> Option<String> {
        self.running()
            .map(|(_, s)| format!("http://127.0.0.1:{}", s.port))
    }

    /// Starts it with `spec` unless it already runs so; restarts it when the spec
    /// changed. A port of 0 keeps the running one's port (clients and kubeconfigs
    /// stay valid), else takes a free one. Returns the API's URL.
    pub fn ensure(&self, mut spec: Spec) -> Result<String, K8sError> {
        if spec.port == 0 {
            spec.port = match self.running() {
                Some((_, p)) => p.port,
                None => process::free_port().map_err(lerr)?,
            };
        }
        let d = self.daemon();
        let spec_file = d.spec_file();
        d.ensure(
            &spec,
            &spec.exe,
            &[
                "control-plane".as_ref(),
                "--spec".as_ref(),
                spec_file.as_os_str(),
            ],
            SocketAddr::from(([127, 0, 0, 1], spec.port)),
            Duration::from_secs(30),
        )
        .map_err(|e| {
            lerr(format!(
                "its API: {e} (set --kube-port to another port if taken)"
            ))
        })?;
        std::fs::write(self.kubeconfig(), kubeconfig(&spec.stack, spec.port)).map_err(lerr)?;
        Ok(format!("http://127.0.0.1:{}", spec.port))
    }

    /// Stops it (a last sync first: with nothing deployed, that stops every pod and
    /// the front) within `grace`, and removes its spec and kubeconfig.
    pub fn stop(&self, grace: Duration) {
        self.daemon().stop(grace);
        let _ = std::fs::remove_file(self.kubeconfig());
    }
}

/// A kubeconfig naming the local API (plain HTTP on loopback, no credentials).
fn kubeconfig(stack: &str, port: u16) -> String {
    let name = format!("{stack}-local");
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": format!("http://127.0.0.1:{port}")}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    })
    .to_string()
}

/// The log lines' time of day (UTC).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%H:%M:%S")
        .to_string()
}

/// The process: serves the API and runs the kubelet and HPA loops until SIGTERM (then
/// one last kubelet sync) or until `spec_file` disappears (then every pod is stopped).
pub async fn serve(spec_file: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let spec: Spec = serde_json::from_slice(
        &std::fs::read(spec_file).with_context(|| format!("reading {}", spec_file.display()))?,
    )
    .with_context(|| format!("reading {}", spec_file.display()))?;
    let api = fake::FakeApi::new(Some(spec.snapshot.clone())).await?;
    let server = api
        .serve(SocketAddr::from(([127, 0, 0, 1], spec.port)))
        .await?;
    let client = server.client()?;
    eprintln!(
        "{} control plane: stack {}: API on http://{}, kubelet every {} ms, HPA every {} ms",
        now(),
        spec.stack,
        server.addr,
        spec.kubelet_sync_ms,
        spec.hpa_sync_ms
    );
    let dp = spec.dataplane();
    let kubelet = {
        let (client, dp, stack) = (client.clone(), dp.clone(), spec.stack.clone());
        let every = Duration::from_millis(spec.kubelet_sync_ms.max(100));
        tokio::spawn(async move {
            loop {
                if let Err(e) = dp.reconcile(&client, &stack).await {
                    eprintln!("{} control plane: kubelet: {e}", now());
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    let hpa = {
        let (client, dp, spec) = (client.clone(), dp.clone(), spec.clone());
        tokio::spawn(async move {
            let mut controller = HpaController::default();
            let every = Duration::from_millis(spec.hpa_sync_ms.max(100));
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = controller.sync(&client, &dp, &spec).await {
                    eprintln!("{} control plane: HPA controller: {e}", now());
                }
            }
        })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let orphaned = tokio::select! {
        _ = term.recv() => false,
        _ = tokio::signal::ctrl_c() => false,
        () = gone(spec_file) => true,
    };
    hpa.abort();
    kubelet.abort();
    let _ = kubelet.await;
    if orphaned {
        eprintln!(
            "{} control plane: {} was removed; stopping every pod",
            now(),
            spec_file.display()
        );
        dp.stop_everything().await;
    } else if let Err(e) = dp.reconcile(&client, &spec.stack).await {
        eprintln!("{} control plane: last kubelet sync: {e}", now());
    }
    drop(server);
    Ok(())
}

async fn gone(spec_file: &Path) {
    while spec_file.exists() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The HPA controller's memory between syncs.
#[derive(Default)]
struct HpaController {
    /// Recent recommendations per HPA (`ns/name`), for scale-down stabilization.
    scalers: HashMap<String, Autoscaler>,
    /// Each pod's CPU counter at the last sync: usage is the difference over time.
    cpu: HashMap<String, (Instant, u64)>,
}

impl HpaController {
    async fn sync(
        &mut self,
        client: &kube::Client,
        dp: &DataPlane,
        spec: &Spec,
    ) -> Result<(), K8sError> {
        let sel = format!(
            "{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_PART_OF}={}",
            spec.stack
        );
        let all: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
        let hpas = all
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(lerr)?;
        let now_i = Instant::now();
        let mut seen = Vec::new();
        for h in hpas.items {
            let ns = h.metadata.namespace.clone().unwrap_or_default();
            let name = h.metadata.name.clone().unwrap_or_default();
            let Some(hs) = &h.spec else { continue };
            let target = &hs.scale_target_ref;
            if target.kind != "Deployment" {
                continue;
            }
            let key = format!("{ns}/{name}");
            let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let Some(d) = deps.get_opt(&target.name).await.map_err(lerr)? else {
                continue;
            };
            let current =
                u32::try_from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
            // Kubernetes' default target when an HPA names none.
            let cpu_target = cpu_target_percent(hs).unwrap_or(80);
            let mut policy = Policy::new(
                u32::try_from(hs.min_replicas.unwrap_or(1)).unwrap_or(1),
                u32::try_from(hs.max_replicas).unwrap_or(1),
                u32::try_from(cpu_target).unwrap_or(80),
            );
            policy.tolerance = spec.hpa_tolerance;
            policy.sync_period = Duration::from_millis(spec.hpa_sync_ms);
            if let Some(w) = hs
                .behavior
                .as_ref()
                .and_then(|b| b.scale_down.as_ref())
                .and_then(|r| r.stabilization_window_seconds)
            {
                policy.downscale_stabilization = Duration::from_secs(u64::try_from(w).unwrap_or(0));
            }
            let pods = dp.pods(&format!("{ns}.{}", target.name));
            let samples: Vec<PodSample> = pods
                .iter()
                .map(|p| {
                    seen.push(p.name.clone());
                    let counter = cpu_usage_ns(p).map(|c| (now_i, c));
                    let before = match counter {
                        Some(c) => self.cpu.insert(p.name.clone(), c),
                        None => self.cpu.remove(&p.name),
                    };
                    let usage_millis = match (before, counter) {
                        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 && c1 >= c0 => {
                            Some((c1 - c0) as f64 / (t1 - t0).as_nanos() as f64 * 1000.0)
                        }
                        _ => None,
                    };
                    PodSample {
                        ready: p.ready && running(p),
                        usage_millis,
                        request_millis: p.cpu_request_m as f64,
                    }
                })
                .collect();
            let decision = self
                .scalers
                .entry(key.clone())
                .or_default()
                .sync(now_i, current, &samples, &policy);
            let scaled = decision.desired != current;
            if scaled {
                deps.patch(
                    &target.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": decision.desired}})),
                )
                .await
                .map_err(lerr)?;
                eprintln!(
                    "{} control plane: HorizontalPodAutoscaler {key}: scaled Deployment {}: {}",
                    now(),
                    target.name,
                    decision.reason
                );
            }
            let mut status = json!({
                "currentReplicas": current,
                "desiredReplicas": decision.desired,
                "conditions": [
                    {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale",
                     "message": decision.reason},
                    {"type": "ScalingActive",
                     "status": if decision.utilization.is_some() { "True" } else { "False" },
                     "reason": if decision.utilization.is_some() { "ValidMetricFound" } else { "FailedGetResourceMetric" },
                     "message": decision.reason},
                ],
            });
            if let Some(u) = decision.utilization {
                status["currentMetrics"] = json!([{"type": "Resource", "resource": {
                    "name": "cpu", "current": {"averageUtilization": u.round() as i64}}}]);
            }
            if scaled {
                status["lastScaleTime"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
            }
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map_err(lerr)?;
        }
        self.cpu.retain(|k, _| seen.contains(k));
        Ok(())
    }
}
