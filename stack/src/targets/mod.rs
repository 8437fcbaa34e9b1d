//! What differs between the targets, and the provider registry built for one.
//!
//! [`local`]: moto on loopback with dummy credentials, images pushed to a local
//! registry (or only built), EKS add-ons recorded in state, the in-memory Kubernetes
//! API and the local data plane. [`aws`]: the default credential chain, ECR, the EKS
//! add-on API, the EKS Kubernetes API with a token from STS. Each choice can be
//! overridden with a flag (or its `STACK_*` variable), e.g. `--kube kubeconfig`.

pub mod aws;
pub mod local;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stack::artifacts::image::{self, ImageProvider};
use stack::config::Config;
use stack::engine::state::State;
use stack::engine::{Resource, Stack};
use stack::local::apigw::Fronts;
use stack::local::control_plane::ControlPlane;
use stack::local::router::LocalRouter;
use stack::providers::Registry;
use stack::providers::aws as aws_providers;
use stack::providers::aws::request_log::RequestLog;
use stack::providers::k8s::{self, Kube, KubeSource, ObjectProvider, dataplane, fake};

/// Where the APIs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A local AWS-compatible endpoint (moto) with dummy credentials.
    Local,
    /// AWS with the default credential chain.
    Aws,
}

impl Target {
    /// `local` / `aws` (part of the state file's name).
    pub fn name(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Aws => "aws",
        }
    }
}

/// How EKS add-ons are managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Addons {
    /// Through the EKS add-on API.
    Api,
    /// Recorded in state only (moto has no add-on API, and no cluster runs one).
    State,
}

/// Where the Kubernetes API is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeChoice {
    /// The in-memory API served on loopback, with the local data plane.
    Local,
    /// The current kubeconfig context.
    Kubeconfig,
    /// The stack's EKS cluster (endpoint and CA from DescribeCluster, token from STS).
    Eks,
}

/// Settings of the target: every one a flag with an environment fallback.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target settings")]
pub struct Settings {
    /// Registry to push images to on the local target (`host:port`); without one,
    /// images are built but not pushed.
    #[arg(long, global = true, env = "STACK_REGISTRY")]
    pub registry: Option<String>,
    /// Append every AWS API request this run sends to PATH, one JSON object a line
    /// (service, operation, parameters; long strings such as a zip shortened): for a
    /// review before spending money, and for the AWS rules tests.
    #[arg(long, global = true, env = "STACK_REQUEST_LOG", value_name = "PATH")]
    pub request_log: Option<PathBuf>,
    /// EKS add-ons. Default: api on aws, state on local.
    #[arg(long, global = true, value_enum, env = "STACK_EKS_ADDONS")]
    pub eks_addons: Option<Addons>,
    /// The Kubernetes API. Default: eks on aws; on local, kubeconfig when KUBECONFIG
    /// is set, else local.
    #[arg(long, global = true, value_enum, env = "STACK_KUBE")]
    pub kube: Option<KubeChoice>,
    /// Bound of each AWS wait (EKS cluster and node group active or deleted).
    #[arg(
        long,
        global = true,
        env = "STACK_WAIT_TIMEOUT_SECS",
        default_value_t = 1800
    )]
    pub wait_timeout_secs: u64,
    /// Bound of a Deployment rollout (not waited for on the in-memory API).
    #[arg(
        long,
        global = true,
        env = "STACK_ROLLOUT_TIMEOUT_SECS",
        default_value_t = 600
    )]
    pub rollout_timeout_secs: u64,
    /// Bound of a Kubernetes object's deletion.
    #[arg(
        long,
        global = true,
        env = "STACK_DELETE_TIMEOUT_SECS",
        default_value_t = 900
    )]
    pub delete_timeout_secs: u64,
    /// The sentiment-server binary (overrides `k8s.server_binary`).
    #[arg(long, global = true, env = "STACK_SERVER_BIN")]
    pub server_bin: Option<String>,
    /// Model directory baked into the server image at `/models` (overrides
    /// `k8s.model_dir`).
    #[arg(long, global = true, env = "STACK_MODEL_DIR")]
    pub model_dir: Option<String>,
    /// Port of the local data plane's front (0: any free port).
    #[arg(long, global = true, env = "STACK_FRONT_PORT", default_value_t = 0)]
    pub front_port: u16,
    /// How long the local data plane waits for a server to be ready.
    #[arg(
        long,
        global = true,
        env = "STACK_READY_TIMEOUT_SECS",
        default_value_t = 120
    )]
    pub ready_timeout_secs: u64,
    /// Stop an apply cleanly after N operations (a drill for resume).
    #[arg(long, global = true, env = "STACK_FAULT_AFTER")]
    pub fault_after: Option<usize>,
    /// Port of the first local API Gateway front (0: any free port, kept across runs).
    #[arg(long, global = true, env = "STACK_API_PORT", default_value_t = 0)]
    pub api_port: u16,
    /// The local account's Lambda concurrency limit (AWS's default is 1,000; a small
    /// machine runs fewer environments). Reserved concurrency overrides it per function.
    #[arg(
        long,
        global = true,
        env = "STACK_LAMBDA_CONCURRENCY",
        default_value_t = 10
    )]
    pub lambda_concurrency: usize,
    /// Seconds an idle local Lambda environment lives before it is stopped (AWS does
    /// not document its own; minutes).
    #[arg(
        long,
        global = true,
        env = "STACK_LAMBDA_KEEP_ALIVE_SECS",
        default_value_t = 300
    )]
    pub lambda_keep_alive_secs: u64,
    /// Port of the local control plane's Kubernetes API (0: any free port, kept across
    /// runs).
    #[arg(long, global = true, env = "STACK_KUBE_PORT", default_value_t = 0)]
    pub kube_port: u16,
    /// The local kubelet's sync period, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "STACK_KUBELET_SYNC_MS",
        default_value_t = 2000
    )]
    pub kubelet_sync_ms: u64,
    /// The local HPA controller's sync period, in milliseconds
    /// (`--horizontal-pod-autoscaler-sync-period`: 15 s).
    #[arg(
        long,
        global = true,
        env = "STACK_HPA_SYNC_MS",
        default_value_t = 15000
    )]
    pub hpa_sync_ms: u64,
    /// The `sentiment-router` run beside the local fronts as `router_url` (default:
    /// the one beside this executable).
    #[arg(long, global = true, env = "STACK_ROUTER_BIN")]
    pub router_bin: Option<PathBuf>,
    /// Port of the local router (0: any free port, kept across runs).
    #[arg(long, global = true, env = "STACK_ROUTER_PORT", default_value_t = 0)]
    pub router_port: u16,
    /// The local HPA controller's tolerance (`--horizontal-pod-autoscaler-tolerance`).
    #[arg(
        long,
        global = true,
        env = "STACK_HPA_TOLERANCE",
        default_value_t = 0.1
    )]
    pub hpa_tolerance: f64,
}

/// The providers, and what must stay alive while they are used (the local
/// Kubernetes API server).
pub struct Providers {
    /// Providers by kind.
    pub reg: Registry,
    /// The Kubernetes API.
    pub kube: Arc<Kube>,
    _local_api: Option<fake::Server>,
    /// The local control plane and its data plane, when the API is the in-memory one.
    pub control_plane: Option<(ControlPlane, dataplane::DataPlane)>,
    /// The local API Gateway fronts (local target only).
    pub fronts: Option<Fronts>,
    /// The router in front of both (local target only).
    pub router: Option<LocalRouter>,
    /// The SDK clients the providers use.
    pub clients: Arc<aws_providers::Clients>,
    /// Where the local endpoints are recorded for `stack outputs`.
    endpoints_file: PathBuf,
}

/// Where the local target serves what the cloud would: written by `up` and `down`,
/// read by `outputs`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LocalEndpoints {
    /// A cloud URL prefix → the local one (an HTTP API's endpoint → its front).
    pub rewrites: BTreeMap<String, String>,
    /// Outputs only the local target has (`service_url`: the front over the pods).
    pub extra: BTreeMap<String, String>,
}

impl LocalEndpoints {
    /// The file beside the state.
    pub fn file(state_dir: &Path, stack: &str, target: Target) -> PathBuf {
        state_file(
            state_dir,
            format!("{stack}.{}.endpoints.json", target.name()),
        )
    }

    /// The recorded endpoints (none when nothing runs locally).
    pub fn load(file: &Path) -> LocalEndpoints {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Outputs as they answer here: a cloud URL served by a local front becomes the
    /// front's URL; local-only outputs are added.
    pub fn rewrite(&self, mut outs: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        for v in outs.values_mut() {
            if let Some(s) = v.as_str()
                && let Some((cloud, local)) = self
                    .rewrites
                    .iter()
                    .find(|(c, _)| s.starts_with(c.as_str()))
            {
                let rest = s[cloud.len()..].trim_start_matches('/');
                *v = Value::String(format!("{}/{rest}", local.trim_end_matches('/')));
            }
        }
        for (k, v) in &self.extra {
            outs.insert(k.clone(), Value::String(v.clone()));
        }
        outs
    }
}

/// Builds the provider registry for `target`. `start` (`up`, `down`): the local
/// control plane is started when it is not running; otherwise (read-only commands) a
/// control plane that is not running is stood in for by the API alone, served for
/// this run from its snapshot.
pub async fn providers(
    target: Target,
    endpoint: &str,
    state_dir: &Path,
    st: &Settings,
    cfg: &Config,
    start: bool,
) -> Result<Providers> {
    let mut clients = match target {
        Target::Local => local::clients(endpoint, cfg).await,
        Target::Aws => aws::clients(cfg).await,
    };
    clients.wait_timeout = Duration::from_secs(st.wait_timeout_secs);
    if let Some(path) = &st.request_log {
        let log = RequestLog::append_to(path)
            .with_context(|| format!("cannot open the request log {}", path.display()))?;
        clients = clients.recording(&log);
    }
    let clients = Arc::new(clients);
    let mut reg = Registry::default();
    aws_providers::register(&mut reg, &clients);
    let push = match target {
        Target::Local => local::push(st),
        Target::Aws => aws::push(&clients),
    };
    reg.register(image::KIND, Arc::new(ImageProvider(push)));
    let addons = st.eks_addons.unwrap_or(match target {
        Target::Aws => Addons::Api,
        Target::Local => Addons::State,
    });
    if addons == Addons::State {
        reg.register(
            aws_providers::eks::Addon::KIND,
            Arc::new(aws_providers::eks::AddonProvider::StateOnly),
        );
    }

    let choice = st.kube.unwrap_or(match target {
        Target::Aws => KubeChoice::Eks,
        Target::Local => local::default_kube(),
    });
    let rollout = Some(Duration::from_secs(st.rollout_timeout_secs));
    let mut control_plane = None;
    let (source, rollout, server) = match choice {
        KubeChoice::Kubeconfig => (KubeSource::Kubeconfig, rollout, None),
        KubeChoice::Eks => (aws::eks_source(&clients, cfg, state_dir), rollout, None),
        KubeChoice::Local => {
            let (cp, spec) = local::control_plane(state_dir, st, cfg, target)?;
            // Pods run only from an image pulled from a registry: without one the
            // objects are applied to the API alone, and nothing claims to run them.
            let url = if start && spec.registry.is_some() {
                Some(cp.ensure(spec.clone())?)
            } else {
                if start && cp.running().is_none() {
                    eprintln!(
                        "WARNING: no local registry (--registry / STACK_REGISTRY): the Kubernetes objects are applied to the local API, but no pod runs and there is no service_url (`make up` starts a registry)"
                    );
                }
                cp.url()
            };
            let dp = spec.dataplane();
            control_plane = Some((cp, dp));
            match url {
                // The control plane's kubelet reports each rollout, as on EKS.
                Some(url) => (KubeSource::Ready(k8s::http_client(&url)?), rollout, None),
                None => {
                    let server = local::kube_api(state_dir, cfg, target).await?;
                    (KubeSource::Ready(server.client()?), None, Some(server))
                }
            }
        }
    };
    let kube = Kube::new(source);
    let mut p = ObjectProvider::new(kube.clone(), rollout);
    p.delete_timeout = Duration::from_secs(st.delete_timeout_secs);
    // On EKS the cloud controller provisions the Service's ELB: wait for its address
    // (service_url). Nothing provisions one locally.
    if target == Target::Aws {
        p.load_balancer_timeout = Some(Duration::from_secs(600));
    }
    k8s::register(&mut reg, Arc::new(p));
    let fronts = (target == Target::Local).then(|| local::fronts(state_dir, st, cfg, endpoint));
    let router = (target == Target::Local).then(|| local::router(state_dir, st, cfg));
    Ok(Providers {
        reg,
        kube,
        _local_api: server,
        control_plane,
        fronts,
        router,
        clients,
        endpoints_file: LocalEndpoints::file(state_dir, &cfg.stack, target),
    })
}

impl Providers {
    /// Runs what the local target serves against what is now deployed: the control
    /// plane while Kubernetes objects are deployed (stopped, with every pod, once none
    /// are), an API Gateway front per HTTP API (nothing elsewhere). Records and
    /// returns where each answers.
    pub async fn run_local(&self, state: &State) -> Result<LocalEndpoints> {
        let mut endpoints = LocalEndpoints::default();
        if let Some((cp, dp)) = &self.control_plane {
            let deployed = state.resources.values().any(|r| r.kind.starts_with("k8s:"));
            if !deployed {
                let cp = cp.clone();
                tokio::task::spawn_blocking(move || cp.stop(Duration::from_secs(180))).await?;
            } else if cp.running().is_some() {
                endpoints.extra.insert(
                    "kubeconfig".into(),
                    std::path::absolute(cp.kubeconfig())?.display().to_string(),
                );
                // The kubelet starts the Service's front right after the rollout it
                // reported.
                let start = std::time::Instant::now();
                while dp.front_addr().is_none() && start.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if let Some(addr) = dp.front_addr() {
                    endpoints
                        .extra
                        .insert("service_url".into(), format!("http://{addr}/"));
                }
            }
        }
        let mut lambda_url = None;
        if let Some(fronts) = &self.fronts {
            for served in fronts.reconcile(&self.clients, state).await? {
                lambda_url.get_or_insert_with(|| served.url.clone());
                endpoints.rewrites.insert(served.endpoint, served.url);
            }
        }
        if let Some(router) = self.router.clone() {
            let k8s_url = endpoints.extra.get("service_url").cloned();
            let url = tokio::task::spawn_blocking(move || {
                router.reconcile(lambda_url.as_deref(), k8s_url.as_deref())
            })
            .await?
            .map_err(anyhow::Error::msg)?;
            if let Some(url) = url {
                endpoints.extra.insert("router_url".into(), url);
            }
        }
        if endpoints.rewrites.is_empty() && endpoints.extra.is_empty() {
            let _ = std::fs::remove_file(&self.endpoints_file);
        } else {
            std::fs::write(&self.endpoints_file, serde_json::to_vec_pretty(&endpoints)?)
                .with_context(|| format!("writing {}", self.endpoints_file.display()))?;
        }
        Ok(endpoints)
    }

    /// Deletes labelled objects of this stack that are no longer declared (e.g. left
    /// by an interrupted run or a renamed object).
    pub async fn prune(&self, stack: &Stack) -> Result<()> {
        let keep: Vec<String> = stack
            .resources
            .iter()
            .filter(|d| d.kind.starts_with("k8s:"))
            .map(|d| k8s::prune_id(&d.props))
            .collect();
        let client = self.kube.client().await?;
        for id in k8s::prune(&client, &stack.name, &keep).await? {
            println!("Pruned {id} (labelled as this stack's, no longer declared)");
        }
        Ok(())
    }
}

/// The state directory's file for `name` (token, snapshot, data plane).
fn state_file(state_dir: &Path, name: String) -> PathBuf {
    state_dir.join(name)
}
