//! The f32 dense layers with AVX-512: a `[out, in]` weight matrix packed once at load
//! time into 32-column panels (`[in][32]`, contiguous, cache-line aligned) so the inner
//! loop streams one panel with two aligned vector loads per step. Each call also packs
//! its input rows into 8-row blocks (`[in][8]`), so the broadcasts read one sequential
//! stream. Large batches split rows between threads (each thread's inputs and outputs
//! stay in its own L2). Smaller ones pack the rows once and let threads claim panels
//! one at a time: a cloud vCPU often runs at a fraction of its sibling's speed (its
//! hyperthread twin is busy), and a fixed half each then waits on the slower one.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::{Activation, Claims, SendPtr, WeightBuffer, prefetch_share};

/// Columns per packed panel: two 16-lane AVX-512 vectors.
pub(super) const PANEL: usize = 32;
/// Input rows one kernel call handles: 8 rows x 2 vectors = 16 accumulators. Wider
/// blocks (12, 14 rows) measured the same at 512 rows and worse at 16 (padding).
const ROWS: usize = 8;
/// Inner-dimension block: a panel slice of 256 x 32 floats (32 KiB) fits in L1.
const K_BLOCK: usize = 256;
/// Rows per thread from which threads split rows rather than panels: below it, every
/// thread reading the whole weight matrix costs more than sharing the input rows.
const ROW_SPLIT_MIN_ROWS: usize = 128;

/// Rows from which packing them is shared out between threads: below, one thread
/// packs them in less time than a fork and join takes.
const PARALLEL_PACK_MIN_ROWS: usize = 64;

/// Floats per cache line.
const LINE: usize = 16;

/// Weights rearranged into 32-column panels, `[panel][in][32]`.
pub struct PackedDense {
    /// Panels start on a cache line (a panel is whole lines), so no vector load splits
    /// one (split loads cost two; aligning measured ~8% on whole layers).
    panels: WeightBuffer<f32>,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

thread_local! {
    /// Each thread's packed input rows, kept between calls: a fresh allocation per
    /// call is a few MB of page faults and zeroing at batch 32. Taken out and put back,
    /// never borrowed across rayon work (a thread waiting there may run another
    /// caller's pass, which then finds no buffer and grows one).
    static PACKED_ROWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Splits `rows` between `threads` in whole 8-row blocks when each thread gets at
/// least [`ROW_SPLIT_MIN_ROWS`]; `None` when the rows are to be shared instead.
fn split_rows(rows: usize, threads: usize) -> Option<Vec<Range<usize>>> {
    let threads = threads.max(1);
    if rows / threads < ROW_SPLIT_MIN_ROWS {
        return None;
    }
    let per = rows.div_ceil(threads).div_ceil(ROWS) * ROWS;
    Some(
        (0..rows)
            .step_by(per)
            .map(|r| r..(r + per).min(rows))
            .collect(),
    )
}

/// Grows `packed` to hold `rows` input rows as 8-row blocks and returns that part.
fn packed_rows_buffer(packed: &mut Vec<f32>, rows: usize, in_dim: usize) -> &mut [f32] {
    let len = rows.div_ceil(ROWS) * in_dim * ROWS;
    // Grown, never cleared: every element in use is written by `pack_block`.
    if packed.len() < len {
        packed.resize(len, 0.0);
    }
    &mut packed[..len]
}

/// Writes 8-row block `block` of `input` (`rows x in_dim`, row-major) to `dst` as
/// `[in][8]`, zero-filling rows past the end.
fn pack_block(input: &[f32], in_dim: usize, block: usize, dst: &mut [f32]) {
    let src = &input[block * ROWS * in_dim..];
    let valid_rows = (src.len() / in_dim).min(ROWS);
    assert_eq!(dst.len(), in_dim * ROWS);
    // SAFETY: PackedDense exists only where AVX-512 (hence AVX) was detected; `src`
    // holds `valid_rows` rows and `dst` `in_dim * 8` floats.
    unsafe { x86::transpose_rows(src.as_ptr(), in_dim, valid_rows, dst.as_mut_ptr()) };
}

/// Writes `input` as 8-row blocks `[block][in][8]` at the start of `packed`; returns
/// that part.
fn pack_rows<'a>(input: &[f32], in_dim: usize, packed: &'a mut Vec<f32>) -> &'a [f32] {
    let packed = packed_rows_buffer(packed, input.len() / in_dim, in_dim);
    for (block, dst) in packed.chunks_exact_mut(in_dim * ROWS).enumerate() {
        pack_block(input, in_dim, block, dst);
    }
    packed
}

/// [`pack_rows`] with the blocks shared out between the pool's threads when there are
/// enough to be worth a fork and join.
fn pack_rows_parallel<'a>(input: &[f32], in_dim: usize, packed: &'a mut Vec<f32>) -> &'a [f32] {
    let rows = input.len() / in_dim;
    if rows < PARALLEL_PACK_MIN_ROWS {
        return pack_rows(input, in_dim, packed);
    }
    let packed = packed_rows_buffer(packed, rows, in_dim);
    packed
        .par_chunks_exact_mut(in_dim * ROWS)
        .enumerate()
        .for_each(|(block, dst)| pack_block(input, in_dim, block, dst));
    packed
}

/// One call's packed input rows and where its results go.
struct Call<'a> {
    /// Rows `rows` of the input as 8-row blocks (`[block][in][8]`).
    packed: &'a [f32],
    rows: Range<usize>,
    act: Activation,
    out: &'a SendPtr,
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
        let mut panels = WeightBuffer::zeroed(out_dim * in_dim);
        panels
            .as_mut_slice()
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
            bias,
            in_dim,
            out_dim,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Panel `p`'s weights for inputs `k0..k0 + K_BLOCK` (fewer at the end).
    fn slice(&self, p: usize, k0: usize) -> &[f32] {
        let kc = (self.in_dim - k0).min(K_BLOCK);
        &self.panels.as_slice()[p * self.in_dim * PANEL + k0 * PANEL..][..kc * PANEL]
    }

    pub fn forward(&self, input: &[f32], rows: usize, in_dim: usize, act: Activation) -> Vec<f32> {
        assert_eq!(in_dim, self.in_dim);
        assert_eq!(input.len(), rows * in_dim);
        // Not zeroed: the first k block writes every element before anything reads it
        // (every row x panel is computed), and zeroing a few MB per call showed up.
        let mut out = Vec::<f32>::with_capacity(rows * self.out_dim);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let threads = rayon::current_num_threads();
        if let Some(tasks) = split_rows(rows, threads) {
            tasks.par_iter().for_each(|task| {
                let mut scratch = PACKED_ROWS.take();
                let call = Call {
                    packed: pack_rows(
                        &input[task.start * in_dim..task.end * in_dim],
                        in_dim,
                        &mut scratch,
                    ),
                    rows: task.clone(),
                    act,
                    out: &out_ptr,
                };
                self.all_panels(&call);
                PACKED_ROWS.set(scratch);
            });
        } else {
            // The calling thread's buffer, shared with the others for this call.
            let mut scratch = PACKED_ROWS.take();
            let call = Call {
                packed: pack_rows_parallel(input, in_dim, &mut scratch),
                rows: 0..rows,
                act,
                out: &out_ptr,
            };
            self.claimed_panels(&call, threads);
            PACKED_ROWS.set(scratch);
        }
        // SAFETY: every element was written above (see the allocation).
        unsafe { out.set_len(rows * self.out_dim) };
        out
    }

    /// Every panel for the call's rows, `threads` claiming them one at a time.
    fn claimed_panels(&self, call: &Call, threads: usize) {
        let claims = Claims::new(self.out_dim / PANEL);
        (0..threads)
            .into_par_iter()
            .for_each(|_| claims.run(|p, then| self.one_panel(call, p, then)));
    }

    /// Every panel for the call's rows, k block by k block: the rows' block of inputs
    /// stays in L2 while every panel's slice passes through L1.
    fn all_panels(&self, call: &Call) {
        let panels = self.out_dim / PANEL;
        for k0 in (0..self.in_dim).step_by(K_BLOCK) {
            for p in 0..panels {
                let next = if p + 1 < panels {
                    self.slice(p + 1, k0)
                } else if k0 + K_BLOCK < self.in_dim {
                    self.slice(0, k0 + K_BLOCK)
                } else {
                    &[]
                };
                self.slice_rows(call, p, k0, next);
            }
        }
    }

    /// Panel `p` for the call's rows, then (for prefetching) panel `then`.
    fn one_panel(&self, call: &Call, p: usize, then: Option<usize>) {
        for k0 in (0..self.in_dim).step_by(K_BLOCK) {
            let next = if k0 + K_BLOCK < self.in_dim {
                self.slice(p, k0 + K_BLOCK)
            } else {
                then.map_or(&[][..], |q| self.slice(q, 0))
            };
            self.slice_rows(call, p, k0, next);
        }
    }

    /// Panel `p`'s slice from input `k0` times every row block of the call, into (or
    /// onto) the output; fetches `next` into L2 meanwhile, a share per row block, so
    /// the first block of the next slice does not wait on memory (the whole model's
    /// weights do not fit in this host's share of L3: +6% on a 144-token pass).
    fn slice_rows(&self, call: &Call, p: usize, k0: usize, next: &[f32]) {
        let in_dim = self.in_dim;
        let panel = self.slice(p, k0);
        let kc = panel.len() / PANEL;
        let gelu = k0 + kc == in_dim && call.act == Activation::GeluErf;
        let bias = &self.bias[p * PANEL..][..PANEL];
        let blocks = call.packed.len() / (in_dim * ROWS);
        for (block, block_rows) in call.packed.chunks_exact(in_dim * ROWS).enumerate() {
            let row = call.rows.start + block * ROWS;
            let share = prefetch_share(next, LINE, blocks, block);
            // SAFETY: AVX-512 was detected before packing; only this call's rows of
            // panel p's columns are written here (no other task computes them), into
            // `out`, which outlives the call; the slices hold what the kernel reads.
            unsafe {
                let args = x86::BlockArgs {
                    rows: block_rows[k0 * ROWS..].as_ptr(),
                    panel: panel.as_ptr(),
                    kc,
                    bias: bias.as_ptr(),
                    out: call.out.0.add(row * self.out_dim + p * PANEL),
                    ldo: self.out_dim,
                    first: k0 == 0,
                    gelu,
                    next: share.as_ptr(),
                    next_lines: share.len() / LINE,
                };
                // The block's real rows only: the last block of 150 is 6 rows, and a
                // [CLS]-only layer's 1 (8 measured 1% slower on a 150-row layer and
                // 5-30% on a 1-row one).
                match (call.rows.end - row).min(ROWS) {
                    8 => x86::dense_block::<8>(&args),
                    7 => x86::dense_block::<7>(&args),
                    6 => x86::dense_block::<6>(&args),
                    5 => x86::dense_block::<5>(&args),
                    4 => x86::dense_block::<4>(&args),
                    3 => x86::dense_block::<3>(&args),
                    2 => x86::dense_block::<2>(&args),
                    _ => x86::dense_block::<1>(&args),
                }
            }
        }
    }
}

mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86::gelu_erf;
    use super::{LINE, PANEL, ROWS};

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

    /// One [`dense_block`] call's operands (see there).
    #[derive(Clone, Copy)]
    pub struct BlockArgs {
        pub rows: *const f32,
        pub panel: *const f32,
        pub kc: usize,
        pub bias: *const f32,
        pub out: *mut f32,
        pub ldo: usize,
        pub first: bool,
        pub gelu: bool,
        pub next: *const f32,
        pub next_lines: usize,
    }

    /// `out[r][0..32] (+)= sum_{k<kc} rows[k][r] * panel[k][0..32]` for the first `R`
    /// rows of an 8-row block, adding `bias` when `first` (else the partial sums
    /// already in `out`) and applying GELU when `gelu`; meanwhile prefetches
    /// `next_lines` cache lines from `next` into L2.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `rows` must hold `kc * 8` floats (`[k][8]`),
    /// `panel` `kc * 32` (64-byte aligned), `bias` 32, and `out` `R` rows of `ldo`
    /// floats from 32 on.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dense_block<const R: usize>(args: &BlockArgs) {
        let BlockArgs {
            rows,
            panel,
            kc,
            bias,
            out,
            ldo,
            first,
            gelu,
            next,
            next_lines,
        } = *args;
        // SAFETY: bounds are the caller's contract; prefetches never fault.
        unsafe {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            // The partial sums are added after the loop, so their loads have the whole
            // loop to arrive.
            if !first {
                for r in 0..R {
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
                // Into L2 only: in L1 it would evict the slice this block still uses.
                if kk < next_lines {
                    _mm_prefetch::<_MM_HINT_T1>(next.add(kk * LINE).cast());
                }
                let w_lo = _mm512_load_ps(panel.add(kk * PANEL));
                let w_hi = _mm512_load_ps(panel.add(kk * PANEL + 16));
                for r in 0..R {
                    let x = _mm512_set1_ps(*rows.add(kk * ROWS + r));
                    lo[r] = _mm512_fmadd_ps(x, w_lo, lo[r]);
                    hi[r] = _mm512_fmadd_ps(x, w_hi, hi[r]);
                }
            }
            // A constant bound keeps the accumulators in registers (a runtime one
            // indexes them, which spills them to the stack).
            for r in 0..R {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::avx512_available;

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
    fn row_split_covers_every_row_once_in_whole_blocks() {
        for (rows, threads) in [(512, 2), (300, 2), (1000, 3), (256, 2), (5000, 4)] {
            let tasks = split_rows(rows, threads).expect("enough rows to split");
            assert!(tasks.len() <= threads, "{rows}/{threads}: {tasks:?}");
            let mut next = 0;
            for task in &tasks {
                assert_eq!(task.start, next, "{rows}/{threads}: {tasks:?}");
                assert!(task.start.is_multiple_of(ROWS), "{task:?} starts mid-block");
                next = task.end;
            }
            assert_eq!(next, rows);
        }
        // Fewer rows per thread than ROW_SPLIT_MIN_ROWS: shared, split by panels.
        assert_eq!(split_rows(255, 2), None);
        assert_eq!(split_rows(16, 1), None);
        assert_eq!(split_rows(128, 1).map(|tasks| tasks.len()), Some(1));
    }
}
