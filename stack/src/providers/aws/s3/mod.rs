//! S3: the bucket Lambda zips over the direct-upload limit go through, and the zip
//! objects themselves, stored under a content-addressed key (`lambda/<sha256>.zip`) so
//! an unchanged zip is an unchanged object and a new one is a new key.

mod bucket;
mod object;

pub use bucket::{Bucket, BucketProvider};
pub use object::{Object, ObjectProvider};

use async_trait::async_trait;
use aws_sdk_s3::types::{Tag, Tagging as TagSet};

use super::{AwsResult, Tagging, Tags};
use crate::error::ProviderError;

/// Replaces a bucket's whole tag set (S3 has no per-tag calls); an empty set deletes
/// the tagging.
async fn put_all(s3: &aws_sdk_s3::Client, bucket: &str, tags: &Tags) -> Result<(), ProviderError> {
    if tags.is_empty() {
        let r = s3.delete_bucket_tagging().bucket(bucket).send().await;
        return r.aws("s3:DeleteBucketTagging").map(|_| ());
    }
    let set: Vec<Tag> = tags
        .iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect();
    let tagging = TagSet::builder().set_tag_set(Some(set)).build();
    let tagging = tagging.map_err(|e| ProviderError::Props(e.to_string()))?;
    let r = s3.put_bucket_tagging().bucket(bucket).tagging(tagging);
    r.send().await.aws("s3:PutBucketTagging").map(|_| ())
}

/// S3 tags buckets by name, always as a whole set.
#[async_trait]
impl Tagging for aws_sdk_s3::Client {
    async fn tags(&self, bucket: &str) -> Result<Tags, ProviderError> {
        let r = self.get_bucket_tagging().bucket(bucket).send().await;
        match r.aws("s3:GetBucketTagging") {
            Ok(t) => Ok(super::user_tags(
                t.tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            )),
            Err(e) if e.code() == Some("NoSuchTagSet") => Ok(Tags::new()),
            Err(e) => Err(e),
        }
    }
    async fn tag(&self, bucket: &str, tags: Tags) -> Result<(), ProviderError> {
        let mut all = self.tags(bucket).await?;
        all.extend(tags);
        put_all(self, bucket, &all).await
    }
    async fn untag(&self, bucket: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let mut all = self.tags(bucket).await?;
        all.retain(|k, _| !keys.contains(k));
        put_all(self, bucket, &all).await
    }
    /// One call with the new set, when it differs.
    async fn sync(&self, bucket: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
        if old == new {
            return Ok(());
        }
        put_all(self, bucket, new).await
    }
}
