//! The local target: moto on loopback, a local registry, add-ons in state, the
//! in-memory Kubernetes API and the data plane running its pods from their images.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

use stack::artifacts::image::Push;
use stack::config::Config;
use stack::local::apigw::Fronts;
use stack::local::control_plane::{ControlPlane, Spec};
use stack::local::router::LocalRouter;
use stack::providers::aws::{AwsTarget, Clients};
use stack::providers::k8s::fake;

use super::{KubeChoice, Settings, Target, state_file};

/// SDK clients for the local endpoint, with dummy credentials.
pub async fn clients(endpoint: &str, cfg: &Config) -> Clients {
    let target = AwsTarget::Local {
        endpoint: endpoint.to_string(),
    };
    Clients::new(&target, &cfg.region).await
}

/// Images go to the local registry when one is named; otherwise they are only built.
pub fn push(st: &Settings) -> Push {
    match &st.registry {
        Some(url) => Push::Registry(url.clone()),
        None => Push::None,
    }
}

/// The current kubeconfig context when `KUBECONFIG` is set (kube's own convention,
/// which kube reads itself), else the in-memory API.
pub fn default_kube() -> KubeChoice {
    if std::env::var_os("KUBECONFIG").is_some() {
        KubeChoice::Kubeconfig
    } else {
        KubeChoice::Local
    }
}

/// The in-memory Kubernetes API, served on loopback for this run, its objects kept
/// in a snapshot beside the state.
pub async fn kube_api(state_dir: &Path, cfg: &Config, target: Target) -> Result<fake::Server> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let api = fake::FakeApi::new(Some(snapshot(state_dir, cfg, target))).await?;
    Ok(api
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?)
}

/// The local control plane of the stack, and what it runs with: the in-memory API
/// (snapshot beside the state), the kubelet running each Deployment's pods from the
/// image pushed to the local registry (`--registry`, never the host's build) on the
/// node group the stack declares (so a pod that would stay Pending on EKS stays
/// Pending here too), and the HPA controller.
pub fn control_plane(
    state_dir: &Path,
    st: &Settings,
    cfg: &Config,
    target: Target,
) -> Result<(ControlPlane, Spec)> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let cp = ControlPlane {
        dir: abs(state_file(
            state_dir,
            format!("{}.{}.control-plane", cfg.stack, target.name()),
        )),
    };
    let spec = Spec {
        stack: cfg.stack.clone(),
        port: st.kube_port,
        snapshot: abs(snapshot(state_dir, cfg, target)),
        // Per stack: the pods of two local stacks with the same namespace and app must
        // not meet in one list.
        dataplane_dir: abs(state_file(
            state_dir,
            format!("{}.{}.dataplane", cfg.stack, target.name()),
        )),
        registry: st.registry.clone(),
        front_port: st.front_port,
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stack")),
        ready_timeout_s: st.ready_timeout_secs,
        instance_type: cfg.eks.instance_type.clone(),
        nodes: cfg.eks.desired_size,
        kubelet_sync_ms: st.kubelet_sync_ms,
        hpa_sync_ms: st.hpa_sync_ms,
        hpa_tolerance: st.hpa_tolerance,
    };
    Ok((cp, spec))
}

fn snapshot(state_dir: &Path, cfg: &Config, target: Target) -> PathBuf {
    state_file(
        state_dir,
        format!("{}.{}.k8s.json", cfg.stack, target.name()),
    )
}

/// The router beside the fronts: `sentiment-router` from `--router-bin`, else the one
/// built beside this executable.
pub fn router(state_dir: &Path, st: &Settings, cfg: &Config) -> LocalRouter {
    let exe = st.router_bin.clone().or_else(|| {
        let beside = std::env::current_exe()
            .ok()?
            .with_file_name("sentiment-router");
        beside.exists().then_some(beside)
    });
    let dir = state_file(state_dir, format!("{}.local.router", cfg.stack));
    LocalRouter {
        dir: std::path::absolute(&dir).unwrap_or(dir),
        exe,
        port: st.router_port,
    }
}

/// The API Gateway fronts, run by this executable (`stack apigw-front`).
pub fn fronts(state_dir: &Path, st: &Settings, cfg: &Config, endpoint: &str) -> Fronts {
    Fronts {
        // Absolute: the front runs the code from here whatever its working directory.
        dir: std::path::absolute(state_file(state_dir, format!("{}.local.apigw", cfg.stack)))
            .unwrap_or_else(|_| state_file(state_dir, format!("{}.local.apigw", cfg.stack))),
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stack")),
        aws_endpoint: endpoint.to_string(),
        account_concurrency: st.lambda_concurrency.max(1),
        keep_alive: Duration::from_secs(st.lambda_keep_alive_secs),
        port: st.api_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    /// Two local stacks with the same namespace and app keep their pods apart.
    #[test]
    fn each_stack_has_its_own_data_plane() {
        let dir = tempfile::tempdir().unwrap();
        let st = Flags::parse_from(["stack"]).settings;
        let spec = |name: &str| {
            let cfg = Config {
                stack: name.into(),
                ..Config::default()
            };
            control_plane(dir.path(), &st, &cfg, Target::Local)
                .unwrap()
                .1
        };
        let (a, b) = (spec("a"), spec("b"));
        assert_ne!(a.dataplane_dir, b.dataplane_dir);
        assert!(
            a.dataplane_dir.ends_with("a.local.dataplane"),
            "{:?}",
            a.dataplane_dir
        );
    }
}
