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
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cfg = json!({
            "Entrypoint": c.entrypoint,
            "Env": env,
            "User": c.user,
            "WorkingDir": "/",
        });
        if let Some(p) = c.port {
            cfg["ExposedPorts"] = json!({ format!("{p}/tcp"): {} });
        }
        let config = json!({
            "architecture": c.architecture,
            "os": "linux",
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
            },
            "history": layers.iter().map(|_| json!({ "created_by": "stack" })).collect::<Vec<_>>()
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

/// The server image: a base layer and a layer with the binary at `/app/<name>` (and
/// model files under `/models` when given), running as non-root.
pub fn server_image(
    base: Layer,
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
        let rd = std::fs::read_dir(dir).map_err(io(dir))?;
        for e in rd {
            let e = e.map_err(io(dir))?;
            let p: PathBuf = e.path();
            if p.is_file() {
                let n = e.file_name().to_string_lossy().into_owned();
                files.push(LayerFile::from_path(&p, &format!("/models/{n}"), 0o644)?);
            }
        }
    }
    let app = layer(&files)?;
    let mut entrypoint = vec![dest];
    entrypoint.extend(args.iter().cloned());
    Ok(Image::new(
        vec![base, app],
        &ImageConfig {
            entrypoint,
            env,
            port,
            user: NONROOT.into(),
            architecture: if cfg!(target_arch = "aarch64") {
                "arm64".into()
            } else {
                "amd64".into()
            },
        },
    ))
}

/// A registry reached over HTTP(S) with optional basic credentials.
#[derive(Debug, Clone)]
pub struct Registry {
    base: String,
    auth: Option<String>,
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
        match &self.auth {
            Some(a) => b.header(reqwest::header::AUTHORIZATION, a),
            None => b,
        }
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

    async fn get(&self, op: &str, url: &str, accept: &str) -> Result<Vec<u8>, OciError> {
        let r = self
            .req(reqwest::Method::GET, url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(reg_err(op))?;
        let r = check(op, r).await?;
        Ok(r.bytes().await.map_err(reg_err(op))?.to_vec())
    }

    /// Pulls the manifest (by tag or digest), its config and layers, verifying every
    /// digest. Returns (manifest digest, config blob, layer blobs).
    pub async fn pull(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Blob, Vec<Blob>), OciError> {
        let m = self
            .get(
                "get manifest",
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
                MANIFEST_TYPE,
            )
            .await?;
        let md = digest(&m);
        if reference.starts_with("sha256:") && reference != md {
            return Err(OciError::Digest(reference.into()));
        }
        let mv: Value = serde_json::from_slice(&m).map_err(|e| OciError::Registry {
            op: "parse manifest".into(),
            msg: e.to_string(),
        })?;
        let mut fetch = Vec::new();
        let descs =
            std::iter::once(&mv["config"]).chain(mv["layers"].as_array().into_iter().flatten());
        for d in descs {
            let dg = d["digest"].as_str().unwrap_or_default();
            let data = self
                .get(
                    "get blob",
                    &format!("{}/v2/{repo}/blobs/{dg}", self.base),
                    "*/*",
                )
                .await?;
            if digest(&data) != dg {
                return Err(OciError::Digest(dg.into()));
            }
            fetch.push(Blob::new(d["mediaType"].as_str().unwrap_or_default(), data));
        }
        let config = fetch.remove(0);
        Ok((md, config, fetch))
    }
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
