//! Where a checkpoint comes from: an explicit directory, the local cache, or the
//! Hugging Face Hub (S3 joins with the stack). Cached files are verified against a
//! manifest (size + sha256), written atomically, and fetched under a file lock so
//! concurrent processes never load a half-written file.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::{ModelError, sha256_file, write_atomically};

/// The model the servers serve when none is named.
pub const DEFAULT_MODEL_ID: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
/// The Hub commit of [`DEFAULT_MODEL_ID`] this project is pinned to.
pub const DEFAULT_REVISION: &str = "714eb0fa89d2f80546fda750413ed43d93601a13";

const MANIFEST: &str = "manifest.json";

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
    /// Never contact the Hub (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl ModelSource {
    /// `MODEL_DIR`, `MODEL_ID`, `MODEL_REVISION`, `MODEL_CACHE_DIR`, `HF_ENDPOINT` and
    /// `HF_HUB_OFFLINE`, with the pinned defaults.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            model_dir: var("MODEL_DIR").map(PathBuf::from),
            model_id: var("MODEL_ID").unwrap_or_else(|| DEFAULT_MODEL_ID.into()),
            revision: var("MODEL_REVISION").unwrap_or_else(|| DEFAULT_REVISION.into()),
            cache_dir: var("MODEL_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(default_cache_dir),
            hub_endpoint: var("HF_ENDPOINT"),
            offline: var("HF_HUB_OFFLINE")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
        }
    }

    /// Where this model id and revision live in the cache.
    pub fn cache_entry(&self) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", self.model_id.replace('/', "--")))
            .join(&self.revision)
    }

    /// Finds the checkpoint: the explicit directory, else a verified cache entry, else
    /// a fetch from the Hub into the cache.
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
        self.fetch().map_err(|e| match e {
            SourceError::Fetch { detail, .. } => self.not_found(cache_problem, detail),
            other => other,
        })
    }

    /// Makes sure the cache holds a verified copy, downloading what is missing or
    /// corrupt. Safe to run from several processes at once.
    pub fn fetch(&self) -> Result<Checkpoint, SourceError> {
        let entry = self.cache_entry();
        let parent = entry.parent().expect("entry has a parent");
        std::fs::create_dir_all(&entry).map_err(|e| SourceError::io(&entry, e))?;
        let lock_path = parent.join(format!("{}.lock", self.revision));
        let lock = File::create(&lock_path).map_err(|e| SourceError::io(&lock_path, e))?;
        lock.lock().map_err(|e| SourceError::io(&lock_path, e))?;

        // Another process may have finished the fetch while this one waited.
        if let Ok(checkpoint) = verify_entry(&entry) {
            return Ok(checkpoint);
        }
        let staging = parent.join(format!(".download-{}", std::process::id()));
        let result = self.download_into(&entry, &staging);
        let _ = std::fs::remove_dir_all(&staging);
        result?;
        verify_entry(&entry).map_err(|problem| SourceError::Fetch {
            model_id: self.model_id.clone(),
            detail: format!("fetched files failed verification: {problem}"),
        })
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
        // tokenizer.json is preferred, vocab.txt is the fallback: at least one must exist.
        let wanted: [(&str, bool); 5] = [
            ("config.json", true),
            ("model.safetensors", true),
            ("tokenizer.json", false),
            ("vocab.txt", false),
            ("tokenizer_config.json", false),
        ];
        for (name, required) in wanted {
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
                format!(
                    "Hugging Face Hub {}@{}: {hub}",
                    self.model_id, self.revision
                ),
            ],
        }
    }
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
    /// (slow, for 268 MB) hash is not recomputed on every start.
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
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(|e| SourceError::io(from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| SourceError::io(&tmp, e))?;
        size += n as u64;
    }
    output.sync_all().map_err(|e| SourceError::io(&tmp, e))?;
    drop(output);
    std::fs::rename(&tmp, to).map_err(|e| SourceError::io(to, e))?;
    let meta = std::fs::metadata(to).map_err(|e| SourceError::io(to, e))?;
    Ok(ManifestFile {
        name: name.into(),
        size,
        sha256: hex::encode(hasher.finalize()),
        verified_mtime_ns: mtime_ns(&meta).unwrap_or_default(),
    })
}
