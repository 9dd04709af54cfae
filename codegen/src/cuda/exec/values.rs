//! Host values to and from device bytes: params, scalars, tensors.

use saturn_ir::{DType, Dim, Node, Op, ParamSource, Tensor, TensorData};

use crate::CodegenError;
use crate::cuda::Buffer;

/// The dtype of a buffer (f32, i64 or bool; bf16 for weights stored so).
pub(super) fn buffer_dtype(b: &Buffer) -> Result<DType, CodegenError> {
    [DType::F32, DType::I64, DType::Bool, DType::BF16].into_iter().find(|d| d.name() == b.dtype).ok_or_else(
        || CodegenError::Run { node: b.name.clone(), msg: format!("dtype {} has no device form", b.dtype) },
    )
}

pub(super) fn tensor_dtype(t: &Tensor) -> DType {
    match t.data {
        TensorData::F32(_) => DType::F32,
        TensorData::I64(_) => DType::I64,
        TensorData::Bool(_) => DType::Bool,
    }
}

/// A tensor's elements as device bytes (bool as one byte, 0 or 1).
pub fn bytes_of(t: &Tensor) -> Vec<u8> {
    match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
    }
}

/// The tensor of `shape` whose elements are `bytes` (bf16 elements widened to f32).
pub fn tensor_of(bytes: &[u8], dtype: DType, shape: Vec<usize>) -> Tensor {
    let data = match dtype {
        DType::BF16 => TensorData::F32(
            bytes.chunks_exact(2).map(|c| half::bf16::from_ne_bytes([c[0], c[1]]).to_f32()).collect(),
        ),
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

/// A rank-0 constant's bytes in its buffer's dtype.
pub(super) fn scalar_bytes(b: &Buffer, value: f64) -> Result<Vec<u8>, CodegenError> {
    let t = match buffer_dtype(b)? {
        DType::I64 => Tensor::i64(vec![], vec![value as i64]),
        DType::Bool => Tensor::bool(vec![], vec![value != 0.0]),
        _ => Tensor::f32(vec![], vec![value as f32]),
    };
    Ok(bytes_of(&t))
}

/// A param's values as bytes, loaded as the interpreter loads them (stacked `{e}` keys too);
/// a bf16 buffer gets each f32 rounded to the nearest bf16 (ties to even).
pub(super) fn load_param(b: &Buffer, key: &str, params: &dyn ParamSource) -> Result<Vec<u8>, CodegenError> {
    let stored = buffer_dtype(b)?;
    let dtype = if stored == DType::BF16 { DType::F32 } else { stored };
    let shape: Option<Vec<usize>> = b.shape.iter().map(|d| d.as_const().map(|v| v as usize)).collect();
    let shape =
        shape.ok_or_else(|| CodegenError::Param { key: key.into(), msg: "shape is not constant".into() })?;
    let node = Node {
        name: b.name.clone(),
        op: Op::Param { key: key.into() },
        ty: saturn_ir::TensorType::new(dtype, shape.iter().map(|&d| Dim::from(d))),
    };
    let t = saturn_ir::load_param(&node, key, &shape, params)
        .map_err(|e| CodegenError::Param { key: key.into(), msg: e.to_string() })?;
    Ok(stored_bytes(&t, stored))
}

/// `t`'s values as a buffer storing `stored` holds them: f32 values in a bf16 buffer rounded to
/// the nearest bf16 (ties to even), anything else as it is.
pub(super) fn stored_bytes(t: &Tensor, stored: DType) -> Vec<u8> {
    match (&t.data, stored) {
        (TensorData::F32(v), DType::BF16) => {
            v.iter().flat_map(|&x| half::bf16::from_f32(x).to_ne_bytes()).collect()
        }
        _ => bytes_of(t),
    }
}
