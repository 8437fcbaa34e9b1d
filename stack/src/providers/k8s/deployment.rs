//! What only Deployments have: a rollout to follow after the apply.

use kube::api::{Api, DynamicObject};
use serde_json::Value;
use std::time::{Duration, Instant};

use super::{api_err, to_json};
use crate::error::ProviderError;

/// Whether a Deployment's rollout is complete: the controller saw the latest
/// generation and every replica is updated and available, with no old ones left.
pub fn rollout_complete(d: &Value) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let st = &d["status"];
    let gen_ok = match d["metadata"]["generation"].as_i64() {
        Some(g) => st["observedGeneration"].as_i64().unwrap_or(0) >= g,
        None => st.get("observedGeneration").is_some(),
    };
    gen_ok
        && st["updatedReplicas"].as_i64().unwrap_or(0) == want
        && st["availableReplicas"].as_i64().unwrap_or(0) == want
        && st["replicas"].as_i64().unwrap_or(0) == want
}

/// Polls a Deployment until [`rollout_complete`], reporting each new progress line as
/// the operation's status ([`crate::engine::events::status`]), or times out.
///
/// A poll rather than `kube::runtime::wait::await_condition` with
/// `conditions::is_deployment_completed()`: that condition trusts the `Progressing`
/// condition's `NewReplicaSetAvailable` reason, which neither the in-memory API
/// (kube-fake-client, no controller) nor the local data plane sets, and which does
/// not check that no old replica is left; it also needs a watch on the object and
/// kube's `runtime` feature (backon, json-patch, ...) for a 200 ms poll's worth of
/// work.
pub async fn wait_rollout(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<Value, ProviderError> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let d = api
            .get(name)
            .await
            .map_err(api_err(format!("get Deployment {name}")))?;
        let d = to_json(&d)?;
        if rollout_complete(&d) {
            return Ok(d);
        }
        let st = &d["status"];
        // `Progressing` False is final (the controller gave up: progress deadline
        // exceeded), as `kubectl rollout status` treats it.
        if let Some(c) = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Progressing" && c["status"] == "False")
        {
            return Err(ProviderError::Api {
                op: format!("rollout of Deployment {name}"),
                code: c["reason"].as_str().unwrap_or("NotProgressing").into(),
                message: c["message"].as_str().unwrap_or_default().into(),
                hint: None,
            });
        }
        let line = format!(
            "rollout {name}: {}/{} updated, {} available",
            st["updatedReplicas"].as_i64().unwrap_or(0),
            d["spec"]["replicas"].as_i64().unwrap_or(1),
            st["availableReplicas"].as_i64().unwrap_or(0)
        );
        if line != last {
            crate::engine::events::status(line.clone());
            last = line;
        }
        if start.elapsed() >= timeout {
            return Err(ProviderError::Timeout {
                op: format!("rollout of Deployment {name}"),
                what: "all replicas updated and available".into(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a Deployment whose rollout finished is not serving: its `Available` condition
/// is False and pods it selects are crash-looping (a container in `CrashLoopBackOff`,
/// say, after an OOM kill or a bad model). The controller reports neither: once a
/// rollout completed, `Progressing` stays True however often the pods die. A
/// Deployment that still has its minimum available is degraded, not failed.
pub async fn crash_looping(
    client: &kube::Client,
    live: &Value,
) -> Result<Option<String>, ProviderError> {
    let unavailable = live["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Available" && c["status"] == "False");
    let selector = live["spec"]["selector"]["matchLabels"].as_object();
    let (true, Some(selector), Some(ns)) = (
        unavailable,
        selector,
        live["metadata"]["namespace"].as_str(),
    ) else {
        return Ok(None);
    };
    let labels: Vec<String> = selector
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(api_err(format!(
            "list the pods of Deployment {}",
            super::id_of(live)
        )))?;
    let looping: Vec<String> = listed
        .items
        .iter()
        .flat_map(|p| {
            let pod = p.metadata.name.clone().unwrap_or_default();
            let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone());
            statuses
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |c| crash_loop(&pod, &c))
        })
        .collect();
    Ok((!looping.is_empty()).then(|| format!("pods crash-looping: {}", looping.join("; "))))
}

/// `pod P container C: CrashLoopBackOff, N restarts, last exit 137 (OOMKilled)`.
fn crash_loop(pod: &str, c: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<String> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    if waiting.reason.as_deref() != Some("CrashLoopBackOff") {
        return None;
    }
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            format!(
                ", last exit {}{}",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    Some(format!(
        "pod {pod} container {}: CrashLoopBackOff, {} restarts{last}",
        c.name, c.restart_count
    ))
}
