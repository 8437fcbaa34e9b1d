//! Multi-head self-attention straight from the fused QKV projection's output, with
//! AVX-512: per (sequence, head), scores = Q K^T / sqrt(d_head) over the attended keys,
//! softmax, then the weighted sum of V, written into the context rows in place.
//!
//! candle needs a permute and three contiguous copies of Q, K and V, a batched matmul
//! for small (seq x 64) matrices, a broadcast add of the mask and a softmax, then a
//! transpose copy back: at 128 tokens that was a quarter of a layer's time. Here each
//! (sequence, head) pair is one task that reads Q, K and V where the projection wrote
//! them and keeps its scores in a buffer that fits L1/L2.
//!
//! Masked keys are skipped rather than given `f32::MIN`: `transformers`'s masked
//! softmax gives them weights that are exactly 0 in f32, so the result is the same.

use rayon::prelude::*;

use super::SendPtr;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Query positions computed per sequence, from the first: `seq` for every token,
    /// 1 for `[CLS]` alone (all the classifier reads from the last layer).
    pub queries: usize,
}

/// `qkv` is `(batch * seq, 3 * d)` with Q, K, V side by side (head `h` at columns
/// `h * head_dim..` of each); `attended[b * seq + j]` says whether key `j` of sequence
/// `b` is a real token. Returns the context of the first `queries` positions of each
/// sequence, `(batch * queries, d)`.
///
/// Call only when [`super::avx512_available`] is true.
pub fn attention(qkv: &[f32], attended: &[bool], shape: AttentionShape) -> Vec<f32> {
    let AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
        queries,
    } = shape;
    let d = heads * head_dim;
    assert_eq!(qkv.len(), batch * seq * 3 * d);
    assert_eq!(attended.len(), batch * seq);
    assert!(queries <= seq);
    let mut context = vec![0f32; batch * queries * d];
    let context_ptr = SendPtr(context.as_mut_ptr());
    let scale = 1.0 / (head_dim as f32).sqrt();
    (0..batch * heads).into_par_iter().for_each(|task| {
        let context_ptr = &context_ptr;
        let (b, h) = (task / heads, task % heads);
        let rows = &qkv[b * seq * 3 * d..][..seq * 3 * d];
        let keys: Vec<usize> = (0..seq).filter(|&j| attended[b * seq + j]).collect();
        // K^T for the attended keys, key count padded to 16: scores of 16 keys come
        // from one FMA per head dimension.
        let padded = keys.len().div_ceil(16) * 16;
        let mut k_t = vec![0f32; head_dim * padded];
        for (slot, &j) in keys.iter().enumerate() {
            let k = &rows[j * 3 * d + d + h * head_dim..][..head_dim];
            for (c, &v) in k.iter().enumerate() {
                k_t[c * padded + slot] = v;
            }
        }
        let mut scores = vec![0f32; padded];
        for i in 0..queries {
            let q = &rows[i * 3 * d + h * head_dim..][..head_dim];
            // SAFETY: AVX-512F is the caller's contract; every slice is sized above,
            // and task (b, h) writes only row block b, columns of head h.
            unsafe {
                x86::scores(q, &k_t, padded, scale, &mut scores);
                x86::softmax_in_place(&mut scores[..keys.len()]);
                let out = context_ptr.0.add((b * queries + i) * d + h * head_dim);
                x86::weighted_values(
                    &scores[..keys.len()],
                    &keys,
                    rows,
                    3 * d,
                    2 * d + h * head_dim,
                    head_dim,
                    out,
                );
            }
        }
    });
    context
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `scores[j] = scale * q . k_t[.., j]` for `j < padded` (`k_t` is `[q.len()][padded]`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k_t: &[f32],
        padded: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        assert!(k_t.len() >= q.len() * padded && scores.len() >= padded);
        let mut block = 0;
        // Four 16-key blocks at a time: four independent FMA chains hide the latency.
        while block + 64 <= padded {
            // SAFETY: `block + 64 <= padded`, sizes asserted above.
            unsafe { score_blocks::<4>(q, k_t, padded, block, scale, scores) };
            block += 64;
        }
        while block < padded {
            // SAFETY: `block + 16 <= padded` (padded is a multiple of 16).
            unsafe { score_blocks::<1>(q, k_t, padded, block, scale, scores) };
            block += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn score_blocks<const N: usize>(
        q: &[f32],
        k_t: &[f32],
        padded: usize,
        block: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let mut acc = [_mm512_setzero_ps(); N];
        for (c, &qc) in q.iter().enumerate() {
            let qc = _mm512_set1_ps(qc);
            for (n, a) in acc.iter_mut().enumerate() {
                // SAFETY: `block + 16 * N <= padded` (caller) and `c < q.len()`.
                let k = unsafe { _mm512_loadu_ps(k_t.as_ptr().add(c * padded + block + 16 * n)) };
                *a = _mm512_fmadd_ps(qc, k, *a);
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (n, a) in acc.iter().enumerate() {
            // SAFETY: `block + 16 * N <= padded <= scores.len()`.
            unsafe {
                _mm512_storeu_ps(
                    scores.as_mut_ptr().add(block + 16 * n),
                    _mm512_mul_ps(*a, scale),
                )
            };
        }
    }

    /// Numerically stable softmax over `x`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_in_place(x: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let max_v = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: a chunk of exactly 16.
            unsafe {
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(chunk.as_ptr()), max_v));
                sum = _mm512_add_ps(sum, e);
                _mm512_storeu_ps(chunk.as_mut_ptr(), e);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mask: __mmask16 = (1u16 << rest.len()) - 1;
            // SAFETY: the mask limits the load and store to the `rest.len()` values.
            unsafe {
                let v = _mm512_mask_loadu_ps(max_v, mask, rest.as_ptr());
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(v, max_v)));
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, e);
            }
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for chunk in x.chunks_mut(16) {
            let mask: __mmask16 = if chunk.len() == 16 {
                0xffff
            } else {
                (1u16 << chunk.len()) - 1
            };
            // SAFETY: the mask limits the load and store to the chunk.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, chunk.as_ptr());
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, _mm512_mul_ps(v, inv));
            }
        }
    }

    /// `out[..head_dim] = sum_s weights[s] * V[keys[s]]`, where V row `j` starts at
    /// `rows[j * stride + offset]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values(
        weights: &[f32],
        keys: &[usize],
        rows: &[f32],
        stride: usize,
        offset: usize,
        head_dim: usize,
        out: *mut f32,
    ) {
        for c in (0..head_dim).step_by(64) {
            let width = (head_dim - c).min(64);
            let lanes = width.div_ceil(16);
            let masks: [__mmask16; 4] = std::array::from_fn(|l| {
                let n = width.saturating_sub(l * 16).min(16);
                if n == 16 { 0xffff } else { (1u16 << n) - 1 }
            });
            let mut acc = [_mm512_setzero_ps(); 4];
            for (&w, &j) in weights.iter().zip(keys) {
                let w = _mm512_set1_ps(w);
                let v = &rows[j * stride + offset + c..][..width];
                for (l, a) in acc.iter_mut().enumerate().take(lanes) {
                    // SAFETY: the mask keeps the load inside `v`'s `width` values.
                    let x = unsafe { _mm512_maskz_loadu_ps(masks[l], v.as_ptr().add(l * 16)) };
                    *a = _mm512_fmadd_ps(w, x, *a);
                }
            }
            for (l, a) in acc.iter().enumerate().take(lanes) {
                // SAFETY: `out` has `head_dim` values (caller's contract); masked to them.
                unsafe { _mm512_mask_storeu_ps(out.add(c + l * 16), masks[l], *a) };
            }
        }
    }

    /// e^x for x <= 0 (softmax inputs after subtracting the max), Cephes' expf
    /// polynomial: relative error ~1e-7; underflows to 0 below -87.
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5, // Cephes lists 5.0000001201e-1, which is 0.5 in f32
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(p, n)
    }

    #[cfg(test)]
    pub(super) fn exp_for_test(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: test-only; callers check AVX-512F first.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp(_mm512_loadu_ps(x.as_ptr()))) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 attention with `transformers`'s additive mask.
    fn reference(qkv: &[f32], attended: &[bool], s: AttentionShape) -> Vec<f64> {
        let d = s.heads * s.head_dim;
        let mut out = vec![0f64; s.batch * s.seq * d];
        for b in 0..s.batch {
            for h in 0..s.heads {
                let at = |row: usize, part: usize, c: usize| {
                    f64::from(qkv[(b * s.seq + row) * 3 * d + part * d + h * s.head_dim + c])
                };
                for i in 0..s.seq {
                    let scores: Vec<f64> = (0..s.seq)
                        .map(|j| {
                            if !attended[b * s.seq + j] {
                                return f64::from(f32::MIN);
                            }
                            (0..s.head_dim)
                                .map(|c| at(i, 0, c) * at(j, 1, c))
                                .sum::<f64>()
                                / (s.head_dim as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..s.head_dim {
                        out[(b * s.seq + i) * d + h * s.head_dim + c] =
                            (0..s.seq).map(|j| e[j] / total * at(j, 2, c)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn exp_is_accurate_over_the_softmax_range() {
        if !crate::kernels::avx512_available() {
            return;
        }
        for start in [-100.0f32, -87.0, -30.0, -5.0, -1.0, -0.01] {
            let xs: [f32; 16] = std::array::from_fn(|i| start + i as f32 * start.abs() / 20.0);
            for (x, got) in xs.iter().zip(x86::exp_for_test(&xs)) {
                let want = f64::from(*x).exp();
                let rel = (f64::from(got) - want).abs() / want.max(1e-37);
                assert!(rel < 1e-6 || want < 1e-37, "exp({x}) = {got}, want {want}");
            }
        }
    }

    #[test]
    fn attention_matches_an_f64_reference_with_padding() {
        if !crate::kernels::avx512_available() {
            eprintln!("skipped: no AVX-512 (the model uses candle's attention there)");
            return;
        }
        // Two sequences padded to 37 tokens: one full, one with 20 real tokens;
        // 17 and 37 keys are not whole 16-key blocks.
        for head_dim in [8, 32, 72] {
            check_against_reference(head_dim);
        }
    }

    fn check_against_reference(head_dim: usize) {
        let shape = AttentionShape {
            batch: 2,
            seq: 37,
            heads: 3,
            head_dim,
            queries: 37,
        };
        let d = shape.heads * shape.head_dim;
        let qkv: Vec<f32> = (0..shape.batch * shape.seq * 3 * d)
            .map(|i| (((i * 7919) % 211) as f32 - 105.0) / 60.0)
            .collect();
        let mut attended = vec![true; shape.batch * shape.seq];
        for j in 20..shape.seq {
            attended[shape.seq + j] = false;
        }
        let got = attention(&qkv, &attended, shape);
        let want = reference(&qkv, &attended, shape);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5,
                "head_dim {head_dim}, value {i}: {g} vs {w}"
            );
        }
        // The padded sequence's real rows equal the same sequence run alone.
        let alone_shape = AttentionShape {
            batch: 1,
            seq: 20,
            queries: 20,
            ..shape
        };
        let alone_qkv: Vec<f32> = (0..20)
            .flat_map(|r| qkv[(shape.seq + r) * 3 * d..][..3 * d].to_vec())
            .collect();
        let alone = attention(&alone_qkv, &[true; 20], alone_shape);
        assert_eq!(&alone[..], &got[shape.seq * d..][..20 * d]);
        // [CLS] alone: the first row of each sequence, unchanged.
        let first = attention(
            &qkv,
            &attended,
            AttentionShape {
                queries: 1,
                ..shape
            },
        );
        assert_eq!(&first[..d], &got[..d]);
        assert_eq!(&first[d..], &got[shape.seq * d..][..d]);
    }
}
