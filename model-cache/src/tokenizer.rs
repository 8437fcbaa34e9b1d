//! The BERT WordPiece tokenizer, from `tokenizer.json` or from `vocab.txt` plus
//! `tokenizer_config.json`, configured to truncate at the model's limit.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::ModelError;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// True when the text had more tokens than the limit and was cut.
    pub truncated: bool,
}

/// A tokenizer that adds `[CLS]`/`[SEP]` and truncates to `max_length` tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` if the directory has one, else builds the standard BERT
    /// tokenizer from `vocab.txt` and `tokenizer_config.json` (`do_lower_case`).
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<Self, ModelError> {
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| ModelError::BadFile {
                path: json.clone(),
                detail: e.to_string(),
            })?
        } else {
            let vocab = dir.join("vocab.txt");
            if !vocab.is_file() {
                return Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: "tokenizer.json or vocab.txt",
                });
            }
            let lowercase = read_do_lower_case(&dir.join("tokenizer_config.json"))?;
            bert_tokenizer_from_vocab(&vocab, lowercase)?
        };
        Self::from_tokenizer(inner, max_length)
    }

    /// Wraps a built tokenizer, truncating at `max_length` tokens.
    pub fn from_tokenizer(mut inner: Tokenizer, max_length: usize) -> Result<Self, ModelError> {
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            pad_id,
            max_length,
        })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenizes each text with special tokens, truncated to the limit.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoded>, ModelError> {
        texts
            .iter()
            .map(|text| {
                let encoding = self
                    .inner
                    .encode(*text, true)
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                Ok(Encoded {
                    truncated: !encoding.get_overflowing().is_empty(),
                    ids: encoding.get_ids().to_vec(),
                })
            })
            .collect()
    }

    /// Writes the tokenizer as `tokenizer.json` (without this process's truncation).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let mut plain = self.inner.clone();
        plain
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        plain
            .save(path, true)
            .map_err(|e| ModelError::Tokenizer(format!("writing {}: {e}", path.display())))
    }
}

fn read_do_lower_case(path: &Path) -> Result<bool, ModelError> {
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok(value
        .get("do_lower_case")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true))
}

/// The tokenizer `transformers` builds for a BERT-family `vocab.txt`: BERT normalizer
/// (clean text, CJK spacing, accent stripping with lower-casing), BERT pre-tokenizer,
/// WordPiece with `##` continuations and `[UNK]`, `[CLS] … [SEP]` post-processing.
pub fn bert_tokenizer_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer, ModelError> {
    let vocab_str = vocab.to_string_lossy().into_owned();
    let model = WordPiece::from_file(&vocab_str)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| ModelError::BadFile {
            path: vocab.to_path_buf(),
            detail: e.to_string(),
        })?;
    let id = |token: &str| {
        model_token_id(&model, token).ok_or_else(|| ModelError::BadFile {
            path: vocab.to_path_buf(),
            detail: format!("vocabulary has no {token} token"),
        })
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )))
        .with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}

fn model_token_id(model: &WordPiece, token: &str) -> Option<u32> {
    use tokenizers::Model;
    model.token_to_id(token)
}

/// A batch padded to its longest sequence: row-major `ids` and `mask` (1 = token,
/// 0 = padding), `rows × width`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub rows: usize,
    pub width: usize,
}

impl PaddedBatch {
    pub fn new(encoded: &[Encoded], pad_id: u32) -> Self {
        let width = encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encoded.len() * width);
        let mut mask = Vec::with_capacity(encoded.len() * width);
        for e in encoded {
            ids.extend_from_slice(&e.ids);
            ids.resize(ids.len() + width - e.ids.len(), pad_id);
            mask.extend(std::iter::repeat_n(1u8, e.ids.len()));
            mask.resize(mask.len() + width - e.ids.len(), 0);
        }
        Self {
            ids,
            mask,
            rows: encoded.len(),
            width,
        }
    }
}
