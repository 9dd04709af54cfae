//! Hugging Face checkpoints: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped. Tensors are read one at a time, on demand,
//! converted to f32; a file is never copied whole.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorInfo};
use saturn_ir::{ParamSource, Tensor};

use crate::error::{FrontendError, Result};

/// One memory-mapped safetensors file with its parsed header.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Where tensor data starts (after the 8-byte length and the JSON header).
    data_start: usize,
}

/// Where one tensor lives.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    offsets: (usize, usize),
}

/// A checkpoint's tensors by name.
pub struct Checkpoint {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorEntry>,
}

impl Checkpoint {
    /// Opens the weights in `dir`: `model.safetensors.index.json` if present, else
    /// `model.safetensors`. Headers are validated (offsets, sizes, file length) up front.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            shard_files(&index)?.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for path in files {
            let file =
                File::open(&path).map_err(|source| FrontendError::Io { path: path.clone(), source })?;
            // SAFETY: the file is opened read-only and is not modified by saturn while mapped;
            // as with any mmap, another process truncating it would be undefined behaviour.
            let mmap = unsafe { Mmap::map(&file) }
                .map_err(|source| FrontendError::Io { path: path.clone(), source })?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| FrontendError::Safetensors { path: path.clone(), msg: e.to_string() })?;
            let shard = shards.len();
            let infos: HashMap<String, &TensorInfo> = metadata.tensors();
            for (name, info) in infos {
                let entry = TensorEntry {
                    shard,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offsets: info.data_offsets,
                };
                if tensors.insert(name.clone(), entry).is_some() {
                    return Err(FrontendError::Safetensors {
                        path: path.clone(),
                        msg: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
            }
            shards.push(Shard { path, mmap, data_start: 8 + header_len });
        }
        Ok(Checkpoint { shards, tensors })
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorEntry)> {
        self.tensors.iter().map(|(n, e)| (n.as_str(), e))
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// The file that holds `entry`.
    pub fn file_of(&self, entry: &TensorEntry) -> &Path {
        &self.shards[entry.shard].path
    }

    /// The stored bytes of `entry` (its offsets were checked against the file when it opened).
    fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        let shard = &self.shards[entry.shard];
        &shard.mmap[shard.data_start + entry.offsets.0..shard.data_start + entry.offsets.1]
    }

    /// Reads one tensor as f32 (from F32, BF16 or F16 storage).
    pub fn read_f32(&self, name: &str) -> Result<Tensor> {
        let entry = self.get(name).ok_or_else(|| FrontendError::MissingWeight { name: name.into() })?;
        let bytes = self.bytes(entry);
        let data: Vec<f32> = match entry.dtype {
            Dtype::F32 => {
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::BF16 => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            Dtype::F16 => {
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            other => {
                return Err(FrontendError::WeightDtype { name: name.into(), dtype: format!("{other:?}") });
            }
        };
        Ok(Tensor::f32(entry.shape.clone(), data))
    }
}

impl ParamSource for Checkpoint {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let entry = self.get(key).ok_or_else(|| format!("weight `{key}` is missing from the checkpoint"))?;
        if entry.shape != shape {
            return Err(format!("weight `{key}` has shape {:?}, expected {shape:?}", entry.shape));
        }
        self.read_f32(key).map_err(|e| e.to_string())
    }

    /// F32 tensors in place in the mapped file, where their bytes are 4-byte aligned (safetensors
    /// stores little-endian, so only on little-endian machines).
    fn f32_view(&self, key: &str, shape: &[usize]) -> Option<&[f32]> {
        let entry = self.get(key).filter(|e| e.dtype == Dtype::F32 && e.shape == shape)?;
        if cfg!(target_endian = "big") {
            return None;
        }
        let bytes = self.bytes(entry);
        let n = shape.iter().product::<usize>();
        if bytes.len() != n * 4 || !(bytes.as_ptr() as usize).is_multiple_of(align_of::<f32>()) {
            return None;
        }
        // SAFETY: `n` aligned f32s of native (little-endian) byte order lie in the mapping, which
        // lives as long as `self`; every bit pattern is an f32.
        Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) })
    }
}

/// The shard files named by an index's `weight_map`, sorted and deduplicated.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(index).map_err(|source| FrontendError::Io { path: index.into(), source })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| FrontendError::Json { path: index.into(), msg: e.to_string() })?;
    let map =
        value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| FrontendError::ConfigField {
            path: index.into(),
            field: "weight_map".into(),
            msg: "missing, or not an object of tensor name to file".into(),
        })?;
    let mut files = Vec::new();
    for (name, file) in map {
        let file = file.as_str().filter(|f| !f.contains('/') && !f.contains('\\')).ok_or_else(|| {
            FrontendError::ConfigField {
                path: index.into(),
                field: format!("weight_map.{name}"),
                msg: format!("must be a file name in the checkpoint folder, got {file}"),
            }
        })?;
        files.push(file.to_string());
    }
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A checkpoint in `dir` of an f32 tensor `w [2, 3]` and a bf16 tensor `b [2]`.
    fn write(dir: &Path) {
        let w: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
        let b: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let views = [
            ("w", TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap()),
            ("b", TensorView::new(Dtype::BF16, vec![2], &b).unwrap()),
        ];
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    }

    #[test]
    fn f32_tensors_are_lent_in_place_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path());
        let ck = Checkpoint::open(dir.path()).unwrap();
        let lent = ck.f32_view("w", &[2, 3]).expect("an f32 tensor is lent");
        assert_eq!(lent, ck.load("w", &[2, 3]).unwrap().as_f32().unwrap());
        assert_eq!(lent, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        // A wrong shape, another dtype or a missing key: `load` is what says why.
        assert!(ck.f32_view("w", &[3, 2]).is_none());
        assert!(ck.f32_view("b", &[2]).is_none());
        assert_eq!(ck.load("b", &[2]).unwrap().as_f32().unwrap(), [1.0, 2.0]);
        assert!(ck.f32_view("missing", &[1]).is_none());
    }
}
