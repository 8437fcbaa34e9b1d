//! Lambda functions and resource-based permissions.

mod function;
mod permission;

pub use function::{
    Code, DIRECT_UPLOAD_MAX, FUNCTION_KIND, Function, FunctionProvider, ZipFacts, b64,
};
pub use permission::{PERMISSION_KIND, Permission, PermissionProvider};

use async_trait::async_trait;

use super::{AwsResult, Tagging, Tags};
use crate::error::ProviderError;

/// Lambda tags by function ARN.
#[async_trait]
impl Tagging for aws_sdk_lambda::Client {
    async fn tags(&self, arn: &str) -> Result<Tags, ProviderError> {
        let r = self.list_tags().resource(arn).send().await;
        let r = r.aws("lambda:ListTags")?;
        Ok(super::user_tags(r.tags().cloned().unwrap_or_default()))
    }
    async fn tag(&self, arn: &str, tags: Tags) -> Result<(), ProviderError> {
        let r = self.tag_resource().resource(arn);
        let r = r.set_tags(Some(tags.into_iter().collect())).send().await;
        r.aws("lambda:TagResource").map(|_| ())
    }
    async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let r = self.untag_resource().resource(arn).set_tag_keys(Some(keys));
        r.send().await.aws("lambda:UntagResource").map(|_| ())
    }
}
