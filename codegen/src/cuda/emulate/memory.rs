//! Host memory standing in for device buffers.

/// 64 bytes, aligned as device allocations and arena offsets are (vector loads may rely on it).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The byte every unwritten element starts as: f32 NaN, i64 -1.
const POISON: u8 = 0xff;

/// A 64-byte aligned byte buffer.
pub struct Memory {
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

    /// The address kernels write through. Kernels run only while the executor holds the
    /// set mutably, so no Rust reference to these bytes is alive then.
    pub fn address(&self) -> u64 {
        self.lines.as_ptr() as u64
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
