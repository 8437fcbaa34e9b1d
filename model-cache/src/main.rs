//! `model-cache`: fetch, make, inspect and try DistilBERT sentiment checkpoints.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use model_cache::args::ModelArgs;
use model_cache::fixture::{FixtureDtype, FixtureSize, FixtureSpec};
use model_cache::{Checkpoint, Classifier, ClassifierOptions, threads};

#[derive(Parser)]
#[command(
    version,
    about = "Fetch, make, inspect and try DistilBERT sentiment checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model from the Hugging Face Hub (or --model-s3-uri) into the verified cache.
    Fetch {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Write a deterministic random DistilBERT checkpoint (weights cannot be downloaded here).
    Fixture {
        #[arg(long, value_enum, default_value = "tiny")]
        size: FixtureSize,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: FixtureDtype,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// bert-base-uncased vocab.txt to use [default: <cache>/vocab/bert-base-uncased.txt
        /// for --size full when present, else a generated vocabulary]
        #[arg(long, env = "MODEL_FIXTURE_VOCAB")]
        vocab: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write manifest.json (size + sha256 of each file) into a checkpoint directory, so
    /// that a copy uploaded to S3 is verified file by file when fetched.
    Manifest { dir: PathBuf },
    /// Print a checkpoint's dimensions, parameter count, dtype and sha256 as JSON.
    Info { dir: PathBuf },
    /// Classify texts (arguments, or one per line on stdin); one JSON line per text.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// Inference threads [default: the CPUs this process may use]
        #[arg(long, env = "MODEL_THREADS")]
        threads: Option<usize>,
        texts: Vec<String>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Fetch { model } => {
            let source = model.source();
            let checkpoint = source
                .fetch()
                .with_context(|| format!("fetching from {}", source.remote()))?;
            println!("{}", checkpoint.dir().display());
        }
        Command::Fixture {
            size,
            dtype,
            seed,
            vocab,
            out,
        } => {
            let vocab = vocab.or_else(|| {
                let cached = default_vocab_path();
                (size == FixtureSize::Full && cached.is_file()).then_some(cached)
            });
            let spec = FixtureSpec {
                size,
                dtype,
                seed,
                vocab,
            };
            let summary = model_cache::fixture::write(&out, &spec)
                .with_context(|| format!("writing fixture to {}", out.display()))?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Manifest { dir } => {
            let path = model_cache::source::write_checkpoint_manifest(&dir)?;
            println!("{}", path.display());
        }
        Command::Info { dir } => {
            let info = Checkpoint::open(&dir)?.info()?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        Command::Predict {
            model,
            threads: thread_count,
            texts,
        } => {
            let thread_count = thread_count.unwrap_or_else(threads::default_threads);
            // SAFETY: still single-threaded; nothing else touches the environment yet.
            unsafe { threads::export_thread_count(thread_count) };
            let checkpoint = model.source().resolve()?;
            let classifier = Classifier::load(
                &checkpoint,
                &ClassifierOptions {
                    threads: Some(thread_count),
                    max_length: None,
                    precision: model.precision,
                },
            )?;
            let texts = if texts.is_empty() {
                std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<std::io::Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|line| !line.trim().is_empty())
                    .collect()
            } else {
                texts
            };
            let request = model_cache::PredictRequest::Batch { inputs: texts };
            model_cache::wire::validate(&request).context("invalid input")?;
            let model_cache::PredictRequest::Batch { inputs: texts } = request else {
                unreachable!("built as a batch above")
            };
            let mut stdout = std::io::stdout().lock();
            for chunk in texts.chunks(32) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                for prediction in classifier.classify(&refs)? {
                    writeln!(stdout, "{}", serde_json::to_string(&prediction)?)?;
                }
            }
        }
    }
    Ok(())
}

/// Where `scripts/fetch-vocab.sh` puts the real vocabulary.
fn default_vocab_path() -> PathBuf {
    std::env::var_os("MODEL_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(model_cache::source::default_cache_dir)
        .join("vocab")
        .join("bert-base-uncased.txt")
}
