//! S3: the bucket Lambda zips over the direct-upload limit go through, and the zip
//! objects themselves, stored under a content-addressed key (`lambda/<sha256>.zip`) so
//! an unchanged zip is an unchanged object and a new one is a new key.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, Tag, Tagging};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, split_id};
use crate::engine::{Input, Resource};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Bucket`].
pub const BUCKET_KIND: &str = "aws:s3:Bucket";
/// Kind name of [`Object`].
pub const OBJECT_KIND: &str = "aws:s3:Object";

/// A private bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Bucket name, or its prefix when `account_suffix` is set (forces replacement).
    pub name: String,
    /// Append `-<account id>` to `name`: bucket names are global across accounts, so
    /// a fixed name would collide with someone else's stack of the same prefix.
    #[serde(default)]
    pub account_suffix: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for Bucket {
    const KIND: &'static str = BUCKET_KIND;
    fn validate(&self) -> Vec<String> {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        // With the account suffix (13 chars) the name must still fit in 63.
        let max = if self.account_suffix { 50 } else { 63 };
        if self.name.len() < 3 || self.name.len() > max || !self.name.chars().all(ok) {
            vec![format!(
                "bucket name `{}` must be 3-{max} chars of [a-z0-9.-]",
                self.name
            )]
        } else {
            vec![]
        }
    }
}

/// Provider for [`Bucket`]; its id is the physical bucket name.
pub struct BucketProvider(pub Arc<Clients>);

impl BucketProvider {
    async fn physical_name(&self, d: &Bucket) -> Result<String, ProviderError> {
        Ok(if d.account_suffix {
            format!("{}-{}", d.name, self.0.account_id().await?)
        } else {
            d.name.clone()
        })
    }

    async fn put_tags(&self, bucket: &str, tags: &Tags) -> Result<(), ProviderError> {
        let s3 = &self.0.s3;
        if tags.is_empty() {
            let r = s3.delete_bucket_tagging().bucket(bucket).send().await;
            return r.map(|_| ()).map_err(|e| api("s3:DeleteBucketTagging", e));
        }
        let set: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| ProviderError::Props(e.to_string()))?;
        let r = s3
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await;
        r.map(|_| ()).map_err(|e| api("s3:PutBucketTagging", e))
    }
}

fn bucket_outputs(name: &str) -> Map<String, Value> {
    obj(json!({ "name": name, "arn": format!("arn:aws:s3:::{name}") }))
}

#[async_trait]
impl Provider for BucketProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name", "account_suffix"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Bucket = props(desired)?;
        let name = match id {
            Some(id) => id.to_string(),
            None => self.physical_name(&d).await?,
        };
        let r = self.0.s3.head_bucket().bucket(&name).send().await;
        if none_if_missing(r.map_err(|e| api("s3:HeadBucket", e)))?.is_none() {
            return Ok(None);
        }
        let r = self.0.s3.get_bucket_tagging().bucket(&name).send().await;
        let tags = match r.map_err(|e| api("s3:GetBucketTagging", e)) {
            Ok(t) => super::user_tags(
                t.tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            ),
            Err(e) if e.code() == Some("NoSuchTagSet") => Tags::new(),
            Err(e) => return Err(e),
        };
        let obs = Bucket {
            name: d.name.clone(),
            account_suffix: d.account_suffix,
            tags,
        };
        Ok(Some(Observed {
            id: name.clone(),
            props: to_value(&obs)?,
            outputs: bucket_outputs(&name),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Bucket = props(desired)?;
        let name = self.physical_name(&d).await?;
        let mut req = self.0.s3.create_bucket().bucket(&name);
        // us-east-1 is the one region that takes no location constraint.
        if self.0.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.0.region.as_str()))
                    .build(),
            );
        }
        req.send().await.map_err(|e| api("s3:CreateBucket", e))?;
        if !d.tags.is_empty() {
            self.put_tags(&name, &d.tags).await?;
        }
        Ok(Observed {
            id: name.clone(),
            props: desired.clone(),
            outputs: bucket_outputs(&name),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Bucket = props(observed)?;
        let d: Bucket = props(desired)?;
        if o.tags != d.tags {
            self.put_tags(id, &d.tags).await?;
        }
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: bucket_outputs(id),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self.0.s3.delete_bucket().bucket(id).send().await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("s3:DeleteBucket", e)))
    }
}

/// A local file uploaded as an object. The key should name the content (e.g. its
/// sha256): an existing key is taken to hold that content, so nothing is uploaded
/// twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Object {
    /// Bucket (forces replacement).
    pub bucket: Input<String>,
    /// Key (forces replacement).
    pub key: String,
    /// Local file uploaded on create.
    pub source: String,
    /// Base64 SHA-256 of the file: sent with the upload, so S3 rejects a corrupted
    /// one; and what Lambda reports as the code's `CodeSha256`.
    pub sha256: String,
}

impl Resource for Object {
    const KIND: &'static str = OBJECT_KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        if self.key.is_empty() || self.key.starts_with('/') {
            vec![format!(
                "object key `{}` must be non-empty and relative",
                self.key
            )]
        } else {
            vec![]
        }
    }
}

/// Provider for [`Object`]; its id is `bucket|key`.
pub struct ObjectProvider(pub Arc<Clients>);

fn object_outputs(bucket: &str, key: &str) -> Map<String, Value> {
    obj(json!({ "bucket": bucket, "key": key }))
}

#[async_trait]
impl Provider for ObjectProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["bucket", "key"]
    }

    // A new key is a new object (keys never collide): upload it before the old one
    // goes, so a failed upload leaves the old object in place. Lambda copies the code
    // at UpdateFunctionCode, so the function never needs the old object again.
    fn create_before_delete(&self) -> bool {
        true
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Object = props(desired)?;
        let fallback = format!("{}|{}", d.bucket.as_str(), d.key);
        let (bucket, key) = id.unwrap_or(&fallback).split_once('|').unwrap_or(("", ""));
        let r = self.0.s3.head_object().bucket(bucket).key(key).send().await;
        if none_if_missing(r.map_err(|e| api("s3:HeadObject", e)))?.is_none() {
            return Ok(None);
        }
        // Content-addressed: the key is the content; the source path is local knowledge.
        let obs = Object {
            bucket: Input::Value(bucket.into()),
            key: key.into(),
            source: d.source,
            sha256: d.sha256,
        };
        Ok(Some(Observed {
            id: format!("{bucket}|{key}"),
            props: to_value(&obs)?,
            outputs: object_outputs(bucket, key),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Object = props(desired)?;
        let bucket = d.bucket.as_str();
        let body = ByteStream::from_path(&d.source)
            .await
            .map_err(|e| ProviderError::Artifact {
                path: d.source.clone(),
                source: std::io::Error::other(e),
            })?;
        let r = self
            .0
            .s3
            .put_object()
            .bucket(bucket)
            .key(&d.key)
            .body(body)
            .checksum_sha256(&d.sha256)
            .send()
            .await;
        r.map_err(|e| api("s3:PutObject", e))?;
        Ok(Observed {
            id: format!("{bucket}|{}", d.key),
            props: desired.clone(),
            outputs: object_outputs(bucket, &d.key),
        })
    }

    async fn update(
        &self,
        _id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        // Only the local path or the recorded hash can differ under the same key.
        self.create(desired).await
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (bucket, key) = split_id(id);
        let r = self
            .0
            .s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("s3:DeleteObject", e)))
    }
}
