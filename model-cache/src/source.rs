//! Where a checkpoint comes from: an explicit directory, the local cache, and a remote:
//! the Hugging Face Hub, or an S3 prefix when one is configured (cargo feature `s3`).
//! Cached files are verified against a manifest (size + sha256), written atomically,
//! and fetched under a file lock so concurrent processes never load a half-written file.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::{CopyError, ModelError, copy_hashing, sha256_file, write_atomically};

/// The model the servers serve when none is named.
pub const DEFAULT_MODEL_ID: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
/// The Hub commit of [`DEFAULT_MODEL_ID`] this project is pinned to.
pub const DEFAULT_REVISION: &str = "714eb0fa89d2f80546fda750413ed43d93601a13";

const MANIFEST: &str = "manifest.json";

/// The files a checkpoint may have: (name, required). tokenizer.json is preferred,
/// vocab.txt is the fallback: at least one of them must exist.
const CHECKPOINT_FILES: [(&str, bool); 5] = [
    ("config.json", true),
    ("model.safetensors", true),
    ("tokenizer.json", false),
    ("vocab.txt", false),
    ("tokenizer_config.json", false),
];

#[cfg(feature = "s3")]
mod s3;

/// An S3 prefix holding a checkpoint's files: `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// `s3://bucket/some/prefix/` → bucket `bucket`, prefix `some/prefix`.
    pub fn parse(uri: &str) -> Result<Self, SourceError> {
        let bad = || SourceError::BadS3Uri(uri.into());
        let rest = uri.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        })
    }

    /// The object key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.into()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    /// `s3://bucket/prefix/`: the form errors print, so `s3://bucket/prefix/key` reads on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key(""))
    }
}

impl FromStr for S3Location {
    type Err = SourceError;
    fn from_str(uri: &str) -> Result<Self, SourceError> {
        Self::parse(uri)
    }
}

/// How to find a checkpoint. Built from flags or [`ModelSource::from_env`].
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Used as is when set; nothing else is consulted.
    pub model_dir: Option<PathBuf>,
    pub model_id: String,
    pub revision: String,
    pub cache_dir: PathBuf,
    /// Hub base URL; `None` uses hf-hub's default (or `HF_ENDPOINT`).
    pub hub_endpoint: Option<String>,
    /// Never contact a remote (`HF_HUB_OFFLINE=1`): only the directory or the cache.
    pub offline: bool,
    /// Fetch from this S3 prefix instead of the Hub (`MODEL_S3_URI`). Needs the `s3`
    /// cargo feature to download; without it a verified cache entry is still used.
    pub s3: Option<S3Location>,
    /// S3 endpoint (a local stand-in such as moto); `None` uses the AWS SDK's, which
    /// honours `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`.
    pub s3_endpoint: Option<String>,
}

impl ModelSource {
    /// `MODEL_DIR`, `MODEL_ID`, `MODEL_REVISION`, `MODEL_CACHE_DIR`, `HF_ENDPOINT`,
    /// `HF_HUB_OFFLINE` and `MODEL_S3_URI`, with the pinned defaults. Fails only on a
    /// malformed `MODEL_S3_URI`.
    pub fn from_env() -> Result<Self, SourceError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            model_dir: var("MODEL_DIR").map(PathBuf::from),
            model_id: var("MODEL_ID").unwrap_or_else(|| DEFAULT_MODEL_ID.into()),
            revision: var("MODEL_REVISION").unwrap_or_else(|| DEFAULT_REVISION.into()),
            cache_dir: var("MODEL_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(default_cache_dir),
            hub_endpoint: var("HF_ENDPOINT"),
            offline: var("HF_HUB_OFFLINE")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
            s3: var("MODEL_S3_URI")
                .map(|uri| S3Location::parse(&uri))
                .transpose()?,
            s3_endpoint: None,
        })
    }

    /// Where the checkpoint lives in the cache: `models--<org>--<name>/<revision>` for
    /// the Hub, `s3--<bucket>/<prefix, '/' as '--'>` (`_root` for none) for S3.
    pub fn cache_entry(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => {
                let name = if s3.prefix.is_empty() {
                    "_root".to_string()
                } else {
                    s3.prefix.replace('/', "--")
                };
                self.cache_dir.join(format!("s3--{}", s3.bucket)).join(name)
            }
            None => self
                .cache_dir
                .join(format!("models--{}", self.model_id.replace('/', "--")))
                .join(&self.revision),
        }
    }

    /// The source as a person reads it: the directory, the S3 prefix, or
    /// `<model id>@<revision>`.
    pub fn describe(&self) -> String {
        match (&self.model_dir, &self.s3) {
            (Some(dir), _) => dir.display().to_string(),
            (None, Some(s3)) => s3.to_string(),
            (None, None) => format!("{}@{}", self.model_id, self.revision),
        }
    }

    /// The remote this source fetches from, for messages.
    pub fn remote(&self) -> String {
        match &self.s3 {
            Some(s3) => format!("S3 {s3}"),
            None => format!("Hugging Face Hub {}@{}", self.model_id, self.revision),
        }
    }

    /// Finds the checkpoint: the explicit directory, else a verified cache entry, else
    /// a fetch from the remote (the S3 prefix when set, else the Hub) into the cache.
    pub fn resolve(&self) -> Result<Checkpoint, SourceError> {
        if let Some(dir) = &self.model_dir {
            return Checkpoint::open(dir).map_err(SourceError::ModelDir);
        }
        let entry = self.cache_entry();
        let cache_problem = match verify_entry(&entry) {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(problem) => problem,
        };
        if self.offline {
            return Err(self.not_found(
                cache_problem,
                "not tried: offline (HF_HUB_OFFLINE=1)".into(),
            ));
        }
        // S3 errors name the bucket and key themselves; a Hub failure is one of the
        // places looked.
        self.fetch().map_err(|e| match e {
            SourceError::Fetch { detail, .. } => self.not_found(cache_problem, detail),
            other => other,
        })
    }

    /// Makes sure the cache holds a verified copy, downloading what is missing or
    /// corrupt from the remote. Safe to run from several processes at once.
    pub fn fetch(&self) -> Result<Checkpoint, SourceError> {
        let entry = self.cache_entry();
        let parent = entry.parent().expect("entry has a parent");
        std::fs::create_dir_all(&entry).map_err(|e| SourceError::io(&entry, e))?;
        let name = entry
            .file_name()
            .expect("entry has a name")
            .to_string_lossy();
        let lock_path = parent.join(format!("{name}.lock"));
        let lock = File::create(&lock_path).map_err(|e| SourceError::io(&lock_path, e))?;
        lock.lock().map_err(|e| SourceError::io(&lock_path, e))?;

        // Another process may have finished the fetch while this one waited.
        if let Ok(checkpoint) = verify_entry(&entry) {
            return Ok(checkpoint);
        }
        let staging = parent.join(format!(".download-{}", std::process::id()));
        let result = match &self.s3 {
            Some(s3) => self.download_s3(s3, &entry, &staging),
            None => self.download_into(&entry, &staging),
        };
        let _ = std::fs::remove_dir_all(&staging);
        result?;
        verify_entry(&entry).map_err(|problem| {
            let detail = format!("fetched files failed verification: {problem}");
            match &self.s3 {
                Some(s3) => SourceError::S3 {
                    bucket: s3.bucket.clone(),
                    key: s3.key(""),
                    detail,
                },
                None => SourceError::Fetch {
                    model_id: self.model_id.clone(),
                    detail,
                },
            }
        })
    }

    #[cfg(feature = "s3")]
    fn download_s3(
        &self,
        s3: &S3Location,
        entry: &Path,
        staging: &Path,
    ) -> Result<(), SourceError> {
        s3::download(s3, self.s3_endpoint.as_deref(), entry, staging)
    }

    #[cfg(not(feature = "s3"))]
    fn download_s3(&self, s3: &S3Location, _: &Path, _: &Path) -> Result<(), SourceError> {
        Err(SourceError::S3Disabled(s3.to_string()))
    }

    fn download_into(&self, entry: &Path, staging: &Path) -> Result<(), SourceError> {
        let fetch_err = |detail: String| SourceError::Fetch {
            model_id: self.model_id.clone(),
            detail,
        };
        let mut builder = hf_hub::api::sync::ApiBuilder::from_env()
            .with_cache_dir(staging.to_path_buf())
            .with_progress(false);
        if let Some(endpoint) = &self.hub_endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let api = builder.build().map_err(|e| fetch_err(e.to_string()))?;
        let repo = api.repo(hf_hub::Repo::with_revision(
            self.model_id.clone(),
            hf_hub::RepoType::Model,
            self.revision.clone(),
        ));
        let existing = read_manifest(entry).unwrap_or_default();
        let mut manifest = Manifest {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            files: Vec::new(),
        };
        for (name, required) in CHECKPOINT_FILES {
            let target = entry.join(name);
            if let Some(known) = existing.files.iter().find(|f| f.name == name)
                && known.check(&target).is_ok()
            {
                manifest.files.push(known.clone());
                continue;
            }
            match repo.download(name) {
                Ok(downloaded) => manifest
                    .files
                    .push(install_file(&downloaded, &target, name)?),
                Err(e) if !required && is_not_found(&e) => {}
                Err(e) => return Err(fetch_err(format!("{name}: {e}"))),
            }
        }
        if !manifest
            .files
            .iter()
            .any(|f| f.name == "tokenizer.json" || f.name == "vocab.txt")
        {
            return Err(fetch_err(
                "the repository has neither tokenizer.json nor vocab.txt".into(),
            ));
        }
        write_manifest(entry, &manifest)
    }

    fn not_found(&self, cache_problem: String, hub: String) -> SourceError {
        SourceError::NotFound {
            places: vec![
                "model directory: not set (--model-dir / MODEL_DIR)".into(),
                format!("cache {}: {cache_problem}", self.cache_entry().display()),
                format!("{}: {hub}", self.remote()),
            ],
        }
    }
}

/// Writes `manifest.json` (size + sha256 of each checkpoint file) into a checkpoint
/// directory, so that uploading the directory to S3 lets the S3 stage verify every
/// file it fetches by hash. Returns the manifest's path.
pub fn write_checkpoint_manifest(dir: &Path) -> Result<PathBuf, SourceError> {
    let checkpoint = Checkpoint::open(dir).map_err(SourceError::ModelDir)?;
    let mut files = Vec::new();
    for (name, _) in CHECKPOINT_FILES {
        let path = checkpoint.dir().join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        files.push(ManifestFile {
            name: name.into(),
            size: meta.len(),
            sha256: sha256_file(&path).map_err(SourceError::ModelDir)?,
            verified_mtime_ns: 0,
        });
    }
    let manifest = Manifest {
        model_id: dir.display().to_string(),
        revision: String::new(),
        files,
    };
    write_manifest(dir, &manifest)?;
    Ok(dir.join(MANIFEST))
}

/// `$MODEL_CACHE_DIR`, else `~/.cache/sentiment-stack/models`.
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("sentiment-stack")
        .join("models")
}

/// Why a checkpoint could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The explicit `--model-dir` is not a usable checkpoint.
    #[error("--model-dir: {0}")]
    ModelDir(#[source] ModelError),
    /// Nothing found anywhere; lists every place looked.
    #[error(
        "no checkpoint found. Looked in:\n  - {}\nOffline? Make a local checkpoint with \
         `model-cache fixture --size full --out DIR` and pass --model-dir DIR.",
        places.join("\n  - ")
    )]
    NotFound { places: Vec<String> },
    /// The Hub could not supply the files.
    #[error("fetching {model_id} from the Hub failed: {detail}")]
    Fetch { model_id: String, detail: String },
    /// `MODEL_S3_URI` (or `--model-s3-uri`) is not an S3 URI.
    #[error("{0:?} is not of the form s3://bucket/prefix")]
    BadS3Uri(String),
    /// An S3 object could not be fetched, or failed verification (`key` is the prefix
    /// when no single object is to blame).
    #[error("fetching s3://{bucket}/{key}: {detail}")]
    S3 {
        bucket: String,
        key: String,
        detail: String,
    },
    /// An S3 source in a build without S3 support.
    #[error("{0}: this build has no S3 support (build model-cache with the `s3` cargo feature)")]
    S3Disabled(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SourceError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn is_not_found(error: &hf_hub::api::sync::ApiError) -> bool {
    matches!(
        error,
        hf_hub::api::sync::ApiError::RequestError(e) if matches!(**e, ureq::Error::Status(404, _))
    )
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    model_id: String,
    revision: String,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
    /// The file's mtime when its sha256 was last checked: while it is unchanged the
    /// (slow, for 268 MB) hash is not recomputed on every start. Absent (0) in a
    /// manifest uploaded beside a checkpoint in S3.
    #[serde(default)]
    verified_mtime_ns: u128,
}

impl ManifestFile {
    /// Ok(true) if verified by hash just now, Ok(false) if trusted by size + mtime.
    fn check(&self, path: &Path) -> Result<bool, String> {
        let meta = std::fs::metadata(path).map_err(|_| format!("{} is missing", self.name))?;
        if meta.len() != self.size {
            return Err(format!(
                "{} is {} bytes, the manifest says {}",
                self.name,
                meta.len(),
                self.size
            ));
        }
        if mtime_ns(&meta) == Some(self.verified_mtime_ns) {
            return Ok(false);
        }
        let sha = sha256_file(path).map_err(|e| e.to_string())?;
        if sha != self.sha256 {
            return Err(format!(
                "{} is corrupt: sha256 {sha}, the manifest says {}",
                self.name, self.sha256
            ));
        }
        Ok(true)
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<u128> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

fn read_manifest(entry: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(entry.join(MANIFEST)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_manifest(entry: &Path, manifest: &Manifest) -> Result<(), SourceError> {
    let path = entry.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest).expect("plain struct");
    write_atomically(&path, &text).map_err(|e| SourceError::Fetch {
        model_id: manifest.model_id.clone(),
        detail: e.to_string(),
    })
}

/// Checks every file of a cache entry against its manifest. The error says what is
/// wrong ("missing", "x is corrupt: …").
fn verify_entry(entry: &Path) -> Result<Checkpoint, String> {
    let Some(mut manifest) = read_manifest(entry) else {
        return Err("missing".into());
    };
    let mut rehashed = false;
    for file in &mut manifest.files {
        let path = entry.join(&file.name);
        if file.check(&path)? {
            rehashed = true;
            if let Ok(meta) = std::fs::metadata(&path)
                && let Some(mtime) = mtime_ns(&meta)
            {
                file.verified_mtime_ns = mtime;
            }
        }
    }
    if rehashed {
        // Best effort: failing to record the check only costs a rehash next time.
        let _ = write_manifest(entry, &manifest);
    }
    Checkpoint::open(entry).map_err(|e| e.to_string())
}

/// Copies a downloaded file into the cache entry through a temporary file and a
/// rename, hashing it on the way.
fn install_file(from: &Path, to: &Path, name: &str) -> Result<ManifestFile, SourceError> {
    let tmp = to.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let mut input = File::open(from).map_err(|e| SourceError::io(from, e))?;
    let mut output = File::create(&tmp).map_err(|e| SourceError::io(&tmp, e))?;
    let (sha256, size) = copy_hashing(&mut input, &mut output).map_err(|e| match e {
        CopyError::Read(e) => SourceError::io(from, e),
        CopyError::Write(e) => SourceError::io(&tmp, e),
    })?;
    output.sync_all().map_err(|e| SourceError::io(&tmp, e))?;
    drop(output);
    std::fs::rename(&tmp, to).map_err(|e| SourceError::io(to, e))?;
    let meta = std::fs::metadata(to).map_err(|e| SourceError::io(to, e))?;
    Ok(ManifestFile {
        name: name.into(),
        size,
        sha256,
        verified_mtime_ns: mtime_ns(&meta).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_prefix() {
        let parse = |u: &str| {
            let l = S3Location::parse(u).unwrap();
            (l.bucket, l.prefix)
        };
        assert_eq!(parse("s3://b"), ("b".into(), "".into()));
        assert_eq!(parse("s3://b/"), ("b".into(), "".into()));
        assert_eq!(
            parse("s3://b/models/f16/"),
            ("b".into(), "models/f16".into())
        );
        for bad in ["https://b/x", "s3:///x", "b/x", ""] {
            let err = S3Location::parse(bad).unwrap_err();
            assert!(matches!(err, SourceError::BadS3Uri(_)), "{bad}: {err}");
        }
        let loc: S3Location = "s3://b/models/f16".parse().unwrap();
        assert_eq!(loc.to_string(), "s3://b/models/f16/");
        assert_eq!(loc.key("config.json"), "models/f16/config.json");
        let root = S3Location::parse("s3://b").unwrap();
        assert_eq!(root.key("config.json"), "config.json");
        assert_eq!(root.to_string(), "s3://b/");
    }

    #[test]
    fn s3_and_hub_entries_live_apart_in_the_cache() {
        let mut source = ModelSource {
            model_dir: None,
            model_id: "acme/m".into(),
            revision: "r1".into(),
            cache_dir: "/c".into(),
            hub_endpoint: None,
            offline: false,
            s3: None,
            s3_endpoint: None,
        };
        assert_eq!(source.cache_entry(), Path::new("/c/models--acme--m/r1"));
        source.s3 = Some(S3Location::parse("s3://bkt/models/f16/").unwrap());
        assert_eq!(source.cache_entry(), Path::new("/c/s3--bkt/models--f16"));
        source.s3 = Some(S3Location::parse("s3://bkt").unwrap());
        assert_eq!(source.cache_entry(), Path::new("/c/s3--bkt/_root"));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn without_the_feature_an_s3_source_says_how_to_get_one() {
        let cache = tempfile::tempdir().unwrap();
        let source = ModelSource {
            model_dir: None,
            model_id: "acme/m".into(),
            revision: "r1".into(),
            cache_dir: cache.path().into(),
            hub_endpoint: None,
            offline: false,
            s3: Some(S3Location::parse("s3://bkt/p").unwrap()),
            s3_endpoint: None,
        };
        let err = source.resolve().unwrap_err().to_string();
        assert!(
            err.contains("s3://bkt/p/") && err.contains("`s3` cargo feature"),
            "{err}"
        );
    }
}
