//! ECR repositories.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, tag_delta};
use crate::engine::Resource;
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name.
pub const KIND: &str = "aws:ecr:Repository";

/// An ECR repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Repository {
    /// Repository name (fixed: forces replacement).
    pub name: String,
    /// `MUTABLE` or `IMMUTABLE`.
    pub image_tag_mutability: String,
    /// Scan images on push.
    pub scan_on_push: bool,
    /// Tags (the engine adds the stack's).
    #[serde(default)]
    pub tags: Tags,
}

impl Repository {
    /// A mutable repository without scan-on-push.
    pub fn new(name: impl Into<String>) -> Self {
        Repository {
            name: name.into(),
            image_tag_mutability: "MUTABLE".into(),
            scan_on_push: false,
            tags: Tags::new(),
        }
    }
}

impl Resource for Repository {
    const KIND: &'static str = KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if self.name.len() < 2 || self.name.len() > 256 || !self.name.chars().all(ok) {
            e.push(format!(
                "name `{}` must be 2-256 chars of [a-z0-9._/-]",
                self.name
            ));
        }
        if !["MUTABLE", "IMMUTABLE"].contains(&self.image_tag_mutability.as_str()) {
            e.push(format!(
                "image_tag_mutability `{}` must be MUTABLE or IMMUTABLE",
                self.image_tag_mutability
            ));
        }
        e
    }
}

/// Provider for [`Repository`].
pub struct RepositoryProvider(pub Arc<Clients>);

impl RepositoryProvider {
    async fn tags(&self, arn: &str) -> Result<Tags, ProviderError> {
        let r = self
            .0
            .ecr
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await;
        let r = r.map_err(|e| api("ecr:ListTagsForResource", e))?;
        Ok(super::user_tags(
            r.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string())),
        ))
    }

    async fn set_tags(&self, arn: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
        let (set, rm) = tag_delta(old, new);
        if !set.is_empty() {
            let tags = set
                .iter()
                .map(|(k, v)| ecr_tag(k, v))
                .collect::<Result<Vec<_>, _>>()?;
            let r = self
                .0
                .ecr
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(tags))
                .send()
                .await;
            r.map_err(|e| api("ecr:TagResource", e))?;
        }
        if !rm.is_empty() {
            let r = self
                .0
                .ecr
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(rm))
                .send()
                .await;
            r.map_err(|e| api("ecr:UntagResource", e))?;
        }
        Ok(())
    }
}

fn ecr_tag(k: &str, v: &str) -> Result<aws_sdk_ecr::types::Tag, ProviderError> {
    aws_sdk_ecr::types::Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| ProviderError::Props(e.to_string()))
}

fn outputs(arn: &str, uri: &str, name: &str) -> Map<String, Value> {
    let v = json!({ "arn": arn, "url": uri, "name": name });
    obj(v)
}

#[async_trait]
impl Provider for RepositoryProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Repository = props(desired)?;
        let name = id.unwrap_or(&d.name);
        let r = self
            .0
            .ecr
            .describe_repositories()
            .repository_names(name)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("ecr:DescribeRepositories", e)))? else {
            return Ok(None);
        };
        let Some(repo) = r.repositories().first() else {
            return Ok(None);
        };
        let arn = repo.repository_arn().unwrap_or_default().to_string();
        let obs = Repository {
            name: repo.repository_name().unwrap_or_default().to_string(),
            image_tag_mutability: repo
                .image_tag_mutability()
                .map_or("MUTABLE".into(), |m| m.as_str().to_string()),
            scan_on_push: repo
                .image_scanning_configuration()
                .is_some_and(|c| c.scan_on_push()),
            tags: self.tags(&arn).await?,
        };
        Ok(Some(Observed {
            id: obs.name.clone(),
            props: to_value(&obs)?,
            outputs: outputs(&arn, repo.repository_uri().unwrap_or_default(), &obs.name),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Repository = props(desired)?;
        let tags = d
            .tags
            .iter()
            .map(|(k, v)| ecr_tag(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let r = self
            .0
            .ecr
            .create_repository()
            .repository_name(&d.name)
            .image_tag_mutability(d.image_tag_mutability.as_str().into())
            .image_scanning_configuration(
                aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                    .scan_on_push(d.scan_on_push)
                    .build(),
            )
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| api("ecr:CreateRepository", e))?;
        let repo = r.repository().ok_or_else(|| {
            ProviderError::Props("CreateRepository returned no repository".into())
        })?;
        Ok(Observed {
            id: d.name.clone(),
            props: desired.clone(),
            outputs: outputs(
                repo.repository_arn().unwrap_or_default(),
                repo.repository_uri().unwrap_or_default(),
                &d.name,
            ),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Repository = props(observed)?;
        let d: Repository = props(desired)?;
        if o.image_tag_mutability != d.image_tag_mutability {
            let r = self
                .0
                .ecr
                .put_image_tag_mutability()
                .repository_name(id)
                .image_tag_mutability(d.image_tag_mutability.as_str().into())
                .send()
                .await;
            r.map_err(|e| api("ecr:PutImageTagMutability", e))?;
        }
        if o.scan_on_push != d.scan_on_push {
            let r = self
                .0
                .ecr
                .put_image_scanning_configuration()
                .repository_name(id)
                .image_scanning_configuration(
                    aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                        .scan_on_push(d.scan_on_push)
                        .build(),
                )
                .send()
                .await;
            r.map_err(|e| api("ecr:PutImageScanningConfiguration", e))?;
        }
        let now = self
            .read(Some(id), desired, None)
            .await?
            .ok_or_else(|| ProviderError::Api {
                op: "ecr:DescribeRepositories".into(),
                code: "RepositoryNotFoundException".into(),
                message: format!("repository {id} vanished during update"),
                hint: None,
            })?;
        let arn = now
            .outputs
            .get("arn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.set_tags(&arn, &o.tags, &d.tags).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: now.outputs,
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self
            .0
            .ecr
            .delete_repository()
            .repository_name(id)
            .force(true)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("ecr:DeleteRepository", e)))
    }
}
