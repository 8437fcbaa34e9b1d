//! `stack status`: what the deployed model server is doing now, as the cluster sees it
//! (`kubectl get deploy,hpa,pods` for this stack): the Deployment's replicas and
//! conditions (a Pending pod's reason among them), the HPA's utilization, desired
//! replicas and last scale, and the pods. `--watch` prints a line whenever the HPA or
//! the replica counts change, so a scale-up under load is seen as it happens.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::{Cli, Ctx, load, providers};
use stack::engine::events::Events;

/// The Deployment's side of the status.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct DeploymentStatus {
    name: String,
    replicas: i32,
    ready: i32,
    updated: i32,
    available: i32,
    /// `type=status reason: message`, for conditions that are not plainly fine.
    conditions: Vec<String>,
}

/// The HPA's side of the status.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct HpaStatus {
    name: String,
    min_replicas: i32,
    max_replicas: i32,
    target_cpu_percent: Option<i32>,
    /// `None` until the controller has read the pods' CPU.
    current_cpu_percent: Option<i32>,
    current_replicas: i32,
    desired_replicas: i32,
    /// Seconds since the controller last changed the replicas.
    last_scale_s_ago: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct PodStatus {
    name: String,
    ready: bool,
    restarts: u32,
    /// Where it answers (local kubelet) or its pod IP (a real cluster).
    address: Option<String>,
    phase: String,
    /// The container's host process (local kubelet only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// When it started (unix seconds): the pod's `status.startTime`, or locally its
    /// container process's start. The benchmark counts pod-seconds and pod starts
    /// from it.
    started_unix_s: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct Status {
    deployment: Option<DeploymentStatus>,
    hpa: Option<HpaStatus>,
    pods: Vec<PodStatus>,
}

pub async fn run(cli: &Cli, watch: bool, events: &Events) -> Result<i32> {
    let ctx = load(cli, events)?;
    let provs = providers(cli, &ctx.cfg, false).await?;
    if let Some((cp, _)) = &provs.control_plane
        && cp.running().is_none()
    {
        println!("The local control plane is not running: nothing is deployed (`stack up`).");
        return Ok(3);
    }
    let client = provs.kube.client().await?;
    let mut last: Option<Status> = None;
    loop {
        let s = read(
            &ctx,
            &client,
            provs.control_plane.as_ref().map(|(_, dp)| dp),
        )
        .await?;
        if !watch {
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render(&s));
            }
            return Ok(if s.deployment.is_some() { 0 } else { 3 });
        }
        // Watching: one line per change of what scaling is about.
        let key = |s: &Status| {
            (
                s.deployment.as_ref().map(|d| (d.replicas, d.ready)),
                s.hpa
                    .as_ref()
                    .map(|h| (h.current_cpu_percent, h.desired_replicas)),
            )
        };
        if last.as_ref().map(key) != Some(key(&s)) {
            if ctx.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("{}", watch_line(&s));
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn read(
    ctx: &Ctx,
    client: &kube::Client,
    local: Option<&stack::providers::k8s::dataplane::DataPlane>,
) -> Result<Status> {
    let (ns, app) = (&ctx.cfg.k8s.namespace, &ctx.cfg.k8s.app);
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(app)
        .await
        .with_context(|| format!("reading Deployment {ns}/{app}"))?
        .map(|d| deployment_status(&d));
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get_opt(app)
        .await
        .with_context(|| format!("reading HorizontalPodAutoscaler {ns}/{app}"))?
        .map(|h| hpa_status(&h, k8s_openapi::jiff::Timestamp::now()));
    let pods = match local {
        // The local kubelet keeps its pods to itself (no Pod objects in the API).
        Some(dp) => dp
            .pods(&format!("{ns}.{app}"))
            .into_iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| PodStatus {
                phase: if stack::local::kubelet::running(&p) {
                    "Running".into()
                } else {
                    "Failed".into()
                },
                name: p.name,
                ready: p.ready,
                restarts: p.restarts,
                address: Some(format!("127.0.0.1:{}", p.port)),
                started_unix_s: process_start_unix_s(p.pid),
                pid: Some(p.pid),
            })
            .collect(),
        None => Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={app}")))
            .await
            .with_context(|| format!("listing the pods of {ns}/{app}"))?
            .items
            .iter()
            .map(pod_status)
            .collect(),
    };
    Ok(Status {
        deployment,
        hpa,
        pods,
    })
}

fn deployment_status(d: &Deployment) -> DeploymentStatus {
    let st = d.status.clone().unwrap_or_default();
    let conditions = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.status != "True" || c.reason.as_deref() == Some("MinimumReplicasUnavailable"))
        .map(|c| {
            format!(
                "{}={} {}: {}",
                c.type_,
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default()
            )
        })
        .collect();
    DeploymentStatus {
        name: d.metadata.name.clone().unwrap_or_default(),
        replicas: st.replicas.unwrap_or(0),
        ready: st.ready_replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        conditions,
    }
}

fn hpa_status(h: &HorizontalPodAutoscaler, now: k8s_openapi::jiff::Timestamp) -> HpaStatus {
    let spec = h.spec.clone().unwrap_or_default();
    let st = h.status.clone().unwrap_or_default();
    let target_cpu_percent = stack::local::hpa::cpu_target_percent(&spec);
    let current_cpu_percent = st
        .current_metrics
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.current.average_utilization);
    HpaStatus {
        name: h.metadata.name.clone().unwrap_or_default(),
        min_replicas: spec.min_replicas.unwrap_or(1),
        max_replicas: spec.max_replicas,
        target_cpu_percent,
        current_cpu_percent,
        current_replicas: st.current_replicas.unwrap_or(0),
        desired_replicas: st.desired_replicas,
        last_scale_s_ago: st
            .last_scale_time
            .map(|t| now.duration_since(t.0).as_secs().max(0)),
    }
}

fn pod_status(p: &Pod) -> PodStatus {
    let st = p.status.clone().unwrap_or_default();
    let containers = st.container_statuses.unwrap_or_default();
    PodStatus {
        name: p.metadata.name.clone().unwrap_or_default(),
        ready: !containers.is_empty() && containers.iter().all(|c| c.ready),
        restarts: containers
            .iter()
            .map(|c| c.restart_count.max(0) as u32)
            .sum(),
        address: st.pod_ip,
        phase: st.phase.unwrap_or_else(|| "Unknown".into()),
        pid: None,
        started_unix_s: st.start_time.map(|t| t.0.as_millisecond() as f64 / 1000.0),
    }
}

/// A process's start time (unix seconds) from `/proc`: boot time plus its start in
/// clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn process_start_unix_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // /proc counts in USER_HZ, which the kernel fixes at 100 on x86 and arm64.
    Some(boot + ticks / 100.0)
}

fn percent(p: Option<i32>) -> String {
    p.map_or_else(|| "<unknown>".into(), |p| format!("{p}%"))
}

fn hpa_line(h: &HpaStatus) -> String {
    format!(
        "cpu {} of request (target {}), replicas {} -> {} (min {}, max {}){}",
        percent(h.current_cpu_percent),
        percent(h.target_cpu_percent),
        h.current_replicas,
        h.desired_replicas,
        h.min_replicas,
        h.max_replicas,
        h.last_scale_s_ago
            .map(|s| format!(", last scaled {s}s ago"))
            .unwrap_or_default()
    )
}

fn render(s: &Status) -> String {
    let mut out = String::new();
    match &s.deployment {
        None => out.push_str("Deployment: not deployed\n"),
        Some(d) => {
            out.push_str(&format!(
                "Deployment {}: {} replicas, {} ready, {} up to date, {} available\n",
                d.name, d.replicas, d.ready, d.updated, d.available
            ));
            for c in &d.conditions {
                out.push_str(&format!("  {c}\n"));
            }
        }
    }
    if let Some(h) = &s.hpa {
        out.push_str(&format!("HPA {}: {}\n", h.name, hpa_line(h)));
    }
    if !s.pods.is_empty() {
        out.push_str("Pods:\n");
        for p in &s.pods {
            out.push_str(&format!(
                "  {:<40} {:<8} {:<9} restarts {:<3} {}\n",
                p.name,
                p.phase,
                if p.ready { "ready" } else { "not ready" },
                p.restarts,
                p.address.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}

fn watch_line(s: &Status) -> String {
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S");
    let d = s.deployment.as_ref().map_or_else(
        || "not deployed".to_string(),
        |d| format!("{}/{} ready", d.ready, d.replicas),
    );
    let h = s
        .hpa
        .as_ref()
        .map(|h| format!("; HPA {}", hpa_line(h)))
        .unwrap_or_default();
    format!("{now} pods {d}{h}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_process_start_time_comes_from_proc() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // A child started now: its start is within seconds of now, never after it.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let started = process_start_unix_s(child.id()).expect("a start time");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            started <= now + 1.5 && started > now - 5.0,
            "{started} vs {now}"
        );
        assert_eq!(process_start_unix_s(u32::MAX), None);
    }

    #[test]
    fn hpa_status_reads_utilization_target_and_last_scale() {
        let h: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"minReplicas": 2, "maxReplicas": 6,
                     "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 70}}}]},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                       "lastScaleTime": "2026-01-01T00:00:00Z",
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                           "current": {"averageUtilization": 95}}}]}
        }))
        .unwrap();
        let now: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:12Z".parse().unwrap();
        let s = hpa_status(&h, now);
        assert_eq!(
            (s.target_cpu_percent, s.current_cpu_percent),
            (Some(70), Some(95))
        );
        assert_eq!((s.current_replicas, s.desired_replicas), (2, 3));
        assert_eq!(
            hpa_line(&s),
            "cpu 95% of request (target 70%), replicas 2 -> 3 (min 2, max 6), last scaled 12s ago"
        );
    }

    #[test]
    fn a_pending_pod_shows_as_a_deployment_condition() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "status": {"replicas": 2, "readyReplicas": 1, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "False", "reason": "Unschedulable",
                 "message": "1 pod(s) Pending: Insufficient cpu"}]}
        }))
        .unwrap();
        let s = deployment_status(&d);
        assert_eq!((s.replicas, s.ready), (2, 1));
        assert_eq!(
            s.conditions,
            ["Progressing=False Unschedulable: 1 pod(s) Pending: Insufficient cpu"]
        );
        let text = render(&Status {
            deployment: Some(s),
            ..Status::default()
        });
        assert!(text.contains("2 replicas, 1 ready"), "{text}");
    }
}
