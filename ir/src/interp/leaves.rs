//! Nodes without operands: graph inputs, params (plain and `{e}`-stacked), scalars, aranges.
//!
//! Inputs and params are checked against the node's dtype representation (`F32` data for every
//! float dtype, `I64`, `Bool`) and its concrete shape; errors name the input or the param key.

use std::collections::HashMap;

use super::tensor::{Tensor, TensorData, checked_numel};
use super::{InterpError, OpError, OpResult, ParamSource};
use crate::{DType, Node};

/// The bound value of input node `node`, checked against its type.
pub(super) fn input(
    node: &Node,
    shape: &[usize],
    inputs: &HashMap<String, Tensor>,
) -> Result<Tensor, InterpError> {
    let name = &node.name;
    let t = inputs.get(name).ok_or_else(|| InterpError::MissingInput { name: name.clone() })?;
    if !fits(t, node.ty.dtype, shape) {
        return Err(InterpError::InputMismatch {
            name: name.clone(),
            expected: expected(node.ty.dtype, shape),
            got: t.describe(),
        });
    }
    Ok(t.clone())
}

/// The param `key` of node `node`. A key containing `{e}` is a stack along a new axis 0 of the
/// tensors `key` with `{e}` replaced by `0, 1, ..., shape[0]-1`, each of shape `shape[1..]`.
pub fn param(node: &Node, key: &str, shape: &[usize], src: &dyn ParamSource) -> Result<Tensor, InterpError> {
    let dtype = node.ty.dtype;
    let err =
        |key: &str, msg: String| InterpError::Param { node: node.name.clone(), key: key.to_string(), msg };
    let load = |key: &str, shape: &[usize]| -> Result<Tensor, InterpError> {
        let t = src.load(key, shape).map_err(|msg| err(key, msg))?;
        if !fits(&t, dtype, shape) {
            return Err(err(key, format!("expected {}, got {}", expected(dtype, shape), t.describe())));
        }
        Ok(t)
    };
    if !key.contains("{e}") {
        return load(key, shape);
    }
    let Some((&count, rest)) = shape.split_first() else {
        return Err(err(key, "a stacked param (`{e}` in its key) needs rank >= 1".into()));
    };
    let numel = shape.iter().product();
    let mut data = TensorData::with_capacity(dtype, numel);
    for e in 0..count {
        let k = element_key(key, e);
        let t = load(&k, rest)?;
        if !data.extend_from(&t.data) {
            return Err(err(&k, format!("got {} data for a {dtype} param", t.data.kind_name())));
        }
    }
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// The f32 values of the param `key` of shape `shape` as `src` lends them in place
/// ([`ParamSource::f32_view`]): one slice, or for a stacked key (`{e}`, as in [`param`]) one per
/// stacked tensor, in order. `None` where `src` lends any of them not: [`param`] then loads
/// them, and says what is wrong with a bad key.
pub fn param_views<'s>(key: &str, shape: &[usize], src: &'s dyn ParamSource) -> Option<Vec<&'s [f32]>> {
    if !key.contains("{e}") {
        return Some(vec![src.f32_view(key, shape)?]);
    }
    let (&count, rest) = shape.split_first()?;
    (0..count).map(|e| src.f32_view(&element_key(key, e), rest)).collect()
}

/// The key of tensor `e` of a stacked param key.
fn element_key(key: &str, e: usize) -> String {
    key.replace("{e}", &e.to_string())
}

/// Whether `t` is a valid value of type `dtype` with concrete shape `shape`.
fn fits(t: &Tensor, dtype: DType, shape: &[usize]) -> bool {
    t.data.holds(dtype) && t.shape == shape && checked_numel(shape) == Some(t.data.len())
}

fn expected(dtype: DType, shape: &[usize]) -> String {
    format!("{dtype}{shape:?}")
}

/// A rank-0 constant: `F32` for floats, `I64` (truncated toward zero) or `Bool` (`value != 0`).
pub(super) fn scalar(dtype: DType, value: f64) -> Tensor {
    let data = match dtype {
        DType::F32 | DType::F16 | DType::BF16 => TensorData::F32(vec![value as f32]),
        DType::I64 => TensorData::I64(vec![value as i64]),
        DType::Bool => TensorData::Bool(vec![value != 0.0]),
    };
    Tensor { shape: vec![], data }
}

/// `start, start+1, ...` with the length of the node's (rank-1) shape.
pub(super) fn arange(start: usize, shape: &[usize]) -> OpResult {
    let &[len] = shape else {
        return Err(OpError::Internal(format!("arange result shape {shape:?} is not rank 1")));
    };
    let start =
        i64::try_from(start).map_err(|_| OpError::Value(format!("arange start {start} overflows i64")))?;
    let data = (0..len)
        .map(|k| start.checked_add(k as i64))
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| OpError::Value(format!("arange {start} + {len} overflows i64")))?;
    Ok(Tensor { shape: vec![len], data: TensorData::I64(data) })
}
