//! The stack configuration: a JSON file (`stack.json`, or `--config`) whose every field
//! has a default that works against a local endpoint. Validated before any API call.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid configuration JSON.
    #[error("config {path}: {source} (see README `## stack: deploying` for the fields)")]
    Parse {
        /// Path.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Stack name: tag value and state file name.
    pub stack: String,
    /// AWS region.
    pub region: String,
    /// Prefix of every physical name.
    pub prefix: String,
    /// The Lambda function.
    pub lambda: LambdaConfig,
    /// Retention of the Lambda's log group, in days.
    pub log_retention_days: i32,
    /// Networking for EKS.
    pub network: NetworkConfig,
    /// The EKS cluster and node group.
    pub eks: EksConfig,
    /// The Kubernetes workload (the model server).
    pub k8s: K8sConfig,
}

/// The model server's Kubernetes objects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct K8sConfig {
    /// Namespace of every object.
    pub namespace: String,
    /// Name of the Deployment, Service, HPA and PDB.
    pub app: String,
    /// An image the nodes can pull, used as is; `None` (the default): the stack builds
    /// the server image from `server_binary` and pushes it to its repository.
    pub image: Option<String>,
    /// The HPA's bounds: it owns the Deployment's replica count, which the manifest
    /// leaves out so an apply never resets it.
    pub min_replicas: i32,
    /// See `min_replicas`.
    pub max_replicas: i32,
    /// Target average CPU utilization, percent of the request.
    pub cpu_target_percent: i32,
    /// Scale-down stabilization window in seconds.
    pub scale_down_window_s: i32,
    /// Threads the server uses for inference = the CPU limit (cores).
    pub threads: i32,
    /// Memory request and limit.
    pub memory: String,
    /// Port the server listens on.
    pub port: i32,
    /// The server's graceful drain, in seconds (its shutdown timeout).
    pub drain_s: i32,
    /// `MODEL_*` environment of the server.
    pub model_env: BTreeMap<String, String>,
    /// Service type: `ClusterIP` or `LoadBalancer`.
    pub service_type: String,
    /// Path of the release server binary (the server image's entrypoint, which the
    /// local kubelet runs from the image); overridden by `STACK_SERVER_BIN`.
    pub server_binary: String,
    /// Base image of the server image, pulled from a registry (e.g.
    /// `public.ecr.aws/docker/library/debian:bookworm-slim`); `None`: a minimal base
    /// made of the binary's shared libraries.
    pub base_image: Option<String>,
    /// Model directory baked into the server image (at `/models`, `MODEL_DIR`), so the
    /// same image serves on EKS and on the local kubelet; overridden by
    /// `STACK_MODEL_DIR`. `None`: the image has no model.
    pub model_dir: Option<String>,
}

impl Default for K8sConfig {
    fn default() -> Self {
        K8sConfig {
            namespace: "sentiment".into(),
            app: "sentiment-server".into(),
            image: None,
            min_replicas: 2,
            max_replicas: 6,
            cpu_target_percent: 70,
            scale_down_window_s: 300,
            threads: 2,
            memory: "1Gi".into(),
            port: 8080,
            drain_s: 20,
            model_env: BTreeMap::from([
                ("MODEL_DIR".to_string(), "/models".to_string()),
                ("MODEL_THREADS".to_string(), "2".to_string()),
            ]),
            service_type: "LoadBalancer".into(),
            server_binary: "target/release/sentiment-server".into(),
            base_image: None,
            model_dir: None,
        }
    }
}

/// Lambda settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaConfig {
    /// Path of the zip package (custom runtime, `bootstrap` inside). Ignored when
    /// `image_uri` is set.
    pub zip_path: String,
    /// An existing container image instead of the zip (wins over `package`).
    pub image_uri: Option<String>,
    /// `zip` (default): the zip at `zip_path`, uploaded directly, or through an S3
    /// bucket the stack creates when it is over 50 MB. `image`: a container image
    /// built from `bootstrap` (and `model_dir`) and pushed to the Lambda repository.
    pub package: String,
    /// The `bootstrap` binary for the image package (`cargo lambda build --release`).
    pub bootstrap: String,
    /// Model directory copied into the image (`/opt/model`, `MODEL_DIR`); `None`:
    /// none (the function then needs `MODEL_S3_URI`).
    pub model_dir: Option<String>,
    /// Base image of the Lambda image, pulled from a registry; `None`: minimal base.
    pub base_image: Option<String>,
    /// Bucket (name prefix; the account id is appended) for zips over 50 MB;
    /// default `<prefix>-lambda-artifacts`.
    pub s3_bucket: Option<String>,
    /// Memory in MB.
    pub memory_mb: i32,
    /// Timeout in seconds.
    pub timeout_s: i32,
    /// `x86_64` or `arm64`.
    pub architecture: String,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
}

/// Network settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// VPC CIDR.
    pub vpc_cidr: String,
    /// Two subnet CIDRs inside the VPC.
    pub subnet_cidrs: Vec<String>,
    /// Zones for the subnets (default: `<region>a`, `<region>b`).
    pub availability_zones: Option<Vec<String>>,
    /// Use these existing subnets instead of creating a VPC.
    pub subnet_ids: Option<Vec<String>>,
}

/// EKS settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EksConfig {
    /// Kubernetes version.
    pub version: String,
    /// Node instance type.
    pub instance_type: String,
    /// Minimum nodes.
    pub min_size: i32,
    /// Desired nodes.
    pub desired_size: i32,
    /// Maximum nodes.
    pub max_size: i32,
    /// Version of the `metrics-server` add-on (what the HPA's CPU metric needs);
    /// `None`: EKS's default for the cluster version.
    pub metrics_server_version: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stack: "sentiment".into(),
            region: "us-east-1".into(),
            prefix: "sentiment".into(),
            lambda: LambdaConfig::default(),
            log_retention_days: 14,
            network: NetworkConfig::default(),
            eks: EksConfig::default(),
            k8s: K8sConfig::default(),
        }
    }
}

impl Default for LambdaConfig {
    fn default() -> Self {
        LambdaConfig {
            zip_path: "target/lambda/sentiment.zip".into(),
            image_uri: None,
            package: "zip".into(),
            bootstrap: "target/lambda/bootstrap/bootstrap".into(),
            model_dir: None,
            base_image: None,
            s3_bucket: None,
            memory_mb: 2048,
            timeout_s: 30,
            architecture: "x86_64".into(),
            env: BTreeMap::new(),
        }
    }
}

impl NetworkConfig {
    /// The subnets' zones: the configured ones, else `<region>a` and `<region>b`.
    pub fn zones(&self, region: &str) -> Vec<String> {
        self.availability_zones
            .clone()
            .unwrap_or_else(|| vec![format!("{region}a"), format!("{region}b")])
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            vpc_cidr: "10.42.0.0/16".into(),
            subnet_cidrs: vec!["10.42.0.0/20".into(), "10.42.16.0/20".into()],
            availability_zones: None,
            subnet_ids: None,
        }
    }
}

impl Default for EksConfig {
    fn default() -> Self {
        EksConfig {
            version: crate::app::eks_versions::DEFAULT.into(),
            // 8 vCPUs (7,910m allocatable): three 2-CPU server pods per node, so the
            // HPA's default range (2..=6 pods) fits on the default two nodes. A 2-vCPU
            // type leaves 1,930m, under one pod's request: every pod would be Pending.
            instance_type: "c5.2xlarge".into(),
            min_size: 1,
            desired_size: 2,
            max_size: 3,
            metrics_server_version: None,
        }
    }
}

impl Config {
    /// Reads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: p, source })
    }
}
