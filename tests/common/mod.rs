//! Helpers shared by the integration tests: running the CLI, reading and writing safetensors.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the CUDA tools are: `SATURN_CUDA_HOME`, else `.cuda-tools/nvidia/cu13`
/// (`scripts/install-cuda-tools.sh` installs them there; `scripts/test.sh` runs it).
pub fn cuda_home() -> PathBuf {
    std::env::var_os("SATURN_CUDA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cuda-tools/nvidia/cu13"))
}

/// Runs the `saturn` binary with `args` from the repository root.
pub fn saturn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saturn")).args(args).current_dir(root()).output().expect("run saturn")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tensor read from a safetensors file: shape and values (f32, or i64 as f64-exact i64).
#[derive(Debug, Clone)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

pub fn read_safetensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Values)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => Values::F32(
                    data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                ),
                Dtype::I64 => Values::I64(
                    data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
                ),
                other => panic!("unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// Writes f32 tensors as a safetensors file with the given dtype (F32, BF16 or F16).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, dtype: Dtype) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let b: Vec<u8> = match dtype {
                Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::BF16 => data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                Dtype::F16 => data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                other => panic!("unsupported {other:?}"),
            };
            (name.clone(), shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A small deterministic generator (xorshift), so tests need no RNG crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Approximately normal with standard deviation `std` (sum of uniforms).
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32).sum();
        (s - 2.0) * std * 1.732
    }
}
