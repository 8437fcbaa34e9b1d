//! Where the function's model comes from, chosen by configuration:
//!
//! 1. `MODEL_DIR`: a checkpoint directory used as is — the container-image route
//!    (`COPY model /opt/model`, `MODEL_DIR=/opt/model`) or any local directory.
//! 2. `MODEL_S3_URI=s3://bucket/prefix`: the checkpoint files under that prefix, fetched
//!    during init into `MODEL_S3_CACHE_DIR` (default `/tmp/sentiment-model`) and reused
//!    from there by a later init in the same sandbox. Warm invocations reuse the loaded
//!    classifier and never touch S3.
//! 3. Otherwise `model/` beside `bootstrap` (`$LAMBDA_TASK_ROOT/model`): the zip route.

use std::path::{Path, PathBuf};

use model_cache::{Checkpoint, ModelError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Files fetched from S3: (name, required). A checkpoint needs a tokenizer.json or a
/// vocab.txt; which one is checked by `Checkpoint::open` afterwards.
const S3_FILES: [(&str, bool); 5] = [
    ("config.json", true),
    ("model.safetensors", true),
    ("tokenizer.json", false),
    ("vocab.txt", false),
    ("tokenizer_config.json", false),
];
/// Written last into an S3 cache directory: its presence means every file arrived.
const COMPLETE_MARKER: &str = ".s3-complete.json";

/// Where to load the model from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A directory used as is (image or explicit).
    Dir(PathBuf),
    /// `model/` beside `bootstrap` in the deployment package.
    Bundled(PathBuf),
    /// An S3 prefix, fetched into `cache_dir`.
    S3 {
        bucket: String,
        prefix: String,
        cache_dir: PathBuf,
    },
}

/// Why the model could not be delivered. Each message names the configuration to fix.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// `MODEL_S3_URI` is not `s3://bucket[/prefix]`.
    #[error("MODEL_S3_URI={0:?} is not of the form s3://bucket/prefix")]
    BadS3Uri(String),
    /// The checkpoint directory is missing or incomplete.
    // The model error is part of the message, not a `source`: init reports the whole
    // chain, and a source would print it twice.
    #[error(
        "model at {location}: {problem}. Set MODEL_DIR to a checkpoint directory, MODEL_S3_URI to an s3:// prefix, or package the model as model/ beside bootstrap"
    )]
    Checkpoint {
        location: String,
        problem: Box<ModelError>,
    },
    /// An S3 request failed.
    #[error("fetching s3://{bucket}/{key}: {detail}")]
    S3 {
        bucket: String,
        key: String,
        detail: String,
    },
    /// Writing the fetched files failed (is /tmp large enough? see the function's
    /// ephemeral storage setting).
    #[error("writing {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl DeliveryError {
    /// The `errorType` reported to the Runtime API.
    pub fn error_type(&self) -> &'static str {
        match self {
            DeliveryError::BadS3Uri(_) => "Runtime.ConfigError",
            DeliveryError::Checkpoint { .. } => "Runtime.ModelNotFound",
            DeliveryError::S3 { .. } | DeliveryError::Io { .. } => "Runtime.ModelFetchError",
        }
    }
}

impl ModelLocation {
    /// Reads `MODEL_DIR`, `MODEL_S3_URI`, `MODEL_S3_CACHE_DIR` and `LAMBDA_TASK_ROOT`.
    pub fn from_env() -> Result<Self, DeliveryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(dir) = var("MODEL_DIR") {
            return Ok(ModelLocation::Dir(dir.into()));
        }
        if let Some(uri) = var("MODEL_S3_URI") {
            let (bucket, prefix) = parse_s3_uri(&uri)?;
            let cache_dir = var("MODEL_S3_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/sentiment-model"));
            return Ok(ModelLocation::S3 {
                bucket,
                prefix,
                cache_dir,
            });
        }
        let root = var("LAMBDA_TASK_ROOT").map(PathBuf::from).or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
        });
        Ok(ModelLocation::Bundled(
            root.unwrap_or_else(|| PathBuf::from(".")).join("model"),
        ))
    }

    /// Short description for logs.
    pub fn describe(&self) -> String {
        match self {
            ModelLocation::Dir(dir) => format!("MODEL_DIR {}", dir.display()),
            ModelLocation::Bundled(dir) => format!("bundled {}", dir.display()),
            ModelLocation::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Opens the checkpoint, fetching it from S3 first when that is the location.
    pub async fn resolve(&self) -> Result<Checkpoint, DeliveryError> {
        let dir = match self {
            ModelLocation::Dir(dir) | ModelLocation::Bundled(dir) => dir.clone(),
            ModelLocation::S3 {
                bucket,
                prefix,
                cache_dir,
            } => fetch_s3(bucket, prefix, cache_dir).await?,
        };
        Checkpoint::open(&dir).map_err(|problem| DeliveryError::Checkpoint {
            location: self.describe(),
            problem: Box::new(problem),
        })
    }
}

/// `s3://bucket/some/prefix/` → ("bucket", "some/prefix").
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), DeliveryError> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| DeliveryError::BadS3Uri(uri.into()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(DeliveryError::BadS3Uri(uri.into()));
    }
    Ok((bucket.into(), prefix.trim_matches('/').into()))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Fetched {
    files: Vec<(String, u64)>,
}

/// The local directory for an S3 prefix: reused when a previous init in this sandbox
/// completed it, else fetched now (all files concurrently).
async fn fetch_s3(bucket: &str, prefix: &str, cache_dir: &Path) -> Result<PathBuf, DeliveryError> {
    let local = cache_dir.join(bucket).join(prefix.replace('/', "--"));
    if is_complete(&local) {
        tracing::info!(dir = %local.display(), "reusing model fetched from S3 earlier in this sandbox");
        return Ok(local);
    }
    let io = |path: &Path, error| DeliveryError::Io {
        path: path.to_path_buf(),
        error,
    };
    tokio::fs::create_dir_all(&local)
        .await
        .map_err(|e| io(&local, e))?;
    let client = s3_client().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (name, required) in S3_FILES {
        let key = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let (client, bucket, target) = (client.clone(), bucket.to_string(), local.join(name));
        tasks.spawn(async move {
            fetch_object(&client, &bucket, &key, &target, required)
                .await
                .map(|size| size.map(|s| (name.to_string(), s)))
        });
    }
    let mut files = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let fetched = joined.map_err(|e| DeliveryError::S3 {
            bucket: bucket.into(),
            key: prefix.into(),
            detail: format!("download task failed: {e}"),
        })??;
        files.extend(fetched);
    }
    files.sort();
    let marker = local.join(COMPLETE_MARKER);
    let text = serde_json::to_vec(&Fetched { files }).unwrap_or_default();
    tokio::fs::write(&marker, text)
        .await
        .map_err(|e| io(&marker, e))?;
    Ok(local)
}

/// True when the marker lists files that are all present with their recorded sizes.
fn is_complete(local: &Path) -> bool {
    let Ok(text) = std::fs::read(local.join(COMPLETE_MARKER)) else {
        return false;
    };
    let Ok(fetched) = serde_json::from_slice::<Fetched>(&text) else {
        return false;
    };
    fetched
        .files
        .iter()
        .all(|(name, size)| std::fs::metadata(local.join(name)).is_ok_and(|m| m.len() == *size))
}

async fn s3_client() -> aws_sdk_s3::Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // Local S3 stand-ins (moto, MinIO) serve buckets as paths, not as subdomains.
    let custom_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Streams one object to `target` through a temporary file and a rename. `Ok(None)`
/// when an optional object does not exist.
async fn fetch_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    target: &Path,
    required: bool,
) -> Result<Option<u64>, DeliveryError> {
    let s3_err = |detail: String| DeliveryError::S3 {
        bucket: bucket.into(),
        key: key.into(),
        detail,
    };
    let output = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(output) => output,
        Err(e) => {
            let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key());
            if missing && !required {
                return Ok(None);
            }
            // Service errors read best as S3's code and message; transport errors need
            // the whole context (endpoint, DNS, TLS) to be diagnosable.
            let detail = match e.as_service_error() {
                Some(service) => format!(
                    "{}: {} (check MODEL_S3_URI and that the function's role may s3:GetObject)",
                    service.meta().code().unwrap_or("error"),
                    service.meta().message().unwrap_or("no message")
                ),
                None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            };
            return Err(s3_err(detail));
        }
    };
    let io = |error| DeliveryError::Io {
        path: target.to_path_buf(),
        error,
    };
    let partial = target.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
    let mut body = output.body;
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3_err(e.to_string()))?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(&partial, target).await.map_err(io)?;
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_prefix() {
        let parse = |u: &str| parse_s3_uri(u).unwrap();
        assert_eq!(parse("s3://b"), ("b".into(), "".into()));
        assert_eq!(parse("s3://b/"), ("b".into(), "".into()));
        assert_eq!(
            parse("s3://b/models/f16/"),
            ("b".into(), "models/f16".into())
        );
        assert!(parse_s3_uri("https://b/x").is_err());
        assert!(parse_s3_uri("s3:///x").is_err());
    }
}
