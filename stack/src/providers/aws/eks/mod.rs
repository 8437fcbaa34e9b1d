//! EKS clusters, managed node groups and add-ons. All are slow in AWS: creates,
//! updates and deletes wait with the SDK waiters (bounded by
//! `STACK_WAIT_TIMEOUT_SECS`).

mod addon;
mod cluster;
mod node_group;

pub use addon::{ADDON_KIND, Addon, AddonProvider};
pub use cluster::{CLUSTER_KIND, Cluster, ClusterProvider};
pub use node_group::{NODEGROUP_KIND, NodeGroup, NodeGroupProvider, valid_instance_type};

use async_trait::async_trait;

use super::{AwsResult, Missing, Tagging, Tags};
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

/// EKS tags by ARN.
#[async_trait]
impl Tagging for aws_sdk_eks::Client {
    async fn tags(&self, arn: &str) -> Result<Tags, ProviderError> {
        let r = self.list_tags_for_resource().resource_arn(arn).send().await;
        let r = r.aws("eks:ListTagsForResource")?;
        Ok(super::user_tags(r.tags().cloned().unwrap_or_default()))
    }
    async fn tag(&self, arn: &str, tags: Tags) -> Result<(), ProviderError> {
        let r = self.tag_resource().resource_arn(arn);
        let r = r.set_tags(Some(tags.into_iter().collect())).send().await;
        r.aws("eks:TagResource").map(|_| ())
    }
    async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let r = self
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(keys));
        r.send().await.aws("eks:UntagResource").map(|_| ())
    }
}
