//! Masks: `topk_mask` (the k largest along the last axis) and `causal_mask`.

use std::cmp::Ordering;

use super::tensor::{Tensor, TensorData};
use super::{OpError, OpResult, elems};

/// True at the `k` largest elements of each last-axis row; ties go to the lower index and NaN
/// ranks below everything. `k = 0` gives all false, `k >= n` all true.
pub(super) fn topk_mask(x: &Tensor, k: u64) -> OpResult {
    let v = elems::<f32>(x, "operand")?;
    let n = x.shape.last().copied().ok_or_else(|| OpError::Internal("rank-0 operand".into()))?;
    let k = usize::try_from(k).unwrap_or(usize::MAX).min(n);
    let mut out = vec![false; v.len()];
    if n == 0 || k == 0 {
        return Ok(Tensor { shape: x.shape.clone(), data: TensorData::Bool(out) });
    }
    let mut idx: Vec<usize> = Vec::with_capacity(n);
    for (row, mask) in v.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        if k == n {
            mask.fill(true);
            continue;
        }
        select_topk(row, k, &mut idx);
        for &i in &idx[..k] {
            mask[i] = true;
        }
    }
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::Bool(out) })
}

/// Leaves the indices of the `k` largest elements of `row` in `idx[..k]` (in no particular
/// order), for `1 <= k <= row.len()`: ties go to the lower index and NaN ranks below
/// everything. `idx` is the caller's buffer, so a backend can reuse it.
pub fn select_topk(row: &[f32], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..row.len());
    // A strict total order: larger first, NaN last, then lower index first.
    let rank = |&i: &usize, &j: &usize| -> Ordering {
        let (a, b) = (row[i], row[j]);
        let by_value = match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        };
        by_value.then(i.cmp(&j))
    };
    idx.select_nth_unstable_by(k - 1, rank);
}

/// For `x [..., Sq, Sk]`: entries with key `j > i + Sk - Sq` become `-inf`.
pub(super) fn causal_mask(x: &Tensor) -> OpResult {
    let v = elems::<f32>(x, "operand")?;
    let r = x.shape.len();
    if r < 2 {
        return Err(OpError::Internal(format!("operand shape {:?} has rank < 2", x.shape)));
    }
    let (sq, sk) = (x.shape[r - 2], x.shape[r - 1]);
    let mut out = v.to_vec();
    if sq == 0 || sk == 0 {
        return Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) });
    }
    let offset = sk as i128 - sq as i128;
    for block in out.chunks_exact_mut(sq * sk) {
        for (i, row) in block.chunks_exact_mut(sk).enumerate() {
            // First masked key: j > i + offset, i.e. j >= i + offset + 1, clamped to 0..=sk.
            let first = (i as i128 + offset + 1).clamp(0, sk as i128) as usize;
            row[first..].fill(f32::NEG_INFINITY);
        }
    }
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) })
}
