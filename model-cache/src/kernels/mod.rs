//! Hand-written CPU kernels for the two places candle's CPU backend is slow on this
//! model: the dense layers at small row counts (candle's GEMM uses AVX2 at most on
//! stable Rust; these use AVX-512 when the CPU has it) and the exact GELU (candle
//! computes erf one scalar at a time).
//!
//! `Dense` runs on [`packed`] weights with AVX-512 (x86_64); without it, on candle's
//! matmul over the original layout.
//!
//! [`Precision::Bf16x3`] and [`Precision::Bf16`] (opt-in) run the same layers on AMX
//! tiles instead, see [`amx`].

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod norm;
#[cfg(target_arch = "x86_64")]
mod packed;

#[cfg(target_arch = "x86_64")]
use packed::PackedDense;

/// What to apply to a dense layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// Exact (erf) GELU, as `transformers` computes `"gelu"`.
    GeluErf,
}

/// What the encoder's dense layers compute in. Everything else (attention, layer
/// norms, softmax, the classification head, and the last layer's Q, K and V, which it
/// needs for `[CLS]` alone) is f32 either way.
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
    /// Each weight and input split into two bf16 parts (`hi + lo`, ~16 significant
    /// bits) and three tile products summed in f32 (`hi*hi + lo*hi + hi*lo`): f32's
    /// accuracy to about 1e-5 at AMX speed, what PyTorch calls the "high" float32
    /// matmul precision and XLA "bf16_3x". Same hardware needs as `Bf16`.
    Bf16x3,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Bf16x3 => "bf16x3",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "bf16x3" => Ok(Precision::Bf16x3),
            other => Err(format!(
                "unknown precision {other:?}: expected f32, bf16x3 or bf16"
            )),
        }
    }
}

/// The precision the dense layers will really use when `requested`: the bf16 modes
/// only where this CPU and OS allow AMX.
pub fn effective_precision(requested: Precision) -> Precision {
    match requested {
        Precision::Bf16 | Precision::Bf16x3 if amx_available() => requested,
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
    #[cfg(target_arch = "x86_64")]
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
        {
            let passes = match effective_precision(precision) {
                Precision::Bf16 => Some(amx::Passes::One),
                Precision::Bf16x3 => Some(amx::Passes::Three),
                Precision::F32 => None,
            };
            if let Some(passes) = passes {
                return Ok(Dense::Amx(amx::AmxDense::from_rows(
                    out_dim, in_dim, read_row, bias, passes,
                )));
            }
        }
        #[cfg(target_arch = "x86_64")]
        if avx512_available() && out_dim.is_multiple_of(packed::PANEL) {
            return Ok(Dense::Packed(PackedDense::from_rows(
                out_dim, in_dim, read_row, bias,
            )));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = precision;
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
            #[cfg(target_arch = "x86_64")]
            Dense::Packed(dense) => with_cpu_rows(x, |input, rows, in_dim| {
                let out = dense.forward(input, rows, in_dim, activation);
                Tensor::from_vec(out, (rows, dense.out_dim()), &Device::Cpu)
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

#[cfg(target_arch = "x86_64")]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: used only to write disjoint regions of one output from parallel tasks.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for SendPtr {}
#[cfg(target_arch = "x86_64")]
unsafe impl Send for SendPtr {}

/// Work items `0..count` handed out one at a time to whichever thread asks next: on a
/// cloud vCPU (this host included) one core often runs at 60-70% of its sibling's
/// speed, and fixed halves then wait on the slower one.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Claims {
    next: std::sync::atomic::AtomicUsize,
    count: usize,
}

#[cfg(target_arch = "x86_64")]
impl Claims {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            next: std::sync::atomic::AtomicUsize::new(0),
            count,
        }
    }

    fn claim(&self) -> Option<usize> {
        Some(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            .filter(|&i| i < self.count)
    }

    /// Runs `work(item, then)` for each item this thread claims until none are left;
    /// `then` is the item it takes next, claimed first so its data can be prefetched.
    pub(crate) fn run(&self, mut work: impl FnMut(usize, Option<usize>)) {
        let mut current = self.claim();
        while let Some(item) = current {
            let then = self.claim();
            work(item, then);
            current = then;
        }
    }
}

/// Element types whose all-zero bytes are a valid value (a fresh mapping's contents).
///
/// # Safety
/// Implement only for such types.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe trait ZeroValid: Copy {}
// SAFETY: zero bytes are 0.0 and 0.
#[cfg(target_arch = "x86_64")]
unsafe impl ZeroValid for f32 {}
#[cfg(target_arch = "x86_64")]
unsafe impl ZeroValid for u16 {}

/// Packed weights' memory: a zeroed anonymous mapping whose start is 2 MiB-aligned and
/// whose whole 2 MiB pages are advised onto transparent huge pages. Every pass streams
/// all the weights from memory, and on 4 KiB pages that is also ~40,000 page-table
/// walks; on huge pages (in-process A/B, full fixture) a 16-token pass took
/// 0.84-0.88x the time in f32 and 0.95x in bf16x3/bf16, a 150-token one 0.92-0.99x.
/// The mapping stays untouched until packing writes it, so loading writes each weight
/// once; where the kernel has no huge pages to give, the advice does nothing.
#[cfg(target_arch = "x86_64")]
pub(crate) struct WeightBuffer<T> {
    map: memmap2::MmapMut,
    offset: usize,
    len: usize,
    element: std::marker::PhantomData<T>,
}

#[cfg(target_arch = "x86_64")]
impl<T: ZeroValid> WeightBuffer<T> {
    const HUGE_PAGE: usize = 2 << 20;

    /// `len` zeroed elements.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let map = memmap2::MmapMut::map_anon(bytes + Self::HUGE_PAGE)
            .unwrap_or_else(|e| panic!("mapping {bytes} bytes for weights: {e}"));
        let offset = map.as_ptr().align_offset(Self::HUGE_PAGE);
        // Whole huge pages only: a partly used one would hold up to 2 MiB of zeros. The
        // advice can only fail where huge pages are off, and then it changes nothing.
        #[cfg(target_os = "linux")]
        {
            let whole_pages = bytes / Self::HUGE_PAGE * Self::HUGE_PAGE;
            if whole_pages > 0 {
                let _ = map.advise_range(memmap2::Advice::HugePage, offset, whole_pages);
            }
        }
        Self {
            map,
            offset,
            len,
            element: std::marker::PhantomData,
        }
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds `offset + len * size_of::<T>()` bytes, 2 MiB-aligned
        // from `offset` (so aligned for T), all valid T (zeroed or written as T).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset).cast(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with the mapping borrowed mutably.
        unsafe {
            std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(self.offset).cast(), self.len)
        }
    }
}

/// Share `i` of `shares` near-equal runs of whole `line`-element cache lines of
/// `values` (empty past the end): what one step of a loop prefetches for the next.
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_share<T>(values: &[T], line: usize, shares: usize, i: usize) -> &[T] {
    let len = (values.len() / line).div_ceil(shares.max(1)).max(1) * line;
    values.chunks(len).nth(i).unwrap_or_default()
}

/// Which dense kernel `precision` gets on this machine, for logs and reports.
pub fn kernel_name(precision: Precision) -> &'static str {
    match effective_precision(precision) {
        Precision::Bf16 => return "amx-bf16",
        Precision::Bf16x3 => return "amx-bf16x3",
        Precision::F32 => {}
    }
    if avx512_available() {
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

    use super::{ERF_ALPHA, ERF_BETA};

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn weight_buffers_start_zeroed_on_a_huge_page_boundary_and_keep_what_is_written() {
        // 5 MiB: two whole huge pages and a partial one.
        let len = 5 * (1 << 20) / 4;
        let mut buffer = WeightBuffer::<f32>::zeroed(len);
        let start = buffer.as_slice().as_ptr() as usize;
        assert_eq!(start % (2 << 20), 0, "weights start at {start:#x}");
        assert_eq!(buffer.as_slice().len(), len);
        assert!(buffer.as_slice().iter().all(|&v| v == 0.0));
        for (i, v) in buffer.as_mut_slice().iter_mut().enumerate() {
            *v = i as f32;
        }
        assert_eq!(buffer.as_slice()[len - 1], (len - 1) as f32);

        // Where transparent huge pages are on (in any mode), the mapping that holds the
        // weights must be eligible for them: under `madvise` only the advice makes it so.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        let smaps = std::fs::read_to_string("/proc/self/smaps");
        if let (Ok(thp), Ok(smaps)) = (thp, smaps)
            && !thp.contains("[never]")
        {
            let mut eligible = None;
            let mut in_buffer = false;
            for line in smaps.lines() {
                if let Some((range, _)) = line.split_once(' ')
                    && let Some((from, to)) = range.split_once('-')
                    && let (Ok(from), Ok(to)) = (
                        usize::from_str_radix(from, 16),
                        usize::from_str_radix(to, 16),
                    )
                {
                    in_buffer = (from..to).contains(&start);
                } else if in_buffer && let Some(flag) = line.strip_prefix("THPeligible:") {
                    eligible = Some(flag.trim() == "1");
                }
            }
            assert_eq!(eligible, Some(true), "THP {thp:?}");
        }
    }

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prefetch_shares_cover_the_lines_in_order_once() {
        let values: Vec<u32> = (0..16 * 37).collect();
        for shares in [1, 5, 18, 40] {
            let joined: Vec<u32> = (0..shares + 2)
                .flat_map(|i| prefetch_share(&values, 16, shares, i).to_vec())
                .collect();
            assert_eq!(joined, values, "{shares} shares");
            // Whole lines each, so no line is fetched by two shares.
            assert!(
                prefetch_share(&values, 16, shares, 0)
                    .len()
                    .is_multiple_of(16)
            );
        }
        assert!(prefetch_share::<u32>(&[], 16, 4, 0).is_empty());
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
        #[cfg(target_arch = "x86_64")]
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
    fn concurrent_calls_on_one_pool_all_get_their_own_answers() {
        // Forward passes of different row counts spawned together on a 2-thread pool
        // share the threads' buffers and the panel (or tile pair) claiming.
        let (w, b, weight, bias) = test_layer(300, 64);
        let mut precisions = vec![Precision::F32];
        if amx_available() {
            precisions.push(Precision::Bf16x3);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for precision in precisions {
            let dense = Dense::new(weight.clone(), bias.clone(), precision).unwrap();
            let errors = std::sync::Mutex::new(Vec::new());
            pool.scope(|scope| {
                for i in 0..200 {
                    let (dense, w, b, errors) = (&dense, &w, &b, &errors);
                    scope.spawn(move |_| {
                        let error = max_error(dense, 9 + i % 40, w, b, i % 2 == 0);
                        errors.lock().unwrap().push(error);
                    });
                }
            });
            let errors = errors.into_inner().unwrap();
            assert_eq!(errors.len(), 200);
            assert!(errors.iter().all(|&e| e < 1e-4), "{precision}: {errors:?}");
        }
    }

    #[test]
    fn bf16x3_dense_layer_is_as_close_to_the_exact_product_as_f32() {
        if !amx_available() {
            eprintln!("skipped: no AMX-BF16 on this CPU (the f32 kernels are tested above)");
            return;
        }
        // 1000 inputs: two k blocks (the second partial), partial sums kept between;
        // 1100 rows: several chunks of rows at 1000 inputs, two at 100.
        for inputs in [100, 1000] {
            let (w, b, weight, bias) = test_layer(inputs, 50);
            let dense = Dense::new(weight, bias, Precision::Bf16x3).unwrap();
            assert!(matches!(dense, Dense::Amx(_)));
            for rows in [1, 15, 16, 17, 33, 70, 1100] {
                for gelu in [false, true] {
                    // The same bound as the f32 kernels: hi + lo keeps ~16 bits of each
                    // operand, so a one-pass bf16 product (errors ~0.01 here) fails it.
                    let error = max_error(&dense, rows, &w, &b, gelu);
                    assert!(
                        error < 1e-4,
                        "{inputs} inputs, rows {rows} gelu {gelu}: max error {error}"
                    );
                }
            }
        }
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
