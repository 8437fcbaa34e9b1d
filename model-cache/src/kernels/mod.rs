//! Hand-written CPU kernels for the two places candle's CPU backend is slow on this
//! model: the dense layers at small row counts (candle's GEMM uses AVX2 at most on
//! stable Rust; these use AVX-512 when the CPU has it) and the exact GELU (candle
//! computes erf one scalar at a time).
//!
//! `Dense` packs a `[out, in]` weight matrix once at load time into 32-column panels
//! (`[in][32]`, contiguous, cache-line aligned) so the inner loop streams one panel
//! with two aligned vector loads per step. Each call also packs its input rows into
//! 8-row blocks (`[in][8]`), so the broadcasts read one sequential stream. Large
//! batches split rows between threads (each thread's inputs and outputs stay in its
//! own L2), small ones split panels. Without AVX-512 it falls back to candle's matmul
//! on the original layout.
//!
//! [`Precision::Bf16`] (opt-in) runs the same layers on AMX tiles instead, see [`amx`].

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod norm;

/// Columns per packed panel: two 16-lane AVX-512 vectors.
const PANEL: usize = 32;
/// Input rows one kernel call handles: 8 rows x 2 vectors = 16 accumulators. Wider
/// blocks (12, 14 rows) measured the same at 512 rows and worse at 16 (padding).
const ROWS: usize = 8;
/// Inner-dimension block: a panel slice of 256 x 32 floats (32 KiB) fits in L1.
const K_BLOCK: usize = 256;
/// Rows per thread from which threads split rows rather than panels: below it, every
/// thread reading the whole weight matrix costs more than sharing the input rows.
const ROW_SPLIT_MIN_ROWS: usize = 128;

/// What to apply to a dense layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// Exact (erf) GELU, as `transformers` computes `"gelu"`.
    GeluErf,
}

/// What the dense layers compute in. Everything else (attention, layer norms,
/// softmax, the classification head) is f32 either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout: matches `transformers` to 1e-5.
    #[default]
    F32,
    /// Weights and layer inputs rounded to bf16, products summed in f32, on AMX tiles.
    /// Needs a CPU with AMX-BF16 (Intel Sapphire Rapids or later); elsewhere the
    /// layers stay f32 and [`effective_precision`] says so.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?}: expected f32 or bf16")),
        }
    }
}

/// The precision the dense layers will really use when `requested`: bf16 only where
/// this CPU and OS allow AMX.
pub fn effective_precision(requested: Precision) -> Precision {
    match requested {
        Precision::Bf16 if amx_available() => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// True when the AMX bf16 kernels can run here.
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::env::var_os("MODEL_DISABLE_AMX").is_none() && amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A dense layer `y = act(x W^T + b)`.
pub enum Dense {
    Packed(PackedDense),
    #[cfg(target_arch = "x86_64")]
    Amx(amx::AmxDense),
    Candle(Linear),
}

impl Dense {
    /// Builds from row `r` of the `[out_dim, in_dim]` weight, written by `read_row`,
    /// and the bias. Packs into AMX tiles for bf16 where it can run, for AVX-512 when
    /// the CPU has it, else keeps candle's layout.
    pub fn from_rows(
        out_dim: usize,
        in_dim: usize,
        read_row: impl Fn(usize, &mut [f32]) + Sync,
        bias: Vec<f32>,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        #[cfg(target_arch = "x86_64")]
        if effective_precision(precision) == Precision::Bf16 {
            return Ok(Dense::Amx(amx::AmxDense::from_rows(
                out_dim, in_dim, read_row, bias,
            )));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = precision;
        if avx512_available() && out_dim.is_multiple_of(PANEL) {
            return Ok(Dense::Packed(PackedDense::from_rows(
                out_dim, in_dim, read_row, bias,
            )));
        }
        let mut weight = vec![0f32; out_dim * in_dim];
        weight
            .par_chunks_mut(in_dim)
            .enumerate()
            .for_each(|(r, row)| read_row(r, row));
        let weight = Tensor::from_vec(weight, (out_dim, in_dim), &Device::Cpu)?;
        let bias = Tensor::from_vec(bias, out_dim, &Device::Cpu)?;
        Ok(Dense::Candle(Linear::new(weight, Some(bias))))
    }

    /// From candle tensors: `weight` `[out, in]`, `bias` `[out]`.
    #[cfg(test)]
    pub fn new(weight: Tensor, bias: Tensor, precision: Precision) -> candle_core::Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        Self::from_rows(
            out_dim,
            in_dim,
            |r, row| row.copy_from_slice(&w[r * in_dim..][..in_dim]),
            bias.to_vec1::<f32>()?,
            precision,
        )
    }

    /// `x` is `(rows, in)`; the result is `(rows, out)`.
    pub fn forward(&self, x: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
        match self {
            Dense::Packed(dense) => with_cpu_rows(x, |input, rows, in_dim| {
                let out = dense.forward(input, rows, in_dim, activation);
                Tensor::from_vec(out, (rows, dense.out_dim), &Device::Cpu)
            }),
            #[cfg(target_arch = "x86_64")]
            Dense::Amx(dense) => with_cpu_rows(x, |input, rows, _| {
                let out = dense.forward(input, rows, activation);
                Tensor::from_vec(out, (rows, dense.out_dim()), &Device::Cpu)
            }),
            Dense::Candle(linear) => {
                let y = linear.forward(x)?;
                match activation {
                    Activation::None => Ok(y),
                    Activation::GeluErf => {
                        let shape = y.shape().clone();
                        let mut values = y.flatten_all()?.to_vec1::<f32>()?;
                        values.par_chunks_mut(4096).for_each(gelu_erf_inplace);
                        Tensor::from_vec(values, shape, &Device::Cpu)
                    }
                }
            }
        }
    }
}

/// Runs `f(values, rows, cols)` on the f32 contents of the 2-D CPU tensor `x`.
pub(crate) fn with_cpu_rows<T>(
    x: &Tensor,
    f: impl FnOnce(&[f32], usize, usize) -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    let x = x.contiguous()?;
    let (rows, cols) = x.dims2()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("packed dense layers run on the CPU only");
    };
    let (start, end) = layout.contiguous_offsets().expect("made contiguous above");
    f(&cpu.as_slice::<f32>()?[start..end], rows, cols)
}

/// Floats per cache line.
const LINE: usize = 16;

/// Weights rearranged into 32-column panels, `[panel][in][32]`, from `panels[start]`.
pub struct PackedDense {
    /// Over-allocated by a line so the panels can start on a line boundary: no vector
    /// load then splits a line (split loads cost two; aligning measured ~8% on whole
    /// layers). A plain zeroed `Vec<f32>` rather than an aligned type: its pages are
    /// mapped lazily, so loading writes each weight once (an aligned type's `vec!`
    /// writes the zeros too: +60-100 ms of load).
    panels: Vec<f32>,
    start: usize,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

thread_local! {
    /// Each thread's packed input rows, kept between calls: a fresh allocation per
    /// call is a few MB of page faults and zeroing at batch 32.
    static PACKED_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One thread's share of a dense layer: these input rows times these panels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    rows: Range<usize>,
    panels: Range<usize>,
}

/// Splits `rows x panels` between `threads`: by rows when each thread gets at least
/// [`ROW_SPLIT_MIN_ROWS`] (whole 8-row blocks each), else by panels.
fn split_work(rows: usize, panels: usize, threads: usize) -> Vec<Task> {
    let threads = threads.max(1);
    if rows / threads >= ROW_SPLIT_MIN_ROWS {
        let per = rows.div_ceil(threads).div_ceil(ROWS) * ROWS;
        (0..rows)
            .step_by(per)
            .map(|r| Task {
                rows: r..(r + per).min(rows),
                panels: 0..panels,
            })
            .collect()
    } else {
        let per = panels.div_ceil(threads).max(1);
        (0..panels)
            .step_by(per)
            .map(|p| Task {
                rows: 0..rows,
                panels: p..(p + per).min(panels),
            })
            .collect()
    }
}

/// Writes `input` (`rows x in_dim`, row-major) as 8-row blocks `[block][in][8]` at the
/// start of `packed`, zero-filling the last block's missing rows; returns that part.
fn pack_rows<'a>(input: &[f32], in_dim: usize, packed: &'a mut Vec<f32>) -> &'a [f32] {
    let rows = input.len() / in_dim;
    let len = rows.div_ceil(ROWS) * in_dim * ROWS;
    // Grown, never cleared: every element in use is written below.
    if packed.len() < len {
        packed.resize(len, 0.0);
    }
    let packed = &mut packed[..len];
    for (block, dst) in packed.chunks_exact_mut(in_dim * ROWS).enumerate() {
        let src = &input[block * ROWS * in_dim..];
        let valid_rows = (src.len() / in_dim).min(ROWS);
        // SAFETY: PackedDense exists only where AVX-512 (hence AVX) was detected;
        // `src` holds `valid_rows` rows and `dst` `in_dim * 8` floats.
        unsafe { x86::transpose_rows(src.as_ptr(), in_dim, valid_rows, dst.as_mut_ptr()) };
    }
    packed
}

impl PackedDense {
    /// `read_row(r, buf)` writes row `r` of the row-major `[out_dim, in_dim]` weight
    /// (the PyTorch `nn.Linear` layout).
    pub fn from_rows(
        out_dim: usize,
        in_dim: usize,
        read_row: impl Fn(usize, &mut [f32]) + Sync,
        bias: Vec<f32>,
    ) -> Self {
        assert!(out_dim.is_multiple_of(PANEL));
        assert_eq!(bias.len(), out_dim);
        let mut panels = vec![0f32; out_dim * in_dim + LINE];
        // The heap buffer does not move with the Vec, so this offset stays valid.
        let start = panels.as_ptr().align_offset(LINE * 4);
        panels[start..][..out_dim * in_dim]
            .par_chunks_mut(in_dim * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                let mut row = vec![0f32; in_dim];
                for col in 0..PANEL {
                    read_row(p * PANEL + col, &mut row);
                    for (k, &w) in row.iter().enumerate() {
                        panel[k * PANEL + col] = w;
                    }
                }
            });
        Self {
            panels,
            start,
            bias,
            in_dim,
            out_dim,
        }
    }

    /// The packed panels; each starts on a cache line (a panel is `in_dim` x 32
    /// floats, whole lines).
    fn panel_floats(&self) -> &[f32] {
        &self.panels[self.start..][..self.out_dim * self.in_dim]
    }

    fn forward(&self, input: &[f32], rows: usize, in_dim: usize, act: Activation) -> Vec<f32> {
        assert_eq!(in_dim, self.in_dim);
        assert_eq!(input.len(), rows * in_dim);
        // Not zeroed: the first k block writes every element before anything reads it
        // (the tasks cover all rows x panels), and zeroing a few MB per call showed up.
        let mut out = Vec::<f32>::with_capacity(rows * self.out_dim);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let tasks = split_work(rows, self.out_dim / PANEL, rayon::current_num_threads());
        let weights = self.panel_floats();
        tasks.par_iter().for_each(|task| {
            let out_ptr = &out_ptr;
            PACKED_ROWS.with_borrow_mut(|scratch| {
                let packed = pack_rows(
                    &input[task.rows.start * in_dim..task.rows.end * in_dim],
                    in_dim,
                    scratch,
                );
                // k is walked in blocks so a panel's slice (K_BLOCK x 32 floats) stays
                // in L1 while every row block of this task uses it.
                for k0 in (0..in_dim).step_by(K_BLOCK) {
                    let kc = (in_dim - k0).min(K_BLOCK);
                    let gelu = k0 + kc == in_dim && act == Activation::GeluErf;
                    for p in task.panels.clone() {
                        let panel = &weights[p * in_dim * PANEL + k0 * PANEL..][..kc * PANEL];
                        let bias = &self.bias[p * PANEL..][..PANEL];
                        for (block, block_rows) in packed.chunks_exact(in_dim * ROWS).enumerate() {
                            let row = task.rows.start + block * ROWS;
                            // SAFETY: AVX-512 was detected before packing; each task
                            // writes only its own rows x columns of `out` (tasks are
                            // disjoint), which outlives the loop; the slices hold what
                            // the kernel reads.
                            unsafe {
                                x86::dense_block(
                                    block_rows[k0 * ROWS..].as_ptr(),
                                    panel.as_ptr(),
                                    kc,
                                    bias.as_ptr(),
                                    out_ptr.0.add(row * self.out_dim + p * PANEL),
                                    self.out_dim,
                                    (task.rows.end - row).min(ROWS),
                                    k0 == 0,
                                    gelu,
                                );
                            }
                        }
                    }
                }
            });
        });
        // SAFETY: every element was written above (see the allocation).
        unsafe { out.set_len(rows * self.out_dim) };
        out
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint regions from parallel tasks (see above).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Which dense kernel `precision` gets on this machine, for logs and reports.
pub fn kernel_name(precision: Precision) -> &'static str {
    if effective_precision(precision) == Precision::Bf16 {
        "amx-bf16"
    } else if avx512_available() {
        "avx512-f32"
    } else {
        "candle-f32"
    }
}

/// True when this CPU can run the AVX-512 kernels.
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("MODEL_DISABLE_AVX512").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4] (erf is +-1 in f32 outside), the rational
// approximation Eigen and XLA use for f32: max error ~1e-7, no exp, vectorizes.
// Coefficients as published there (more digits than f32 holds, on purpose).
#[allow(clippy::excessive_precision)]
const ERF_ALPHA: [f32; 7] = [
    -1.609_603_3e-2,
    -2.954_599_8e-3,
    -7.349_906_3e-4,
    -5.692_506_4e-5,
    -2.101_024e-6,
    2.770_681_4e-8,
    -2.726_142_3e-10,
];
#[allow(clippy::excessive_precision)]
const ERF_BETA: [f32; 5] = [
    -1.426_473_9e-2,
    -7.373_329e-3,
    -1.682_827e-3,
    -2.133_740_6e-4,
    -1.456_607_2e-5,
];

#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ERF_ALPHA[6];
    for c in ERF_ALPHA[..6].iter().rev() {
        p = p.mul_add(x2, *c);
    }
    let mut q = ERF_BETA[4];
    for c in ERF_BETA[..4].iter().rev() {
        q = q.mul_add(x2, *c);
    }
    x * p / q
}

/// `x <- x * (1 + erf(x / sqrt 2)) / 2` for every element.
pub fn gelu_erf_inplace(values: &mut [f32]) {
    for v in values {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ERF_ALPHA, ERF_BETA, PANEL, ROWS};

    /// `dst[k][r] = src[r][k]` for 8 rows of `in_dim` floats, rows from `valid_rows`
    /// on written as zeros: one 8x8 register transpose per 8 columns (the scalar loop
    /// was 4% of a batch-32 forward pass).
    ///
    /// # Safety
    /// The CPU must support AVX; `src` must hold `valid_rows <= 8` rows of `in_dim`
    /// floats and `dst` `in_dim * 8` floats.
    #[target_feature(enable = "avx")]
    pub unsafe fn transpose_rows(src: *const f32, in_dim: usize, valid_rows: usize, dst: *mut f32) {
        // SAFETY: bounds are the caller's contract.
        unsafe {
            let row = |r: usize, k: usize| {
                if r < valid_rows {
                    _mm256_loadu_ps(src.add(r * in_dim + k))
                } else {
                    _mm256_setzero_ps()
                }
            };
            let mut k = 0;
            while k + 8 <= in_dim {
                let r: [__m256; 8] = std::array::from_fn(|i| row(i, k));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let columns = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, column) in columns.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((k + i) * ROWS), column);
                }
                k += 8;
            }
            for k in k..in_dim {
                for r in 0..ROWS {
                    *dst.add(k * ROWS + r) = if r < valid_rows {
                        *src.add(r * in_dim + k)
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// Panel rows prefetched ahead of use: 16 steps (2 KiB) hides the L2/L3 latency
    /// of the next weights (measured +20-60%, most at small batches, where the weights
    /// stream from L3 and the hardware prefetcher lags).
    const WEIGHT_PREFETCH_STEPS: usize = 16;

    /// `out[r][0..32] (+)= sum_{k<kc} rows[k][r] * panel[k][0..32]` for the first
    /// `valid_rows` of an 8-row block, adding `bias` when `first` (else the partial sums
    /// already in `out`) and applying GELU when `gelu`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `rows` must hold `kc * 8` floats (`[k][8]`),
    /// `panel` `kc * 32` (64-byte aligned), `bias` 32, and `out` `valid_rows` rows of
    /// `ldo` floats from 32 on.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dense_block(
        rows: *const f32,
        panel: *const f32,
        kc: usize,
        bias: *const f32,
        out: *mut f32,
        ldo: usize,
        valid_rows: usize,
        first: bool,
        gelu: bool,
    ) {
        // SAFETY: bounds are the caller's contract; prefetches never fault.
        unsafe {
            let mut lo = [_mm512_setzero_ps(); ROWS];
            let mut hi = [_mm512_setzero_ps(); ROWS];
            // The partial sums are added after the loop, so their loads have the whole
            // loop to arrive.
            if !first {
                for r in 0..valid_rows {
                    _mm_prefetch::<_MM_HINT_T0>(out.add(r * ldo).cast());
                    _mm_prefetch::<_MM_HINT_T0>(out.add(r * ldo + 16).cast());
                }
            }
            for kk in 0..kc {
                // Even when the panel is already in L1 (every row block after the
                // first), prefetching measured faster than not.
                let ahead = panel.add((kk + WEIGHT_PREFETCH_STEPS) * PANEL);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(16).cast());
                _mm_prefetch::<_MM_HINT_T0>(rows.add((kk + WEIGHT_PREFETCH_STEPS) * ROWS).cast());
                let w_lo = _mm512_load_ps(panel.add(kk * PANEL));
                let w_hi = _mm512_load_ps(panel.add(kk * PANEL + 16));
                for r in 0..ROWS {
                    let x = _mm512_set1_ps(*rows.add(kk * ROWS + r));
                    lo[r] = _mm512_fmadd_ps(x, w_lo, lo[r]);
                    hi[r] = _mm512_fmadd_ps(x, w_hi, hi[r]);
                }
            }
            // A constant bound keeps the accumulators in registers (a runtime one
            // indexes them, which spills them to the stack).
            for r in (0..ROWS).filter(|&r| r < valid_rows) {
                let (src, stride) = if first {
                    (bias, 0)
                } else {
                    (out as *const f32, ldo)
                };
                let mut l = _mm512_add_ps(lo[r], _mm512_loadu_ps(src.add(r * stride)));
                let mut h = _mm512_add_ps(hi[r], _mm512_loadu_ps(src.add(r * stride + 16)));
                if gelu {
                    l = gelu_erf(l);
                    h = gelu_erf(h);
                }
                _mm512_storeu_ps(out.add(r * ldo), l);
                _mm512_storeu_ps(out.add(r * ldo + 16), h);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_erf(x: __m512) -> __m512 {
        let half = _mm512_set1_ps(0.5);
        let one = _mm512_set1_ps(1.0);
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
        let z2 = _mm512_mul_ps(z, z);
        let mut p = _mm512_set1_ps(ERF_ALPHA[6]);
        for c in ERF_ALPHA[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(*c));
        }
        let mut q = _mm512_set1_ps(ERF_BETA[4]);
        for c in ERF_BETA[..4].iter().rev() {
            q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(*c));
        }
        let erf = _mm512_div_ps(_mm512_mul_ps(z, p), q);
        _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, erf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        rows: usize,
        out: usize,
        inp: usize,
        gelu: bool,
    ) -> Vec<f64> {
        let mut y = vec![0f64; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut s = f64::from(b[o]);
                for k in 0..inp {
                    s += f64::from(x[r * inp + k]) * f64::from(w[o * inp + k]);
                }
                if gelu {
                    s = 0.5 * s * (1.0 + libm_erf(s / std::f64::consts::SQRT_2));
                }
                y[r * out + o] = s;
            }
        }
        y
    }

    fn libm_erf(x: f64) -> f64 {
        libm::erf(x)
    }

    #[test]
    fn gelu_matches_the_exact_erf_form() {
        let mut xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let expected: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2))
            })
            .collect();
        gelu_erf_inplace(&mut xs);
        for (got, want) in xs.iter().zip(&expected) {
            assert!((f64::from(*got) - want).abs() < 2e-6, "{got} vs {want}");
        }
    }

    /// A `[out, inp]` test weight and bias, as values and as tensors.
    fn test_layer(inp: usize, out: usize) -> (Vec<f32>, Vec<f32>, Tensor, Tensor) {
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let b: Vec<f32> = (0..out).map(|i| (i as f32 - 30.0) / 100.0).collect();
        let weight = Tensor::from_vec(w.clone(), (out, inp), &Device::Cpu).unwrap();
        let bias = Tensor::from_vec(b.clone(), out, &Device::Cpu).unwrap();
        (w, b, weight, bias)
    }

    /// Largest difference between `dense` on `rows` test inputs and the exact product.
    fn max_error(dense: &Dense, rows: usize, w: &[f32], b: &[f32], gelu: bool) -> f64 {
        let (out, inp) = (b.len(), w.len() / b.len());
        let x: Vec<f32> = (0..rows * inp)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0)
            .collect();
        let xt = Tensor::from_vec(x.clone(), (rows, inp), &Device::Cpu).unwrap();
        let act = if gelu {
            Activation::GeluErf
        } else {
            Activation::None
        };
        let got = dense
            .forward(&xt, act)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = reference(&x, w, b, rows, out, inp, gelu);
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn dense_layer_matches_a_naive_product_for_every_row_count() {
        // 600 inputs: three k blocks, the last one partial.
        let (w, b, weight, bias) = test_layer(600, 64);
        let packed = Dense::new(weight.clone(), bias.clone(), Precision::F32).unwrap();
        assert_eq!(matches!(packed, Dense::Packed(_)), avx512_available());
        let fallback = Dense::Candle(Linear::new(weight, Some(bias)));
        // Two threads whatever the machine: 300 rows split by rows (152 + 148, the
        // last block partial), the others by panels.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            for dense in [&packed, &fallback] {
                for rows in [1, 3, 8, 9, 17, 300] {
                    for gelu in [false, true] {
                        let error = max_error(dense, rows, &w, &b, gelu);
                        assert!(error < 1e-4, "rows {rows} gelu {gelu}: max error {error}");
                    }
                }
            }
        });
    }

    #[test]
    fn row_packing_transposes_blocks_and_zero_fills_missing_rows() {
        if !avx512_available() {
            return;
        }
        // 21 columns: two 8-column transposes and a scalar tail; 11 rows: a partial block.
        let (rows, in_dim) = (11, 21);
        let input: Vec<f32> = (0..rows * in_dim).map(|i| i as f32 + 1.0).collect();
        let mut scratch = vec![f32::NAN; 1000];
        let packed = pack_rows(&input, in_dim, &mut scratch);
        assert_eq!(packed.len(), 2 * in_dim * ROWS);
        for block in 0..2 {
            for k in 0..in_dim {
                for r in 0..ROWS {
                    let row = block * ROWS + r;
                    let want = if row < rows {
                        input[row * in_dim + k]
                    } else {
                        0.0
                    };
                    let got = packed[block * in_dim * ROWS + k * ROWS + r];
                    assert_eq!(got, want, "row {row} column {k}");
                }
            }
        }
    }

    #[test]
    fn work_split_covers_every_row_and_panel_once() {
        for (rows, panels, threads) in [
            (512, 72, 2),
            (300, 2, 2),
            (16, 24, 2),
            (16, 1, 4),
            (1000, 24, 3),
            (5, 24, 1),
        ] {
            let tasks = split_work(rows, panels, threads);
            assert!(
                tasks.len() <= threads,
                "{rows}x{panels}/{threads}: {tasks:?}"
            );
            let mut covered = vec![0u32; rows * panels];
            for task in &tasks {
                assert!(
                    task.rows.start.is_multiple_of(ROWS),
                    "{task:?} starts mid-block"
                );
                for r in task.rows.clone() {
                    for p in task.panels.clone() {
                        covered[r * panels + p] += 1;
                    }
                }
            }
            assert!(
                covered.iter().all(|&c| c == 1),
                "{rows}x{panels}/{threads}: {tasks:?}"
            );
        }
        // Large batches split rows, small ones panels.
        assert_eq!(
            split_work(512, 72, 2)[1],
            Task {
                rows: 256..512,
                panels: 0..72
            }
        );
        assert_eq!(
            split_work(16, 72, 2)[1],
            Task {
                rows: 0..16,
                panels: 36..72
            }
        );
    }

    #[test]
    fn bf16_dense_layer_stays_within_bf16_rounding_of_the_exact_product() {
        if !amx_available() {
            eprintln!("skipped: no AMX-BF16 on this CPU (the f32 kernels are tested above)");
            return;
        }
        // Neither dimension a whole number of tiles: padding must not leak into results.
        let (w, b, weight, bias) = test_layer(100, 50);
        let dense = Dense::new(weight, bias, Precision::Bf16).unwrap();
        assert!(matches!(dense, Dense::Amx(_)));
        for rows in [1, 15, 16, 17, 33, 70] {
            for gelu in [false, true] {
                // Each of the 100 products carries two bf16 roundings (2^-8 relative
                // each); summed magnitudes here stay under 2.6, so 0.03 is ~3x the
                // worst case seen and far below an indexing mistake (~0.1-1).
                let error = max_error(&dense, rows, &w, &b, gelu);
                assert!(error < 0.03, "rows {rows} gelu {gelu}: max error {error}");
            }
        }
    }
}
