//! What differs between the targets, and the provider registry built for one.
//!
//! [`local`]: moto on loopback with dummy credentials, images pushed to a local
//! registry (or only built), EKS add-ons recorded in state, the in-memory Kubernetes
//! API and the local data plane. [`aws`]: the default credential chain, ECR, the EKS
//! add-on API, the EKS Kubernetes API with a token from STS. Each choice can be
//! overridden with a flag (or its `STACK_*` variable), e.g. `--kube kubeconfig`.

pub mod aws;
pub mod local;

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stack::artifacts::image::{self, ImageProvider};
use stack::config::Config;
use stack::engine::Stack;
use stack::providers::Registry;
use stack::providers::aws as aws_providers;
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
    /// Model directory of the local data plane's servers (default: the config's
    /// `k8s.model_env.MODEL_DIR`, else `models`).
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
}

/// The providers, and what must stay alive while they are used (the local
/// Kubernetes API server).
pub struct Providers {
    /// Providers by kind.
    pub reg: Registry,
    /// The Kubernetes API.
    pub kube: Arc<Kube>,
    _local_api: Option<fake::Server>,
    /// The local data plane, when the API is the in-memory one and the server
    /// binary exists.
    pub dataplane: Option<dataplane::DataPlane>,
}

/// Builds the provider registry for `target`.
pub async fn providers(
    target: Target,
    endpoint: &str,
    state_dir: &Path,
    st: &Settings,
    cfg: &Config,
) -> Result<Providers> {
    let mut clients = match target {
        Target::Local => local::clients(endpoint, cfg).await,
        Target::Aws => aws::clients(cfg).await,
    };
    clients.wait_timeout = Duration::from_secs(st.wait_timeout_secs);
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
            aws_providers::eks::ADDON_KIND,
            Arc::new(aws_providers::eks::AddonProvider::StateOnly),
        );
    }

    let choice = st.kube.unwrap_or(match target {
        Target::Aws => KubeChoice::Eks,
        Target::Local => local::default_kube(),
    });
    let rollout = Some(Duration::from_secs(st.rollout_timeout_secs));
    let (source, rollout, server) = match choice {
        KubeChoice::Kubeconfig => (KubeSource::Kubeconfig, rollout, None),
        KubeChoice::Eks => (aws::eks_source(&clients, cfg, state_dir), rollout, None),
        KubeChoice::Local => {
            let server = local::kube_api(state_dir, cfg, target).await?;
            // No controller runs pods on the in-memory API: no rollout to wait for.
            (KubeSource::Ready(server.client()?), None, Some(server))
        }
    };
    let kube = Kube::new(source);
    let mut p = ObjectProvider::new(kube.clone(), rollout);
    p.delete_timeout = Duration::from_secs(st.delete_timeout_secs);
    k8s::register(&mut reg, Arc::new(p));
    let dataplane = server
        .as_ref()
        .and_then(|_| local::dataplane(state_dir, st, cfg));
    Ok(Providers {
        reg,
        kube,
        _local_api: server,
        dataplane,
    })
}

impl Providers {
    /// Runs the local data plane against what the API now says (no-op elsewhere).
    pub async fn run_dataplane(&self, stack: &str) -> Result<()> {
        let Some(dp) = &self.dataplane else {
            return Ok(());
        };
        let client = self.kube.client().await?;
        if let Some(addr) = dp.reconcile(&client, stack).await? {
            println!("Local data plane: http://{addr} (front over the server processes)");
        }
        Ok(())
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
