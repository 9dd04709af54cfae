//! Ops along one axis: `reduce_sum` / `reduce_mean` / `reduce_max`, softmax and RMSNorm.
//!
//! Sums are accumulated in f64 and rounded to f32 once. `reduce_max` propagates NaN (as
//! `torch.max`) and gives `-inf` over an empty axis; `reduce_mean` over an empty axis is NaN
//! (0/0, as torch).

use super::tensor::{Tensor, TensorData, split_axis};
use super::{OpError, OpResult, elems};
use crate::ReduceOp;

fn check_axis(x: &Tensor, axis: usize) -> Result<(), OpError> {
    if axis < x.shape.len() {
        Ok(())
    } else {
        Err(OpError::Internal(format!("axis {axis} is out of range for shape {:?}", x.shape)))
    }
}

/// Reduces `axis` of `x`; `shape` is the result shape (with or without the kept axis).
pub(super) fn reduce(op: ReduceOp, x: &Tensor, axis: usize, shape: &[usize]) -> OpResult {
    check_axis(x, axis)?;
    let v = elems::<f32>(x, "operand")?;
    let (outer, n, inner) = split_axis(&x.shape, axis);
    let out = match op {
        ReduceOp::Sum | ReduceOp::Mean => {
            let mut acc = vec![0f64; outer * inner];
            for o in 0..outer {
                let dst = &mut acc[o * inner..(o + 1) * inner];
                for k in 0..n {
                    let src = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
                    dst.iter_mut().zip(src).for_each(|(a, &s)| *a += f64::from(s));
                }
            }
            let div = if op == ReduceOp::Mean { n as f64 } else { 1.0 };
            acc.iter().map(|&a| (a / div) as f32).collect()
        }
        ReduceOp::Max => {
            let mut acc = vec![f32::NEG_INFINITY; outer * inner];
            for o in 0..outer {
                let dst = &mut acc[o * inner..(o + 1) * inner];
                for k in 0..n {
                    let src = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
                    for (a, &s) in dst.iter_mut().zip(src) {
                        if !a.is_nan() && (s.is_nan() || s > *a) {
                            *a = s;
                        }
                    }
                }
            }
            acc
        }
    };
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(out) })
}

/// `exp(x - max) / sum(exp(x - max))` along `axis`; a slice that is all `-inf` gives zeros.
pub(super) fn softmax(x: &Tensor, axis: usize) -> OpResult {
    check_axis(x, axis)?;
    let v = elems::<f32>(x, "operand")?;
    let (outer, n, inner) = split_axis(&x.shape, axis);
    let mut out = vec![0f32; v.len()];
    let mut e = vec![0f32; n];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let max = (0..n).map(|k| v[at(k)]).fold(f32::NEG_INFINITY, |m, s| if s > m { s } else { m });
            if max == f32::NEG_INFINITY && (0..n).all(|k| !v[at(k)].is_nan()) {
                continue; // all -inf (or empty): zeros
            }
            let mut sum = 0f64;
            for (k, ek) in e.iter_mut().enumerate() {
                *ek = (v[at(k)] - max).exp();
                sum += f64::from(*ek);
            }
            for (k, &ek) in e.iter().enumerate() {
                out[at(k)] = (f64::from(ek) / sum) as f32;
            }
        }
    }
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) })
}

/// `x * (1 / sqrt(mean(x^2) + eps)) * w` along the last axis; the mean of squares is taken in
/// f64 and the reciprocal root rounded to f32 once, then the products are f32 as in torch.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> OpResult {
    let v = elems::<f32>(x, "input")?;
    let w = elems::<f32>(w, "weight")?;
    let d = x.shape.last().copied().unwrap_or(0);
    if w.len() != d {
        return Err(OpError::Internal(format!("weight has {} elements for an axis of {d}", w.len())));
    }
    let mut out = v.to_vec();
    if d == 0 {
        return Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) });
    }
    for row in out.chunks_exact_mut(d) {
        let ms = row.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / d as f64;
        let r = (1.0 / (ms + eps).sqrt()) as f32;
        row.iter_mut().zip(w).for_each(|(s, &wk)| *s = (*s * r) * wk);
    }
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) })
}
