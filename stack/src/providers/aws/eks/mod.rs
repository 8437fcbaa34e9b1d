//! EKS clusters, managed node groups and add-ons. All are slow in AWS: creates,
//! updates and deletes wait with the SDK waiters (bounded by
//! `STACK_WAIT_TIMEOUT_SECS`).

mod addon;
mod cluster;
mod node_group;

pub use addon::{Addon, AddonProvider};
pub use cluster::{Cluster, ClusterProvider};
pub use node_group::{NodeGroup, NodeGroupProvider, valid_instance_type};

use super::Missing;

/// A broken EKS resource's reason: its status, and its health issues (code, message).
fn failure_reason<'a>(
    status: &str,
    issues: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let issues: Vec<String> = issues
        .into_iter()
        .map(|(code, message)| format!("{code}: {message}"))
        .collect();
    if issues.is_empty() {
        status.to_string()
    } else {
        format!("{status} ({})", issues.join("; "))
    }
}

use crate::error::ProviderError;

/// Deletes with `call`; when it was already gone that is success and nothing is
/// awaited, else waits with `wait` until it is.
async fn delete_and_wait<T>(
    call: Result<T, ProviderError>,
    wait: impl std::future::Future<Output = Result<(), ProviderError>>,
) -> Result<(), ProviderError> {
    match call.none_if_missing()? {
        None => Ok(()),
        Some(_) => wait.await,
    }
}

// EKS tags by ARN.
super::map_tagging!(
    aws_sdk_eks::Client,
    "eks",
    resource_arn,
    list_tags_for_resource,
    "ListTagsForResource"
);
