//! Elementwise ops: unary float functions, binary arithmetic with numpy broadcasting, `where`,
//! and casts.
//!
//! Float functions follow torch's f32 CPU formulas (`sigmoid(x) = 1 / (1 + exp(-x))`,
//! `silu(x) = x / (1 + exp(-x))`, `rsqrt(x) = 1 / sqrt(x)`). Float `max`/`min` propagate NaN
//! (as `torch.maximum`). Integer `add`/`sub`/`mul` wrap on overflow; integer `div` truncates
//! toward zero and a zero divisor is an error.

use super::tensor::{Elem, Tensor, TensorData, broadcast_strides, by_kind, offsets};
use super::{OpError, OpResult, elems};
use crate::{BinaryOp, DType, UnaryOp};

/// `f(x)` elementwise on a float tensor.
pub(super) fn unary(op: UnaryOp, x: &Tensor) -> OpResult {
    let v = elems::<f32>(x, "operand")?;
    let f: fn(f32) -> f32 = match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Rsqrt => |x| 1.0 / x.sqrt(),
        UnaryOp::Recip => |x| 1.0 / x,
        UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => |x| x / (1.0 + (-x).exp()),
        UnaryOp::Tanh => f32::tanh,
    };
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(v.iter().map(|&x| f(x)).collect()) })
}

/// `f(a, b)` elementwise with broadcasting to `shape`.
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, shape: &[usize]) -> OpResult {
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                BinaryOp::Add => |a, b| a + b,
                BinaryOp::Sub => |a, b| a - b,
                BinaryOp::Mul => |a, b| a * b,
                BinaryOp::Div => |a, b| a / b,
                // NaN-propagating, like torch.maximum / torch.minimum.
                BinaryOp::Max => |a, b| if a.is_nan() || a > b { a } else { b },
                BinaryOp::Min => |a, b| if a.is_nan() || a < b { a } else { b },
            };
            TensorData::F32(broadcast_map(x, &a.shape, y, &b.shape, shape, f)?)
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            if op == BinaryOp::Div && y.contains(&0) && shape.iter().all(|&d| d > 0) {
                return Err(OpError::Value("integer division by zero".into()));
            }
            let f: fn(i64, i64) -> i64 = match op {
                BinaryOp::Add => i64::wrapping_add,
                BinaryOp::Sub => i64::wrapping_sub,
                BinaryOp::Mul => i64::wrapping_mul,
                BinaryOp::Div => |a, b| if b == 0 { 0 } else { a.wrapping_div(b) },
                BinaryOp::Max => i64::max,
                BinaryOp::Min => i64::min,
            };
            TensorData::I64(broadcast_map(x, &a.shape, y, &b.shape, shape, f)?)
        }
        _ => {
            let msg = format!("{} on {} and {} data", op.name(), a.data.kind_name(), b.data.kind_name());
            return Err(OpError::Internal(msg));
        }
    };
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// `f(a[i], b[j])` for every index of `shape`, `a` and `b` broadcast to it.
pub(super) fn broadcast_map<A: Copy, B: Copy, O>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<Vec<O>, OpError> {
    if a_shape == shape && b_shape == shape {
        return Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect());
    }
    let sa = broadcast_strides(a_shape, shape, 1)?;
    let sb = broadcast_strides(b_shape, shape, 1)?;
    if b.len() == 1 && a_shape == shape {
        return Ok(a.iter().map(|&x| f(x, b[0])).collect());
    }
    if a.len() == 1 && b_shape == shape {
        return Ok(b.iter().map(|&y| f(a[0], y)).collect());
    }
    Ok(offsets(shape, &sa, 0).zip(offsets(shape, &sb, 0)).map(|(i, j)| f(a[i], b[j])).collect())
}

/// `cond ? a : b` elementwise, all three broadcast to `shape`.
pub(super) fn select(cond: &Tensor, a: &Tensor, b: &Tensor, shape: &[usize]) -> OpResult {
    let c = elems::<bool>(cond, "condition")?;
    let sc = broadcast_strides(&cond.shape, shape, 1)?;
    let sa = broadcast_strides(&a.shape, shape, 1)?;
    let sb = broadcast_strides(&b.shape, shape, 1)?;
    fn pick<T: Elem>(
        c: &[bool],
        a: &Tensor,
        b: &Tensor,
        idx: impl Iterator<Item = (usize, (usize, usize))>,
    ) -> Result<Vec<T>, OpError> {
        let (x, y) = (elems::<T>(a, "lhs")?, elems::<T>(b, "rhs")?);
        Ok(idx.map(|(k, (i, j))| if c[k] { x[i] } else { y[j] }).collect())
    }
    let idx = || offsets(shape, &sc, 0).zip(offsets(shape, &sa, 0).zip(offsets(shape, &sb, 0)));
    let data = by_kind!(&a.data, T => pick::<T>(c, a, b, idx())?);
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// Converts to `dtype`: float to int truncates toward zero (saturating; NaN gives 0), bool is
/// 0 or 1, anything to bool is `!= 0` (NaN gives true). Rounding to f16/bf16 is done by the
/// caller for every node of those dtypes.
pub(super) fn cast(x: &Tensor, dtype: DType) -> Tensor {
    let data = match (&x.data, dtype) {
        (TensorData::F32(v), DType::I64) => TensorData::I64(v.iter().map(|&f| f as i64).collect()),
        (TensorData::F32(v), DType::Bool) => TensorData::Bool(v.iter().map(|&f| f != 0.0).collect()),
        (TensorData::F32(v), _) => TensorData::F32(v.clone()),
        (TensorData::I64(v), DType::I64) => TensorData::I64(v.clone()),
        (TensorData::I64(v), DType::Bool) => TensorData::Bool(v.iter().map(|&i| i != 0).collect()),
        (TensorData::I64(v), _) => TensorData::F32(v.iter().map(|&i| i as f32).collect()),
        (TensorData::Bool(v), DType::I64) => TensorData::I64(v.iter().map(|&b| i64::from(b)).collect()),
        (TensorData::Bool(v), DType::Bool) => TensorData::Bool(v.clone()),
        (TensorData::Bool(v), _) => TensorData::F32(v.iter().map(|&b| f32::from(u8::from(b))).collect()),
    };
    Tensor { shape: x.shape.clone(), data }
}
