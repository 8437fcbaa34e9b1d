//! OCI images without Docker: deterministic gzip'd tar layers, an OCI image config
//! (entrypoint, env, exposed port, non-root user), content-addressed blobs and an OCI
//! manifest, pushed to and pulled from a registry over the distribution HTTP API
//! (`/v2/…`): a local `docker-registry`, or ECR with the basic credentials of
//! `GetAuthorizationToken`.
//!
//! Layers are reproducible (sorted entries, mtime 0, uid/gid 0, fixed gzip level), so
//! an unchanged binary gives the same digests and the stack shows no change.

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
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
    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.data.len() })
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
    pub fn on(base: Option<&Value>, layers: Vec<Layer>, c: &ImageConfig) -> Image {
        let mut env_map: BTreeMap<String, String> = BTreeMap::new();
        let base_env = base
            .and_then(|b| b.pointer("/config/Env"))
            .and_then(Value::as_array);
        for kv in base_env.into_iter().flatten().filter_map(Value::as_str) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env_map.insert(k.into(), v.into());
        }
        env_map.extend(c.env.clone());
        let env: Vec<String> = env_map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cfg = json!({
            "Entrypoint": c.entrypoint,
            "Env": env,
            "User": c.user,
            "WorkingDir": "/",
        });
        if let Some(p) = c.port {
            cfg["ExposedPorts"] = json!({ format!("{p}/tcp"): {} });
        }
        let base_layers = base
            .and_then(|b| b.pointer("/rootfs/diff_ids"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let mut history: Vec<Value> = base
            .and_then(|b| b.get("history"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history.extend(
            layers
                .iter()
                .skip(base_layers)
                .map(|_| json!({ "created_by": "stack" })),
        );
        let config = json!({
            "architecture": c.architecture,
            "os": "linux",
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
            },
            "history": history
        });
        let config = Blob::new(CONFIG_TYPE, config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>()
        });
        Image {
            layers,
            config,
            manifest: Blob::new(MANIFEST_TYPE, manifest.to_string().into_bytes()),
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
    pub config: Option<Value>,
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
        .and_then(|c| c.get("architecture"))
        .and_then(Value::as_str)
        .unwrap_or(host_arch())
        .to_string();
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
        files.extend(model_files(dir, "/models")?);
    }
    let mut entrypoint = vec![dest];
    entrypoint.extend(args.iter().cloned());
    app_image(base.into(), &files, entrypoint, port, env)
}

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

/// The parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`
/// challenge, or `None` for another scheme.
pub fn bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_string(), val);
    }
    out.contains_key("realm").then_some(out)
}

/// Media types a manifest request accepts: single-platform manifests and indexes,
/// OCI and Docker.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Docker's media types for what OCI calls a gzip'd layer and a config: the same
/// bytes, so they are renamed when the layer goes into an OCI manifest.
fn oci_media_type(t: &str) -> &str {
    match t {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => LAYER_TYPE,
        "application/vnd.docker.container.image.v1+json" => CONFIG_TYPE,
        t => t,
    }
}

/// A registry reached over HTTP(S) with optional basic credentials.
#[derive(Debug, Clone)]
pub struct Registry {
    base: String,
    auth: Option<String>,
    /// A bearer token obtained from the registry's token service after a 401 (the
    /// anonymous pull flow of Docker Hub, public ECR, GHCR…).
    bearer: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    http: reqwest::Client,
}

fn reg_err(op: &str) -> impl FnOnce(reqwest::Error) -> OciError + '_ {
    move |e| OciError::Registry {
        op: op.into(),
        msg: e.to_string(),
    }
}

async fn check(op: &str, r: reqwest::Response) -> Result<reqwest::Response, OciError> {
    if r.status().is_success() {
        return Ok(r);
    }
    let st = r.status();
    let body = r.text().await.unwrap_or_default();
    Err(OciError::Registry {
        op: op.into(),
        msg: format!("HTTP {st}: {body}"),
    })
}

impl Registry {
    /// `base` like `http://127.0.0.1:5000` or `https://<acct>.dkr.ecr.<region>.amazonaws.com`.
    pub fn new(base: &str, basic: Option<(&str, &str)>) -> Registry {
        let auth = basic.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Registry {
            base: base.trim_end_matches('/').to_string(),
            auth,
            bearer: Default::default(),
            http: reqwest::Client::new(),
        }
    }

    /// With the `authorizationToken` of ECR GetAuthorizationToken (base64 `AWS:pw`).
    pub fn ecr(base: &str, authorization_token: &str) -> Registry {
        let mut r = Registry::new(base, None);
        r.auth = Some(format!("Basic {authorization_token}"));
        r
    }

    fn req(&self, m: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let b = self.http.request(m, url);
        let bearer = self.bearer.lock().ok().and_then(|t| t.clone());
        match (bearer, &self.auth) {
            (Some(t), _) => b.header(reqwest::header::AUTHORIZATION, format!("Bearer {t}")),
            (None, Some(a)) => b.header(reqwest::header::AUTHORIZATION, a),
            (None, None) => b,
        }
    }

    /// Answers a `401` carrying a Bearer challenge: asks the token service named by
    /// `realm` for a token (anonymously, or with the basic credentials when set) for
    /// `service` and `scope`, and keeps it for the following requests.
    async fn authenticate(&self, challenge: &str) -> Result<(), OciError> {
        let err = |msg: String| OciError::Registry {
            op: "token".into(),
            msg,
        };
        let c = bearer_challenge(challenge)
            .ok_or_else(|| err(format!("unsupported challenge `{challenge}`")))?;
        let mut q: Vec<(&str, &str)> = Vec::new();
        for k in ["service", "scope"] {
            if let Some(v) = c.get(k) {
                q.push((k, v));
            }
        }
        let mut r = self.http.get(&c["realm"]).query(&q);
        if let Some(a) = &self.auth {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
        let r = r.send().await.map_err(reg_err("token"))?;
        let v: Value = check("token", r)
            .await?
            .json()
            .await
            .map_err(reg_err("token"))?;
        let t = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("no token in the answer of {}", c["realm"])))?;
        if let Ok(mut b) = self.bearer.lock() {
            *b = Some(t.to_string());
        }
        Ok(())
    }

    async fn push_blob(&self, repo: &str, b: &Blob) -> Result<(), OciError> {
        let url = format!("{}/v2/{repo}/blobs/{}", self.base, b.digest);
        let head = self
            .req(reqwest::Method::HEAD, &url)
            .send()
            .await
            .map_err(reg_err("HEAD blob"))?;
        if head.status().is_success() {
            return Ok(()); // content-addressed: already there
        }
        let start = self
            .req(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .map_err(reg_err("start upload"))?;
        let start = check("start upload", start).await?;
        let loc = start
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Registry {
                op: "start upload".into(),
                msg: "no Location header".into(),
            })?
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .req(
                reqwest::Method::PUT,
                &format!("{loc}{sep}digest={}", b.digest),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(b.data.clone())
            .send()
            .await
            .map_err(reg_err("upload blob"))?;
        check("upload blob", put).await.map(|_| ())
    }

    /// Pushes every blob then the manifest under `tag`; returns the manifest digest.
    pub async fn push(&self, repo: &str, tag: &str, img: &Image) -> Result<String, OciError> {
        for l in &img.layers {
            self.push_blob(repo, &l.blob).await?;
        }
        self.push_blob(repo, &img.config).await?;
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{tag}", self.base),
            )
            .header(reqwest::header::CONTENT_TYPE, MANIFEST_TYPE)
            .body(img.manifest.data.clone())
            .send()
            .await
            .map_err(reg_err("put manifest"))?;
        let r = check("put manifest", r).await?;
        Ok(r.headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| img.manifest.digest.clone(), str::to_string))
    }

    /// GET with the bearer token flow on a `401`. Returns the body and content type.
    async fn get(&self, op: &str, url: &str, accept: &str) -> Result<(Vec<u8>, String), OciError> {
        let mut retried = false;
        loop {
            let r = self
                .req(reqwest::Method::GET, url)
                .header(reqwest::header::ACCEPT, accept)
                .send()
                .await
                .map_err(reg_err(op))?;
            let challenge = r
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if r.status() == reqwest::StatusCode::UNAUTHORIZED
                && !retried
                && let Some(ch) = challenge.filter(|c| c.starts_with("Bearer "))
            {
                self.authenticate(&ch).await?;
                retried = true;
                continue;
            }
            let r = check(op, r).await?;
            let ct = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            return Ok((r.bytes().await.map_err(reg_err(op))?.to_vec(), ct));
        }
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
        let parse = |b: &[u8]| -> Result<Value, OciError> {
            serde_json::from_slice(b).map_err(|e| OciError::Registry {
                op: "parse manifest".into(),
                msg: e.to_string(),
            })
        };
        let mut reference = reference.to_string();
        for _ in 0..2 {
            let (m, ct) = self
                .get(
                    "get manifest",
                    &format!("{}/v2/{repo}/manifests/{reference}", self.base),
                    ACCEPT_MANIFESTS,
                )
                .await?;
            let md = digest(&m);
            if reference.starts_with("sha256:") && reference != md {
                return Err(OciError::Digest(reference));
            }
            let mv = parse(&m)?;
            let mt = mv["mediaType"].as_str().unwrap_or(&ct);
            if !(mt.contains("index") || mt.contains("manifest.list")) {
                return Ok((md, m));
            }
            let entries = mv["manifests"].as_array().cloned().unwrap_or_default();
            let pick = entries.iter().find(|e| {
                e.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                    && e.pointer("/platform/architecture").and_then(Value::as_str) == Some(arch)
            });
            let Some(d) = pick.and_then(|e| e["digest"].as_str()) else {
                return Err(OciError::Registry {
                    op: "get manifest".into(),
                    msg: format!("{repo}:{reference} has no linux/{arch} image in its index"),
                });
            };
            reference = d.to_string();
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
        let mv: Value = serde_json::from_slice(&m).map_err(|e| OciError::Registry {
            op: "parse manifest".into(),
            msg: e.to_string(),
        })?;
        let mut fetch = Vec::new();
        let descs =
            std::iter::once(&mv["config"]).chain(mv["layers"].as_array().into_iter().flatten());
        for d in descs {
            let dg = d["digest"].as_str().unwrap_or_default();
            let (data, _) = self
                .get(
                    "get blob",
                    &format!("{}/v2/{repo}/blobs/{dg}", self.base),
                    "*/*",
                )
                .await?;
            if digest(&data) != dg {
                return Err(OciError::Digest(dg.into()));
            }
            let mt = oci_media_type(d["mediaType"].as_str().unwrap_or_default());
            fetch.push(Blob::new(mt, data));
        }
        let config = fetch.remove(0);
        Ok((md, config, fetch))
    }

    /// Pulls an image to build on: its layers (with their `diff_id`s from its config)
    /// and its config. Only gzip'd tar layers are accepted (what OCI and Docker
    /// registries serve for ordinary images).
    pub async fn pull_base(&self, repo: &str, reference: &str) -> Result<BaseImage, OciError> {
        let (_, config, blobs) = self.pull(repo, reference).await?;
        let cv: Value = serde_json::from_slice(&config.data).map_err(|e| OciError::Registry {
            op: "parse image config".into(),
            msg: e.to_string(),
        })?;
        let diff_ids: Vec<String> = cv
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
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
            layers.push(Layer { blob, diff_id });
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
