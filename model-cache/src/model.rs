//! DistilBERT with the sequence-classification head, on candle tensors.
//!
//! Written here rather than taken from `candle-transformers` for two reasons that show
//! up in the scores: its DistilBERT uses the tanh approximation of GELU where
//! `transformers` uses the exact erf form, and its attention mask is built for causal
//! use. This version matches `DistilBertForSequenceClassification` to 1e-5 and fuses
//! the Q/K/V projections into one matrix multiplication.

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use crate::config::ModelConfig;

/// `transformers` uses 1e-12 for every DistilBERT layer norm.
const LAYER_NORM_EPS: f64 = 1e-12;

pub struct DistilBertClassifier {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    pre_classifier: Linear,
    classifier: Linear,
    n_heads: usize,
    dim: usize,
}

struct Layer {
    /// Q, K and V stacked along the output dimension: one GEMM instead of three.
    qkv: Linear,
    out: Linear,
    attention_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    output_norm: LayerNorm,
}

fn linear(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> candle_core::Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

fn layer_norm(vb: &VarBuilder, dim: usize) -> candle_core::Result<LayerNorm> {
    let weight = vb.get(dim, "weight")?;
    let bias = vb.get(dim, "bias")?;
    Ok(LayerNorm::new(weight, bias, LAYER_NORM_EPS))
}

impl Layer {
    fn load(vb: VarBuilder, config: &ModelConfig) -> candle_core::Result<Self> {
        let (d, h) = (config.dim, config.hidden_dim);
        let attention = vb.pp("attention");
        let q = linear(&attention.pp("q_lin"), d, d)?;
        let k = linear(&attention.pp("k_lin"), d, d)?;
        let v = linear(&attention.pp("v_lin"), d, d)?;
        let qkv_weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let qkv_bias = Tensor::cat(
            &[
                q.bias().expect("loaded with bias"),
                k.bias().expect("loaded with bias"),
                v.bias().expect("loaded with bias"),
            ],
            0,
        )?;
        Ok(Self {
            qkv: Linear::new(qkv_weight, Some(qkv_bias)),
            out: linear(&attention.pp("out_lin"), d, d)?,
            attention_norm: layer_norm(&vb.pp("sa_layer_norm"), d)?,
            ffn_in: linear(&vb.pp("ffn").pp("lin1"), d, h)?,
            ffn_out: linear(&vb.pp("ffn").pp("lin2"), h, d)?,
            output_norm: layer_norm(&vb.pp("output_layer_norm"), d)?,
        })
    }
}

impl DistilBertClassifier {
    /// Loads the weights. `vb` is rooted where `distilbert.*`, `pre_classifier.*` and
    /// `classifier.*` live; checkpoints without the `distilbert.` prefix are accepted.
    pub fn load(vb: VarBuilder, config: &ModelConfig) -> candle_core::Result<Self> {
        let encoder = if vb.contains_tensor("distilbert.embeddings.word_embeddings.weight") {
            vb.pp("distilbert")
        } else {
            vb.clone()
        };
        let d = config.dim;
        let embeddings = encoder.pp("embeddings");
        let layers = (0..config.n_layers)
            .map(|i| Layer::load(encoder.pp("transformer.layer").pp(i), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embeddings
                .pp("word_embeddings")
                .get((config.vocab_size, d), "weight")?,
            position_embeddings: embeddings
                .pp("position_embeddings")
                .get((config.max_position_embeddings, d), "weight")?,
            embeddings_norm: layer_norm(&embeddings.pp("LayerNorm"), d)?,
            layers,
            pre_classifier: linear(&vb.pp("pre_classifier"), d, d)?,
            classifier: linear(&vb.pp("classifier"), d, config.num_labels())?,
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
        let words = self
            .word_embeddings
            .index_select(&input_ids.flatten_all()?, 0)?;
        let positions = self.position_embeddings.i(0..seq)?;
        let hidden = words
            .reshape((batch, seq, d))?
            .broadcast_add(&positions)?
            .reshape((batch * seq, d))?;
        let mut hidden = self.embeddings_norm.forward(&hidden)?;

        // Additive mask over keys: 0 where attended, the most negative f32 where padded,
        // as `transformers` does with `masked_fill(finfo.min)`.
        let mask_bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?
            .reshape((batch, 1, 1, seq))?;
        for layer in &self.layers {
            hidden = self.layer_forward(layer, &hidden, &mask_bias, batch, seq)?;
        }
        let cls = hidden.reshape((batch, seq, d))?.i((.., 0))?.contiguous()?;
        let pooled = self.pre_classifier.forward(&cls)?.relu()?;
        self.classifier.forward(&pooled)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        mask_bias: &Tensor,
        batch: usize,
        seq: usize,
    ) -> candle_core::Result<Tensor> {
        let (d, heads) = (self.dim, self.n_heads);
        let head_dim = d / heads;
        let qkv = layer
            .qkv
            .forward(hidden)?
            .reshape((batch, seq, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?; // (3, batch, heads, seq, head_dim)
        let q = (qkv.i(0)? / (head_dim as f64).sqrt())?.contiguous()?;
        let k = qkv.i(1)?.contiguous()?;
        let v = qkv.i(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask_bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * seq, d))?;
        let attended = (layer.out.forward(&context)? + hidden)?;
        let attended = layer.attention_norm.forward(&attended)?;
        let ffn = layer
            .ffn_out
            .forward(&layer.ffn_in.forward(&attended)?.gelu_erf()?)?;
        layer.output_norm.forward(&(ffn + attended)?)
    }

    pub fn device(&self) -> &Device {
        self.word_embeddings.device()
    }
}

/// Softmax over the last dimension of `(batch, labels)` logits.
pub fn probabilities(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(logits, D::Minus1)
}
