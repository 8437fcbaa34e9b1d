//! A private bucket.

use crate::providers::aws::prelude::*;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

/// The characters of a bucket name.
const NAMES: Charset = Charset {
    name: "[a-z0-9.-]",
    allows: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.',
};

/// A private bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:s3:Bucket", checks = Self::checks)]
pub struct Bucket {
    /// Bucket name, or its prefix when `account_suffix` is set (forces replacement).
    #[resource(replace)]
    pub name: String,
    /// Append `-<account id>` to `name`: bucket names are global across accounts, so
    /// a fixed name would collide with someone else's stack of the same prefix.
    #[serde(default)]
    #[resource(replace)]
    pub account_suffix: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Bucket {
    /// The name, whose length depends on `account_suffix`.
    fn checks(&self, c: Checks) -> Checks {
        // With the account suffix (13 chars) the name must still fit in 63.
        let max = if self.account_suffix { 50 } else { 63 };
        c.chars("bucket name", &self.name, 3..=max, NAMES)
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
}

fn bucket_outputs(c: &Clients, name: &str) -> Outputs {
    let arn = format!("arn:{}:s3:::{name}", c.partition());
    obj(json!({ "name": name, "arn": arn }))
}

#[async_trait]
impl ResourceProvider for BucketProvider {
    type Resource = Bucket;

    async fn read(&self, at: Lookup<'_, Bucket>) -> Found<Bucket> {
        let d = at.desired;
        let name = match at.id {
            Some(id) => id.to_string(),
            None => self.physical_name(d).await?,
        };
        let r = self.0.s3.head_bucket().bucket(&name).send().await;
        if r.aws("s3:HeadBucket").none_if_missing()?.is_none() {
            return Ok(None);
        }
        let props = Bucket {
            name: d.name.clone(),
            account_suffix: d.account_suffix,
            tags: self.0.s3.tags(&name).await?,
        };
        Ok(Some(Read {
            outputs: bucket_outputs(&self.0, &name),
            id: name,
            props,
        }))
    }

    async fn create(&self, d: &Bucket) -> Result<Created, ProviderError> {
        let name = self.physical_name(d).await?;
        let mut req = self.0.s3.create_bucket().bucket(&name);
        // us-east-1 is the one region that takes no location constraint.
        if self.0.region != "us-east-1" {
            let at = BucketLocationConstraint::from(self.0.region.as_str());
            let conf = CreateBucketConfiguration::builder().location_constraint(at);
            req = req.create_bucket_configuration(conf.build());
        }
        req.send().await.aws("s3:CreateBucket")?;
        sync_tags(&self.0.s3, &name, &Tags::new(), &d.tags).await?;
        Ok(Created::new(&name, bucket_outputs(&self.0, &name)))
    }

    async fn update(&self, id: &str, o: &Bucket, d: &Bucket) -> Result<Applied, ProviderError> {
        sync_tags(&self.0.s3, id, &o.tags, &d.tags).await?;
        Ok(bucket_outputs(&self.0, id).into())
    }

    async fn delete(&self, id: &str, _last: &Bucket) -> Result<(), ProviderError> {
        let r = self.0.s3.delete_bucket().bucket(id).send().await;
        r.aws("s3:DeleteBucket").missing_ok()
    }
}
