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

use std::cell::Cell;

use rayon::prelude::*;

use super::SendPtr;

thread_local! {
    /// Each thread's K^T, V rows and scores, kept between calls: allocating and zeroing
    /// them per (sequence, head) was ~5% of the attention's time.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Queries computed together: 4 rows x 4 key blocks of scores, or 4 rows x 64 value
/// columns, are 16 accumulators.
const QUERY_BLOCK: usize = 4;

/// The V rows of one (sequence, head)'s attended keys, `[key][head_dim]`.
struct ValueRows<'a> {
    rows: &'a [f32],
    head_dim: usize,
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// `qkv` is `(batch * seq, 3 * d)` with Q, K, V side by side (head `h` at columns
/// `h * head_dim..` of each); `attended[b * seq + j]` says whether key `j` of sequence
/// `b` is a real token. Returns every position's context, `(batch * seq, d)`.
///
/// Call only when [`super::avx512_available`] is true.
pub fn attention(qkv: &[f32], attended: &[bool], shape: AttentionShape) -> Vec<f32> {
    let AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
    } = shape;
    let d = heads * head_dim;
    assert_eq!(qkv.len(), batch * seq * 3 * d);
    assert_eq!(attended.len(), batch * seq);
    // Not zeroed: every row gets every head's values below (padding rows included).
    let mut context = Vec::<f32>::with_capacity(batch * seq * d);
    let context_ptr = SendPtr(context.as_mut_ptr());
    let scale = 1.0 / (head_dim as f32).sqrt();
    (0..batch * heads).into_par_iter().for_each(|task| {
        let context_ptr = &context_ptr;
        let (b, h) = (task / heads, task % heads);
        let rows = &qkv[b * seq * 3 * d..][..seq * 3 * d];
        let keys: Vec<usize> = (0..seq).filter(|&j| attended[b * seq + j]).collect();
        // K^T for the attended keys, key count padded to 16 (with zeros): scores of
        // 16 keys come from one FMA per head dimension.
        let padded = keys.len().div_ceil(16) * 16;
        let mut scratch = SCRATCH.take();
        let scratch_len = head_dim * padded + keys.len() * head_dim + seq * padded;
        // Grown, never cleared: every element in use is written before it is read.
        if scratch.len() < scratch_len {
            scratch.resize(scratch_len, 0.0);
        }
        let (k_t, rest) = scratch.split_at_mut(head_dim * padded);
        let (v_rows, scores) = rest.split_at_mut(keys.len() * head_dim);
        let scores = &mut scores[..seq * padded];
        // SAFETY: AVX-512F is the caller's contract; `k_t` is sized above.
        unsafe { x86::transpose_keys(rows, &keys, 3 * d, d + h * head_dim, head_dim, k_t) };
        // This head's V rows side by side, `[key][head_dim]`: the weighted sum then
        // streams one contiguous block instead of a 256-byte piece of each 9 KiB row.
        for (dst, &j) in v_rows.chunks_exact_mut(head_dim).zip(&keys) {
            dst.copy_from_slice(&rows[j * 3 * d + 2 * d + h * head_dim..][..head_dim]);
        }
        // Blocks of queries share each K and V load (the single-query loop was bound by
        // those loads); the last few queries go one at a time.
        let in_full_blocks = seq / QUERY_BLOCK * QUERY_BLOCK;
        let blocks = || {
            (0..in_full_blocks)
                .step_by(QUERY_BLOCK)
                .map(|i| (i, QUERY_BLOCK))
                .chain((in_full_blocks..seq).map(|i| (i, 1)))
        };
        let q = |i: usize| &rows[i * 3 * d + h * head_dim..][..head_dim];
        // Every query's scores first, then every weighted sum, so that each phase's one
        // operand (K^T, then V: ~40 KiB each at 150 tokens) can stay in L1 across the
        // query blocks instead of the two evicting each other every block.
        for (i, block) in blocks() {
            let scores = &mut scores[i * padded..];
            // SAFETY: AVX-512F is the caller's contract; every slice is sized above.
            unsafe {
                if block == QUERY_BLOCK {
                    let qs: [&[f32]; QUERY_BLOCK] = std::array::from_fn(|r| q(i + r));
                    x86::scores(qs, k_t, padded, scale, scores);
                } else {
                    x86::scores([q(i)], k_t, padded, scale, scores);
                }
            }
        }
        let inverse_sums: Vec<f32> = scores
            .chunks_exact_mut(padded)
            // SAFETY: as above.
            .map(|weights| unsafe { x86::softmax_numerators(&mut weights[..keys.len()]) })
            .collect();
        let values = ValueRows {
            rows: v_rows,
            head_dim,
        };
        for (i, block) in blocks() {
            // Task (b, h) writes only row block b, columns of head h.
            let out = |r: usize| {
                context_ptr
                    .0
                    .wrapping_add((b * seq + i + r) * d + h * head_dim)
            };
            let weights = &scores[i * padded..];
            // SAFETY: as above.
            unsafe {
                if block == QUERY_BLOCK {
                    x86::weighted_values::<QUERY_BLOCK>(
                        &values,
                        weights,
                        padded,
                        std::array::from_fn(|r| inverse_sums[i + r]),
                        std::array::from_fn(out),
                    );
                } else {
                    x86::weighted_values(&values, weights, padded, [inverse_sums[i]], [out(0)]);
                }
            }
        }
        SCRATCH.set(scratch);
    });
    // SAFETY: every element was written above (see the allocation).
    unsafe { context.set_len(batch * seq * d) };
    context
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `scores[r * padded + j] = scale * q[r] . k_t[.., j]` for `j < padded` and each of
    /// the `R` query rows (`k_t` is `[head_dim][padded]`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores<const R: usize>(
        q: [&[f32]; R],
        k_t: &[f32],
        padded: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let head_dim = q[0].len();
        assert!(q.iter().all(|q| q.len() == head_dim));
        assert!(k_t.len() >= head_dim * padded && scores.len() >= R * padded);
        let mut block = 0;
        // Four 16-key blocks at a time: independent FMA chains hide the latency.
        while block + 64 <= padded {
            // SAFETY: `block + 64 <= padded`, sizes asserted above.
            unsafe { score_blocks::<R, 4>(q, k_t, padded, block, scale, scores) };
            block += 64;
        }
        // Two blocks rather than one at a time where they remain: one block's R chains
        // of FMAs are too few to hide their latency.
        if block + 32 <= padded {
            // SAFETY: `block + 32 <= padded`.
            unsafe { score_blocks::<R, 2>(q, k_t, padded, block, scale, scores) };
            block += 32;
        }
        while block < padded {
            // SAFETY: `block + 16 <= padded` (padded is a multiple of 16).
            unsafe { score_blocks::<R, 1>(q, k_t, padded, block, scale, scores) };
            block += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn score_blocks<const R: usize, const N: usize>(
        q: [&[f32]; R],
        k_t: &[f32],
        padded: usize,
        block: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        for c in 0..q[0].len() {
            // SAFETY: `block + 16 * N <= padded` (caller) and `c < head_dim`.
            let k: [__m512; N] = std::array::from_fn(|n| unsafe {
                _mm512_loadu_ps(k_t.as_ptr().add(c * padded + block + 16 * n))
            });
            for (row, q) in acc.iter_mut().zip(q) {
                let qc = _mm512_set1_ps(q[c]);
                for (a, k) in row.iter_mut().zip(k) {
                    *a = _mm512_fmadd_ps(qc, k, *a);
                }
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (r, row) in acc.iter().enumerate() {
            for (n, a) in row.iter().enumerate() {
                // SAFETY: `block + 16 * N <= padded` and `R * padded <= scores.len()`.
                unsafe {
                    _mm512_storeu_ps(
                        scores.as_mut_ptr().add(r * padded + block + 16 * n),
                        _mm512_mul_ps(*a, scale),
                    )
                };
            }
        }
    }

    /// `k_t[c * padded + slot] = rows[keys[slot] * stride + offset + c]` for each head
    /// dimension `c < head_dim` and slot `< padded` (`keys.len()` rounded up to 16),
    /// zeros past the last key: 16 keys' values per gather and store (one scalar
    /// store per value was ~7% of the attention's time).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_keys(
        rows: &[f32],
        keys: &[usize],
        stride: usize,
        offset: usize,
        head_dim: usize,
        k_t: &mut [f32],
    ) {
        let padded = keys.len().div_ceil(16) * 16;
        assert!(k_t.len() >= head_dim * padded);
        assert!(
            keys.iter()
                .all(|&j| j * stride + offset + head_dim <= rows.len())
        );
        assert!(rows.len() <= i32::MAX as usize);
        for (group, keys) in keys.chunks(16).enumerate() {
            let mask = lane_mask(keys.len());
            let starts: [i32; 16] =
                std::array::from_fn(|l| keys.get(l).map_or(0, |&j| (j * stride + offset) as i32));
            // SAFETY: `starts` holds 16 i32s.
            let starts = unsafe { _mm512_loadu_si512(starts.as_ptr().cast()) };
            for c in 0..head_dim {
                // SAFETY: each masked-in lane reads `rows[start + c]` with
                // `start + c < rows.len()` (asserted above); masked-out lanes read
                // nothing and give 0; the store is within `k_t` (asserted above).
                unsafe {
                    let column = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        starts,
                        rows.as_ptr().add(c).cast(),
                    );
                    _mm512_storeu_ps(k_t.as_mut_ptr().add(c * padded + group * 16), column);
                }
            }
        }
    }

    /// The first `n` of 16 lanes (all 16 from `n = 16` on).
    fn lane_mask(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// Softmax numerators over `x`, in place: `e^(x - max)`; returns `1 / sum` of them,
    /// which the weighted sum applies to its result (one pass over the scores fewer).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_numerators(x: &mut [f32]) -> f32 {
        let mut max_v = _mm512_set1_ps(f32::NEG_INFINITY);
        for chunk in x.chunks(16) {
            let mask = lane_mask(chunk.len());
            // SAFETY: the mask limits the load to the chunk.
            let v = unsafe { _mm512_mask_loadu_ps(max_v, mask, chunk.as_ptr()) };
            max_v = _mm512_max_ps(max_v, v);
        }
        let max_v = _mm512_set1_ps(_mm512_reduce_max_ps(max_v));
        let mut sum = _mm512_setzero_ps();
        for chunk in x.chunks_mut(16) {
            let mask = lane_mask(chunk.len());
            // SAFETY: the mask limits the load and store to the chunk.
            unsafe {
                let v = _mm512_mask_loadu_ps(max_v, mask, chunk.as_ptr());
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(v, max_v)));
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, e);
            }
        }
        let sum = _mm512_reduce_add_ps(sum);
        // No attended keys (never from the tokenizer, which always adds [CLS]): a zero
        // context, as the plain softmax gave.
        if sum > 0.0 { 1.0 / sum } else { 0.0 }
    }

    /// `out[r][..head_dim] = scale[r] * sum_s weights[r * padded + s] * V[s]` for each of
    /// the `R` query rows.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; each `out[r]` must have `head_dim` writable values
    /// and `weights` `R * padded` with `padded >=` the number of V rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values<const R: usize>(
        values: &super::ValueRows,
        weights: &[f32],
        padded: usize,
        scale: [f32; R],
        out: [*mut f32; R],
    ) {
        let super::ValueRows { rows, head_dim } = *values;
        let keys = rows.len() / head_dim;
        assert!(weights.len() >= R * padded && padded >= keys);
        for c in (0..head_dim).step_by(64) {
            let width = (head_dim - c).min(64);
            let lanes = width.div_ceil(16);
            let masks: [__mmask16; 4] =
                std::array::from_fn(|l| lane_mask(width.saturating_sub(l * 16)));
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            // Raw pointers: with slice indexing the bounds checks and their lengths
            // took more registers than the loop has, and it spilled.
            let lane_at: [*const f32; 4] =
                std::array::from_fn(|l| rows[c + (l * 16).min(width)..].as_ptr());
            let weight_rows: [*const f32; R] =
                std::array::from_fn(|r| weights[r * padded..].as_ptr());
            for s in 0..keys {
                // SAFETY: key s's values for lane l start at `lane_at[l] + s * head_dim`,
                // inside `rows` (`keys * head_dim` values); the masks keep each load
                // within the `width` values of this column block.
                let x: [__m512; 4] = std::array::from_fn(|l| unsafe {
                    _mm512_maskz_loadu_ps(masks[l], lane_at[l].add(s * head_dim))
                });
                for (row, weight_row) in acc.iter_mut().zip(weight_rows) {
                    // SAFETY: `weights` holds `R * padded` values and `s < keys <= padded`.
                    let w = _mm512_set1_ps(unsafe { *weight_row.add(s) });
                    // All four lanes, the unused ones on zeros: a runtime bound here
                    // indexes the accumulators, which keeps them on the stack (the loop
                    // ran at a third of its FMA speed).
                    for (a, x) in row.iter_mut().zip(x) {
                        *a = _mm512_fmadd_ps(w, x, *a);
                    }
                }
            }
            for ((row, out), scale) in acc.iter().zip(out).zip(scale) {
                let scale = _mm512_set1_ps(scale);
                for (l, a) in row.iter().enumerate().filter(|&(l, _)| l < lanes) {
                    // SAFETY: `out` has `head_dim` values (caller's contract); masked to them.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            out.add(c + l * 16),
                            masks[l],
                            _mm512_mul_ps(*a, scale),
                        )
                    };
                }
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
        // Two sequences padded to `seq` tokens: one full, one with 20 real tokens;
        // 20, 37 and 70 keys are not whole 16-key blocks, 70 has a 64-key block, and
        // 37 and 70 queries end in a partial block of 4.
        for head_dim in [8, 32, 72] {
            for seq in [37, 70] {
                check_against_reference(head_dim, seq);
            }
        }
    }

    fn check_against_reference(head_dim: usize, seq: usize) {
        let shape = AttentionShape {
            batch: 2,
            seq,
            heads: 3,
            head_dim,
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
                "head_dim {head_dim}, seq {seq}, value {i}: {g} vs {w}"
            );
        }
        // The padded sequence's real rows equal the same sequence run alone.
        let alone_shape = AttentionShape {
            batch: 1,
            seq: 20,
            ..shape
        };
        let alone_qkv: Vec<f32> = (0..20)
            .flat_map(|r| qkv[(shape.seq + r) * 3 * d..][..3 * d].to_vec())
            .collect();
        let alone = attention(&alone_qkv, &[true; 20], alone_shape);
        assert_eq!(&alone[..], &got[shape.seq * d..][..20 * d]);
    }
}
