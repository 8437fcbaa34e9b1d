//! Deterministic random DistilBERT checkpoints. Real weights cannot be downloaded on
//! the machines this project is built on; a fixture has the same files, key names and
//! (for `full`) the same dimensions and compute cost, so everything downstream of the
//! loader is exercised for real.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::Serialize;
use serde_json::json;

use crate::tokenizer::{TextTokenizer, bert_tokenizer_from_vocab};
use crate::{ModelError, sha256_file, write_atomically};

/// Written beside a fixture's weights: how it was made.
pub const FIXTURE_FILE: &str = "fixture.json";
/// sha256 of the bert-base-uncased `vocab.txt` (30,522 lines).
pub const BERT_BASE_UNCASED_VOCAB_SHA256: &str =
    "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixtureSize {
    /// A few hundred KB: 2 layers of width 32, for unit tests.
    Tiny,
    /// distilbert-base-uncased dimensions: about 66 M parameters.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixtureDtype {
    F32,
    F16,
    Bf16,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct FixtureSpec {
    pub size: FixtureSize,
    pub dtype: FixtureDtype,
    pub seed: u64,
    /// A bert-base-uncased `vocab.txt` to use (checked against its sha256); `None`
    /// generates a small vocabulary.
    pub vocab: Option<PathBuf>,
}

impl FixtureSpec {
    pub fn new(size: FixtureSize) -> Self {
        Self {
            size,
            dtype: FixtureDtype::F32,
            seed: 42,
            vocab: None,
        }
    }
}

struct Dims {
    dim: usize,
    layers: usize,
    heads: usize,
    hidden: usize,
    positions: usize,
    vocab: usize,
}

impl FixtureSize {
    fn dims(self, vocab_len: usize) -> Dims {
        match self {
            FixtureSize::Tiny => Dims {
                dim: 32,
                layers: 2,
                heads: 4,
                hidden: 64,
                positions: 512,
                vocab: vocab_len,
            },
            FixtureSize::Full => Dims {
                dim: 768,
                layers: 6,
                heads: 12,
                hidden: 3072,
                positions: 512,
                vocab: vocab_len.max(30522),
            },
        }
    }
}

/// Writes a checkpoint into `dir` (created if missing). Every file is written
/// atomically; the same spec always gives the same bytes.
pub fn write(dir: &Path, spec: &FixtureSpec) -> Result<FixtureSummary, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let (mut vocab, vocab_source) = match &spec.vocab {
        Some(path) => {
            let sha = sha256_file(path)?;
            if sha != BERT_BASE_UNCASED_VOCAB_SHA256 {
                return Err(ModelError::BadFile {
                    path: path.clone(),
                    detail: format!(
                        "sha256 {sha} is not bert-base-uncased's vocab.txt ({BERT_BASE_UNCASED_VOCAB_SHA256})"
                    ),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
            let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
            (
                tokens,
                format!("bert-base-uncased vocab.txt (sha256 {sha})"),
            )
        }
        None => (generated_vocab(), "generated".to_string()),
    };
    let dims = spec.size.dims(vocab.len());
    // Pad a generated vocabulary to the real size so `full` costs what the real model does.
    let mut unused = 0;
    while vocab.len() < dims.vocab {
        vocab.push(format!("[unused{unused}]"));
        unused += 1;
    }

    let vocab_path = dir.join("vocab.txt");
    write_atomically(&vocab_path, (vocab.join("\n") + "\n").as_bytes())?;
    let tokenizer = TextTokenizer::from_tokenizer(
        bert_tokenizer_from_vocab(&vocab_path, true)?,
        dims.positions,
    )?;
    let tokenizer_tmp = dir.join(".tokenizer.json.tmp");
    tokenizer.save(&tokenizer_tmp)?;
    std::fs::rename(&tokenizer_tmp, dir.join("tokenizer.json"))
        .map_err(|e| ModelError::io(dir.join("tokenizer.json"), e))?;
    write_atomically(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&json!({
            "do_lower_case": true,
            "model_max_length": dims.positions,
            "tokenizer_class": "DistilBertTokenizer",
        }))
        .expect("static JSON")
        .as_bytes(),
    )?;
    write_atomically(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config_json(&dims))
            .expect("static JSON")
            .as_bytes(),
    )?;

    let mut tensors = weight_tensors(&dims, spec.seed);
    let weights = dir.join("model.safetensors");
    write_weights(&weights, &tensors, spec.dtype)?;
    // A random head is biased towards one class for every input. Shift its bias by the
    // median logit gap over a fixed set of texts so labels vary with the text, as they
    // do with real weights.
    let gap = median_logit_gap(dir)?;
    let bias = &mut tensors.last_mut().expect("classifier.bias is last").2;
    bias[0] += gap / 2.0;
    bias[1] -= gap / 2.0;
    write_weights(&weights, &tensors, spec.dtype)?;

    let summary = FixtureSummary {
        size: spec.size,
        dtype: spec.dtype,
        seed: spec.seed,
        vocab: vocab_source,
        parameters: crate::config::ModelConfig::read(&dir.join("config.json"))?.parameter_count(),
    };
    write_atomically(
        &dir.join(FIXTURE_FILE),
        serde_json::to_string_pretty(&summary)
            .expect("plain struct")
            .as_bytes(),
    )?;
    Ok(summary)
}

fn write_weights(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: FixtureDtype,
) -> Result<(), ModelError> {
    let safetensors_dtype = match dtype {
        FixtureDtype::F32 => Dtype::F32,
        FixtureDtype::F16 => Dtype::F16,
        FixtureDtype::Bf16 => Dtype::BF16,
    };
    let encoded: Vec<(&str, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| (name.as_str(), shape.as_slice(), encode(values, dtype)))
        .collect();
    let bad = |detail: String| ModelError::BadFile {
        path: path.to_path_buf(),
        detail,
    };
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(safetensors_dtype, shape.to_vec(), bytes)
                .map(|view| (name.to_string(), view))
                .map_err(|e| bad(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Texts that span sentiment, length and vocabulary, for calibrating the head.
const CALIBRATION_TEXTS: &[&str] = &[
    "I loved this movie",
    "terrible, awful film",
    "the plot was dull and boring",
    "a wonderful masterpiece with brilliant acting",
    "I hate it",
    "great fun",
    "the worst thing I have seen this year",
    "not bad at all",
    "music and story were beautiful",
    "what a waste of time",
    "the cast did a fine job",
    "painful, slow and pointless",
    "would recommend to my friends",
    "it was ok",
    "the ending made me sad",
    "best film of the year!",
];

/// Median of `logit[1] - logit[0]` over [`CALIBRATION_TEXTS`].
fn median_logit_gap(dir: &Path) -> Result<f32, ModelError> {
    let checkpoint = crate::Checkpoint::open(dir)?;
    let classifier = crate::Classifier::load(&checkpoint, &crate::ClassifierOptions::default())?;
    let ids: Vec<Vec<u32>> = classifier
        .tokenize(CALIBRATION_TEXTS)?
        .into_iter()
        .map(|e| e.ids)
        .collect();
    let mut gaps: Vec<f32> = classifier
        .logits_for_ids(&ids)?
        .iter()
        .map(|l| l[1] - l[0])
        .collect();
    gaps.sort_by(f32::total_cmp);
    Ok((gaps[gaps.len() / 2 - 1] + gaps[gaps.len() / 2]) / 2.0)
}

/// What a fixture is; also stored as `fixture.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FixtureSummary {
    pub size: FixtureSize,
    pub dtype: FixtureDtype,
    pub seed: u64,
    pub vocab: String,
    pub parameters: usize,
}

fn config_json(d: &Dims) -> serde_json::Value {
    json!({
        "activation": "gelu",
        "architectures": ["DistilBertForSequenceClassification"],
        "attention_dropout": 0.1,
        "dim": d.dim,
        "dropout": 0.1,
        "finetuning_task": "sst-2",
        "hidden_dim": d.hidden,
        "id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
        "initializer_range": 0.02,
        "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
        "max_position_embeddings": d.positions,
        "model_type": "distilbert",
        "n_heads": d.heads,
        "n_layers": d.layers,
        "output_past": true,
        "pad_token_id": 0,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": false,
        "tie_weights_": true,
        "vocab_size": d.vocab,
    })
}

/// Named tensors in the key layout `transformers` saves for
/// `DistilBertForSequenceClassification`.
fn weight_tensors(d: &Dims, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    // Matrices scaled like the real initializer (std 0.02 at width 768, wider for tiny
    // models so tokens still move the [CLS] vector); biases and layer-norm parameters
    // random too, so a bias or norm loaded into the wrong place changes the answer.
    let w = 0.55 / (d.dim as f32).sqrt();
    let mut add = |name: String, shape: Vec<usize>, mean: f32, std: f32| {
        let values = random_values(&name, shape.iter().product(), seed, mean, std);
        out.push((name, shape, values));
    };
    let p = "distilbert.";
    add(
        format!("{p}embeddings.word_embeddings.weight"),
        vec![d.vocab, d.dim],
        0.0,
        0.02,
    );
    add(
        format!("{p}embeddings.position_embeddings.weight"),
        vec![d.positions, d.dim],
        0.0,
        0.02,
    );
    add(
        format!("{p}embeddings.LayerNorm.weight"),
        vec![d.dim],
        1.0,
        0.1,
    );
    add(
        format!("{p}embeddings.LayerNorm.bias"),
        vec![d.dim],
        0.0,
        0.1,
    );
    for i in 0..d.layers {
        let l = format!("{p}transformer.layer.{i}.");
        for lin in ["q_lin", "k_lin", "v_lin", "out_lin"] {
            add(
                format!("{l}attention.{lin}.weight"),
                vec![d.dim, d.dim],
                0.0,
                w,
            );
            add(format!("{l}attention.{lin}.bias"), vec![d.dim], 0.0, 0.02);
        }
        add(format!("{l}sa_layer_norm.weight"), vec![d.dim], 1.0, 0.1);
        add(format!("{l}sa_layer_norm.bias"), vec![d.dim], 0.0, 0.1);
        add(format!("{l}ffn.lin1.weight"), vec![d.hidden, d.dim], 0.0, w);
        add(format!("{l}ffn.lin1.bias"), vec![d.hidden], 0.0, 0.02);
        add(format!("{l}ffn.lin2.weight"), vec![d.dim, d.hidden], 0.0, w);
        add(format!("{l}ffn.lin2.bias"), vec![d.dim], 0.0, 0.02);
        add(
            format!("{l}output_layer_norm.weight"),
            vec![d.dim],
            1.0,
            0.1,
        );
        add(format!("{l}output_layer_norm.bias"), vec![d.dim], 0.0, 0.1);
    }
    // A wider head than the initializer gives, so random texts get decisive, varied labels.
    let head_std = 1.0 / (d.dim as f32).sqrt();
    add(
        "pre_classifier.weight".into(),
        vec![d.dim, d.dim],
        0.0,
        head_std * 2.0,
    );
    add("pre_classifier.bias".into(), vec![d.dim], 0.0, 0.1);
    add(
        "classifier.weight".into(),
        vec![2, d.dim],
        0.0,
        head_std * 4.0,
    );
    add("classifier.bias".into(), vec![2], 0.0, 0.1);
    out
}

/// Values depend on the seed and the tensor's name only, not on generation order.
fn random_values(name: &str, len: usize, seed: u64, mean: f32, std: f32) -> Vec<f32> {
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash);
    let normal = Normal::new(mean, std).expect("finite std");
    (0..len).map(|_| normal.sample(&mut rng)).collect()
}

fn encode(values: &[f32], dtype: FixtureDtype) -> Vec<u8> {
    match dtype {
        FixtureDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        FixtureDtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        FixtureDtype::Bf16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

/// A small WordPiece vocabulary in the BERT layout: special tokens, single characters,
/// `##` continuations and a few hundred common words, deterministic.
pub fn generated_vocab() -> Vec<String> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let singles: Vec<char> = ('!'..='/')
        .chain(':'..='@')
        .chain('['..='`')
        .chain('{'..='~')
        .chain('0'..='9')
        .chain('a'..='z')
        .collect();
    vocab.extend(singles.iter().map(char::to_string));
    vocab.extend(('0'..='9').chain('a'..='z').map(|c| format!("##{c}")));
    const WORDS: &str = "the a an and or but if of to in on at for with from by as is are was were be \
        been being have has had do does did not no yes this that these those it its i you he she we they \
        me him her us them my your his our their what which who when where why how all any some many \
        much more most very too so than then there here just only also even still again ever never \
        movie film story plot acting actor actress scene scenes director script music ending character \
        characters cast performance show book food service place time day night year people thing things \
        good great excellent amazing wonderful fantastic brilliant best better love loved lovely enjoy \
        enjoyed beautiful fun funny happy perfect nice fine well recommend masterpiece charming \
        bad terrible awful horrible worst worse boring dull hate hated poor waste disappointing \
        disappointed stupid sad ugly mess annoying weak slow painful pointless \
        would could should will can may might must go went see saw seen watch watched make made \
        like liked feel felt think thought know knew say said get got give gave take took come came \
        ##s ##ed ##ing ##ly ##er ##est ##ness ##ful ##less";
    vocab.extend(WORDS.split_whitespace().map(str::to_owned));
    let mut seen = std::collections::HashSet::new();
    vocab.retain(|t| seen.insert(t.clone()));
    vocab
}

/// A movie-review-like text of at most `tokens` tokens including [CLS] and [SEP], from
/// a fixed word list starting `offset` words in (different offsets, different texts):
/// the benchmarks' inputs of a chosen length.
pub fn text_of_tokens(
    classifier: &crate::Classifier,
    tokens: usize,
    offset: usize,
) -> Result<String, ModelError> {
    const WORDS: [&str; 13] = [
        "the", "movie", "was", "great", "and", "the", "acting", "felt", "fresh", "but", "plot",
        "was", "slow",
    ];
    let mut text = String::new();
    for word in WORDS.iter().cycle().skip(offset) {
        let candidate = format!("{text} {word}");
        if classifier.tokenize(&[candidate.trim()])?[0].ids.len() > tokens {
            break;
        }
        text = candidate;
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_texts_fill_the_token_budget_and_differ_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
        let classifier = crate::Classifier::load(
            &crate::Checkpoint::open(dir.path()).unwrap(),
            &crate::ClassifierOptions::default(),
        )
        .unwrap();
        let count = |text: &str| classifier.tokenize(&[text]).unwrap()[0].ids.len();
        let text = text_of_tokens(&classifier, 40, 0).unwrap();
        // One more word would pass the budget; every fixture word is one or two tokens.
        assert!((38..=40).contains(&count(&text)), "{} tokens", count(&text));
        assert_ne!(text, text_of_tokens(&classifier, 40, 3).unwrap());
    }

    #[test]
    fn full_size_has_distilbert_base_dimensions_and_parameter_count() {
        let dims = FixtureSize::Full.dims(generated_vocab().len());
        let config: crate::config::ModelConfig =
            serde_json::from_value(config_json(&dims)).unwrap();
        assert_eq!(config.vocab_size, 30522);
        assert_eq!((config.dim, config.n_layers, config.n_heads), (768, 6, 12));
        // DistilBertForSequenceClassification on distilbert-base-uncased, 2 labels.
        assert_eq!(config.parameter_count(), 66_955_010);
    }

    #[test]
    fn fixtures_are_byte_for_byte_reproducible() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = FixtureSpec::new(FixtureSize::Tiny);
        write(a.path(), &spec).unwrap();
        write(b.path(), &spec).unwrap();
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
        ] {
            assert_eq!(
                sha256_file(&a.path().join(file)).unwrap(),
                sha256_file(&b.path().join(file)).unwrap(),
                "{file}"
            );
        }
        let other = tempfile::tempdir().unwrap();
        write(other.path(), &FixtureSpec { seed: 7, ..spec }).unwrap();
        assert_ne!(
            sha256_file(&a.path().join("model.safetensors")).unwrap(),
            sha256_file(&other.path().join("model.safetensors")).unwrap()
        );
    }

    #[test]
    fn tiny_fixture_is_well_under_a_megabyte() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total < 400_000, "{total} bytes");
    }

    #[test]
    fn a_vocabulary_that_is_not_bert_base_uncased_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\n").unwrap();
        let spec = FixtureSpec {
            vocab: Some(vocab),
            ..FixtureSpec::new(FixtureSize::Tiny)
        };
        let err = write(&dir.path().join("out"), &spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not bert-base-uncased"), "{err}");
    }
}
