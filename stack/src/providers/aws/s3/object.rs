//! A local file uploaded as an object under a content-addressed key.

use crate::providers::aws::prelude::*;
use aws_sdk_s3::primitives::ByteStream;

/// A local file uploaded as an object. The key should name the content (e.g. its
/// sha256): an existing key is taken to hold that content, so nothing is uploaded
/// twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:s3:Object", checks = Self::checks)]
pub struct Object {
    /// Bucket (forces replacement).
    #[resource(replace)]
    pub bucket: Input<String>,
    /// Key (forces replacement).
    #[resource(replace)]
    pub key: String,
    /// Local file uploaded on create.
    pub source: String,
    /// Base64 SHA-256 of the file: sent with the upload, so S3 rejects a corrupted
    /// one; and what Lambda reports as the code's `CodeSha256`.
    pub sha256: String,
}

impl Object {
    /// The key is relative.
    fn checks(&self, c: Checks) -> Checks {
        let relative = !self.key.is_empty() && !self.key.starts_with('/');
        c.require(relative, || {
            format!("object key `{}` must be non-empty and relative", self.key)
        })
    }
}

/// Provider for [`Object`]; its id is `bucket|key`.
pub struct ObjectProvider(pub Arc<Clients>);

fn object_outputs(bucket: &str, key: &str) -> Outputs {
    obj(json!({ "bucket": bucket, "key": key }))
}

#[async_trait]
impl ResourceProvider for ObjectProvider {
    type Resource = Object;

    // A new key is a new object (keys never collide): upload it before the old one
    // goes, so a failed upload leaves the old object in place. Lambda copies the code
    // at UpdateFunctionCode, so the function never needs the old object again.
    fn create_before_delete(&self) -> bool {
        true
    }

    async fn read(&self, at: Lookup<'_, Object>) -> Found<Object> {
        let d = at.desired;
        let fallback = join_id(d.bucket.as_str(), &d.key);
        let (bucket, key) = at.id_or(&fallback).split_once('|').unwrap_or(("", ""));
        let r = self.0.s3.head_object().bucket(bucket).key(key).send().await;
        if r.aws("s3:HeadObject").none_if_missing()?.is_none() {
            return Ok(None);
        }
        // Content-addressed: the key is the content; the source path is local knowledge.
        Ok(Some(Read {
            id: join_id(bucket, key),
            props: Object {
                bucket: Input::Value(bucket.into()),
                key: key.into(),
                source: d.source.clone(),
                sha256: d.sha256.clone(),
            },
            outputs: object_outputs(bucket, key),
        }))
    }

    async fn create(&self, d: &Object) -> Result<Created, ProviderError> {
        let bucket = d.bucket.as_str();
        let body = ByteStream::from_path(&d.source).await;
        let body = body.map_err(|e| ProviderError::Artifact {
            path: d.source.clone(),
            source: std::io::Error::other(e),
        })?;
        let r = self.0.s3.put_object().bucket(bucket).key(&d.key).body(body);
        let r = r.checksum_sha256(&d.sha256).send().await;
        r.aws("s3:PutObject")?;
        let id = join_id(bucket, &d.key);
        Ok(Created::new(id, object_outputs(bucket, &d.key)))
    }

    async fn update(&self, _id: &str, _o: &Object, d: &Object) -> Result<Applied, ProviderError> {
        // Only the local path or the recorded hash can differ under the same key.
        Ok(self.create(d).await?.outputs)
    }

    async fn delete(&self, id: &str, _last: &Object) -> Result<(), ProviderError> {
        let (bucket, key) = split_id(id);
        let r = self
            .0
            .s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        r.aws("s3:DeleteObject").missing_ok()
    }
}
