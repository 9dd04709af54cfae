//! Concrete tensors and the indexing helpers every op shares.
//!
//! A [`Tensor`] is row-major data with a concrete shape. Float values of every float dtype are
//! held as `f32` (f16/bf16 values are f32 values rounded to that precision, see
//! [`round_to_dtype`]). [`Elem`] lets shape-moving ops be written once for all element kinds;
//! [`offsets`] walks a shape with arbitrary strides (permute, expand, broadcasting).

use crate::DType;

/// A concrete tensor: row-major data and a concrete shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// The elements of a [`Tensor`]. Every float dtype (f32, f16, bf16) is held as `F32`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Tensor {
    /// A float tensor.
    ///
    /// # Panics
    /// If `data.len()` differs from the product of `shape`.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::checked(shape, TensorData::F32(data))
    }

    /// An i64 tensor.
    ///
    /// # Panics
    /// If `data.len()` differs from the product of `shape`.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Tensor {
        Tensor::checked(shape, TensorData::I64(data))
    }

    /// A bool tensor.
    ///
    /// # Panics
    /// If `data.len()` differs from the product of `shape`.
    pub fn bool(shape: Vec<usize>, data: Vec<bool>) -> Tensor {
        Tensor::checked(shape, TensorData::Bool(data))
    }

    fn checked(shape: Vec<usize>, data: TensorData) -> Tensor {
        let numel = checked_numel(&shape);
        assert!(
            numel == Some(data.len()),
            "tensor of shape {shape:?} needs {numel:?} elements, got {}",
            data.len()
        );
        Tensor { shape, data }
    }

    /// The number of elements the shape describes (1 for rank 0; saturates at `usize::MAX`).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        f32::slice(&self.data)
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        i64::slice(&self.data)
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        bool::slice(&self.data)
    }

    /// `f32[2, 3]`-style description (the element kind, not the IR dtype).
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("{}{:?}", self.data.kind_name(), self.shape);
        if Some(self.data.len()) != checked_numel(&self.shape) {
            s.push_str(&format!(" with {} elements", self.data.len()));
        }
        s
    }
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f32`, `i64` or `bool`.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::I64(_) => "i64",
            TensorData::Bool(_) => "bool",
        }
    }

    /// Whether this data is the representation of `dtype` (`F32` for every float dtype).
    pub(crate) fn holds(&self, dtype: DType) -> bool {
        matches!(
            (self, dtype),
            (TensorData::F32(_), DType::F32 | DType::F16 | DType::BF16)
                | (TensorData::I64(_), DType::I64)
                | (TensorData::Bool(_), DType::Bool)
        )
    }

    /// Empty data of the representation of `dtype`, with room for `cap` elements.
    pub(crate) fn with_capacity(dtype: DType, cap: usize) -> TensorData {
        match dtype {
            DType::F32 | DType::F16 | DType::BF16 => TensorData::F32(Vec::with_capacity(cap)),
            DType::I64 => TensorData::I64(Vec::with_capacity(cap)),
            DType::Bool => TensorData::Bool(Vec::with_capacity(cap)),
        }
    }

    /// Appends `other`; false (and nothing appended) when the kinds differ.
    pub(crate) fn extend_from(&mut self, other: &TensorData) -> bool {
        match (self, other) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }
}

/// The product of `shape`, or `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// An element kind of [`TensorData`], so data-moving ops are written once.
pub(crate) trait Elem: Copy + 'static {
    fn slice(data: &TensorData) -> Option<&[Self]>;
}

impl Elem for f32 {
    fn slice(data: &TensorData) -> Option<&[f32]> {
        if let TensorData::F32(v) = data { Some(v) } else { None }
    }
}

impl Elem for i64 {
    fn slice(data: &TensorData) -> Option<&[i64]> {
        if let TensorData::I64(v) = data { Some(v) } else { None }
    }
}

impl Elem for bool {
    fn slice(data: &TensorData) -> Option<&[bool]> {
        if let TensorData::Bool(v) = data { Some(v) } else { None }
    }
}

/// Runs `$body` with `$T` aliased to the element type of `$data` and wraps the resulting
/// `Vec<$T>` back into [`TensorData`].
macro_rules! by_kind {
    ($data:expr, $T:ident => $body:expr) => {
        match $data {
            $crate::interp::TensorData::F32(_) => {
                type $T = f32;
                $crate::interp::TensorData::F32($body)
            }
            $crate::interp::TensorData::I64(_) => {
                type $T = i64;
                $crate::interp::TensorData::I64($body)
            }
            $crate::interp::TensorData::Bool(_) => {
                type $T = bool;
                $crate::interp::TensorData::Bool($body)
            }
        }
    };
}
pub(crate) use by_kind;

/// Rounds float data to the precision of `dtype` (no-op for f32 and non-float dtypes).
pub(crate) fn round_to_dtype(dtype: DType, data: &mut TensorData) {
    let TensorData::F32(v) = data else { return };
    match dtype {
        DType::BF16 => v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        DType::F16 => v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        _ => {}
    }
}

/// Row-major strides of `shape`, in elements.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1usize;
    for (st, &d) in s.iter_mut().zip(shape).rev() {
        *st = acc;
        acc = acc.saturating_mul(d);
    }
    s
}

/// Strides that read a row-major tensor of shape `from` (whose innermost stride is `unit`) as
/// if broadcast to `to` (right-aligned; dims of 1 and missing leading axes get stride 0).
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize], unit: usize) -> Result<Vec<usize>, String> {
    if from.len() > to.len() {
        return Err(format!("cannot broadcast {from:?} to {to:?}"));
    }
    let lead = to.len() - from.len();
    let own = strides(from);
    let mut out = vec![0; to.len()];
    for (i, &t) in to.iter().enumerate().skip(lead) {
        let f = from[i - lead];
        if f == t && f != 1 {
            out[i] = own[i - lead] * unit;
        } else if f != 1 {
            return Err(format!("cannot broadcast {from:?} to {to:?}"));
        }
    }
    Ok(out)
}

/// The offsets `sum(idx[a] * strides[a]) + base` for every index of `shape`, row-major.
pub(crate) fn offsets(shape: &[usize], strides: &[usize], base: usize) -> Offsets {
    debug_assert_eq!(shape.len(), strides.len());
    Offsets {
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        idx: vec![0; shape.len()],
        off: base,
        remaining: checked_numel(shape).unwrap_or(0),
    }
}

/// Iterator returned by [`offsets`].
pub(crate) struct Offsets {
    shape: Vec<usize>,
    strides: Vec<usize>,
    idx: Vec<usize>,
    off: usize,
    remaining: usize,
}

impl Iterator for Offsets {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let cur = self.off;
        if self.remaining > 0 {
            for a in (0..self.shape.len()).rev() {
                self.idx[a] += 1;
                self.off += self.strides[a];
                if self.idx[a] < self.shape[a] {
                    break;
                }
                self.off -= self.strides[a] * self.shape[a];
                self.idx[a] = 0;
            }
        }
        Some(cur)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Offsets {}

/// `(outer, n, inner)`: the sizes before, at and after `axis`.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let n = shape[axis];
    let inner = shape[axis + 1..].iter().product();
    (outer, n, inner)
}
