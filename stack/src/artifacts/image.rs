//! The server image as a stack resource (`oci:Image`): built from the release binary
//! and pushed when its content changes; its `uri` output (`<repository>@<digest>`)
//! feeds the Deployment, so a changed binary rolls the Deployment and an unchanged one
//! shows no change at all.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::oci;
use crate::engine::{Input, Resource};
use crate::error::ProviderError;
use crate::providers::aws::Clients;
use crate::providers::{Observed, Provider, props};

/// The kind.
pub const KIND: &str = "oci:Image";

/// A server image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerImage {
    /// Repository URL (`host/path`), e.g. the ECR repository's `url` output.
    pub repository_url: Input<String>,
    /// Tag pushed along with the digest.
    pub tag: String,
    /// Path of the release binary.
    pub binary: String,
    /// sha256 of the binary: what makes a rebuild show up in the plan.
    pub binary_sha256: String,
    /// Port the server listens on.
    pub port: u16,
    /// Image environment.
    pub env: BTreeMap<String, String>,
}

impl ServerImage {
    /// Declares the image of `binary`; fails when the binary cannot be read.
    pub fn new(
        repository_url: Input<String>,
        binary: &str,
        port: u16,
        env: BTreeMap<String, String>,
    ) -> Result<ServerImage, String> {
        let bytes = std::fs::read(binary).map_err(|e| format!("server binary `{binary}`: {e}"))?;
        Ok(ServerImage {
            repository_url,
            tag: "latest".into(),
            binary: binary.into(),
            binary_sha256: hex::encode(Sha256::digest(&bytes)),
            port,
            env,
        })
    }
}

impl Resource for ServerImage {
    const KIND: &'static str = KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        if self.binary_sha256.len() == 64 {
            vec![]
        } else {
            vec!["binary_sha256 must be a sha256".into()]
        }
    }
}

/// Where images are pushed.
pub enum Push {
    /// ECR: credentials from GetAuthorizationToken.
    Ecr(Arc<Clients>),
    /// A registry at this base URL (e.g. the local `docker-registry`), the repository
    /// path taken from the repository URL.
    Registry(String),
    /// Nowhere (no registry on the local target): the digest is computed only.
    None,
}

/// Builds and pushes [`ServerImage`]s.
pub struct ImageProvider(pub Push);

fn split_repo(url: &str) -> (&str, &str) {
    url.split_once('/').unwrap_or((url, "server"))
}

fn perr(e: oci::OciError) -> ProviderError {
    ProviderError::Api {
        op: "oci:push".into(),
        code: "RegistryError".into(),
        message: e.to_string(),
        hint: None,
    }
}

impl ImageProvider {
    async fn build_push(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: ServerImage = props(desired)?;
        let url = d.repository_url.as_str().to_string();
        let bin = Path::new(&d.binary);
        let base = oci::minimal_base(bin).map_err(perr)?;
        let args = [
            "--bind".to_string(),
            format!("0.0.0.0:{}", d.port),
            "--model-dir".to_string(),
            "/models".to_string(),
        ];
        let img =
            oci::server_image(base, bin, None, &args, Some(d.port), d.env.clone()).map_err(perr)?;
        let (host, repo) = split_repo(&url);
        let digest =
            match &self.0 {
                Push::Ecr(c) => {
                    let t =
                        c.ecr.get_authorization_token().send().await.map_err(|e| {
                            crate::providers::aws::api("ecr:GetAuthorizationToken", e)
                        })?;
                    let token = t
                        .authorization_data()
                        .first()
                        .and_then(|a| a.authorization_token())
                        .unwrap_or_default()
                        .to_string();
                    oci::Registry::ecr(&format!("https://{host}"), &token)
                        .push(repo, &d.tag, &img)
                        .await
                        .map_err(perr)?
                }
                Push::Registry(base) => oci::Registry::new(base, None)
                    .push(repo, &d.tag, &img)
                    .await
                    .map_err(perr)?,
                Push::None => img.digest().to_string(),
            };
        let mut outputs = Map::new();
        outputs.insert("digest".into(), digest.clone().into());
        outputs.insert("uri".into(), format!("{url}@{digest}").into());
        Ok(Observed {
            id: format!("{url}@{digest}"),
            props: desired.clone(),
            outputs,
        })
    }
}

#[async_trait]
impl Provider for ImageProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &[]
    }

    async fn read(
        &self,
        id: Option<&str>,
        _desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        // Content-addressed: what was pushed is what the last apply recorded.
        let (Some(id), Some(prior)) = (id, prior) else {
            return Ok(None);
        };
        let (url, digest) = id.split_once('@').unwrap_or((id, ""));
        let mut outputs = Map::new();
        outputs.insert("digest".into(), digest.into());
        outputs.insert("uri".into(), format!("{url}@{digest}").into());
        Ok(Some(Observed {
            id: id.into(),
            props: prior.clone(),
            outputs,
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        self.build_push(desired).await
    }

    async fn update(
        &self,
        _id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        self.build_push(desired).await
    }

    async fn delete(&self, _id: &str, _props: &Value) -> Result<(), ProviderError> {
        // Images are immutable blobs; the repository's lifecycle (or its deletion)
        // removes them.
        Ok(())
    }
}
