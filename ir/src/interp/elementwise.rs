//! Elementwise ops: unary float functions, binary arithmetic with numpy broadcasting, `where`,
//! and casts.
//!
//! Float functions are `UnaryOp::apply` / `BinaryOp::apply` (torch's f32 CPU formulas; `max`
//! and `min` propagate NaN), shared with fused elementwise expressions. Integer `add`/`sub`/`mul` wrap on overflow; integer `div` truncates
//! toward zero and a zero divisor is an error.

use super::tensor::{Elem, Tensor, TensorData, broadcast_strides, by_kind, offsets};
use super::{OpError, OpResult, elems};
use crate::{BinaryOp, DType, ElementwiseExpr, UnaryOp};

/// `f(x)` elementwise on a float tensor.
pub(super) fn unary(op: UnaryOp, x: &Tensor) -> OpResult {
    let v = elems::<f32>(x, "operand")?;
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(v.iter().map(|&x| op.apply(x)).collect()) })
}

/// `f(a, b)` elementwise with broadcasting to `shape`.
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, shape: &[usize]) -> OpResult {
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            TensorData::F32(broadcast_map(x, &a.shape, y, &b.shape, shape, |a, b| op.apply(a, b))?)
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

/// A fused elementwise expression over operands broadcast to `shape`.
pub(super) fn fused(expr: &ElementwiseExpr, args: &[&Tensor], shape: &[usize]) -> OpResult {
    let values = args.iter().map(|t| elems::<f32>(t, "operand")).collect::<Result<Vec<_>, _>>()?;
    let strides =
        args.iter().map(|t| broadcast_strides(&t.shape, shape, 1)).collect::<Result<Vec<_>, _>>()?;
    let mut iters: Vec<_> = strides.iter().map(|s| offsets(shape, s, 0)).collect();
    let n: usize = shape.iter().product();
    let mut point = vec![0f32; args.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        for ((p, it), v) in point.iter_mut().zip(&mut iters).zip(&values) {
            *p = v[it.next().ok_or_else(|| OpError::Internal("broadcast offsets ran out".into()))?];
        }
        out.push(expr.eval(&point));
    }
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(out) })
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
