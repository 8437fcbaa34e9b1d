//! `Classifier`: tokenizer + DistilBERT + softmax, behind one `classify` call.

use std::time::{Duration, Instant};

use candle_core::Tensor;
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::kernels::{Precision, effective_precision, kernel_name};
use crate::model::{DistilBertClassifier, probabilities};
use crate::tokenizer::{Encoded, PaddedBatch, TextTokenizer};
use crate::weights::WeightFile;
use crate::{ModelError, threads};
use sentiment_api::Prediction;

/// How to build a [`Classifier`].
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// Inference threads; `None` means [`threads::default_threads`].
    pub threads: Option<usize>,
    /// Token limit per text, `[CLS]` and `[SEP]` included; `None` means the model's
    /// `max_position_embeddings`. Larger values are clamped to it.
    pub max_length: Option<usize>,
    /// What the encoder's dense layers compute in; bf16 is opt-in and needs AMX.
    pub precision: Precision,
}

/// What the servers report about the loaded model (`/info`, start-up log).
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierInfo {
    pub labels: Vec<String>,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab_size: usize,
    pub max_length: usize,
    pub parameters: usize,
    /// The dtype stored in the checkpoint.
    pub stored_dtype: String,
    /// What the dense layers compute in here (`f32`, or `bf16` when requested and the
    /// CPU has AMX); everything else is f32.
    pub compute_dtype: String,
    /// The dense-layer kernel: `amx-bf16`, `amx-bf16x3`, `avx512-f32` or `candle-f32`.
    pub kernel: String,
    pub threads: usize,
    pub load_seconds: f64,
}

/// Token counts of one `classify` call, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// Tokens per text, special tokens included, after truncation.
    pub tokens: Vec<usize>,
    /// The length every sequence was padded to.
    pub padded_length: usize,
    pub tokenize_time: Duration,
    pub forward_time: Duration,
}

/// A loaded sentiment classifier. `classify` is safe to call from several threads, but
/// each call uses the whole thread pool: one caller at a time gives the best latency.
pub struct Classifier {
    tokenizer: TextTokenizer,
    model: DistilBertClassifier,
    pool: rayon::ThreadPool,
    info: ClassifierInfo,
}

impl Classifier {
    pub fn load(checkpoint: &Checkpoint, options: &ClassifierOptions) -> Result<Self, ModelError> {
        let started = Instant::now();
        let config: ModelConfig = checkpoint.config()?;
        let max_length = options
            .max_length
            .unwrap_or(config.max_position_embeddings)
            .clamp(2, config.max_position_embeddings);
        let tokenizer = TextTokenizer::from_dir(checkpoint.dir(), max_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::BadFile {
                path: checkpoint.dir().to_path_buf(),
                detail: format!(
                    "tokenizer has {} tokens but the model's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let threads = options
            .threads
            .unwrap_or_else(threads::default_threads)
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inference-{i}"))
            .build()
            .map_err(|e| ModelError::Threads(e.to_string()))?;

        let weights = checkpoint.weights_path();
        let stored_dtype = crate::checkpoint::stored_dtype(&weights)?;
        let model = pool.install(|| {
            let file = WeightFile::open(&weights)?;
            let model = DistilBertClassifier::load(&file, &config, options.precision)?;
            file.release_resident_pages();
            Ok::<_, ModelError>(model)
        })?;
        let info = ClassifierInfo {
            labels: config.labels(),
            dim: config.dim,
            layers: config.n_layers,
            heads: config.n_heads,
            vocab_size: config.vocab_size,
            max_length,
            parameters: config.parameter_count(),
            stored_dtype,
            compute_dtype: effective_precision(options.precision).to_string(),
            kernel: kernel_name(options.precision).into(),
            threads,
            load_seconds: started.elapsed().as_secs_f64(),
        };
        Ok(Self {
            tokenizer,
            model,
            pool,
            info,
        })
    }

    pub fn info(&self) -> &ClassifierInfo {
        &self.info
    }

    pub fn labels(&self) -> &[String] {
        &self.info.labels
    }

    /// Classifies `texts`, one prediction each, in order.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Prediction>, ModelError> {
        self.classify_with_stats(texts).map(|(p, _)| p)
    }

    /// Like [`classify`](Self::classify), plus token counts and timings for metrics.
    pub fn classify_with_stats(
        &self,
        texts: &[&str],
    ) -> Result<(Vec<Prediction>, BatchStats), ModelError> {
        if texts.is_empty() {
            return Ok((
                Vec::new(),
                BatchStats {
                    tokens: Vec::new(),
                    padded_length: 0,
                    tokenize_time: Duration::ZERO,
                    forward_time: Duration::ZERO,
                },
            ));
        }
        let started = Instant::now();
        let encoded = self.tokenizer.encode_batch(texts)?;
        let tokenize_time = started.elapsed();
        let started = Instant::now();
        let probs = self.pool.install(|| self.probabilities(&encoded))?;
        let forward_time = started.elapsed();
        let predictions = probs
            .iter()
            .zip(&encoded)
            .map(|(row, enc)| {
                let (best, score) =
                    row.iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f32::MIN),
                            |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
                        );
                Prediction {
                    label: self.info.labels[best].clone(),
                    score,
                    truncated: enc.truncated,
                }
            })
            .collect();
        let stats = BatchStats {
            tokens: encoded.iter().map(|e| e.ids.len()).collect(),
            padded_length: encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0),
            tokenize_time,
            forward_time,
        };
        Ok((predictions, stats))
    }

    /// Raw class logits for already-tokenized ids (used by the reference tests).
    pub fn logits_for_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encoded: Vec<Encoded> = ids
            .iter()
            .map(|ids| Encoded {
                ids: ids.clone(),
                truncated: false,
            })
            .collect();
        self.pool.install(|| {
            let (ids, mask) = self.batch_tensors(&encoded)?;
            let logits = self
                .model
                .logits(&ids, &mask)
                .map_err(ModelError::Inference)?;
            logits.to_vec2::<f32>().map_err(ModelError::Inference)
        })
    }

    /// Tokenizes like `classify` does: ids with special tokens, truncated.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>, ModelError> {
        self.tokenizer.encode_batch(texts)
    }

    fn probabilities(&self, encoded: &[Encoded]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (ids, mask) = self.batch_tensors(encoded)?;
        let logits = self
            .model
            .logits(&ids, &mask)
            .map_err(ModelError::Inference)?;
        probabilities(&logits)
            .and_then(|p| p.to_vec2::<f32>())
            .map_err(ModelError::Inference)
    }

    /// Tokenizes and pads like `classify` does: the exact model inputs.
    pub fn model_inputs(&self, texts: &[&str]) -> Result<PaddedBatch, ModelError> {
        Ok(PaddedBatch::new(
            &self.tokenizer.encode_batch(texts)?,
            self.tokenizer.pad_id(),
        ))
    }

    fn batch_tensors(&self, encoded: &[Encoded]) -> Result<(Tensor, Tensor), ModelError> {
        for e in encoded {
            if e.ids.len() > self.info.max_length {
                return Err(ModelError::Input(format!(
                    "{} tokens is over the model's limit of {}",
                    e.ids.len(),
                    self.info.max_length
                )));
            }
            if let Some(bad) = e
                .ids
                .iter()
                .find(|&&id| id as usize >= self.info.vocab_size)
            {
                return Err(ModelError::Input(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.info.vocab_size
                )));
            }
        }
        let batch = PaddedBatch::new(encoded, self.tokenizer.pad_id());
        let shape = (batch.rows, batch.width);
        let device = self.model.device();
        let ids = Tensor::from_vec(batch.ids, shape, device).map_err(ModelError::Inference)?;
        let mask = Tensor::from_vec(batch.mask, shape, device).map_err(ModelError::Inference)?;
        Ok((ids, mask))
    }
}
