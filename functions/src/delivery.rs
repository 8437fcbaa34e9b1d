//! Where the function's model comes from, chosen by configuration:
//!
//! 1. `MODEL_DIR`: a checkpoint directory used as is — the container-image route
//!    (`COPY model /opt/model`, `MODEL_DIR=/opt/model`) or any local directory.
//! 2. `MODEL_S3_URI=s3://bucket/prefix`: the checkpoint files under that prefix, fetched
//!    during init into `MODEL_S3_CACHE_DIR` (default `/tmp/sentiment-model`) and reused
//!    from there by a later init in the same sandbox. Warm invocations reuse the loaded
//!    classifier and never touch S3.
//! 3. Otherwise `model/` beside `bootstrap` (`$LAMBDA_TASK_ROOT/model`): the zip route.
//!
//! The fetching, verification (size + sha256) and reuse live in `model_cache::source`
//! (its S3 stage); this module maps the function's environment onto a
//! [`ModelSource`] and its errors onto the Runtime API's `errorType`s.

use std::path::{Path, PathBuf};

use model_cache::source::{DEFAULT_MODEL_ID, DEFAULT_REVISION, S3Location};
use model_cache::{Checkpoint, ModelError, ModelSource, SourceError};

/// Where the fetched copy of an S3 model lives unless `MODEL_S3_CACHE_DIR` says otherwise.
pub const DEFAULT_S3_CACHE_DIR: &str = "/tmp/sentiment-model";

/// Where to load the model from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A directory used as is (image or explicit).
    Dir(PathBuf),
    /// `model/` beside `bootstrap` in the deployment package.
    Bundled(PathBuf),
    /// An S3 prefix, fetched into `cache_dir`.
    S3 {
        location: S3Location,
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
    /// Fetching from S3 (or writing the copy) failed; the message names the bucket and
    /// key, or the local path (is /tmp large enough? see the ephemeral storage setting).
    #[error("{0}")]
    Source(SourceError),
}

impl DeliveryError {
    /// The `errorType` reported to the Runtime API.
    pub fn error_type(&self) -> &'static str {
        match self {
            DeliveryError::BadS3Uri(_) => "Runtime.ConfigError",
            DeliveryError::Checkpoint { .. } => "Runtime.ModelNotFound",
            DeliveryError::Source(e) => match e {
                SourceError::BadS3Uri(_) | SourceError::S3Disabled(_) => "Runtime.ConfigError",
                SourceError::ModelDir(_) | SourceError::NotFound { .. } => "Runtime.ModelNotFound",
                _ => "Runtime.ModelFetchError",
            },
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
            let location = S3Location::parse(&uri).map_err(|_| DeliveryError::BadS3Uri(uri))?;
            let cache_dir = var("MODEL_S3_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_S3_CACHE_DIR));
            return Ok(ModelLocation::S3 {
                location,
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
            ModelLocation::S3 { location, .. } => location.to_string(),
        }
    }

    /// The model-cache source for this location: a directory as is, or the S3 stage
    /// (verified copy in `cache_dir`, else a fetch). The Hub is never consulted.
    pub fn source(&self) -> ModelSource {
        let (model_dir, cache_dir, s3) = match self {
            ModelLocation::Dir(dir) | ModelLocation::Bundled(dir) => {
                (Some(dir.clone()), PathBuf::from(DEFAULT_S3_CACHE_DIR), None)
            }
            ModelLocation::S3 {
                location,
                cache_dir,
            } => (None, cache_dir.clone(), Some(location.clone())),
        };
        ModelSource {
            model_dir,
            model_id: DEFAULT_MODEL_ID.into(),
            revision: DEFAULT_REVISION.into(),
            cache_dir,
            hub_endpoint: None,
            offline: false,
            s3,
            s3_endpoint: None,
        }
    }

    /// Opens the checkpoint, fetching it from S3 first when that is the location (or
    /// reusing the copy an earlier init in this sandbox fetched and verified). Blocking:
    /// call it from init, not from inside an async task.
    pub fn resolve(&self) -> Result<Checkpoint, DeliveryError> {
        self.source().resolve().map_err(|e| self.delivery_error(e))
    }

    /// What a failure to resolve this location means for the function.
    pub fn delivery_error(&self, error: SourceError) -> DeliveryError {
        match error {
            SourceError::ModelDir(problem) => DeliveryError::Checkpoint {
                location: self.describe(),
                problem: Box::new(problem),
            },
            other => DeliveryError::Source(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_tell_configuration_from_missing_model_from_fetch_failure() {
        let bundled = ModelLocation::Bundled("/nonexistent/model".into());
        let err = bundled.resolve().unwrap_err();
        assert_eq!(err.error_type(), "Runtime.ModelNotFound");
        let text = err.to_string();
        assert!(
            text.contains("bundled /nonexistent/model") && text.contains("Set MODEL_DIR"),
            "{text}"
        );

        let s3 = |e| DeliveryError::Source(e).error_type();
        assert_eq!(s3(SourceError::BadS3Uri("x".into())), "Runtime.ConfigError");
        assert_eq!(
            s3(SourceError::S3 {
                bucket: "b".into(),
                key: "k".into(),
                detail: "NoSuchKey".into()
            }),
            "Runtime.ModelFetchError"
        );
        assert_eq!(
            DeliveryError::BadS3Uri("x".into()).error_type(),
            "Runtime.ConfigError"
        );
    }

    #[test]
    fn an_s3_location_maps_to_the_s3_stage_with_the_sandbox_cache() {
        let location = ModelLocation::S3 {
            location: S3Location::parse("s3://models/tiny/v1/").unwrap(),
            cache_dir: "/tmp/x".into(),
        };
        assert_eq!(location.describe(), "s3://models/tiny/v1/");
        let source = location.source();
        assert!(source.model_dir.is_none());
        assert_eq!(source.s3.as_ref().unwrap().prefix, "tiny/v1");
        assert_eq!(
            source.cache_entry(),
            Path::new("/tmp/x/s3--models/tiny--v1")
        );
    }
}
