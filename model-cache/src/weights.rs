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
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Dtype::BF16 => {
                let bytes = &self.mmap[self.start + r * self.cols * 2..][..self.cols * 2];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            _ => unreachable!("checked in WeightFile::matrix"),
        }
    }
}
