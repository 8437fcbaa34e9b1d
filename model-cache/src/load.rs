//! The one way a binary gets a ready model: resolve the checkpoint, load the
//! classifier, prove it with a real forward pass, report what was loaded and how long
//! each step took. The server, the Lambda function and the CLI all call [`load`], so a
//! model that passes here is a model every runtime can serve.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::{Checkpoint, Classifier, ClassifierOptions, ModelError, ModelSource, SourceError};

/// A loaded, warmed-up model and where it came from.
pub struct Loaded {
    pub classifier: Classifier,
    pub checkpoint: Checkpoint,
    pub report: LoadReport,
}

/// What [`load`] did, for the start-up log line and `/info`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The source as a person reads it: the directory, `s3://…`, or `<model id>@<rev>`.
    pub source: String,
    /// The checkpoint directory actually loaded.
    pub dir: PathBuf,
    pub resolve_seconds: f64,
    /// Reading, checking and packing the weights (the classifier's own load time).
    pub load_seconds: f64,
    /// The warm-up forward pass.
    pub warmup_seconds: f64,
    /// Everything above, end to end.
    pub total_seconds: f64,
}

/// Why [`load`] failed, by step; each message names the source or directory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No usable checkpoint at the source (missing, unreachable, corrupt, not allowed).
    #[error("resolving model {source_name}: {error}")]
    Resolve {
        source_name: String,
        #[source]
        error: Box<SourceError>,
    },
    /// The checkpoint was found but cannot be loaded.
    #[error("loading the checkpoint in {}: {error}", dir.display())]
    Load {
        dir: PathBuf,
        #[source]
        error: Box<ModelError>,
    },
    /// The loaded model failed its first forward pass.
    #[error("warm-up forward pass of {}: {error}", dir.display())]
    Warmup {
        dir: PathBuf,
        #[source]
        error: Box<ModelError>,
    },
}

/// A short text the warm-up pass classifies before anything reports ready.
const WARMUP_TEXT: &str = "warm-up: one real forward pass before reporting ready";

/// Resolves `source`, loads it with `options` and runs one forward pass.
pub fn load(source: &ModelSource, options: &ClassifierOptions) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let source_name = source.describe();
    let checkpoint = source.resolve().map_err(|error| LoadError::Resolve {
        source_name: source_name.clone(),
        error: Box::new(error),
    })?;
    let resolve_seconds = started.elapsed().as_secs_f64();
    let dir = checkpoint.dir().to_path_buf();
    let classifier = Classifier::load(&checkpoint, options).map_err(|error| LoadError::Load {
        dir: dir.clone(),
        error: Box::new(error),
    })?;
    let warmup_started = Instant::now();
    match classifier.classify(&[WARMUP_TEXT]) {
        Ok(predictions) if predictions.len() == 1 => {}
        Ok(predictions) => {
            return Err(LoadError::Warmup {
                dir,
                error: Box::new(ModelError::Input(format!(
                    "one text gave {} predictions",
                    predictions.len()
                ))),
            });
        }
        Err(error) => {
            return Err(LoadError::Warmup {
                dir,
                error: Box::new(error),
            });
        }
    }
    let report = LoadReport {
        source: source_name,
        load_seconds: classifier.info().load_seconds,
        dir,
        resolve_seconds,
        warmup_seconds: warmup_started.elapsed().as_secs_f64(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let info = classifier.info();
    tracing::info!(
        model = %report.source,
        dir = %report.dir.display(),
        threads = info.threads,
        kernel = %info.kernel,
        stored_dtype = %info.stored_dtype,
        parameters = info.parameters,
        resolve_ms = report.resolve_seconds * 1e3,
        load_ms = report.load_seconds * 1e3,
        warmup_ms = report.warmup_seconds * 1e3,
        total_ms = report.total_seconds * 1e3,
        "model loaded"
    );
    Ok(Loaded {
        classifier,
        checkpoint,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{FixtureSize, FixtureSpec, write};

    fn dir_source(dir: PathBuf) -> ModelSource {
        ModelSource {
            model_dir: Some(dir),
            model_id: "unused".into(),
            revision: "unused".into(),
            cache_dir: PathBuf::from("/nonexistent"),
            hub_endpoint: None,
            offline: true,
            s3: None,
            s3_endpoint: None,
        }
    }

    #[test]
    fn a_fixture_loads_warms_up_and_reports_each_step() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
        let loaded = load(
            &dir_source(tmp.path().to_path_buf()),
            &ClassifierOptions::default(),
        )
        .unwrap();
        let r = &loaded.report;
        assert_eq!(r.dir, tmp.path());
        assert_eq!(r.source, tmp.path().display().to_string());
        assert!(r.total_seconds >= r.load_seconds + r.warmup_seconds);
        assert_eq!(loaded.classifier.classify(&["fine"]).unwrap().len(), 1);
    }

    #[test]
    fn each_failing_step_names_itself_and_the_place() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nowhere");
        let err = load(&dir_source(missing.clone()), &ClassifierOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, LoadError::Resolve { .. }), "{err}");
        assert!(err.to_string().contains("nowhere"), "{err}");

        write(tmp.path(), &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), b"not safetensors").unwrap();
        let err = load(
            &dir_source(tmp.path().to_path_buf()),
            &ClassifierOptions::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, LoadError::Load { .. }), "{err}");
        assert!(
            err.to_string().contains(&tmp.path().display().to_string()),
            "{err}"
        );
    }
}
