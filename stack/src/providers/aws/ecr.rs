//! ECR repositories.

use super::prelude::*;
use aws_sdk_ecr::types::ImageScanningConfiguration;

/// The characters of a repository name.
const NAMES: Charset = Charset {
    name: "[a-z0-9._/-]",
    allows: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c),
};

/// An ECR repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:ecr:Repository")]
pub struct Repository {
    /// Repository name (fixed: forces replacement).
    #[resource(replace, chars(2..=256, NAMES))]
    pub name: String,
    /// `MUTABLE` or `IMMUTABLE`.
    #[resource(one_of("MUTABLE", "IMMUTABLE"))]
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

/// Provider for [`Repository`].
pub struct RepositoryProvider(pub Arc<Clients>);

fn ecr_tag(k: &str, v: &str) -> Result<aws_sdk_ecr::types::Tag, ProviderError> {
    aws_sdk_ecr::types::Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| ProviderError::Props(e.to_string()))
}

fn ecr_tags(tags: &Tags) -> Result<Vec<aws_sdk_ecr::types::Tag>, ProviderError> {
    tags.iter().map(|(k, v)| ecr_tag(k, v)).collect()
}

fn outputs(arn: &str, uri: &str, name: &str) -> Outputs {
    obj(json!({ "arn": arn, "url": uri, "name": name }))
}

fn scanning(on: bool) -> ImageScanningConfiguration {
    ImageScanningConfiguration::builder()
        .scan_on_push(on)
        .build()
}

// ECR tags by repository ARN.
super::list_tagging!(
    aws_sdk_ecr::Client,
    "ecr",
    resource_arn,
    ecr_tags,
    list_tags_for_resource => "ListTagsForResource",
    tag_resource => "TagResource",
    untag_resource => "UntagResource"
);

#[async_trait]
impl ResourceProvider for RepositoryProvider {
    type Resource = Repository;

    async fn read(&self, at: Lookup<'_, Repository>) -> Found<Repository> {
        let name = at.id_or(&at.desired.name);
        let r = self.0.ecr.describe_repositories().repository_names(name);
        let r = r
            .send()
            .await
            .aws("ecr:DescribeRepositories")
            .none_if_missing()?;
        let Some(repo) = r.as_ref().and_then(|r| r.repositories().first()) else {
            return Ok(None);
        };
        let arn = repo.repository_arn().unwrap_or_default();
        let props = Repository {
            name: repo.repository_name().unwrap_or_default().to_string(),
            image_tag_mutability: repo
                .image_tag_mutability()
                .map_or("MUTABLE".into(), |m| m.as_str().to_string()),
            scan_on_push: repo
                .image_scanning_configuration()
                .is_some_and(|c| c.scan_on_push()),
            tags: self.0.ecr.tags(arn).await?,
        };
        let uri = repo.repository_uri().unwrap_or_default();
        Ok(Some(Read {
            id: props.name.clone(),
            outputs: outputs(arn, uri, &props.name),
            props,
        }))
    }

    async fn create(&self, d: &Repository) -> Result<Created, ProviderError> {
        let r = self
            .0
            .ecr
            .create_repository()
            .repository_name(&d.name)
            .image_tag_mutability(d.image_tag_mutability.as_str().into())
            .image_scanning_configuration(scanning(d.scan_on_push))
            .set_tags(Some(ecr_tags(&d.tags)?));
        let r = r.send().await.aws("ecr:CreateRepository")?;
        let repo = r.repository().ok_or_else(|| {
            ProviderError::Props("CreateRepository returned no repository".into())
        })?;
        let arn = repo.repository_arn().unwrap_or_default();
        let uri = repo.repository_uri().unwrap_or_default();
        Ok(Created::new(&d.name, outputs(arn, uri, &d.name)))
    }

    async fn update(
        &self,
        id: &str,
        o: &Repository,
        d: &Repository,
    ) -> Result<Applied, ProviderError> {
        let ecr = &self.0.ecr;
        if o.image_tag_mutability != d.image_tag_mutability {
            let r = ecr.put_image_tag_mutability().repository_name(id);
            let r = r.image_tag_mutability(d.image_tag_mutability.as_str().into());
            r.send().await.aws("ecr:PutImageTagMutability")?;
        }
        if o.scan_on_push != d.scan_on_push {
            let r = ecr.put_image_scanning_configuration().repository_name(id);
            let r = r.image_scanning_configuration(scanning(d.scan_on_push));
            r.send().await.aws("ecr:PutImageScanningConfiguration")?;
        }
        let now = self.read(Lookup::new(Some(id), d, None)).await?;
        let now = now.ok_or_else(|| ProviderError::Api {
            op: "ecr:DescribeRepositories".into(),
            code: "RepositoryNotFoundException".into(),
            message: format!("repository {id} vanished during update"),
            hint: None,
        })?;
        let arn = super::arn_output(&now.outputs);
        sync_tags(ecr, &arn, &o.tags, &d.tags).await?;
        Ok(now.outputs.into())
    }

    async fn delete(&self, id: &str, _last: &Repository) -> Result<(), ProviderError> {
        let r = self
            .0
            .ecr
            .delete_repository()
            .repository_name(id)
            .force(true);
        r.send().await.aws("ecr:DeleteRepository").missing_ok()
    }
}
