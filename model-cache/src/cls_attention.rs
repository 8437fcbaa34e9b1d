//! The last encoder layer's self-attention for `[CLS]` alone, without projecting any
//! token's key or value.
//!
//! The classification head reads only `[CLS]`'s final hidden state, so the last layer
//! needs one query per sequence, `q = W_q x_0 + b_q`. Per head, with `x_j` the layer's
//! input at token `j`:
//!
//! - its scores are `q . k_j = q . (W_k x_j + b_k) = (W_k^T q) . x_j + q . b_k`: one
//!   vector `u = W_k^T q` dotted with each token's input. `q . b_k` is the same for
//!   every key, and softmax ignores such a shift, so `b_k` is not needed;
//! - its context is `sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v`, since the
//!   softmax weights `p_j` sum to 1.
//!
//! Projecting K and V costs `2 d^2` multiply-adds per token (a quarter of the layer);
//! this costs `2 d` per token per head (24x fewer for DistilBERT's 12 heads of 64),
//! plus three `d x d` matrix-vector products per sequence. Exact algebra: only the f32
//! rounding order changes (~1e-7 relative).

use rayon::prelude::*;

/// Q, K and V weights of one layer, row-major `[out][in]` as the checkpoint stores them.
pub(crate) struct ClsAttention {
    heads: usize,
    dim: usize,
    w_q: Vec<f32>,
    b_q: Vec<f32>,
    w_k: Vec<f32>,
    w_v: Vec<f32>,
    b_v: Vec<f32>,
}

/// The projections as `(weight [dim][dim], bias [dim])`, K's bias unused (see above).
pub(crate) struct Projections {
    pub q: (Vec<f32>, Vec<f32>),
    pub k: Vec<f32>,
    pub v: (Vec<f32>, Vec<f32>),
}

impl ClsAttention {
    pub fn new(heads: usize, dim: usize, projections: Projections) -> Self {
        let Projections {
            q: (w_q, b_q),
            k: w_k,
            v: (w_v, b_v),
        } = projections;
        assert!(dim.is_multiple_of(heads));
        for w in [&w_q, &w_k, &w_v] {
            assert_eq!(w.len(), dim * dim);
        }
        assert_eq!(b_q.len(), dim);
        assert_eq!(b_v.len(), dim);
        Self {
            heads,
            dim,
            w_q,
            b_q,
            w_k,
            w_v,
            b_v,
        }
    }

    /// `hidden` is `(batch * seq, dim)`; `attended[b * seq + j]` says whether token `j`
    /// of sequence `b` is real. Returns `[CLS]`'s attention context per sequence,
    /// `(batch, dim)`, before the output projection.
    pub fn forward(&self, hidden: &[f32], attended: &[bool], batch: usize, seq: usize) -> Vec<f32> {
        let dim = self.dim;
        let head_dim = dim / self.heads;
        assert_eq!(hidden.len(), batch * seq * dim);
        assert_eq!(attended.len(), batch * seq);
        // Head-major tasks: a thread's consecutive tasks share that head's weights.
        let contexts: Vec<Vec<f32>> = (0..self.heads * batch)
            .into_par_iter()
            .map(|task| {
                let (h, b) = (task / batch, task % batch);
                let tokens = &hidden[b * seq * dim..][..seq * dim];
                let keys: Vec<&[f32]> = tokens
                    .chunks_exact(dim)
                    .zip(&attended[b * seq..][..seq])
                    .filter_map(|(x, &real)| real.then_some(x))
                    .collect();
                let mut out = vec![0f32; head_dim];
                self.head(&tokens[..dim], &keys, h, &mut out);
                out
            })
            .collect();
        let mut context = vec![0f32; batch * dim];
        for (task, head_context) in contexts.iter().enumerate() {
            let (h, b) = (task / batch, task % batch);
            context[b * dim + h * head_dim..][..head_dim].copy_from_slice(head_context);
        }
        context
    }

    /// Head `h`'s context for the query from `cls` over `keys`, into `out` (`head_dim`).
    fn head(&self, cls: &[f32], keys: &[&[f32]], h: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::avx512_available() {
            // SAFETY: AVX-512F was detected.
            return unsafe { self.head_avx512(cls, keys, h, out) };
        }
        self.head_portable(cls, keys, h, out);
    }

    /// [`Self::head_portable`] compiled for AVX-512, where its loops vectorize 16 wide.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn head_avx512(&self, cls: &[f32], keys: &[&[f32]], h: usize, out: &mut [f32]) {
        self.head_portable(cls, keys, h, out);
    }

    #[inline(always)]
    fn head_portable<'a>(&'a self, cls: &[f32], keys: &[&[f32]], h: usize, out: &mut [f32]) {
        let dim = self.dim;
        let head_dim = out.len();
        let rows = h * head_dim..(h + 1) * head_dim;
        let w_rows = |w: &'a [f32]| w[rows.start * dim..rows.end * dim].chunks_exact(dim);
        // The weights come from memory (a sequence reads each once), and with nothing
        // else to do the loops wait on them: asking a few rows ahead measured 10-15%
        // faster than the hardware prefetcher alone.
        let fetch_ahead = |w: &[f32], c: usize| {
            if let Some(row) = w.get((rows.start + c + ROWS_AHEAD) * dim..)
                && let Some(row) = row.get(..dim)
            {
                prefetch(row);
            }
        };
        // u = W_k^T q / sqrt(head_dim), this head's rows of W_k weighted by its query.
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut u = vec![0f32; dim];
        for (c, ((w_q, b_q), w_k)) in w_rows(&self.w_q)
            .zip(&self.b_q[rows.clone()])
            .zip(w_rows(&self.w_k))
            .enumerate()
        {
            fetch_ahead(&self.w_q, c);
            fetch_ahead(&self.w_k, c);
            axpy((dot(w_q, cls) + b_q) * scale, w_k, &mut u);
        }
        // Plain loops here and below: a closure passed to `map` or `collect` is
        // compiled without this function's target features (4 lanes, not 16).
        let mut weights = vec![0f32; keys.len()];
        let mut max = f32::NEG_INFINITY;
        for (w, x) in weights.iter_mut().zip(keys) {
            *w = dot(&u, x);
            max = max.max(*w);
        }
        let mut sum = 0.0;
        for w in &mut weights {
            *w = (*w - max).exp();
            sum += *w;
        }
        // y = sum_j p_j x_j; no keys at all (never: the tokenizer always adds [CLS])
        // leaves it 0 and the context the bias.
        let mut y = vec![0f32; dim];
        for (x, w) in keys.iter().zip(&weights) {
            axpy(w / sum, x, &mut y);
        }
        for (c, ((o, w_v), b_v)) in out
            .iter_mut()
            .zip(w_rows(&self.w_v))
            .zip(&self.b_v[rows.clone()])
            .enumerate()
        {
            fetch_ahead(&self.w_v, c);
            *o = dot(w_v, &y) + b_v;
        }
    }
}

/// Weight rows between the one in use and the one fetched.
const ROWS_AHEAD: usize = 4;

/// Asks for `values` to be brought into L1.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Lanes of the partial sums: one AVX-512 vector (LLVM keeps them in one register).
const LANES: usize = 16;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    // Independent lanes, summed at the end: a single running sum would fix the order
    // of the additions and keep the compiler from vectorizing.
    let mut lanes = [0f32; LANES];
    // `x * y + s`, not `mul_add`: where the code is compiled without FMA (the
    // portable path, closures) that is a library call per element.
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((s, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// `y += a * x`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 211) as f32 - 105.0) / 150.0)
            .collect()
    }

    /// Projects Q, K and V for every token in f64, then softmax and weighted sum, as
    /// `transformers` does, and keeps [CLS]'s row.
    fn reference(
        attention: &ClsAttention,
        b_k: &[f32],
        hidden: &[f32],
        attended: &[bool],
        batch: usize,
        seq: usize,
    ) -> Vec<f64> {
        let (dim, heads) = (attention.dim, attention.heads);
        let head_dim = dim / heads;
        let project = |w: &[f32], b: &[f32], x: &[f32]| -> Vec<f64> {
            (0..dim)
                .map(|o| {
                    f64::from(b[o])
                        + (0..dim)
                            .map(|i| f64::from(w[o * dim + i]) * f64::from(x[i]))
                            .sum::<f64>()
                })
                .collect()
        };
        let mut out = vec![0f64; batch * dim];
        for b in 0..batch {
            let token = |j: usize| &hidden[(b * seq + j) * dim..][..dim];
            let q = project(&attention.w_q, &attention.b_q, token(0));
            let k: Vec<Vec<f64>> = (0..seq)
                .map(|j| project(&attention.w_k, b_k, token(j)))
                .collect();
            let v: Vec<Vec<f64>> = (0..seq)
                .map(|j| project(&attention.w_v, &attention.b_v, token(j)))
                .collect();
            for h in 0..heads {
                let cols = h * head_dim..(h + 1) * head_dim;
                let scores: Vec<f64> = (0..seq)
                    .map(|j| {
                        if !attended[b * seq + j] {
                            return f64::from(f32::MIN);
                        }
                        cols.clone().map(|c| q[c] * k[j][c]).sum::<f64>() / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in cols {
                    out[b * dim + c] = (0..seq).map(|j| e[j] / total * v[j][c]).sum();
                }
            }
        }
        out
    }

    #[test]
    fn cls_context_matches_projecting_every_key_and_value() {
        // 3 heads of 24: rows not a whole number of 16-lane chunks; two sequences of 9,
        // the second with 4 real tokens, its padding holding values no key may read.
        let (heads, dim, batch, seq) = (3, 72, 2, 9);
        let attention = ClsAttention::new(
            heads,
            dim,
            Projections {
                q: (values(dim * dim, 1), values(dim, 2)),
                k: values(dim * dim, 3),
                v: (values(dim * dim, 4), values(dim, 5)),
            },
        );
        let b_k = values(dim, 6);
        let mut hidden = values(batch * seq * dim, 7);
        let mut attended = vec![true; batch * seq];
        for j in 4..seq {
            attended[seq + j] = false;
            hidden[(seq + j) * dim..][..dim].fill(1e30);
        }
        let got = attention.forward(&hidden, &attended, batch, seq);
        let want = reference(&attention, &b_k, &hidden, &attended, batch, seq);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*g) - w).abs() < 1e-5, "value {i}: {g} vs {w}");
        }
        // The padded sequence alone, unpadded: the same context.
        let alone = attention.forward(&hidden[seq * dim..][..4 * dim], &[true; 4], 1, 4);
        assert_eq!(&alone[..], &got[dim..]);
    }
}
