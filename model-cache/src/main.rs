//! `model-cache`: fetch, make, inspect and try DistilBERT sentiment checkpoints.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use model_cache::args::ModelArgs;
use model_cache::fixture::{FixtureDtype, FixtureSize, FixtureSpec};
use model_cache::{Checkpoint, Classifier, threads};
use sentiment_api::logging::LogFormat;

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
    /// Classify texts (arguments, or one per line on stdin: any number of lines, read
    /// and classified in batches, blank lines skipped); one JSON line per text.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        texts: Vec<String>,
    },
}

/// Texts per forward pass when classifying a stream.
const PREDICT_BATCH: usize = 32;

fn main() -> Result<()> {
    sentiment_api::logging::init(LogFormat::Text, "warn");
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
        Command::Predict { model, texts } => {
            // SAFETY: still single-threaded; nothing else touches the environment yet.
            unsafe { threads::export_thread_count(model.thread_count()) };
            let loaded = model_cache::load(&model.source(), &model.classifier_options())?;
            let mut stdout = std::io::stdout().lock();
            if texts.is_empty() {
                let stdin = std::io::stdin().lock();
                predict_lines(&loaded.classifier, stdin, &mut stdout)?;
            } else {
                let numbered = texts.iter().enumerate().map(|(i, t)| (i + 1, t.clone()));
                predict_batches(&loaded.classifier, numbered, "argument", &mut stdout)?;
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

/// Classifies stdin's non-blank lines, [`PREDICT_BATCH`] at a time, printing each
/// batch's answers before reading on: a file of any length streams through.
fn predict_lines(classifier: &Classifier, input: impl BufRead, out: &mut impl Write) -> Result<()> {
    let mut lines = input.lines().enumerate();
    let numbered = std::iter::from_fn(|| {
        lines.by_ref().find_map(|(i, line)| match line {
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(Ok((i + 1, text))),
            Err(e) => Some(Err(e)),
        })
    });
    let mut read_error = None;
    let texts = numbered.map_while(|r| r.map_err(|e| read_error = Some(e)).ok());
    predict_batches(classifier, texts, "line", out)?;
    match read_error {
        Some(e) => Err(anyhow::Error::new(e).context("reading stdin")),
        None => Ok(()),
    }
}

/// Classifies `(number, text)` pairs in batches; a text the API would refuse stops the
/// run with an error naming its `what` (line or argument) and number.
fn predict_batches(
    classifier: &Classifier,
    texts: impl Iterator<Item = (usize, String)>,
    what: &str,
    out: &mut impl Write,
) -> Result<()> {
    let mut batch: Vec<String> = Vec::with_capacity(PREDICT_BATCH);
    let flush = |batch: &mut Vec<String>, out: &mut dyn Write| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        for prediction in classifier.classify(&refs)? {
            writeln!(out, "{}", serde_json::to_string(&prediction)?)?;
        }
        out.flush()?;
        batch.clear();
        Ok(())
    };
    for (number, text) in texts {
        sentiment_api::validate_text(&format!("{what} {number}"), &text)?;
        batch.push(text);
        if batch.len() == PREDICT_BATCH {
            flush(&mut batch, out)?;
        }
    }
    flush(&mut batch, out)
}
