//! Data-moving ops, for every element kind: reshape, permute, expand, slice, concat, gather.

use super::tensor::{Elem, Tensor, broadcast_strides, by_kind, offsets, split_axis, strides};
use super::{OpError, OpResult, elems};

/// The same elements with the new `shape` (takes ownership: no copy).
pub(super) fn reshape_owned(x: Tensor, shape: &[usize]) -> OpResult {
    if x.data.len() != shape.iter().product::<usize>() {
        return Err(OpError::Internal(format!("cannot reshape {:?} to {shape:?}", x.shape)));
    }
    Ok(Tensor { shape: shape.to_vec(), data: x.data })
}

fn take<T: Elem>(x: &Tensor, idx: impl Iterator<Item = usize>) -> Result<Vec<T>, OpError> {
    let v = elems::<T>(x, "operand")?;
    Ok(idx.map(|i| v[i]).collect())
}

/// Axis `i` of the result is axis `perm[i]` of `x`.
pub(super) fn permute(x: &Tensor, perm: &[usize], shape: &[usize]) -> OpResult {
    let own = strides(&x.shape);
    let ok = perm.len() == x.shape.len()
        && shape.len() == perm.len()
        && perm.iter().zip(shape).all(|(&p, &d)| p < own.len() && x.shape[p] == d);
    if !ok {
        return Err(OpError::Internal(format!("permute {perm:?} of {:?} to {shape:?}", x.shape)));
    }
    let st: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    let data = by_kind!(&x.data, T => take::<T>(x, offsets(shape, &st, 0))?);
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// Broadcasts `x` to `shape`.
pub(super) fn expand(x: &Tensor, shape: &[usize]) -> OpResult {
    let st = broadcast_strides(&x.shape, shape, 1)?;
    let data = by_kind!(&x.data, T => take::<T>(x, offsets(shape, &st, 0))?);
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// Elements `start..end` of `axis`; a range outside the axis is a value error.
pub(super) fn slice(x: &Tensor, axis: usize, start: usize, end: usize, shape: &[usize]) -> OpResult {
    if axis >= x.shape.len() {
        return Err(OpError::Internal(format!("axis {axis} is out of range for {:?}", x.shape)));
    }
    let (outer, n, inner) = split_axis(&x.shape, axis);
    if start > end || end > n {
        return Err(OpError::Value(format!(
            "slice {start}..{end} of axis {axis} is outside its size {n} (operand shape {:?})",
            x.shape
        )));
    }
    fn run<T: Elem>(
        x: &Tensor,
        outer: usize,
        n: usize,
        inner: usize,
        r: (usize, usize),
    ) -> Result<Vec<T>, OpError> {
        let v = elems::<T>(x, "operand")?;
        let mut out = Vec::with_capacity(outer * (r.1 - r.0) * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[(o * n + r.0) * inner..(o * n + r.1) * inner]);
        }
        Ok(out)
    }
    let data = by_kind!(&x.data, T => run::<T>(x, outer, n, inner, (start, end))?);
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// Joins `parts` along `axis`.
pub(super) fn concat(parts: &[&Tensor], axis: usize, shape: &[usize]) -> OpResult {
    let first = parts.first().ok_or_else(|| OpError::Internal("concat of nothing".into()))?;
    let rank = first.shape.len();
    let ok = axis < rank
        && parts
            .iter()
            .all(|p| p.shape.len() == rank && (0..rank).all(|a| a == axis || p.shape[a] == first.shape[a]));
    if !ok {
        let shapes: Vec<&Vec<usize>> = parts.iter().map(|p| &p.shape).collect();
        return Err(OpError::Internal(format!("concat of {shapes:?} along axis {axis}")));
    }
    fn run<T: Elem>(parts: &[&Tensor], axis: usize, numel: usize) -> Result<Vec<T>, OpError> {
        let outer: usize = parts[0].shape[..axis].iter().product();
        let inner: usize = parts[0].shape[axis + 1..].iter().product();
        let slices = parts.iter().map(|p| elems::<T>(p, "operand")).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(numel);
        for o in 0..outer {
            for (p, v) in parts.iter().zip(&slices) {
                let chunk = p.shape[axis] * inner;
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        Ok(out)
    }
    let data = by_kind!(&first.data, T => run::<T>(parts, axis, shape.iter().product())?);
    Ok(Tensor { shape: shape.to_vec(), data })
}

/// Rows of `table` (axis 0) at the i64 `idx`; an index outside `0..V` is a value error naming
/// the index, its position and `V`.
pub(super) fn gather(table: &Tensor, idx: &Tensor, shape: &[usize]) -> OpResult {
    let ids = elems::<i64>(idx, "indices")?;
    let (&v, rest) = table.shape.split_first().ok_or_else(|| OpError::Internal("rank-0 table".into()))?;
    let row: usize = rest.iter().product();
    if let Some((p, &i)) = ids.iter().enumerate().find(|&(_, &i)| i < 0 || i as u64 >= v as u64) {
        return Err(OpError::Value(format!(
            "gather index {i} (at flat position {p} of the indices) is out of range for a table of {v} rows"
        )));
    }
    fn run<T: Elem>(table: &Tensor, ids: &[i64], row: usize) -> Result<Vec<T>, OpError> {
        let t = elems::<T>(table, "table")?;
        let mut out = Vec::with_capacity(ids.len() * row);
        for &i in ids {
            let i = i as usize;
            out.extend_from_slice(&t[i * row..(i + 1) * row]);
        }
        Ok(out)
    }
    let data = by_kind!(&table.data, T => run::<T>(table, ids, row)?);
    Ok(Tensor { shape: shape.to_vec(), data })
}
