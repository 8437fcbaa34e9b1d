//! DistilBERT with the sequence-classification head, on candle tensors.
//!
//! Written here rather than taken from `candle-transformers` for two reasons that show
//! up in the scores: its DistilBERT uses the tanh approximation of GELU where
//! `transformers` uses the exact erf form, and its attention mask is built for causal
//! use. This version matches `DistilBertForSequenceClassification` to 1e-5, fuses the
//! Q/K/V projections into one matrix multiplication, runs the dense layers on the
//! packed kernels of [`crate::kernels`], and computes the last layer for `[CLS]` alone
//! (see [`ClsAttention`]).

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use crate::ModelError;
use crate::cls_attention::{self, ClsAttention};
use crate::config::ModelConfig;
use crate::kernels::{Activation, Dense, Precision};
use crate::weights::{RowSource, WeightFile};

/// `transformers` uses 1e-12 for every DistilBERT layer norm.
const LAYER_NORM_EPS: f64 = 1e-12;

pub struct DistilBertClassifier {
    /// Read straight from the mmapped checkpoint: never copied, only gathered from.
    word_embeddings: RowSource,
    position_embeddings: Tensor,
    embeddings_norm: ResidualNorm,
    layers: Vec<Layer>,
    pre_classifier: Dense,
    classifier: Linear,
    n_heads: usize,
    dim: usize,
}

/// Which keys of a batch are real tokens.
struct KeyMask {
    /// `[b * seq + j]`: token `j` of sequence `b` is real.
    attended: Vec<bool>,
    /// The same as candle's additive `(batch, 1, 1, seq)` mask, for candle's attention
    /// where the fused AVX-512 kernel cannot run.
    additive: Option<Tensor>,
}

/// How a layer computes its attention context.
enum SelfAttention {
    /// Every token attends: Q, K and V stacked along the output dimension, one GEMM
    /// instead of three.
    AllTokens(Dense),
    /// Only `[CLS]`'s result is read (the last layer).
    ClsOnly(ClsAttention),
}

struct Layer {
    attention: SelfAttention,
    out: Dense,
    attention_norm: ResidualNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    output_norm: ResidualNorm,
}

/// A layer norm applied to a sum `x + residual`: one fused pass with AVX-512, candle's
/// add and layer norm elsewhere.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct ResidualNorm {
    candle: LayerNorm,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl ResidualNorm {
    fn forward(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::avx512_available() {
            use crate::kernels::with_cpu_rows;
            return with_cpu_rows(x, |x, rows, cols| {
                with_cpu_rows(residual, |residual, _, _| {
                    let out = crate::kernels::norm::add_layer_norm(
                        x,
                        residual,
                        &self.gamma,
                        &self.beta,
                        LAYER_NORM_EPS as f32,
                    );
                    Tensor::from_vec(out, (rows, cols), &Device::Cpu)
                })
            });
        }
        self.candle.forward(&(x + residual)?)
    }
}

/// Loads named weights with the shapes the config implies.
struct Loader<'a> {
    file: &'a WeightFile,
    precision: Precision,
}

impl Loader<'_> {
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let source = self.file.matrix(name, &[len])?;
        let mut values = vec![0f32; len];
        source.read_row(0, &mut values);
        Ok(values)
    }

    /// Reads the weights once: the candle layer norm is made from the same vectors.
    fn residual_norm(&self, prefix: &str, dim: usize) -> Result<ResidualNorm, ModelError> {
        let gamma = self.vector(&format!("{prefix}.weight"), dim)?;
        let beta = self.vector(&format!("{prefix}.bias"), dim)?;
        let tensor =
            |v: &[f32]| Tensor::from_slice(v, dim, &Device::Cpu).map_err(ModelError::Inference);
        let candle = LayerNorm::new(tensor(&gamma)?, tensor(&beta)?, LAYER_NORM_EPS);
        Ok(ResidualNorm {
            candle,
            gamma,
            beta,
        })
    }

    /// A `[rows, cols]` matrix's values, row-major (as stored, converted to f32).
    fn row_major(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>, ModelError> {
        let source = self.file.matrix(name, &[rows, cols])?;
        let mut values = vec![0f32; rows * cols];
        for (r, row) in values.chunks_exact_mut(cols).enumerate() {
            source.read_row(r, row);
        }
        Ok(values)
    }

    fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear, ModelError> {
        let weight = self
            .file
            .tensor(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = self.file.tensor(&format!("{prefix}.bias"), &[out_dim])?;
        Ok(Linear::new(weight, Some(bias)))
    }

    /// One dense layer whose weight rows are the concatenation of `prefixes`' weights.
    fn dense(
        &self,
        prefixes: &[String],
        in_dim: usize,
        out_each: usize,
    ) -> Result<Dense, ModelError> {
        let sources = prefixes
            .iter()
            .map(|p| {
                self.file
                    .matrix(&format!("{p}.weight"), &[out_each, in_dim])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut bias = Vec::with_capacity(out_each * prefixes.len());
        for p in prefixes {
            bias.extend(self.vector(&format!("{p}.bias"), out_each)?);
        }
        Dense::from_rows(
            out_each * prefixes.len(),
            in_dim,
            |r, row| sources[r / out_each].read_row(r % out_each, row),
            bias,
            self.precision,
        )
        .map_err(ModelError::Inference)
    }
}

impl Layer {
    /// `cls_only`: the layer is the last, whose output is read at `[CLS]` alone.
    fn load(
        loader: &Loader,
        prefix: &str,
        config: &ModelConfig,
        cls_only: bool,
    ) -> Result<Self, ModelError> {
        let (d, h) = (config.dim, config.hidden_dim);
        let named = |name: &str| format!("{prefix}.attention.{name}");
        let attention = if cls_only {
            let projection = |name: &str| -> Result<_, ModelError> {
                let name = named(name);
                Ok((
                    loader.row_major(&format!("{name}.weight"), d, d)?,
                    loader.vector(&format!("{name}.bias"), d)?,
                ))
            };
            SelfAttention::ClsOnly(ClsAttention::new(
                config.n_heads,
                d,
                cls_attention::Projections {
                    q: projection("q_lin")?,
                    k: projection("k_lin")?.0,
                    v: projection("v_lin")?,
                },
            ))
        } else {
            SelfAttention::AllTokens(loader.dense(
                &[named("q_lin"), named("k_lin"), named("v_lin")],
                d,
                d,
            )?)
        };
        Ok(Self {
            attention,
            out: loader.dense(&[named("out_lin")], d, d)?,
            attention_norm: loader.residual_norm(&format!("{prefix}.sa_layer_norm"), d)?,
            ffn_in: loader.dense(&[format!("{prefix}.ffn.lin1")], d, h)?,
            ffn_out: loader.dense(&[format!("{prefix}.ffn.lin2")], h, d)?,
            output_norm: loader.residual_norm(&format!("{prefix}.output_layer_norm"), d)?,
        })
    }
}

impl DistilBertClassifier {
    /// Loads the weights; checkpoints with and without the `distilbert.` key prefix
    /// are both accepted. `precision` applies to the encoder's dense layers.
    pub fn load(
        file: &WeightFile,
        config: &ModelConfig,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let p = if file.contains("distilbert.embeddings.word_embeddings.weight") {
            "distilbert."
        } else {
            ""
        };
        let loader = Loader { file, precision };
        let d = config.dim;
        let layers = (0..config.n_layers)
            .map(|i| {
                let prefix = format!("{p}transformer.layer.{i}");
                Layer::load(&loader, &prefix, config, i + 1 == config.n_layers)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            word_embeddings: file.matrix(
                &format!("{p}embeddings.word_embeddings.weight"),
                &[config.vocab_size, d],
            )?,
            position_embeddings: file.tensor(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[config.max_position_embeddings, d],
            )?,
            embeddings_norm: loader.residual_norm(&format!("{p}embeddings.LayerNorm"), d)?,
            layers,
            // f32 whatever the encoder's precision (one row per text: nothing to gain),
            // on the packed kernel: candle's matmul took 0.5 ms for that one row.
            pre_classifier: Loader {
                precision: Precision::F32,
                ..loader
            }
            .dense(&["pre_classifier".to_string()], d, d)?,
            classifier: loader.linear("classifier", d, config.num_labels())?,
            n_heads: config.n_heads,
            dim: d,
        })
    }

    /// Class logits, shape `(batch, labels)`. `input_ids` is `(batch, seq)` u32;
    /// `attention_mask` is `(batch, seq)` with 1 for real tokens and 0 for padding
    /// (the `transformers` convention, not candle's).
    pub fn logits(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let d = self.dim;
        let ids = input_ids.flatten_all()?.to_vec1::<u32>()?;
        let mut words = vec![0f32; ids.len() * d];
        for (row, &id) in words.chunks_mut(d).zip(&ids) {
            self.word_embeddings.read_row(id as usize, row);
        }
        let words = Tensor::from_vec(words, (batch * seq, d), &Device::Cpu)?;
        let positions = self.position_embeddings.i(0..seq)?.repeat((batch, 1))?;
        let mut hidden = self.embeddings_norm.forward(&words, &positions)?;

        let mask_f32 = attention_mask.to_dtype(DType::F32)?;
        let attended = mask_f32.flatten_all()?.to_vec1::<f32>()?;
        let mask = KeyMask {
            attended: attended.into_iter().map(|m| m > 0.5).collect(),
            // Additive mask over keys: 0 where attended, the most negative f32 where
            // padded, as `transformers` does with `masked_fill(finfo.min)`.
            additive: if crate::kernels::avx512_available() {
                None
            } else {
                Some(((mask_f32 - 1.0)? * f64::from(f32::MAX))?.reshape((batch, 1, 1, seq))?)
            },
        };
        // The last layer runs for [CLS] alone (the head reads nothing else), so
        // `hidden` ends as `(batch, d)`.
        for layer in &self.layers {
            hidden = self.layer_forward(layer, &hidden, &mask, batch, seq)?;
        }
        let pooled = self
            .pre_classifier
            .forward(&hidden, Activation::None)?
            .relu()?;
        self.classifier.forward(&pooled)
    }

    /// One encoder layer over `(batch * seq, d)` hidden states: the result is
    /// `(batch * seq, d)`, or `(batch, d)` for `[CLS]` alone from a
    /// [`SelfAttention::ClsOnly`] layer.
    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        mask: &KeyMask,
        batch: usize,
        seq: usize,
    ) -> candle_core::Result<Tensor> {
        let d = self.dim;
        let (context, hidden) = match &layer.attention {
            SelfAttention::AllTokens(qkv) => (
                self.attend_all(&qkv.forward(hidden, Activation::None)?, mask, batch, seq)?,
                hidden.clone(),
            ),
            SelfAttention::ClsOnly(attention) => {
                let context = crate::kernels::with_cpu_rows(hidden, |values, _, _| {
                    Ok(attention.forward(values, &mask.attended, batch, seq))
                })?;
                let cls = hidden
                    .reshape((batch, seq, d))?
                    .narrow(1, 0, 1)?
                    .reshape((batch, d))?;
                (Tensor::from_vec(context, (batch, d), &Device::Cpu)?, cls)
            }
        };
        let attended = layer
            .attention_norm
            .forward(&layer.out.forward(&context, Activation::None)?, &hidden)?;
        let ffn = layer.ffn_out.forward(
            &layer.ffn_in.forward(&attended, Activation::GeluErf)?,
            Activation::None,
        )?;
        layer.output_norm.forward(&ffn, &attended)
    }

    /// Every token's attention context, `(batch * seq, d)`, from the fused Q/K/V
    /// projections `qkv`, `(batch * seq, 3 d)`.
    fn attend_all(
        &self,
        qkv: &Tensor,
        mask: &KeyMask,
        batch: usize,
        seq: usize,
    ) -> candle_core::Result<Tensor> {
        let (d, heads) = (self.dim, self.n_heads);
        let head_dim = d / heads;
        if let Some(additive) = &mask.additive {
            let qkv = qkv
                .reshape((batch, seq, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?; // (3, batch, heads, seq, head_dim)
            let q = (qkv.i(0)? / (head_dim as f64).sqrt())?.contiguous()?;
            let k = qkv.i(1)?.contiguous()?;
            let v = qkv.i(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(additive)?;
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            return weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch * seq, d));
        }
        #[cfg(target_arch = "x86_64")]
        {
            let shape = crate::kernels::attention::AttentionShape {
                batch,
                seq,
                heads,
                head_dim,
            };
            let context = crate::kernels::with_cpu_rows(qkv, |values, _, _| {
                Ok(crate::kernels::attention::attention(
                    values,
                    &mask.attended,
                    shape,
                ))
            })?;
            Tensor::from_vec(context, (batch * seq, d), &Device::Cpu)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("without AVX-512 the additive mask is built")
    }

    pub fn device(&self) -> &Device {
        self.position_embeddings.device()
    }
}

/// Softmax over the last dimension of `(batch, labels)` logits.
pub fn probabilities(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(logits, D::Minus1)
}
