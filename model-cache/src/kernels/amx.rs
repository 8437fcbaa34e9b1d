//! Dense layers on Intel AMX tiles in bf16 with f32 accumulation: the opt-in
//! `Precision::Bf16` and `Precision::Bf16x3` modes (Sapphire Rapids and later: the
//! c7i / m7i / r7i instances).
//!
//! One `TDPBF16PS` multiplies a 16 x 32 bf16 tile by a 32 x 16 bf16 tile into a 16 x 16
//! f32 tile: 16,384 flops per instruction, roughly 8x what AVX-512 FMAs reach per cycle.
//! Weights are converted to bf16 once at load, already in the tile layout the
//! instruction wants (pairs of consecutive inputs side by side, "VNNI" order); inputs
//! are rounded to bf16 per call. bf16x3 keeps a second bf16 part of each value (what
//! rounding to bf16 lost) and adds two more tile products ([`Passes::Three`]). Bias,
//! GELU and every other op of the model stay f32.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly.
//! The compiler never allocates tile registers itself, so tile state set by one `asm!`
//! block is still there for the next one inside the same kernel call.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::{Activation, Claims, SendPtr, WeightBuffer, prefetch_share};

/// Rows of an A / C tile.
const TILE_ROWS: usize = 16;
/// Output columns of one C tile (16 f32 = 64 bytes).
const TILE_COLS: usize = 16;
/// Inputs one tile multiply consumes (32 bf16 = 64 bytes per row).
const TILE_K: usize = 32;
/// bf16 values in one packed weight tile: 16 rows of 16 column pairs.
const TILE_ELEMS: usize = TILE_ROWS * TILE_K;
/// Input rows per chunk: each thread walks its weights once per chunk, so the chunk's
/// bf16 inputs (of one k block) should stay in L2 (about 512 KiB) while it does.
const CHUNK_BYTES: usize = 512 * 1024;
/// k tiles per k block (768 inputs). Wider layers (the 3072-input FFN output) are
/// walked a block at a time, partial sums kept in f32, so one block of inputs stays
/// in L2 for every weight panel instead of the whole row being streamed again per
/// panel (bf16x3 inputs of 150 rows x 3072 are 1.8 MB).
const K_BLOCK_TILES: usize = 24;

thread_local! {
    /// A calling thread's partial sums between k blocks, `[pair][chunk row][32]`, and
    /// packed inputs, kept between calls (fresh ones per call were MBs of zeroing).
    static PARTIAL_SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static PACKED_INPUTS: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
}

/// True when the CPU has AMX-BF16 and the kernel lets this process use the tile data
/// (Linux asks processes to request it: `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && request_tile_data_permission())
}

fn cpu_has_amx_bf16() -> bool {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    // cpuid leaf 7 exists on every CPU with AVX-512.
    let leaf7 = __cpuid_count(7, 0);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    amx_bf16 && amx_tile
}

#[cfg(target_os = "linux")]
fn request_tile_data_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it changes only whether this
    // process may use the AMX tile state.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data_permission() -> bool {
    false
}

/// How many bf16 products a dense layer sums per f32 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passes {
    /// `bf16(x) * bf16(w)`: 8 significant bits per operand.
    One,
    /// `x = hi + lo` and `w = hi + lo`, each part a bf16; sums `hi*hi + lo*hi + hi*lo`
    /// (the dropped `lo*lo` is 2^-16 of the product): about 16 significant bits per
    /// operand, close to f32's 24 at three times the tile work.
    Three,
}

impl Passes {
    /// bf16 parts stored per value: `hi`, or `hi` and `lo`.
    fn parts(self) -> usize {
        match self {
            Passes::One => 1,
            Passes::Three => 2,
        }
    }
}

/// bf16 values per cache line.
const LINE_U16: usize = 32;

/// A `[out, in]` weight in bf16 tiles, `[out tile][in tile][part][16 x 16 pairs]`,
/// both dimensions zero-padded to whole tiles (out to pairs of tiles).
pub struct AmxDense {
    /// Starts on a cache line: a tile row that splits a line costs two loads
    /// (measured: 40% of the kernel's speed).
    tiles: WeightBuffer<u16>,
    passes: Passes,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
    k_tiles: usize,
    n_tiles: usize,
}

impl AmxDense {
    /// `read_row(r, buf)` writes row `r` of the `[out_dim, in_dim]` f32 weight.
    /// Call only when [`available`] said yes.
    pub fn from_rows(
        out_dim: usize,
        in_dim: usize,
        read_row: impl Fn(usize, &mut [f32]) + Sync,
        bias: Vec<f32>,
        passes: Passes,
    ) -> Self {
        assert_eq!(bias.len(), out_dim);
        let parts = passes.parts();
        let k_tiles = in_dim.div_ceil(TILE_K);
        let n_tiles = out_dim.div_ceil(2 * TILE_COLS) * 2;
        let strip_len = k_tiles * parts * TILE_ELEMS;
        let mut tiles = WeightBuffer::zeroed(n_tiles * strip_len);
        tiles
            .as_mut_slice()
            .par_chunks_mut(strip_len)
            .enumerate()
            .for_each(|(nt, strip)| {
                let mut row = vec![0f32; in_dim];
                let mut packed = vec![0u16; k_tiles * parts * TILE_K];
                for col in 0..TILE_COLS {
                    let n = nt * TILE_COLS + col;
                    if n >= out_dim {
                        break;
                    }
                    read_row(n, &mut row);
                    // SAFETY: AVX-512F comes with every AMX CPU, checked in `available`.
                    unsafe { pack_row(&row, &mut packed, parts) };
                    // Tile row p of a k tile holds, for each column, inputs 2p and 2p+1;
                    // `packed` is in tile order already ([k tile][part][32]).
                    for (tile, inputs) in strip
                        .chunks_exact_mut(TILE_ELEMS)
                        .zip(packed.chunks_exact(TILE_K))
                    {
                        for (p, pair) in inputs.chunks_exact(2).enumerate() {
                            let at = p * 2 * TILE_COLS + col * 2;
                            tile[at..at + 2].copy_from_slice(pair);
                        }
                    }
                }
            });
        Self {
            tiles,
            passes,
            bias,
            in_dim,
            out_dim,
            k_tiles,
            n_tiles,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `input` is `rows x in_dim` f32, row-major; returns `rows x out_dim`.
    pub fn forward(&self, input: &[f32], rows: usize, act: Activation) -> Vec<f32> {
        assert_eq!(input.len(), rows * self.in_dim);
        let parts = self.passes.parts();
        // Each input row as `[k tile][part][32]`, so a tile of one part is 16 rows of
        // one line each at a fixed stride.
        let row_len = self.k_tiles * parts * TILE_K;
        let rows_pad = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
        // Buffers taken from the calling thread, not borrowed, while the pool works: a
        // rayon thread waiting below may run another caller's pass, which then finds
        // none and grows its own.
        let mut a_buf = PACKED_INPUTS.take();
        let a_len = rows_pad * row_len + LINE_U16;
        if a_buf.len() < a_len {
            a_buf.resize(a_len, 0);
        }
        let a_start = a_buf.as_ptr().align_offset(64);
        let a = &mut a_buf[a_start..][..rows_pad * row_len];
        let (real, padding) = a.split_at_mut(rows * row_len);
        // Padding rows' results are never stored, but their inputs are kept finite.
        padding.fill(0);
        real.par_chunks_mut(TILE_ROWS * row_len)
            .zip(input.par_chunks(TILE_ROWS * self.in_dim))
            .for_each(|(dst, src)| {
                for (dst, src) in dst
                    .chunks_exact_mut(row_len)
                    .zip(src.chunks_exact(self.in_dim))
                {
                    // SAFETY: AVX-512F comes with every AMX CPU, checked in `available`.
                    unsafe { pack_row(src, dst, parts) };
                }
            });
        let a = &*a;

        // Not zeroed: every element is written by `store` before anything reads it.
        let mut out = Vec::<f32>::with_capacity(rows * self.out_dim);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let pairs = self.n_tiles / 2;
        let threads = rayon::current_num_threads().max(1);
        let k_blocks: Vec<Range<usize>> = (0..self.k_tiles)
            .step_by(K_BLOCK_TILES)
            .map(|k0| k0..(k0 + K_BLOCK_TILES).min(self.k_tiles))
            .collect();
        let block_bytes = K_BLOCK_TILES.min(self.k_tiles) * parts * TILE_K * 2;
        let chunk_rows =
            (CHUNK_BYTES / block_bytes / (2 * TILE_ROWS) * (2 * TILE_ROWS)).max(2 * TILE_ROWS);
        // Sums between k blocks, `[pair][chunk row][32]`: a pair's next block may run
        // on another thread.
        let mut partial = PARTIAL_SUMS.take();
        if k_blocks.len() > 1 && partial.len() < pairs * chunk_rows * 2 * TILE_COLS {
            partial.resize(pairs * chunk_rows * 2 * TILE_COLS, 0.0);
        }
        let partial_ptr = SendPtr(partial.as_mut_ptr());
        for row0 in (0..rows_pad).step_by(chunk_rows) {
            for kb in 0..k_blocks.len() {
                let pass = Pass {
                    a,
                    row_len,
                    rows,
                    row0,
                    chunk_end: (row0 + chunk_rows).min(rows_pad),
                    chunk_rows,
                    k_blocks: &k_blocks,
                    kb,
                    act,
                    partial: &partial_ptr,
                    out: &out_ptr,
                };
                // Pairs are claimed one at a time, see `Claims`.
                let claims = Claims::new(pairs);
                (0..threads).into_par_iter().for_each(|_| {
                    // SAFETY: AMX was enabled in `available` (the caller's contract);
                    // tiles are configured for this thread here and released below.
                    unsafe { configure_tiles() };
                    claims.run(|pair, then| {
                        // SAFETY: AMX is configured; only this claim writes `pair`'s
                        // columns of `out` and its place in `partial`.
                        unsafe { self.pair_pass(&pass, pair, then) }
                    });
                    // SAFETY: matches `configure_tiles` above.
                    unsafe { asm!("tilerelease", options(nostack, preserves_flags)) };
                });
            }
        }
        PARTIAL_SUMS.set(partial);
        PACKED_INPUTS.set(a_buf);
        // SAFETY: the passes cover every pair and every row (see `store`).
        unsafe { out.set_len(rows * self.out_dim) };
        out
    }

    /// Tile pair `pair` over one chunk of rows and one k block (`pass`), into
    /// `pass.partial` or, after the last block, `pass.out`; meanwhile prefetches the
    /// weights of pair `then` for the same block.
    ///
    /// # Safety
    /// Tiles must be configured on this thread ([`configure_tiles`]); no other thread
    /// may work on `pair` in this pass.
    unsafe fn pair_pass(&self, pass: &Pass, pair: usize, then: Option<usize>) {
        let k_range = pass.k_blocks[pass.kb].clone();
        let last_block = pass.kb + 1 == pass.k_blocks.len();
        let next = then.map_or([&[][..]; 2], |q| self.strips_over(q, &k_range));
        let row_blocks = (pass.chunk_end - pass.row0).div_ceil(2 * TILE_ROWS);
        let mut scratch = Scratch([[0f32; 2 * TILE_COLS]; 2 * TILE_ROWS]);
        let mut r = pass.row0;
        while r < pass.chunk_end {
            let two = r + TILE_ROWS < pass.chunk_end;
            let tile_rows = TILE_ROWS * (1 + two as usize);
            // One k block: the sums go straight to `scratch`; more: to this (pair,
            // rows)'s place in `partial`, the same 32 x 32 layout.
            let sums = if pass.k_blocks.len() == 1 {
                scratch.0.as_mut_ptr().cast::<f32>()
            } else {
                let at = (pair * pass.chunk_rows + r - pass.row0) * 2 * TILE_COLS;
                pass.partial.0.wrapping_add(at)
            };
            // Each row block fetches its share of the next weights into L2, so the
            // first block after this pair does not wait on memory (measured 12-15% on a
            // 144-token forward pass).
            let prefetch = next.map(|w| {
                prefetch_share(w, LINE_U16, row_blocks, (r - pass.row0) / (2 * TILE_ROWS))
            });
            // SAFETY: `a` holds rows_pad rows of row_len bf16 and `r + tile_rows <=
            // rows_pad`; the weight strips hold k_tiles * parts tiles per column tile;
            // `sums` has 32 x 32 floats (partial holds every pair's chunk rows).
            unsafe {
                self.multiply(
                    pass.a,
                    pass.row_len,
                    r,
                    two,
                    pair,
                    k_range.clone(),
                    pass.kb > 0,
                    sums,
                    prefetch,
                )
            };
            if last_block {
                let valid = pass.rows.saturating_sub(r).min(tile_rows);
                // SAFETY: rows < rows of `out`, whose columns of `pair` only this
                // claim writes; `sums` as above.
                unsafe { self.store(sums, r, valid, pair, pass.act, pass.out.0) };
            }
            r += tile_rows;
        }
    }

    /// Column tile `n`'s weights, `[k tile][part][16 x 16 pairs]`.
    fn strip(&self, n: usize) -> &[u16] {
        let len = self.k_tiles * self.passes.parts() * TILE_ELEMS;
        &self.tiles.as_slice()[n * len..][..len]
    }

    /// Pair `pair`'s two weight strips over the k tiles `k`.
    fn strips_over(&self, pair: usize, k: &Range<usize>) -> [&[u16]; 2] {
        let per_k = self.passes.parts() * TILE_ELEMS;
        [2 * pair, 2 * pair + 1].map(|n| &self.strip(n)[k.start * per_k..k.end * per_k])
    }

    /// C tiles for rows `r..r + 16` (and `r + 16..r + 32` when `two`) and the columns
    /// of tile pair `pair`, over the k tiles `k_range`, into `sums` (row-major, 32
    /// columns), adding to what `sums` holds when `accumulate`; meanwhile prefetches
    /// the cache lines of `prefetch` into L2.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply(
        &self,
        a: &[u16],
        row_len: usize,
        r: usize,
        two: bool,
        pair: usize,
        k_range: Range<usize>,
        accumulate: bool,
        sums: *mut f32,
        prefetch: [&[u16]; 2],
    ) {
        let parts = self.passes.parts();
        // Lines prefetched per k tile from each range: spread over the loop.
        let prefetch_per_k = prefetch.map(|p| (p.len() / LINE_U16).div_ceil(k_range.len().max(1)));
        let k_first = k_range.start;
        let sa = row_len * 2;
        let a0 = a[r * row_len..].as_ptr();
        let a1 = a0.wrapping_add(TILE_ROWS * row_len);
        let b0 = self.strip(2 * pair).as_ptr();
        let b1 = self.strip(2 * pair + 1).as_ptr();
        let c = sums;
        // Row strides in bytes: sums rows hold 32 f32; weight tile rows 16 bf16 pairs.
        const C_STRIDE: usize = 2 * TILE_COLS * 4;
        const SB: usize = TILE_COLS * 2 * 2;
        // SAFETY: pointer ranges are the caller's contract (a1 is read only when
        // `two`); tmm0-3 accumulate, tmm4-5 hold A, tmm6-7 hold B.
        unsafe {
            if accumulate {
                asm!(
                    "tileloadd tmm0, [{c0} + {sc}*1]",
                    "tileloadd tmm1, [{c1} + {sc}*1]",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(TILE_COLS),
                    sc = in(reg) C_STRIDE,
                    options(nostack, preserves_flags, readonly),
                );
                if two {
                    asm!(
                        "tileloadd tmm2, [{c2} + {sc}*1]",
                        "tileloadd tmm3, [{c3} + {sc}*1]",
                        c2 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS),
                        c3 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS + TILE_COLS),
                        sc = in(reg) C_STRIDE,
                        options(nostack, preserves_flags, readonly),
                    );
                }
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, preserves_flags)
                );
            }
            // One tile-instruction sequence of the k loop with its address operands
            // (registers; the tiles themselves persist between sequences).
            macro_rules! tile_ops {
                ($($line:literal),+ $(,)? ; $($name:ident = $value:expr),+) => {
                    asm!(
                        $($line),+,
                        $($name = in(reg) $value),+,
                        options(nostack, preserves_flags, readonly)
                    )
                };
            }
            for kt in k_range {
                for (lines, per_k) in prefetch.iter().zip(prefetch_per_k) {
                    for line in lines
                        .chunks(LINE_U16)
                        .skip((kt - k_first) * per_k)
                        .take(per_k)
                    {
                        _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast());
                    }
                }
                // Offsets of this k tile's `hi` parts; `lo` follows each `hi`.
                let ao = kt * parts * TILE_K;
                let bo = kt * parts * TILE_ELEMS;
                // hi*hi: the whole product in one pass.
                if two {
                    tile_ops!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        ; a0 = a0.add(ao), a1 = a1.add(ao), b0 = b0.add(bo), b1 = b1.add(bo), sa = sa, sb = SB
                    );
                } else {
                    tile_ops!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        ; a0 = a0.add(ao), b0 = b0.add(bo), b1 = b1.add(bo), sa = sa, sb = SB
                    );
                }
                if self.passes == Passes::One {
                    continue;
                }
                // lo*hi with the B `hi` tiles still loaded, then hi*lo (the A `hi`
                // tiles loaded again, from L1). The `lo` parts sit 64 bytes after
                // each A `hi` row and one tile (1 KiB) after each B `hi` tile.
                if two {
                    tile_ops!(
                        "tileloadd tmm4, [{a0} + {sa}*1 + 64]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}*1 + 64]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        "tileloadd tmm6, [{b0} + {sb}*1 + 1024]",
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1 + 1024]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        ; a0 = a0.add(ao), a1 = a1.add(ao), b0 = b0.add(bo), b1 = b1.add(bo), sa = sa, sb = SB
                    );
                } else {
                    tile_ops!(
                        "tileloadd tmm5, [{a0} + {sa}*1 + 64]",
                        "tdpbf16ps tmm0, tmm5, tmm6",
                        "tdpbf16ps tmm1, tmm5, tmm7",
                        "tileloadd tmm6, [{b0} + {sb}*1 + 1024]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1 + 1024]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        ; a0 = a0.add(ao), b0 = b0.add(bo), b1 = b1.add(bo), sa = sa, sb = SB
                    );
                }
            }
            asm!(
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c1} + {sc}*1], tmm1",
                c0 = in(reg) c,
                c1 = in(reg) c.add(TILE_COLS),
                sc = in(reg) C_STRIDE,
                options(nostack, preserves_flags),
            );
            if two {
                asm!(
                    "tilestored [{c2} + {sc}*1], tmm2",
                    "tilestored [{c3} + {sc}*1], tmm3",
                    c2 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS),
                    c3 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS + TILE_COLS),
                    sc = in(reg) C_STRIDE,
                    options(nostack, preserves_flags),
                );
            }
        }
    }

    /// Adds the bias, applies the activation and writes `valid` rows of `sums` (32 x 32,
    /// row-major) to `out` at row `r`, columns of tile pair `pair` that exist.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(
        &self,
        sums: *const f32,
        r: usize,
        valid: usize,
        pair: usize,
        act: Activation,
        out: *mut f32,
    ) {
        let col0 = pair * 2 * TILE_COLS;
        let cols = (self.out_dim - col0).min(2 * TILE_COLS);
        for i in 0..valid {
            // SAFETY: `sums` holds 32 rows of 32 floats (caller's contract), valid <= 32.
            let row = unsafe { sums.add(i * 2 * TILE_COLS) };
            let dst = (r + i) * self.out_dim + col0;
            for half in 0..2 {
                let start = half * TILE_COLS;
                if start >= cols {
                    break;
                }
                let n = (cols - start).min(TILE_COLS);
                let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                // SAFETY: `mask` limits loads and stores to the `n` columns that exist;
                // row `r + i < rows` of `out` has `out_dim` columns (caller's contract).
                unsafe {
                    let bias = _mm512_maskz_loadu_ps(mask, self.bias.as_ptr().add(col0 + start));
                    let mut v = _mm512_add_ps(_mm512_loadu_ps(row.add(start)), bias);
                    if act == Activation::GeluErf {
                        v = super::x86::gelu_erf(v);
                    }
                    _mm512_mask_storeu_ps(out.add(dst + start), mask, v);
                }
            }
        }
    }
}

/// One claiming pass of a call: packed inputs `a` (rows of `row_len` bf16, `[k
/// tile][part][32]`, the first `rows` real), the chunk of rows `row0..chunk_end` and
/// k block `k_blocks[kb]`.
struct Pass<'a> {
    a: &'a [u16],
    row_len: usize,
    rows: usize,
    row0: usize,
    chunk_end: usize,
    chunk_rows: usize,
    k_blocks: &'a [Range<usize>],
    kb: usize,
    act: Activation,
    /// `[pair][chunk row][32]` f32 sums between k blocks (unused with one block).
    partial: &'a SendPtr,
    out: &'a SendPtr,
}

/// 32 rows x 32 columns of f32 results, aligned for the tile stores.
#[repr(C, align(64))]
struct Scratch([[f32; 2 * TILE_COLS]; 2 * TILE_ROWS]);

/// Palette 1, every tile 16 rows of 64 bytes.
///
/// # Safety
/// The process must have AMX tile-data permission ([`available`]).
unsafe fn configure_tiles() {
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);
    let mut config = TileConfig([0; 64]);
    config.0[0] = 1;
    for tile in 0..8 {
        config.0[16 + 2 * tile] = 64;
        config.0[48 + tile] = TILE_ROWS as u8;
    }
    // SAFETY: a valid palette-1 configuration; the caller has permission.
    unsafe {
        asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, preserves_flags, readonly))
    };
}

/// f32 to bf16 bits, rounding to nearest even (what `torch.bfloat16` casts do): the
/// scalar reference for [`pack_row`].
#[cfg(test)]
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// Writes `src` into `dst` in tile order, `[k tile][part][32]`: part 0 is `bf16(x)`,
/// part 1 (when `parts` is 2) `bf16(x - part 0)`, so `x = hi + lo` to ~16 significant
/// bits. Rounds to nearest even (what `torch.bfloat16` casts do); inputs past the end
/// of `src` are written as zeros. NaN is not expected and not preserved.
///
/// # Safety
/// The CPU must support AVX-512F; `dst` must hold whole k tiles for `src`.
#[target_feature(enable = "avx512f")]
unsafe fn pack_row(src: &[f32], dst: &mut [u16], parts: usize) {
    assert!(dst.len() >= src.len().div_ceil(TILE_K) * TILE_K * parts);
    let round = |x: __m512| {
        let bits = _mm512_castps_si512(x);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
        _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded))
    };
    for (t, tile_row) in dst.chunks_exact_mut(parts * TILE_K).enumerate() {
        for half in 0..2 {
            let k = t * TILE_K + half * 16;
            let n = src.len().saturating_sub(k).min(16);
            let mask = ((1u32 << n) - 1) as __mmask16;
            // SAFETY: the mask limits the load to the `n` values that exist (masked-out
            // lanes never fault); the stores stay inside `tile_row`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().wrapping_add(k));
                let hi = round(x);
                _mm256_storeu_si256(tile_row.as_mut_ptr().add(half * 16).cast(), hi);
                if parts == 2 {
                    let hi_f =
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)));
                    let lo = round(_mm512_sub_ps(x, hi_f));
                    _mm256_storeu_si256(tile_row.as_mut_ptr().add(TILE_K + half * 16).cast(), lo);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway too: the even neighbour is 1 + 2^-6.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
    }

    #[test]
    fn rows_pack_into_tile_order_as_hi_and_lo_parts() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        // 37 inputs: one whole k tile and a partial one, whose tail must be zeros.
        let src: Vec<f32> = (0..37)
            .map(|i| (1.0 + i as f32 / 256.0 - 0.07) * 1.3)
            .collect();
        let from_bits = |b: u16| f32::from_bits(u32::from(b) << 16);
        for parts in [1, 2] {
            let mut dst = vec![0xffffu16; 2 * parts * TILE_K];
            // SAFETY: AVX-512F was just detected; `dst` holds two k tiles.
            unsafe { pack_row(&src, &mut dst, parts) };
            for k in 0..2 * TILE_K {
                let at = (k / TILE_K) * parts * TILE_K + k % TILE_K;
                let x = src.get(k).copied().unwrap_or(0.0);
                let hi = bf16_bits(x);
                assert_eq!(dst[at], hi, "hi of input {k}, {parts} parts");
                if parts == 2 {
                    let lo = dst[at + TILE_K];
                    assert_eq!(lo, bf16_bits(x - from_bits(hi)), "lo of input {k}");
                    // hi + lo carries ~16 significant bits.
                    let error = (x - from_bits(hi) - from_bits(lo)).abs();
                    assert!(
                        error <= x.abs() * 2f32.powi(-16),
                        "input {k}: error {error}"
                    );
                }
            }
        }
    }
}
