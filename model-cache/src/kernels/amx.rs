//! Dense layers on Intel AMX tiles in bf16 with f32 accumulation: the opt-in
//! `Precision::Bf16` mode (Sapphire Rapids and later: the c7i / m7i / r7i instances).
//!
//! One `TDPBF16PS` multiplies a 16 x 32 bf16 tile by a 32 x 16 bf16 tile into a 16 x 16
//! f32 tile: 16,384 flops per instruction, roughly 8x what AVX-512 FMAs reach per cycle.
//! Weights are converted to bf16 once at load, already in the tile layout the
//! instruction wants (pairs of consecutive inputs side by side, "VNNI" order); inputs
//! are rounded to bf16 per call. Bias, GELU and every other op of the model stay f32.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly.
//! The compiler never allocates tile registers itself, so tile state set by one `asm!`
//! block is still there for the next one inside the same kernel call.

use std::arch::asm;
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{Activation, SendPtr};

/// Rows of an A / C tile.
const TILE_ROWS: usize = 16;
/// Output columns of one C tile (16 f32 = 64 bytes).
const TILE_COLS: usize = 16;
/// Inputs one tile multiply consumes (32 bf16 = 64 bytes per row).
const TILE_K: usize = 32;
/// bf16 values in one packed weight tile: 16 rows of 16 column pairs.
const TILE_ELEMS: usize = TILE_ROWS * TILE_K;
/// Input rows per chunk: each thread walks its weights once per chunk, so the chunk's
/// bf16 inputs should stay in L2 (about 512 KiB) while it does.
const CHUNK_BYTES: usize = 512 * 1024;

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

/// A `[out, in]` weight in bf16 tiles, `[out tile][in tile][16 x 16 pairs]`, both
/// dimensions zero-padded to whole tiles (out to pairs of tiles).
pub struct AmxDense {
    tiles: Vec<u16>,
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
    ) -> Self {
        assert_eq!(bias.len(), out_dim);
        let k_tiles = in_dim.div_ceil(TILE_K);
        let n_tiles = out_dim.div_ceil(2 * TILE_COLS) * 2;
        let mut tiles = vec![0u16; n_tiles * k_tiles * TILE_ELEMS];
        tiles
            .par_chunks_mut(k_tiles * TILE_ELEMS)
            .enumerate()
            .for_each(|(nt, strip)| {
                let mut row = vec![0f32; in_dim];
                let mut row_bf16 = vec![0u16; padded_inputs(k_tiles)];
                for col in 0..TILE_COLS {
                    let n = nt * TILE_COLS + col;
                    if n >= out_dim {
                        break;
                    }
                    read_row(n, &mut row);
                    // SAFETY: AVX-512F comes with every AMX CPU, checked in `available`.
                    unsafe { to_bf16(&row, &mut row_bf16[..in_dim]) };
                    // Tile row p of k tile kt holds, for each column, inputs 2p and 2p+1.
                    for (kt, tile) in strip.chunks_exact_mut(TILE_ELEMS).enumerate() {
                        let inputs = &row_bf16[kt * TILE_K..][..TILE_K];
                        for (p, pair) in inputs.chunks_exact(2).enumerate() {
                            let at = p * 2 * TILE_COLS + col * 2;
                            tile[at..at + 2].copy_from_slice(pair);
                        }
                    }
                }
            });
        Self {
            tiles,
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
        let k_pad = padded_inputs(self.k_tiles);
        let rows_pad = rows.div_ceil(TILE_ROWS) * TILE_ROWS;
        let mut a = vec![0u16; rows_pad * k_pad];
        a.par_chunks_mut(k_pad)
            .zip(input.par_chunks(self.in_dim))
            // SAFETY: AVX-512F comes with every AMX CPU, checked in `available`.
            .for_each(|(dst, src)| unsafe { to_bf16(src, &mut dst[..self.in_dim]) });

        let mut out = vec![0f32; rows * self.out_dim];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let pairs = self.n_tiles / 2;
        let threads = rayon::current_num_threads().max(1);
        let per_task = pairs.div_ceil(threads).max(1);
        let chunk_rows =
            (CHUNK_BYTES / (k_pad * 2) / (2 * TILE_ROWS) * (2 * TILE_ROWS)).max(2 * TILE_ROWS);
        let pair_ids: Vec<usize> = (0..pairs).collect();
        pair_ids.par_chunks(per_task).for_each(|task_pairs| {
            let out_ptr = &out_ptr;
            let mut scratch = Scratch([[0f32; 2 * TILE_COLS]; 2 * TILE_ROWS]);
            // SAFETY: AMX was enabled in `available` (the caller's contract); tiles are
            // configured for this thread here and released before returning.
            unsafe { configure_tiles() };
            let mut row0 = 0;
            while row0 < rows_pad {
                let chunk_end = (row0 + chunk_rows).min(rows_pad);
                for &pair in task_pairs {
                    let mut r = row0;
                    while r < chunk_end {
                        let tiles = if r + TILE_ROWS < chunk_end { 2 } else { 1 };
                        // SAFETY: `a` holds rows_pad x k_pad bf16 and `r + 16 * tiles <=
                        // rows_pad`; the weight strip holds k_tiles tiles per column tile.
                        unsafe {
                            self.multiply(&a, k_pad, r, tiles, pair, &mut scratch);
                        }
                        let valid = (rows.saturating_sub(r)).min(tiles * TILE_ROWS);
                        // SAFETY: each task writes columns of its own pairs only, rows < rows.
                        unsafe { self.store(&scratch, r, valid, pair, act, out_ptr.0) };
                        r += tiles * TILE_ROWS;
                    }
                }
                row0 = chunk_end;
            }
            // SAFETY: matches `configure_tiles` above.
            unsafe { asm!("tilerelease", options(nostack, preserves_flags)) };
        });
        out
    }

    /// C tiles for rows `r..r + 16 * tiles` and columns of tile pair `pair` into
    /// `scratch` (row-major, 32 columns).
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply(
        &self,
        a: &[u16],
        k_pad: usize,
        r: usize,
        tiles: usize,
        pair: usize,
        scratch: &mut Scratch,
    ) {
        let a_stride = k_pad * 2;
        let a0 = a[r * k_pad..].as_ptr();
        let b0 = self.tiles[(2 * pair) * self.k_tiles * TILE_ELEMS..].as_ptr();
        let b1 = self.tiles[(2 * pair + 1) * self.k_tiles * TILE_ELEMS..].as_ptr();
        let c = scratch.0.as_mut_ptr().cast::<f32>();
        // Row strides in bytes: scratch rows hold 32 f32; weight tile rows 16 bf16 pairs.
        const C_STRIDE: usize = 2 * TILE_COLS * 4;
        const B_STRIDE: usize = TILE_COLS * 2 * 2;
        // SAFETY: pointer ranges are the caller's contract; tmm0-3 accumulate, tmm4-5
        // hold A, tmm6-7 hold B.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                options(nostack, preserves_flags)
            );
            if tiles == 2 {
                asm!(
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, preserves_flags)
                );
                let a1 = a0.add(TILE_ROWS * k_pad);
                for kt in 0..self.k_tiles {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(kt * TILE_K),
                        a1 = in(reg) a1.add(kt * TILE_K),
                        b0 = in(reg) b0.add(kt * TILE_ELEMS),
                        b1 = in(reg) b1.add(kt * TILE_ELEMS),
                        sa = in(reg) a_stride,
                        sb = in(reg) B_STRIDE,
                        options(nostack, preserves_flags, readonly),
                    );
                }
                asm!(
                    "tilestored [{c2} + {sc}*1], tmm2",
                    "tilestored [{c3} + {sc}*1], tmm3",
                    c2 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS),
                    c3 = in(reg) c.add(TILE_ROWS * 2 * TILE_COLS + TILE_COLS),
                    sc = in(reg) C_STRIDE,
                    options(nostack, preserves_flags),
                );
            } else {
                for kt in 0..self.k_tiles {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        a0 = in(reg) a0.add(kt * TILE_K),
                        b0 = in(reg) b0.add(kt * TILE_ELEMS),
                        b1 = in(reg) b1.add(kt * TILE_ELEMS),
                        sa = in(reg) a_stride,
                        sb = in(reg) B_STRIDE,
                        options(nostack, preserves_flags, readonly),
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
        }
    }

    /// Adds the bias, applies the activation and writes `valid` rows of `scratch` to
    /// `out` at row `r`, columns of tile pair `pair` that exist.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(
        &self,
        scratch: &Scratch,
        r: usize,
        valid: usize,
        pair: usize,
        act: Activation,
        out: *mut f32,
    ) {
        let col0 = pair * 2 * TILE_COLS;
        let cols = (self.out_dim - col0).min(2 * TILE_COLS);
        for (i, row) in scratch.0[..valid].iter().enumerate() {
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
                    let mut v = _mm512_add_ps(_mm512_loadu_ps(row.as_ptr().add(start)), bias);
                    if act == Activation::GeluErf {
                        v = super::x86::gelu_erf(v);
                    }
                    _mm512_mask_storeu_ps(out.add(dst + start), mask, v);
                }
            }
        }
    }
}

/// Inputs padded to whole k tiles.
fn padded_inputs(k_tiles: usize) -> usize {
    k_tiles * TILE_K
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

/// f32 to bf16 bits, rounding to nearest even (what `torch.bfloat16` casts do).
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// `dst[i] = bf16(src[i])`, rounding to nearest even; NaN is not expected in
/// activations and is not preserved.
#[target_feature(enable = "avx512f")]
unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    let mut i = 0;
    let lsb_mask = _mm512_set1_epi32(1);
    let bias = _mm512_set1_epi32(0x7fff);
    while i + 16 <= src.len() {
        // SAFETY: `i + 16 <= len` for both slices.
        unsafe {
            let bits = _mm512_castps_si512(_mm512_loadu_ps(src.as_ptr().add(i)));
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), lsb_mask);
            let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(bias, lsb));
            let halves = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), halves);
        }
        i += 16;
    }
    for (d, s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = bf16_bits(*s);
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
        if std::arch::is_x86_feature_detected!("avx512f") {
            let src: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 256.0 - 0.07).collect();
            let mut dst = vec![0u16; src.len()];
            // SAFETY: AVX-512F was just detected.
            unsafe { to_bf16(&src, &mut dst) };
            let want: Vec<u16> = src.iter().map(|&x| bf16_bits(x)).collect();
            assert_eq!(dst, want);
        }
    }
}
