//! A checkpoint directory in the Hugging Face layout, and what `info` reports about it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::ModelConfig;
use crate::{ModelError, sha256_file};

/// A directory with `config.json`, `model.safetensors` and `tokenizer.json` or `vocab.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// Checks the directory has every file inference needs.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(ModelError::NotADirectory(dir));
        }
        for file in ["config.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(ModelError::MissingFile { dir, file });
            }
        }
        if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
            return Err(ModelError::MissingFile {
                dir,
                file: "tokenizer.json or vocab.txt",
            });
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    pub fn config(&self) -> Result<ModelConfig, ModelError> {
        ModelConfig::read(&self.config_path())
    }

    /// Dimensions, parameter count, stored dtype and the weights' sha256.
    pub fn info(&self) -> Result<CheckpointInfo, ModelError> {
        let config = self.config()?;
        let weights = self.weights_path();
        let dtype = stored_dtype(&weights)?;
        let weights_bytes = std::fs::metadata(&weights)
            .map_err(|e| ModelError::io(&weights, e))?
            .len();
        let fixture = std::fs::read_to_string(self.dir.join(crate::fixture::FIXTURE_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        Ok(CheckpointInfo {
            dir: self.dir.clone(),
            parameters: config.parameter_count(),
            dim: config.dim,
            layers: config.n_layers,
            heads: config.n_heads,
            hidden_dim: config.hidden_dim,
            vocab_size: config.vocab_size,
            max_position_embeddings: config.max_position_embeddings,
            labels: config.labels(),
            dtype,
            weights_bytes,
            weights_sha256: sha256_file(&weights)?,
            fixture,
        })
    }
}

/// What `model-cache info` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    pub dir: PathBuf,
    pub parameters: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub hidden_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub labels: Vec<String>,
    pub dtype: String,
    pub weights_bytes: u64,
    pub weights_sha256: String,
    /// Present for generated fixtures: size, seed and which vocabulary they use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixture: Option<serde_json::Value>,
}

/// The dtype the safetensors file stores its weights in (`F32`, `F16`, `BF16`, or
/// `mixed` when they differ).
pub fn stored_dtype(path: &Path) -> Result<String, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is only read; a concurrent writer replaces checkpoints by
    // rename, never in place.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let mut dtypes: Vec<String> = metadata
        .tensors()
        .values()
        .map(|t| format!("{:?}", t.dtype))
        .collect();
    dtypes.sort();
    dtypes.dedup();
    Ok(match dtypes.as_slice() {
        [one] => one.clone(),
        _ => "mixed".into(),
    })
}
