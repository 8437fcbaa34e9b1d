//! IAM roles and managed-policy attachments.

mod attachment;
mod role;

pub use attachment::{AttachmentProvider, RolePolicyAttachment};
pub use role::{Role, RoleProvider, percent_decode};

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;

use super::{AwsResult, Tagging, Tags};
use crate::error::ProviderError;

fn iam_tag(k: &str, v: &str) -> Result<Tag, ProviderError> {
    let t = Tag::builder().key(k).value(v).build();
    t.map_err(|e| ProviderError::Props(e.to_string()))
}

/// IAM tags as the SDK wants them.
fn iam_tags(tags: &Tags) -> Result<Vec<Tag>, ProviderError> {
    tags.iter().map(|(k, v)| iam_tag(k, v)).collect()
}

/// IAM tags roles (the only IAM resource the stack tags) by role name.
#[async_trait]
impl Tagging for aws_sdk_iam::Client {
    async fn tags(&self, role: &str) -> Result<Tags, ProviderError> {
        let r = self.list_role_tags().role_name(role).send().await;
        let r = r.aws("iam:ListRoleTags")?;
        let tags = r.tags().iter();
        Ok(super::user_tags(
            tags.map(|t| (t.key().to_string(), t.value().to_string())),
        ))
    }
    async fn tag(&self, role: &str, tags: Tags) -> Result<(), ProviderError> {
        let r = self
            .tag_role()
            .role_name(role)
            .set_tags(Some(iam_tags(&tags)?));
        r.send().await.aws("iam:TagRole").map(|_| ())
    }
    async fn untag(&self, role: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let r = self.untag_role().role_name(role).set_tag_keys(Some(keys));
        r.send().await.aws("iam:UntagRole").map(|_| ())
    }
}
