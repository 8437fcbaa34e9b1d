//! DistilBERT sentiment inference shared by the Kubernetes server, the Lambda function
//! and the benchmark: checkpoint resolution and cache ([`source`]), tokenizer, the
//! candle model and [`Classifier`], and [`fixture`] checkpoints. The HTTP wire types
//! live in `sentiment-api`.

pub mod args;
pub mod checkpoint;
pub mod classifier;
mod cls_attention;
pub mod config;
pub mod fixture;
pub mod kernels;
pub mod load;
mod model;
pub mod source;
pub mod threads;
pub mod tokenizer;
mod weights;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use checkpoint::{Checkpoint, CheckpointInfo};
pub use classifier::{BatchStats, Classifier, ClassifierInfo, ClassifierOptions};
pub use kernels::Precision;
pub use load::{LoadError, LoadReport, Loaded, load};
pub use sentiment_api::Prediction;
pub use source::{ModelSource, SourceError};

/// Errors loading a checkpoint or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint path is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file the checkpoint needs is absent.
    #[error("{dir} has no {file}")]
    MissingFile { dir: PathBuf, file: &'static str },
    /// A file exists but its content is unusable.
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The weights file does not hold what the config describes.
    #[error("loading weights from {path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// Tokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Input the model cannot take (over-long or out-of-vocabulary ids).
    #[error("invalid model input: {0}")]
    Input(String),
    /// The forward pass failed.
    #[error("inference failed: {0}")]
    Inference(#[source] candle_core::Error),
    /// The inference thread pool could not be built.
    #[error("starting inference threads: {0}")]
    Threads(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn weights(path: &Path, source: candle_core::Error) -> Self {
        ModelError::Weights {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // Writing to a sink never fails, so every error is the file's.
    let (sha256, _size) = copy_hashing(&mut file, &mut std::io::sink())
        .map_err(|(CopyError::Read(e) | CopyError::Write(e))| ModelError::io(path, e))?;
    Ok(sha256)
}

/// Which side of [`copy_hashing`] failed, so the caller can name the right file.
pub(crate) enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `input` to `output` in 1 MiB pieces, hashing them on the way: the content's
/// hex sha256 and its size in bytes. To hash only, copy to [`std::io::sink`].
pub(crate) fn copy_hashing(
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(String, u64), CopyError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(CopyError::Write)?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a
/// rename, so a reader sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ModelError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| ModelError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ModelError::io(path, e))?;
    // tempfile creates 0600; checkpoints must stay readable by a non-root server user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| ModelError::io(path, e))?;
    }
    tmp.persist(path)
        .map_err(|e| ModelError::io(path, e.error))?;
    Ok(())
}
