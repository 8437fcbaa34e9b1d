//! What the platforms recorded over a run: the Lambda's REPORT lines (billed duration,
//! init durations, the cold starts matched to requests) and the Kubernetes pods
//! (pod-seconds, pods started), gathered after the load and folded into
//! `results.json`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::coldstart::{self, ColdStart};
use crate::lambda_logs::{self, LambdaSummary};
use crate::stats::Record;

/// The Lambda's side of a run, from its REPORT lines.
#[derive(Debug, Clone, Serialize)]
pub struct LambdaUse {
    pub function_name: String,
    pub invocations: u64,
    pub billed_ms: f64,
    pub memory_mb: u32,
    pub billed_gb_s: f64,
    pub report: LambdaSummary,
}

/// The Kubernetes side of a run, from the pods running at its end.
#[derive(Debug, Clone, Serialize)]
pub struct K8sUse {
    /// Σ over the pods of the part of the run each was up for.
    pub pod_seconds: f64,
    pub pods_max: u64,
    pub pods_started: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Platform {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<LambdaUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sUse>,
}

/// What was observed, and what could not be (each a sentence for the user).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub platform: Platform,
    pub cold_starts: Vec<ColdStart>,
    pub notes: Vec<String>,
}

/// A pod as `stack status --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct PodInfo {
    pub name: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub started_unix_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct StatusJson {
    #[serde(default)]
    pods: Vec<PodInfo>,
}

/// The pods of the stack's Deployment, from `stack status --json`.
pub fn pods(stack_bin: &Path) -> anyhow::Result<Vec<PodInfo>> {
    // The status command's own messages are not the bench's: dropped.
    let text = sentiment_router::config::stack_json(stack_bin, "status", Stdio::null())?;
    let status: StatusJson = serde_json::from_str(text.trim())
        .with_context(|| format!("{} status --json printed no status", stack_bin.display()))?;
    Ok(status.pods)
}

/// Pod-seconds over `[run_start, run_end]` (unix s) of the pods up at the run's end,
/// and those that started inside it.
pub fn k8s_use(pods: &[PodInfo], run_start: f64, run_end: f64) -> (K8sUse, Vec<ColdStart>) {
    let mut pod_seconds = 0.0;
    let mut starts = Vec::new();
    let up: Vec<&PodInfo> = pods.iter().filter(|p| p.phase == "Running").collect();
    for p in &up {
        let started = p.started_unix_s.unwrap_or(run_start);
        pod_seconds += (run_end - started.max(run_start)).max(0.0);
        if started > run_start && started <= run_end {
            starts.push(coldstart::pod_start(
                &p.name,
                (started - run_start) * 1000.0,
            ));
        }
    }
    (
        K8sUse {
            pod_seconds,
            pods_max: up.len() as u64,
            pods_started: starts.len() as u64,
        },
        starts,
    )
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Gathers what the platforms recorded over a run that started at `started` and
/// lasted `wall`. `function_name` is the Lambda's (REPORT lines are read when it is
/// known); `stack_bin`, when the endpoints came from the stack, lists the pods.
pub async fn observe(
    function_name: Option<&str>,
    region: Option<&str>,
    stack_bin: Option<&Path>,
    started: SystemTime,
    wall: Duration,
    records: &[Record],
    wait: Duration,
) -> Observed {
    let mut seen = Observed::default();
    let run_start = unix_s(started);
    let run_end = run_start + wall.as_secs_f64();
    let lambda_answers = records
        .iter()
        .filter(|r| r.backend == "lambda" || r.served_by.as_deref() == Some("lambda"))
        .filter(|r| r.status.is_some_and(|s| s != 429))
        .count();
    let mut reports_read = false;
    match function_name {
        Some(name) if lambda_answers > 0 => {
            let endpoint = lambda_logs::endpoint_from_env();
            let logs = lambda_logs::client(endpoint.as_deref(), region).await;
            let group = lambda_logs::log_group_of(name);
            let fetched = lambda_logs::fetch_at_least(
                &logs,
                &group,
                started - Duration::from_secs(1),
                started + wall + Duration::from_secs(5),
                lambda_answers,
                wait,
            )
            .await;
            match fetched {
                Ok(lines) => {
                    if lines.len() < lambda_answers {
                        seen.notes.push(format!(
                            "{} of {lambda_answers} REPORT lines had reached {group} after {wait:?}",
                            lines.len()
                        ));
                    }
                    let report = lambda_logs::summarize(&lines);
                    seen.cold_starts = coldstart::from_reports(&lines, run_start * 1000.0, records);
                    seen.platform.lambda = Some(LambdaUse {
                        function_name: name.to_string(),
                        invocations: report.invocations,
                        billed_ms: report.billed_ms,
                        memory_mb: report.memory_mb,
                        billed_gb_s: report.billed_gb_s,
                        report,
                    });
                    reports_read = true;
                }
                Err(e) => seen
                    .notes
                    .push(format!("REPORT lines not read ({e:#}); cold starts from headers")),
            }
        }
        Some(_) => {}
        None if lambda_answers > 0 => seen.notes.push(
            "no function name (--function or the stack's function_name output): billed GB-s not counted"
                .into(),
        ),
        None => {}
    }
    if !reports_read {
        seen.cold_starts = coldstart::from_headers(records);
    }
    if let Some(bin) = stack_bin
        && records.iter().any(|r| r.backend == "k8s")
    {
        match pods(bin) {
            Ok(pods) => {
                let (k8s, starts) = k8s_use(&pods, run_start, run_end);
                seen.platform.k8s = Some(k8s);
                seen.cold_starts.extend(starts);
            }
            Err(e) => seen
                .notes
                .push(format!("pods not listed ({e:#}): pod-seconds not counted")),
        }
    }
    seen.cold_starts.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, started: Option<f64>) -> PodInfo {
        PodInfo {
            name: name.into(),
            address: None,
            phase: phase.into(),
            started_unix_s: started,
        }
    }

    #[test]
    fn pod_seconds_count_the_part_of_the_run_each_pod_was_up() {
        let pods = [
            pod("old", "Running", Some(10.0)),
            pod("new", "Running", Some(130.0)),
            pod("dead", "Failed", Some(110.0)),
        ];
        let (k8s, starts) = k8s_use(&pods, 100.0, 160.0);
        // 60 s for the pod up before the run, 30 s for the one started at 130.
        assert!((k8s.pod_seconds - 90.0).abs() < 1e-9);
        assert_eq!(k8s.pods_max, 2);
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].instance.as_deref(), Some("new"));
        assert!((starts[0].at_ms - 30_000.0).abs() < 1e-6);
    }

    #[test]
    fn the_status_json_reads_pods() {
        let s: StatusJson = serde_json::from_str(
            r#"{"deployment":null,"hpa":null,"pods":[{"name":"p","ready":true,"restarts":0,"address":"127.0.0.1:1","phase":"Running","pid":5,"started_unix_s":12.5}]}"#,
        )
        .unwrap();
        assert_eq!(s.pods[0].started_unix_s, Some(12.5));
    }
}
