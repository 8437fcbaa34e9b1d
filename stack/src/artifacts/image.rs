//! Container images as a stack resource (`oci:Image`): the model server's and the
//! Lambda function's, built from the release binary (on the minimal `ldd` base or on a
//! base image pulled from a registry) and pushed when their content changes; the `uri`
//! output (`<repository>@<digest>`) feeds the Deployment or the function, so a changed
//! binary rolls them and an unchanged one shows no change at all.

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

/// What the image runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The model server: `/app/<binary>`, configured by its environment (`PORT`, and
    /// `MODEL_DIR=/models` when the model is in the image), so a Pod's `args` add to
    /// the entrypoint without repeating its flags.
    #[default]
    Server,
    /// A Lambda function (`provided.al2023` conventions): `/var/runtime/bootstrap` as
    /// the entrypoint, the model under `/opt/model` = `MODEL_DIR`.
    Lambda,
}

impl Layout {
    fn is_server(&self) -> bool {
        *self == Layout::Server
    }
}

/// A container image built by the stack. (Named for its first use; the Lambda image
/// is the same resource with [`Layout::Lambda`].)
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
    /// Port the server listens on (unused by the Lambda layout).
    pub port: u16,
    /// Image environment.
    pub env: BTreeMap<String, String>,
    /// What the image runs.
    #[serde(default, skip_serializing_if = "Layout::is_server")]
    pub layout: Layout,
    /// A base image pulled from a registry (e.g.
    /// `public.ecr.aws/docker/library/debian:bookworm-slim`); `None`: the minimal base
    /// made of the binary's shared libraries. Pin it by digest for reproducible images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// A model directory whose files go into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
    /// sha256 over the model files (names and contents), so a new model shows up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

fn sha256_file(path: &str, what: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} `{path}`: {e}"))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// sha256 over the top-level files of a directory, names and contents, in name order.
pub fn dir_sha256(dir: &str) -> Result<String, String> {
    let err = |e: std::io::Error| format!("model directory `{dir}`: {e}");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_encoded_bytes());
        h.update([0]);
        h.update(std::fs::read(Path::new(dir).join(&n)).map_err(err)?);
    }
    Ok(hex::encode(h.finalize()))
}

impl ServerImage {
    /// Declares the server image of `binary`; fails when the binary cannot be read.
    pub fn new(
        repository_url: Input<String>,
        binary: &str,
        port: u16,
        env: BTreeMap<String, String>,
    ) -> Result<ServerImage, String> {
        Ok(ServerImage {
            repository_url,
            tag: "latest".into(),
            binary: binary.into(),
            binary_sha256: sha256_file(binary, "server binary")?,
            port,
            env,
            layout: Layout::Server,
            base_image: None,
            model_dir: None,
            model_sha256: None,
        })
    }

    /// Declares the Lambda image of `bootstrap`, with the model of `model_dir` in it.
    pub fn lambda(
        repository_url: Input<String>,
        bootstrap: &str,
        model_dir: Option<&str>,
        env: BTreeMap<String, String>,
    ) -> Result<ServerImage, String> {
        let model_sha256 = model_dir.map(dir_sha256).transpose()?;
        Ok(ServerImage {
            repository_url,
            tag: "latest".into(),
            binary: bootstrap.into(),
            binary_sha256: sha256_file(bootstrap, "lambda bootstrap")?,
            port: 0,
            env,
            layout: Layout::Lambda,
            base_image: None,
            model_dir: model_dir.map(str::to_string),
            model_sha256,
        })
    }

    /// Bakes the model directory into the image at [`oci::SERVER_MODEL_DIR`], with
    /// `MODEL_DIR` naming it (`None`: no model in the image; the server then finds it
    /// through its `MODEL_*` environment). Fails when the directory cannot be read.
    pub fn with_model(mut self, model_dir: Option<&str>) -> Result<Self, String> {
        self.model_sha256 = model_dir.map(dir_sha256).transpose()?;
        self.model_dir = model_dir.map(str::to_string);
        Ok(self)
    }

    /// Builds on `base` (a registry reference) instead of the minimal base.
    pub fn on_base(mut self, base: Option<String>) -> Self {
        self.base_image = base;
        self
    }

    /// Builds the image (pulling the base image when one is set).
    pub async fn build(&self) -> Result<oci::Image, oci::OciError> {
        let bin = Path::new(&self.binary);
        let base: oci::BaseImage = match &self.base_image {
            Some(r) => oci::pull_base_ref(r).await?,
            None => oci::minimal_base(bin)?.into(),
        };
        match self.layout {
            Layout::Server => {
                // Flags in the entrypoint would be repeated by a Pod's `args` (which
                // the server's parser refuses): the environment carries them instead.
                let mut env = self.env.clone();
                env.insert("PORT".into(), self.port.to_string());
                let model = self.model_dir.as_deref().map(Path::new);
                if model.is_some() {
                    env.insert("MODEL_DIR".into(), oci::SERVER_MODEL_DIR.into());
                }
                oci::server_image(base, bin, model, &[], Some(self.port), env)
            }
            Layout::Lambda => oci::lambda_image(
                base,
                bin,
                self.model_dir.as_deref().map(Path::new),
                self.env.clone(),
            ),
        }
    }
}

impl Resource for ServerImage {
    const KIND: &'static str = KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if self.binary_sha256.len() != 64 {
            e.push("binary_sha256 must be a sha256".into());
        }
        if let Some(b) = &self.base_image
            && let Err(err) = oci::ImageRef::parse(b)
        {
            e.push(format!("base_image: {err}"));
        }
        e
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
    /// The registry images of repository `url` go to; `None` when they are not pushed.
    async fn registry(&self, url: &str) -> Result<Option<oci::Registry>, ProviderError> {
        Ok(Some(match &self.0 {
            Push::Ecr(c) => {
                let t = c
                    .ecr
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(|e| crate::providers::aws::api("ecr:GetAuthorizationToken", e))?;
                let token = t
                    .authorization_data()
                    .first()
                    .and_then(|a| a.authorization_token())
                    .unwrap_or_default()
                    .to_string();
                let host = split_repo(url).0;
                oci::Registry::ecr(&format!("https://{host}"), &token).map_err(perr)?
            }
            Push::Registry(base) => oci::Registry::new(base, None),
            Push::None => return Ok(None),
        }))
    }

    async fn build_push(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: ServerImage = props(desired)?;
        let url = d.repository_url.as_str().to_string();
        let img = d.build().await.map_err(perr)?;
        let digest = match self.registry(&url).await? {
            Some(registry) => {
                let repo = split_repo(&url).1;
                registry.push(repo, &d.tag, &img).await.map_err(perr)?
            }
            None => img.digest().to_string(),
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

    // A rebuilt image is a new digest, so a new `uri` for its users.
    fn update_changes_outputs(&self) -> bool {
        true
    }

    async fn read(
        &self,
        id: Option<&str>,
        _desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        // Content-addressed: what was pushed is what the last apply recorded, if the
        // registry still holds it (a repository recreated empty, or an image expired
        // by a lifecycle policy, is pushed again rather than left for pods to fail on).
        let (Some(id), Some(prior)) = (id, prior) else {
            return Ok(None);
        };
        let (url, digest) = id.split_once('@').unwrap_or((id, ""));
        if let Some(registry) = self.registry(url).await?
            && !registry
                .has_manifest(split_repo(url).1, digest)
                .await
                .map_err(perr)?
        {
            return Ok(None);
        }
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

    async fn delete(&self, _id: &str, _props: &Value) -> Result<(), ProviderError> {
        // Images are immutable blobs; the repository's lifecycle (or its deletion)
        // removes them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_image_carries_the_model_and_its_environment() {
        let models = tempfile::tempdir().unwrap();
        std::fs::write(models.path().join("config.json"), b"{}").unwrap();
        let bin = std::env::current_exe().unwrap();
        let img = ServerImage::new(
            Input::Value("r.example/server".to_string()),
            bin.to_str().unwrap(),
            8080,
            BTreeMap::new(),
        )
        .unwrap()
        .with_model(Some(models.path().to_str().unwrap()))
        .unwrap();
        assert_eq!(img.model_sha256.as_ref().map(String::len), Some(64));
        let built = img.build().await.unwrap();
        let blobs: Vec<_> = built.layers.iter().map(|l| l.blob.clone()).collect();
        let cfg = oci::extract(&blobs, "/models/config.json").unwrap();
        assert_eq!(cfg.as_deref(), Some(&b"{}"[..]), "the model is a layer");
        let v: Value = serde_json::from_slice(&built.config.data).unwrap();
        let env = v["config"]["Env"].as_array().unwrap();
        assert!(env.contains(&"MODEL_DIR=/models".into()), "{env:?}");
        assert!(env.contains(&"PORT=8080".into()), "{env:?}");
        let name = bin.file_name().unwrap().to_string_lossy();
        assert_eq!(
            v["config"]["Entrypoint"],
            serde_json::json!([format!("/app/{name}")]),
            "no flags for a Pod's args to repeat"
        );
    }
}
