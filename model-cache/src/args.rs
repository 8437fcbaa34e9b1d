//! Command-line flags for choosing and running a model, shared by every binary that
//! loads one (the server, the Lambda function through its environment, the CLI).

use std::path::PathBuf;

use crate::ClassifierOptions;
use crate::kernels::Precision;
use crate::source::{
    DEFAULT_MODEL_ID, DEFAULT_REVISION, ModelSource, S3Location, default_cache_dir,
};

/// `--model-dir`, `--model-id`, `--model-revision`, `--model-cache-dir`, `--offline`,
/// `--model-s3-uri`, `--precision`, `--threads`, each with an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A checkpoint directory to use as is (config.json, model.safetensors, tokenizer).
    #[arg(long, env = "MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Hugging Face model id to fetch into the cache when no --model-dir is given.
    #[arg(long, env = "MODEL_ID", default_value = DEFAULT_MODEL_ID)]
    pub model_id: String,
    /// Hub revision (commit) of --model-id.
    #[arg(long, env = "MODEL_REVISION", default_value = DEFAULT_REVISION)]
    pub model_revision: String,
    /// Where fetched checkpoints are cached [default: ~/.cache/sentiment-stack/models].
    #[arg(long, env = "MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,
    /// Never contact the Hub.
    #[arg(long, env = "HF_HUB_OFFLINE", value_parser = parse_flag, default_value = "false")]
    pub offline: bool,
    /// What the encoder's dense layers compute in: f32 (matches transformers to 1e-5);
    /// on AMX tiles (Sapphire Rapids and later; f32 elsewhere) bf16x3 (f32's accuracy
    /// from three bf16 products) or bf16 (one product, drift up to ~0.01).
    #[arg(long, env = "MODEL_PRECISION", default_value = "f32")]
    pub precision: Precision,
    /// Fetch the checkpoint from this S3 prefix (s3://bucket/prefix) instead of the Hub;
    /// needs a build with the `s3` feature. AWS_ENDPOINT_URL_S3 points it at a stand-in.
    #[arg(long, env = "MODEL_S3_URI")]
    pub model_s3_uri: Option<S3Location>,
    /// Inference threads [default: the CPUs this process may use: cgroup quota and
    /// affinity, or inside Lambda the vCPUs its memory size buys].
    #[arg(long, env = "MODEL_THREADS", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
}

fn parse_flag(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true/false or 1/0, got {other:?}")),
    }
}

impl ModelArgs {
    /// `--threads`, else what this process may use.
    pub fn thread_count(&self) -> usize {
        self.threads
            .map(|n| n as usize)
            .unwrap_or_else(crate::threads::default_threads)
    }

    /// How to build the classifier: these threads and this precision.
    pub fn classifier_options(&self) -> ClassifierOptions {
        ClassifierOptions {
            threads: Some(self.thread_count()),
            max_length: None,
            precision: self.precision,
        }
    }

    pub fn source(&self) -> ModelSource {
        ModelSource {
            model_dir: self.model_dir.clone(),
            model_id: self.model_id.clone(),
            revision: self.model_revision.clone(),
            cache_dir: self
                .model_cache_dir
                .clone()
                .unwrap_or_else(default_cache_dir),
            hub_endpoint: std::env::var("HF_ENDPOINT").ok().filter(|v| !v.is_empty()),
            offline: self.offline,
            s3: self.model_s3_uri.clone(),
            s3_endpoint: None,
        }
    }
}
