//! The AWS target: the default credential chain, ECR, and the EKS cluster's API.

use std::path::Path;
use std::sync::Arc;

use stack::artifacts::image::Push;
use stack::config::Config;
use stack::providers::aws::{AwsTarget, Clients};
use stack::providers::k8s::KubeSource;

use super::state_file;

/// SDK clients from the default credential chain (SSO included).
pub async fn clients(cfg: &Config) -> Clients {
    Clients::new(&AwsTarget::Aws, &cfg.region).await
}

/// Images go to ECR.
pub fn push(clients: &Arc<Clients>) -> Push {
    Push::Ecr(clients.clone())
}

/// The stack's EKS cluster: endpoint and CA from DescribeCluster, a token from STS
/// refreshed into a file beside the state.
pub fn eks_source(clients: &Clients, cfg: &Config, state_dir: &Path) -> KubeSource {
    KubeSource::Eks {
        eks: clients.eks.clone(),
        sdk: Box::new(clients.sdk.clone()),
        cluster: cfg.prefix.clone(),
        token_file: state_file(state_dir, format!("{}-eks-token", cfg.stack)),
    }
}
