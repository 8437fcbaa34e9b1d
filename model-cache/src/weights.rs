//! Reads a safetensors file through one read-only mmap and hands out f32 rows, so the
//! loader converts (f16/bf16 → f32) and lays out each weight in a single pass, and the
//! word-embedding table (a third of the model) is never copied at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::Dtype;

use crate::ModelError;

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

pub(crate) struct WeightFile {
    path: PathBuf,
    mmap: Arc<Mmap>,
    entries: HashMap<String, Entry>,
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: mapped read-only; checkpoints are replaced by rename, never rewritten
        // in place, so the mapped bytes do not change under us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let bad = |detail: String| ModelError::BadFile {
            path: path.to_path_buf(),
            detail,
        };
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
        let data_start = 8 + header_len;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                (
                    name,
                    Entry {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: data_start + start,
                        end: data_start + end,
                    },
                )
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            mmap: Arc::new(mmap),
            entries,
        })
    }

    /// Drops the mapping's resident pages once every tensor that is copied has been
    /// copied: what stays mapped (the word embeddings) faults back in row by row from
    /// the page cache, so RSS holds the converted weights once, not twice.
    pub fn release_resident_pages(&self) {
        #[cfg(unix)]
        // SAFETY: the mapping is private and read-only; after MADV_DONTNEED a read of
        // a file-backed page refetches the file's bytes, which never change in place.
        let _ = unsafe {
            self.mmap
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A weight as `[rows, cols]` rows (a vector is one row).
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<RowSource, ModelError> {
        let entry = self.entries.get(name).ok_or_else(|| ModelError::BadFile {
            path: self.path.clone(),
            detail: format!("no tensor named {name}"),
        })?;
        if entry.shape != shape {
            return Err(ModelError::BadFile {
                path: self.path.clone(),
                detail: format!(
                    "{name} has shape {:?}, the config implies {shape:?}",
                    entry.shape
                ),
            });
        }
        let element = match entry.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(ModelError::BadFile {
                    path: self.path.clone(),
                    detail: format!("{name} is {other:?}; only F32, F16 and BF16 are supported"),
                });
            }
        };
        let cols = *shape.last().unwrap_or(&1);
        Ok(RowSource {
            mmap: Arc::clone(&self.mmap),
            dtype: entry.dtype,
            start: entry.start,
            rows: (entry.end - entry.start) / element / cols.max(1),
            cols,
        })
    }

    /// A whole weight as an f32 tensor of `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let source = self.matrix(name, shape)?;
        let mut values = vec![0f32; source.rows * source.cols];
        for (r, row) in values.chunks_mut(source.cols.max(1)).enumerate() {
            source.read_row(r, row);
        }
        Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| ModelError::weights(&self.path, e))
    }
}

/// Rows of one stored tensor, converted to f32 on read.
#[derive(Clone)]
pub(crate) struct RowSource {
    mmap: Arc<Mmap>,
    dtype: Dtype,
    start: usize,
    pub rows: usize,
    pub cols: usize,
}

impl RowSource {
    /// Writes row `r` into `out` (`cols` long) as f32.
    pub fn read_row(&self, r: usize, out: &mut [f32]) {
        debug_assert!(r < self.rows && out.len() == self.cols);
        match self.dtype {
            Dtype::F32 => {
                let bytes = &self.mmap[self.start + r * self.cols * 4..][..self.cols * 4];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 => {
                let bytes = &self.mmap[self.start + r * self.cols * 2..][..self.cols * 2];
                f16_to_f32(bytes, out);
            }
            Dtype::BF16 => {
                let bytes = &self.mmap[self.start + r * self.cols * 2..][..self.cols * 2];
                bf16_to_f32(bytes, out);
            }
            _ => unreachable!("checked in WeightFile::matrix"),
        }
    }
}

/// Little-endian IEEE half floats → f32, exactly (every f16 is an f32). Vectorized:
/// 16 at a time with AVX-512 (`vcvtph2ps zmm`), 8 with F16C, else one at a time. Loading
/// an f16 checkpoint is mostly this conversion, so it must not cost more than the f32
/// checkpoint's plain copy.
pub(crate) fn f16_to_f32(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len() * 2);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; lengths checked above.
            return unsafe { f16_to_f32_avx512(bytes, out) };
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: the CPU has F16C and AVX; lengths checked above.
            return unsafe { f16_to_f32_f16c(bytes, out) };
        }
    }
    f16_to_f32_scalar(bytes, out);
}

fn f16_to_f32_scalar(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f16_to_f32_avx512(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_storeu_ps};
    let whole = out.len() / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= out.len() and bytes holds 2 * out.len() bytes; both
        // intrinsics take unaligned pointers.
        unsafe {
            let halves = _mm256_loadu_si256(bytes.as_ptr().add(i * 2).cast::<__m256i>());
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_cvtph_ps(halves));
        }
    }
    f16_to_f32_scalar(&bytes[whole * 2..], &mut out[whole..]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16_to_f32_f16c(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let whole = out.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: as in the AVX-512 version, 8 lanes at a time.
        unsafe {
            let halves = _mm_loadu_si128(bytes.as_ptr().add(i * 2).cast::<__m128i>());
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(halves));
        }
    }
    f16_to_f32_scalar(&bytes[whole * 2..], &mut out[whole..]);
}

/// Little-endian bfloat16 → f32: the top half of an f32, so a shift (which the compiler
/// vectorizes). NaNs stay NaN (their payload is kept as stored).
pub(crate) fn bf16_to_f32(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len() * 2);
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every one of the 65,536 f16 bit patterns converts as `half` converts it one at a
    /// time (NaNs: to some NaN), at every length remainder the vector loops leave.
    #[test]
    fn f16_conversion_is_exact_for_every_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = all.iter().flat_map(|v| v.to_le_bytes()).collect();
        for len in [all.len(), all.len() - 1, 15, 7, 1, 0] {
            let mut fast = vec![0f32; len];
            f16_to_f32(&bytes[..len * 2], &mut fast);
            let mut slow = vec![0f32; len];
            f16_to_f32_scalar(&bytes[..len * 2], &mut slow);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                let expected = half::f16::from_bits(all[i]).to_f32();
                assert!(
                    (a.is_nan() && expected.is_nan()) || a.to_bits() == expected.to_bits(),
                    "f16 {:#06x}: {a} vs {expected}",
                    all[i]
                );
                assert!((b.is_nan() && a.is_nan()) || a.to_bits() == b.to_bits());
            }
        }
        // From an odd address too (tensors are not guaranteed to be aligned in the map).
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes[..64]);
        let mut out = vec![0f32; 32];
        f16_to_f32(&shifted[1..], &mut out);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v.to_bits(), half::f16::from_bits(all[i]).to_f32().to_bits());
        }
    }

    #[test]
    fn bf16_conversion_matches_half_for_every_non_nan_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = all.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0f32; all.len()];
        bf16_to_f32(&bytes, &mut out);
        for (bits, v) in all.iter().zip(&out) {
            let expected = half::bf16::from_bits(*bits).to_f32();
            assert!(
                (v.is_nan() && expected.is_nan()) || v.to_bits() == expected.to_bits(),
                "bf16 {bits:#06x}: {v} vs {expected}"
            );
        }
    }
}
