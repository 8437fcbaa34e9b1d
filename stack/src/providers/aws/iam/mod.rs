//! IAM roles and managed-policy attachments.

mod attachment;
mod role;

pub use attachment::{AttachmentProvider, RolePolicyAttachment};
pub use role::{Role, RoleProvider, percent_decode};

use aws_sdk_iam::types::Tag;

use super::Tags;
use crate::error::ProviderError;

fn iam_tag(k: &str, v: &str) -> Result<Tag, ProviderError> {
    let t = Tag::builder().key(k).value(v).build();
    t.map_err(|e| ProviderError::Props(e.to_string()))
}

/// IAM tags as the SDK wants them.
fn iam_tags(tags: &Tags) -> Result<Vec<Tag>, ProviderError> {
    tags.iter().map(|(k, v)| iam_tag(k, v)).collect()
}

// IAM tags roles (the only IAM resource the stack tags) by role name.
super::list_tagging!(
    aws_sdk_iam::Client,
    "iam",
    role_name,
    iam_tags,
    list_role_tags => "ListRoleTags",
    tag_role => "TagRole",
    untag_role => "UntagRole"
);
