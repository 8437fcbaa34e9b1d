//! OCI images without Docker: deterministic gzip'd tar layers, an OCI image config
//! (entrypoint, env, exposed port, non-root user), content-addressed blobs and an OCI
//! manifest, pushed to and pulled from a registry over the distribution HTTP API
//! (`/v2/…`): a local `docker-registry`, or ECR with the basic credentials of
//! `GetAuthorizationToken`.
//!
//! The config, manifest and index documents are `oci-spec` types; the registry traffic
//! goes through `oci-client`. What neither offers stays here: reproducible layers
//! (sorted entries, mtime 0, uid/gid 0, fixed gzip level) and canonical JSON, so an
//! unchanged binary gives the same digests and the stack shows no change.

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest as OciDigest, HistoryBuilder,
    ImageConfiguration, ImageConfigurationBuilder, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os, RootFsBuilder,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// OCI media types.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// See [`MANIFEST_TYPE`].
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// See [`MANIFEST_TYPE`].
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The non-root user images run as.
pub const NONROOT: &str = "65532:65532";

/// Errors of image building and registry traffic.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry refused or could not be reached.
    #[error("registry {op}: {msg}")]
    Registry {
        /// The operation.
        op: String,
        /// What went wrong.
        msg: String,
    },
    /// A pulled blob does not match its digest.
    #[error("blob {0}: content does not match its digest")]
    Digest(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `sha256:<hex>` of bytes.
pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The bytes of an OCI document as the digests are taken over: compact JSON with its
/// keys sorted. Going through `serde_json::Value` (a sorted map in this build) makes
/// them canonical: oci-spec writes `ExposedPorts` and `Labels` from `HashMap`s, whose
/// order changes from run to run, and the documents written by `json!` before oci-spec
/// had exactly these bytes, so images built before keep their digests.
fn canonical_json(doc: &impl Serialize) -> Vec<u8> {
    serde_json::to_value(doc)
        .expect("OCI documents have string keys, so they convert to JSON")
        .to_string()
        .into_bytes()
}

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// `sha256:…` of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: digest(&data),
            data,
        }
    }
    fn descriptor(&self) -> Descriptor {
        let d: OciDigest = self
            .digest
            .parse()
            .expect("a digest computed by `digest` is a valid sha256 digest");
        DescriptorBuilder::default()
            .media_type(MediaType::from(self.media_type.as_str()))
            .digest(d)
            .size(self.data.len() as u64)
            .build()
            .expect("media type, digest and size are all a descriptor requires")
    }
}
/// One file of a layer: the bytes, where it goes, its mode.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// Absolute path in the image.
    pub dest: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Unix mode.
    pub mode: u32,
}

impl LayerFile {
    /// A host file copied to `dest` with `mode`.
    pub fn from_path(src: &Path, dest: &str, mode: u32) -> Result<LayerFile, OciError> {
        Ok(LayerFile {
            dest: dest.into(),
            data: std::fs::read(src).map_err(io(src))?,
            mode,
        })
    }
}

/// A layer: the gzip'd tar blob and the digest of the uncompressed tar (`diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The compressed blob.
    pub blob: Blob,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

/// Builds a reproducible layer from files (directories are created as needed).
pub fn layer(files: &[LayerFile]) -> Result<Layer, OciError> {
    let mut files: Vec<&LayerFile> = files.iter().collect();
    files.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        let mut p = Path::new(f.dest.trim_start_matches('/')).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    let w = |e: std::io::Error| OciError::Io {
        path: "(layer)".into(),
        source: e,
    };
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{}/", d.display()), std::io::empty())
            .map_err(w)?;
    }
    for f in &files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_size(f.data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, f.dest.trim_start_matches('/'), f.data.as_slice())
            .map_err(w)?;
    }
    let raw = tar.into_inner().map_err(w)?;
    let diff_id = digest(&raw);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).map_err(w)?;
    Ok(Layer {
        blob: Blob::new(LAYER_TYPE, gz.finish().map_err(w)?),
        diff_id,
    })
}

/// A minimal base for a dynamically linked binary: its shared libraries (as `ldd`
/// lists them, with the dynamic loader), `/etc/passwd` and `/etc/group` naming the
/// non-root user, and an empty `/tmp`.
pub fn minimal_base(binary: &Path) -> Result<Layer, OciError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io(Path::new("ldd")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let src = Path::new(path);
        files.push(LayerFile::from_path(src, path, 0o755)?);
    }
    files.push(LayerFile {
        dest: "/etc/passwd".into(),
        data: b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n".to_vec(),
        mode: 0o644,
    });
    files.push(LayerFile {
        dest: "/etc/group".into(),
        data: b"root:x:0:\nnonroot:x:65532:\n".to_vec(),
        mode: 0o644,
    });
    layer(&files)
}

/// What goes into the image config.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// Entrypoint (argv).
    pub entrypoint: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Exposed TCP port.
    pub port: Option<u16>,
    /// `uid:gid`; never root.
    pub user: String,
    /// `amd64` or `arm64`.
    pub architecture: String,
}

/// A built image: layers, config blob, manifest blob.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layers, base first.
    pub layers: Vec<Layer>,
    /// The config blob.
    pub config: Blob,
    /// The manifest blob; its digest is the image's.
    pub manifest: Blob,
}

impl Image {
    /// Assembles config and manifest over `layers`.
    pub fn new(layers: Vec<Layer>, c: &ImageConfig) -> Image {
        Image::on(None, layers, c)
    }

    /// Assembles config and manifest over `layers`, the first of which come from a
    /// base image whose config is `base`: its environment is kept (ours wins on the
    /// same name) and its history continues.
    pub fn on(base: Option<&ImageConfiguration>, layers: Vec<Layer>, c: &ImageConfig) -> Image {
        let mut env_map: BTreeMap<String, String> = BTreeMap::new();
        let base_env = base
            .and_then(|b| b.config().as_ref())
            .and_then(|c| c.env().as_ref());
        for kv in base_env.into_iter().flatten() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env_map.insert(k.into(), v.into());
        }
        env_map.extend(c.env.clone());
        let env: Vec<String> = env_map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cfg = ConfigBuilder::default()
            .entrypoint(c.entrypoint.clone())
            .env(env)
            .user(c.user.clone())
            .working_dir("/");
        if let Some(p) = c.port {
            cfg = cfg.exposed_ports(vec![format!("{p}/tcp")]);
        }
        let base_layers = base.map_or(0, |b| b.rootfs().diff_ids().len());
        let mut history = base.and_then(|b| b.history().clone()).unwrap_or_default();
        for _ in layers.iter().skip(base_layers) {
            history.push(
                HistoryBuilder::default()
                    .created_by("stack")
                    .build()
                    .expect("history entries have no required field"),
            );
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()
            .expect("rootfs type and diff_ids are set");
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::from(c.architecture.as_str()))
            .os(Os::Linux)
            .config(
                cfg.build()
                    .expect("the image's run config has no required field"),
            )
            .rootfs(rootfs)
            .history(history)
            .build()
            .expect("architecture, os and rootfs are set");
        let config = Blob::new(CONFIG_TYPE, canonical_json(&config));
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor())
            .layers(
                layers
                    .iter()
                    .map(|l| l.blob.descriptor())
                    .collect::<Vec<_>>(),
            )
            .build()
            .expect("schema version, config and layers are set");
        Image {
            layers,
            config,
            manifest: Blob::new(MANIFEST_TYPE, canonical_json(&manifest)),
        }
    }

    /// The image digest (of the manifest).
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }
}

/// What an image is built on: the minimal `ldd` layer, or a base image pulled from a
/// registry (its layers and its config).
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// The base's image config (`None` for the minimal base).
    pub config: Option<ImageConfiguration>,
}

impl From<Layer> for BaseImage {
    fn from(l: Layer) -> BaseImage {
        BaseImage {
            layers: vec![l],
            config: None,
        }
    }
}

/// The architecture of this build, as OCI names it.
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// The files of a model directory (top level), placed under `dest`.
pub fn model_files(dir: &Path, dest: &str) -> Result<Vec<LayerFile>, OciError> {
    let mut files = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(io(dir))?;
    for e in rd {
        let e = e.map_err(io(dir))?;
        let p: PathBuf = e.path();
        if p.is_file() {
            let n = e.file_name().to_string_lossy().into_owned();
            files.push(LayerFile::from_path(&p, &format!("{dest}/{n}"), 0o644)?);
        }
    }
    Ok(files)
}

/// An image of `base` plus one layer holding `files`, run as non-root.
pub fn app_image(
    base: BaseImage,
    files: &[LayerFile],
    entrypoint: Vec<String>,
    port: Option<u16>,
    env: BTreeMap<String, String>,
) -> Result<Image, OciError> {
    let app = layer(files)?;
    let architecture = base
        .config
        .as_ref()
        .map_or_else(|| host_arch().to_string(), |c| c.architecture().to_string());
    let mut layers = base.layers;
    layers.push(app);
    Ok(Image::on(
        base.config.as_ref(),
        layers,
        &ImageConfig {
            entrypoint,
            env,
            port,
            user: NONROOT.into(),
            architecture,
        },
    ))
}

/// The server image: a base and a layer with the binary at `/app/<name>` (and model
/// files under `/models` when given), running as non-root.
pub fn server_image(
    base: impl Into<BaseImage>,
    binary: &Path,
    models: Option<&Path>,
    args: &[String],
    port: Option<u16>,
    env: BTreeMap<String, String>,
) -> Result<Image, OciError> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "server".into());
    let dest = format!("/app/{name}");
    let mut files = vec![LayerFile::from_path(binary, &dest, 0o755)?];
    if let Some(dir) = models {
        files.extend(model_files(dir, SERVER_MODEL_DIR)?);
    }
    let mut entrypoint = vec![dest];
    entrypoint.extend(args.iter().cloned());
    app_image(base.into(), &files, entrypoint, port, env)
}

/// Where the server image keeps the model (`MODEL_DIR`) when it is baked in.
pub const SERVER_MODEL_DIR: &str = "/models";

/// Where Lambda's `provided.al2023` images keep the runtime's `bootstrap`.
pub const LAMBDA_BOOTSTRAP: &str = "/var/runtime/bootstrap";
/// Where the Lambda image keeps the model (`MODEL_DIR`).
pub const LAMBDA_MODEL_DIR: &str = "/opt/model";

/// The Lambda container image: `bootstrap` at `/var/runtime/bootstrap` as the
/// entrypoint (it speaks the Runtime API Lambda points it at), the model files under
/// `/opt/model` with `MODEL_DIR` naming it when given.
pub fn lambda_image(
    base: impl Into<BaseImage>,
    bootstrap: &Path,
    model: Option<&Path>,
    mut env: BTreeMap<String, String>,
) -> Result<Image, OciError> {
    let mut files = vec![LayerFile::from_path(bootstrap, LAMBDA_BOOTSTRAP, 0o755)?];
    if let Some(dir) = model {
        files.extend(model_files(dir, LAMBDA_MODEL_DIR)?);
        env.insert("MODEL_DIR".into(), LAMBDA_MODEL_DIR.into());
    }
    app_image(
        base.into(),
        &files,
        vec![LAMBDA_BOOTSTRAP.into()],
        None,
        env,
    )
}

/// A parsed image reference such as `public.ecr.aws/docker/library/debian:bookworm-slim`,
/// `debian:bookworm` (Docker Hub), `127.0.0.1:5001/base@sha256:…` or, to force the
/// scheme, `http://host:port/repo:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry base URL, e.g. `https://public.ecr.aws`.
    pub base: String,
    /// Repository path, e.g. `docker/library/debian`.
    pub repo: String,
    /// Tag or `sha256:` digest.
    pub reference: String,
}

impl ImageRef {
    /// Parses a reference; loopback registries default to plain HTTP, others to HTTPS.
    pub fn parse(s: &str) -> Result<ImageRef, OciError> {
        let bad = |why: &str| OciError::Registry {
            op: "parse image reference".into(),
            msg: format!("`{s}`: {why}"),
        };
        let (scheme, rest) = match s.split_once("://") {
            Some((sc @ ("http" | "https"), r)) => (Some(sc), r),
            Some(_) => return Err(bad("scheme must be http or https")),
            None => (None, s),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p.to_string())
            }
            _ => ("registry-1.docker.io".to_string(), rest.to_string()),
        };
        let (path, reference) = if let Some((p, d)) = path.split_once('@') {
            (p.to_string(), d.to_string())
        } else {
            match path.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p.to_string(), t.to_string()),
                _ => (path.clone(), "latest".to_string()),
            }
        };
        let mut repo = path;
        if host == "registry-1.docker.io" && !repo.contains('/') {
            repo = format!("library/{repo}");
        }
        if repo.is_empty() || reference.is_empty() {
            return Err(bad("expected [registry/]repository[:tag|@digest]"));
        }
        let loopback = ["localhost", "127.", "[::1]"]
            .iter()
            .any(|p| host.starts_with(p));
        let scheme = scheme.unwrap_or(if loopback { "http" } else { "https" });
        Ok(ImageRef {
            base: format!("{scheme}://{host}"),
            repo,
            reference,
        })
    }
}

/// Media types a manifest request accepts: single-platform manifests and indexes,
/// OCI and Docker.
const ACCEPT_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Docker's media types for what OCI calls a gzip'd layer and a config: the same
/// bytes, so they are renamed when the layer goes into an OCI manifest.
fn oci_media_type(t: &str) -> &str {
    match t {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => LAYER_TYPE,
        "application/vnd.docker.container.image.v1+json" => CONFIG_TYPE,
        t => t,
    }
}

/// A registry reached over HTTP(S) with optional basic credentials, through
/// `oci-client` (which answers a `401` Bearer challenge with a token from the
/// registry's token service: the anonymous pull flow of Docker Hub, public ECR, GHCR…).
#[derive(Clone)]
pub struct Registry {
    /// `host[:port]`, as references name the registry.
    host: String,
    auth: RegistryAuth,
    client: Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the credentials.
        f.debug_struct("Registry")
            .field("host", &self.host)
            .finish()
    }
}

fn reg_err(op: &str) -> impl FnOnce(OciDistributionError) -> OciError + '_ {
    move |e| OciError::Registry {
        op: op.into(),
        msg: e.to_string(),
    }
}

fn parse_err(what: &str) -> impl FnOnce(serde_json::Error) -> OciError + '_ {
    move |e| OciError::Registry {
        op: format!("parse {what}"),
        msg: e.to_string(),
    }
}

/// The scheme of a registry named without one: `http` on loopback, else `https`.
fn default_scheme(host_port: &str) -> &'static str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback { "http" } else { "https" }
}

impl Registry {
    /// `base` like `http://127.0.0.1:5000` or `https://<acct>.dkr.ecr.<region>.amazonaws.com`;
    /// a bare `host:port` is plain HTTP on loopback (a local `docker-registry` has no
    /// certificate), HTTPS elsewhere.
    pub fn new(base: &str, basic: Option<(&str, &str)>) -> Registry {
        let auth = basic.map_or(RegistryAuth::Anonymous, |(u, p)| {
            RegistryAuth::Basic(u.into(), p.into())
        });
        let base = base.trim_end_matches('/');
        let (scheme, host) = base
            .split_once("://")
            .unwrap_or((default_scheme(base), base));
        let protocol = if scheme == "http" {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            // One PUT per blob, as ECR and `docker-registry` both take, rather than
            // chunked PATCHes.
            use_monolithic_push: true,
            ..Default::default()
        });
        Registry {
            host: host.to_string(),
            auth,
            client,
        }
    }

    /// With the `authorizationToken` of ECR GetAuthorizationToken (base64 `AWS:pw`).
    pub fn ecr(base: &str, authorization_token: &str) -> Result<Registry, OciError> {
        let bad = |msg: String| OciError::Registry {
            op: "ECR authorization token".into(),
            msg,
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(authorization_token.trim())
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| bad("not `user:password`".into()))?;
        Ok(Registry::new(base, Some((user, password))))
    }

    fn reference(&self, repo: &str, reference: &str) -> Reference {
        if reference.starts_with("sha256:") {
            Reference::with_digest(self.host.clone(), repo.into(), reference.into())
        } else {
            Reference::with_tag(self.host.clone(), repo.into(), reference.into())
        }
    }

    /// Whether `repo` holds the manifest `digest`: false when the registry answers
    /// that the manifest or the repository is unknown (a repository recreated empty,
    /// an image deleted by a lifecycle policy), an error when it cannot say.
    pub async fn has_manifest(&self, repo: &str, digest: &str) -> Result<bool, OciError> {
        use oci_client::errors::OciErrorCode::{ManifestUnknown, NameUnknown};
        let r = self.reference(repo, digest);
        match self.client.fetch_manifest_digest(&r, &self.auth).await {
            Ok(_) => Ok(true),
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, ManifestUnknown | NameUnknown)) =>
            {
                Ok(false)
            }
            Err(OciDistributionError::ServerError { code: 404, .. })
            | Err(OciDistributionError::ImageManifestNotFoundError(_)) => Ok(false),
            Err(e) => Err(reg_err("HEAD manifest")(e)),
        }
    }

    /// Pushes every blob the registry lacks, then the manifest under `tag`; returns
    /// the manifest digest.
    pub async fn push(&self, repo: &str, tag: &str, img: &Image) -> Result<String, OciError> {
        let r = self.reference(repo, tag);
        // The blob calls use the credentials stored here; `push`/`pull` store them
        // themselves, but they build their own manifests.
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
        for b in img.layers.iter().map(|l| &l.blob).chain([&img.config]) {
            let there = self
                .client
                .blob_exists(&r, &b.digest)
                .await
                .map_err(reg_err("HEAD blob"))?;
            if !there {
                self.client
                    .push_blob(&r, b.data.clone(), &b.digest)
                    .await
                    .map_err(reg_err("upload blob"))?;
            }
        }
        let location = self
            .client
            .push_manifest_raw(
                &r,
                img.manifest.data.clone(),
                http::HeaderValue::from_static(MANIFEST_TYPE),
            )
            .await
            .map_err(reg_err("put manifest"))?;
        // The registry names the manifest by its digest in `Location`; it is ours
        // unless the registry rewrote the document.
        Ok(location
            .rsplit('/')
            .next()
            .filter(|d| d.starts_with("sha256:"))
            .map_or_else(|| img.manifest.digest.clone(), str::to_string))
    }

    /// The manifest for `reference` on `os/arch`: a single-platform manifest as is, or
    /// from an index / manifest list the entry for the platform. Returns (digest,
    /// bytes), verified against the digest asked for.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        arch: &str,
    ) -> Result<(String, Vec<u8>), OciError> {
        let mut reference = reference.to_string();
        for _ in 0..2 {
            let (m, _) = self
                .client
                .pull_manifest_raw(
                    &self.reference(repo, &reference),
                    &self.auth,
                    ACCEPT_MANIFESTS,
                )
                .await
                .map_err(reg_err("get manifest"))?;
            let m = m.to_vec();
            let md = digest(&m);
            if reference.starts_with("sha256:") && reference != md {
                return Err(OciError::Digest(reference));
            }
            // Indexes and Docker manifest lists list `manifests`; image manifests don't.
            let is_index = serde_json::from_slice::<serde_json::Value>(&m)
                .map_err(parse_err("manifest"))?
                .get("manifests")
                .is_some();
            if !is_index {
                return Ok((md, m));
            }
            let index: ImageIndex = serde_json::from_slice(&m).map_err(parse_err("image index"))?;
            let want = Arch::from(arch);
            let pick = index.manifests().iter().find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == want)
            });
            let Some(d) = pick else {
                return Err(OciError::Registry {
                    op: "get manifest".into(),
                    msg: format!("{repo}:{reference} has no linux/{arch} image in its index"),
                });
            };
            reference = d.digest().to_string();
        }
        Err(OciError::Registry {
            op: "get manifest".into(),
            msg: format!("{repo}: an index pointing at another index"),
        })
    }

    /// Pulls the manifest (by tag or digest; from an index, the `linux/<host arch>`
    /// entry), its config and layers, verifying every digest. Returns (manifest
    /// digest, config blob, layer blobs).
    pub async fn pull(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Blob, Vec<Blob>), OciError> {
        let (md, m) = self.manifest(repo, reference, host_arch()).await?;
        let manifest: ImageManifest = serde_json::from_slice(&m).map_err(parse_err("manifest"))?;
        let r = self.reference(repo, &md);
        let mut fetch = Vec::new();
        for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let dg = d.digest().to_string();
            let mut data = Vec::new();
            self.client
                .pull_blob(&r, dg.as_str(), &mut data)
                .await
                .map_err(|e| match e {
                    OciDistributionError::DigestError(_) => OciError::Digest(dg.clone()),
                    e => reg_err("get blob")(e),
                })?;
            let mt = d.media_type().to_string();
            fetch.push(Blob::new(oci_media_type(&mt), data));
        }
        let config = fetch.remove(0);
        Ok((md, config, fetch))
    }

    /// Pulls an image to build on: its layers (with their `diff_id`s from its config)
    /// and its config. Only gzip'd tar layers are accepted (what OCI and Docker
    /// registries serve for ordinary images).
    pub async fn pull_base(&self, repo: &str, reference: &str) -> Result<BaseImage, OciError> {
        let (_, config, blobs) = self.pull(repo, reference).await?;
        let cv: ImageConfiguration =
            serde_json::from_slice(&config.data).map_err(parse_err("image config"))?;
        let diff_ids = cv.rootfs().diff_ids();
        if diff_ids.len() != blobs.len() {
            return Err(OciError::Registry {
                op: "pull base".into(),
                msg: format!(
                    "{repo}:{reference}: {} layers but {} diff_ids in its config",
                    blobs.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (blob, diff_id) in blobs.into_iter().zip(diff_ids) {
            if blob.media_type != LAYER_TYPE {
                return Err(OciError::Registry {
                    op: "pull base".into(),
                    msg: format!(
                        "{repo}:{reference}: layer {} is `{}`, only gzip'd tar layers are supported",
                        blob.digest, blob.media_type
                    ),
                });
            }
            layers.push(Layer {
                blob,
                diff_id: diff_id.clone(),
            });
        }
        Ok(BaseImage {
            layers,
            config: Some(cv),
        })
    }
}

/// Pulls the base image named by a reference (see [`ImageRef`]) anonymously, through
/// the bearer token flow when the registry asks for it.
pub async fn pull_base_ref(reference: &str) -> Result<BaseImage, OciError> {
    let r = ImageRef::parse(reference)?;
    Registry::new(&r.base, None)
        .pull_base(&r.repo, &r.reference)
        .await
}

/// Extracts one file from gzip'd tar layers (the last layer holding it wins).
pub fn extract(layers: &[Blob], path: &str) -> Result<Option<Vec<u8>>, OciError> {
    let want = path.trim_start_matches('/');
    let mut found = None;
    for l in layers {
        let gz = flate2::read::GzDecoder::new(l.data.as_slice());
        let mut ar = tar::Archive::new(gz);
        let entries = ar.entries().map_err(io(Path::new(path)))?;
        for e in entries {
            let mut e = e.map_err(io(Path::new(path)))?;
            let p = e.path().map_err(io(Path::new(path)))?.into_owned();
            if p.to_string_lossy().trim_start_matches("./") == want {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map_err(io(Path::new(path)))?;
                found = Some(buf);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_registries_speak_plain_http() {
        use super::default_scheme;
        assert_eq!(default_scheme("127.0.0.1:5001"), "http");
        assert_eq!(default_scheme("localhost:5001"), "http");
        assert_eq!(default_scheme("[::1]:5001"), "http");
        assert_eq!(default_scheme("registry.example.com:5000"), "https");
    }

    use super::*;
    use serde_json::{Value, json};

    /// The config and manifest documents as this module wrote them with `json!` before
    /// they were oci-spec types: the bytes, so the digests, must not change, or every
    /// deployed image would show as changed.
    #[test]
    fn documents_are_the_bytes_json_wrote_before_oci_spec() {
        let base_cfg: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "arm64",
            "os": "linux",
            "config": { "Env": ["PATH=/bin", "A=base"] },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:".to_string() + &"a".repeat(64)] },
            "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "base" }]
        }))
        .unwrap();
        let files = |text: &str| {
            layer(&[LayerFile {
                dest: "/x".into(),
                data: text.as_bytes().to_vec(),
                mode: 0o644,
            }])
            .unwrap()
        };
        let layers = vec![files("base"), files("app")];
        let c = ImageConfig {
            entrypoint: vec!["/app/server".into(), "--port".into()],
            env: BTreeMap::from([("A".to_string(), "mine".to_string())]),
            port: Some(8080),
            user: NONROOT.into(),
            architecture: "arm64".into(),
        };
        let img = Image::on(Some(&base_cfg), layers.clone(), &c);

        let old_config = json!({
            "architecture": "arm64",
            "os": "linux",
            "config": {
                "Entrypoint": c.entrypoint,
                "Env": ["A=mine", "PATH=/bin"],
                "User": NONROOT,
                "WorkingDir": "/",
                "ExposedPorts": { "8080/tcp": {} },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
            },
            "history": [
                { "created": "2024-01-01T00:00:00Z", "created_by": "base" },
                { "created_by": "stack" }
            ]
        });
        assert_eq!(
            String::from_utf8_lossy(&img.config.data),
            old_config.to_string()
        );
        let desc = |b: &Blob| json!({ "mediaType": b.media_type, "digest": b.digest, "size": b.data.len() });
        let old_manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": desc(&img.config),
            "layers": layers.iter().map(|l| desc(&l.blob)).collect::<Vec<_>>()
        });
        assert_eq!(
            String::from_utf8_lossy(&img.manifest.data),
            old_manifest.to_string()
        );
        let v: Value = serde_json::from_slice(&img.manifest.data).unwrap();
        assert_eq!(v["config"]["digest"], img.config.digest);
    }
}
