//! `config.json` as `transformers` writes it for `DistilBertForSequenceClassification`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The fields of a DistilBERT `config.json` that inference needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub activation: String,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Class index (as a string key, the way `transformers` writes it) → label.
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
}

fn default_model_type() -> String {
    "distilbert".into()
}

fn default_activation() -> String {
    "gelu".into()
}

impl ModelConfig {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |detail: String| ModelError::BadFile {
            path: path.to_path_buf(),
            detail,
        };
        if self.model_type != "distilbert" {
            return Err(bad(format!(
                "model_type is {:?}; only \"distilbert\" is supported",
                self.model_type
            )));
        }
        if self.activation != "gelu" {
            return Err(bad(format!(
                "activation is {:?}; only \"gelu\" is supported",
                self.activation
            )));
        }
        if self.n_heads == 0 || !self.dim.is_multiple_of(self.n_heads) {
            return Err(bad(format!(
                "dim {} is not divisible by n_heads {}",
                self.dim, self.n_heads
            )));
        }
        if self.num_labels() == 0 {
            return Err(bad(
                "id2label is empty: not a classification checkpoint".into()
            ));
        }
        Ok(())
    }

    /// Labels in class-index order. A gap in the indices is filled with `LABEL_i`, the
    /// name `transformers` gives an unnamed class.
    pub fn labels(&self) -> Vec<String> {
        let n = self.num_labels();
        (0..n)
            .map(|i| {
                self.id2label
                    .get(&i.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    pub fn num_labels(&self) -> usize {
        self.id2label
            .keys()
            .filter_map(|k| k.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }

    /// Parameters of the encoder plus the classification head.
    pub fn parameter_count(&self) -> usize {
        let (d, h, v, p, l) = (
            self.dim,
            self.hidden_dim,
            self.vocab_size,
            self.max_position_embeddings,
            self.num_labels(),
        );
        let embeddings = v * d + p * d + 2 * d;
        let layer = 4 * (d * d + d) + 2 * d + (d * h + h) + (h * d + d) + 2 * d;
        let head = (d * d + d) + (d * l + l);
        embeddings + self.n_layers * layer + head
    }
}
