//! Host memory standing in for device buffers, and tensors to and from their bytes.

use saturn_ir::{DType, Tensor, TensorData};

/// 64 bytes, aligned as device allocations and arena offsets are (vector loads may rely on it).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The byte every unwritten element starts as: f32 NaN, i64 -1.
const POISON: u8 = 0xff;

/// A 64-byte aligned byte buffer.
pub(super) struct Memory {
    lines: Vec<Line>,
    len: usize,
}

impl Memory {
    /// `len` bytes of [`POISON`].
    pub fn poisoned(len: usize) -> Memory {
        Memory { lines: vec![Line([POISON; 64]); len.div_ceil(64)], len }
    }

    pub fn from_bytes(bytes: &[u8]) -> Memory {
        let mut m = Memory::poisoned(bytes.len());
        m.bytes_mut().copy_from_slice(bytes);
        m
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }

    /// At least `len` bytes, keeping the contents (new bytes are poison).
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
            self.lines.resize(len.div_ceil(64), Line([POISON; 64]));
            self.len = len;
        }
    }
}

/// The dtype named `name` (the program's buffer dtypes).
pub(super) fn dtype_of(name: &str) -> Option<DType> {
    [DType::F32, DType::I64, DType::Bool].into_iter().find(|d| d.name() == name)
}

/// A tensor's elements as device bytes (bool as one byte, 0 or 1).
pub(super) fn bytes_of(t: &Tensor) -> Vec<u8> {
    match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
    }
}

/// The tensor of `shape` whose elements are `bytes`.
pub(super) fn tensor_of(bytes: &[u8], dtype: DType, shape: Vec<usize>) -> Tensor {
    let data = match dtype {
        DType::I64 => TensorData::I64(
            bytes.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect(),
        ),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        _ => TensorData::F32(
            bytes.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes"))).collect(),
        ),
    };
    Tensor { shape, data }
}
