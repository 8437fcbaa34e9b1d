//! `LayerNorm(x + residual)` in one pass over each row, AVX-512, rows split between
//! the pool's threads: the two places a DistilBERT layer adds its residual.
//!
//! candle does this as a broadcast add (a new tensor) and then a layer norm whose
//! per-row sums are a serial scalar chain; together they were ~5% of a batch-32
//! forward pass. Here a row (768 floats, 3 KiB) is summed, centred and scaled while it
//! sits in L1.
//!
//! The variance is the mean of squared deviations from the mean, as `torch` computes
//! it (not `E[x^2] - mean^2`, which loses digits when the mean is large).

use rayon::prelude::*;

/// Rows per parallel task: enough work to amortise scheduling, small enough that two
/// threads share a batch-1 input of 16 rows.
const ROWS_PER_TASK: usize = 8;

/// `gamma * (s - mean(s)) / sqrt(var(s) + eps) + beta` for each row `s` of
/// `x + residual` (both `rows x gamma.len()`, row-major).
///
/// Call only when [`super::avx512_available`] is true.
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Vec<f32> {
    let dim = gamma.len();
    assert_eq!(beta.len(), dim);
    assert_eq!(x.len(), residual.len());
    assert!(x.len().is_multiple_of(dim));
    // Not zeroed (a serial pass over the whole output, before the parallel one):
    // every element is written by `add_norm_row`.
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut()
        .par_chunks_mut(dim * ROWS_PER_TASK)
        .zip(x.par_chunks(dim * ROWS_PER_TASK))
        .zip(residual.par_chunks(dim * ROWS_PER_TASK))
        .for_each(|((out, x), residual)| {
            for ((out, x), residual) in out
                .chunks_exact_mut(dim)
                .zip(x.chunks_exact(dim))
                .zip(residual.chunks_exact(dim))
            {
                // SAFETY: AVX-512F is the caller's contract; all four slices are `dim`
                // long.
                unsafe { x86::add_norm_row(x, residual, gamma, beta, eps, out) };
            }
        });
    // SAFETY: every element was written above.
    unsafe { out.set_len(x.len()) };
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The mask of the first `n % 16` lanes, or all 16 when `n` is a multiple of 16.
    fn tail_mask(n: usize) -> __mmask16 {
        match n % 16 {
            0 => 0xffff,
            r => (1u16 << r) - 1,
        }
    }

    /// One row: `out = gamma * norm(x + residual) + beta`, every element written. `out`
    /// holds the sum between passes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_norm_row(
        x: &[f32],
        residual: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [MaybeUninit<f32>],
    ) {
        let dim = x.len();
        assert!(residual.len() == dim && gamma.len() == dim && beta.len() == dim);
        assert_eq!(out.len(), dim);
        let chunks = dim.div_ceil(16);
        let mask = |c: usize| {
            if c + 1 == chunks {
                tail_mask(dim)
            } else {
                0xffff
            }
        };
        let out = out.as_mut_ptr().cast::<f32>();
        // SAFETY: every access is at `c * 16` under a mask that stops at `dim`; `out`
        // is read only where the first pass wrote it.
        unsafe {
            let mut sum = _mm512_setzero_ps();
            for c in 0..chunks {
                let (m, at) = (mask(c), c * 16);
                let s = _mm512_add_ps(
                    _mm512_maskz_loadu_ps(m, x.as_ptr().add(at)),
                    _mm512_maskz_loadu_ps(m, residual.as_ptr().add(at)),
                );
                _mm512_mask_storeu_ps(out.add(at), m, s);
                sum = _mm512_add_ps(sum, s);
            }
            let mean = _mm512_reduce_add_ps(sum) / dim as f32;
            let mean_v = _mm512_set1_ps(mean);
            let mut squares = _mm512_setzero_ps();
            for c in 0..chunks {
                let (m, at) = (mask(c), c * 16);
                let d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, out.add(at)), mean_v);
                squares = _mm512_fmadd_ps(d, d, squares);
            }
            let variance = _mm512_reduce_add_ps(squares) / dim as f32;
            let inv_std = _mm512_set1_ps(1.0 / (variance + eps).sqrt());
            for c in 0..chunks {
                let (m, at) = (mask(c), c * 16);
                let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, out.add(at)), mean_v);
                let y = _mm512_fmadd_ps(
                    _mm512_mul_ps(d, inv_std),
                    _mm512_maskz_loadu_ps(m, gamma.as_ptr().add(at)),
                    _mm512_maskz_loadu_ps(m, beta.as_ptr().add(at)),
                );
                _mm512_mask_storeu_ps(out.add(at), m, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_f64_layer_norm_of_the_sum() {
        if !super::super::avx512_available() {
            eprintln!("skipped: no AVX-512 (the model uses candle's layer norm there)");
            return;
        }
        // 37 columns: two whole vectors and a masked tail; a large offset checks that
        // the variance is taken around the mean.
        let (rows, dim) = (11, 37);
        let x: Vec<f32> = (0..rows * dim)
            .map(|i| 100.0 + ((i * 7 % 23) as f32 - 11.0) * 0.3)
            .collect();
        let residual: Vec<f32> = (0..rows * dim)
            .map(|i| ((i * 5 % 17) as f32) * 0.1)
            .collect();
        let gamma: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.05).collect();
        let beta: Vec<f32> = (0..dim).map(|i| i as f32 * -0.01).collect();
        let got = add_layer_norm(&x, &residual, &gamma, &beta, 1e-12);
        for r in 0..rows {
            let s: Vec<f64> = (0..dim)
                .map(|c| f64::from(x[r * dim + c]) + f64::from(residual[r * dim + c]))
                .collect();
            let mean = s.iter().sum::<f64>() / dim as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            for c in 0..dim {
                let want =
                    f64::from(gamma[c]) * (s[c] - mean) / (var + 1e-12).sqrt() + f64::from(beta[c]);
                let error = (f64::from(got[r * dim + c]) - want).abs();
                assert!(
                    error < 5e-5,
                    "row {r} column {c}: {} vs {want}",
                    got[r * dim + c]
                );
            }
        }
    }
}
