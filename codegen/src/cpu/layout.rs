//! Data movement: strided copies (permute, expand, slice, concat) and row gathers.
//!
//! Every layout op is one [`copy_strided`]: walk a shape, read at source strides, write at
//! destination strides. The innermost axis copies a slice when both sides are contiguous there.

/// The most axes a compiled program handles (checked when a program is built).
pub const MAX_RANK: usize = 8;

/// Row-major strides of `shape`, in elements.
pub fn row_major(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut step = 1;
    for (axis, &d) in shape.iter().enumerate().rev() {
        strides[axis] = step;
        step *= d;
    }
    strides
}

/// One side of a strided copy: `data[offset + sum(index[i] * strides[i])]`.
#[derive(Clone, Copy)]
pub struct Strided<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub strides: &'a [usize],
}

/// Copies every index of `shape` from `src` to `dst` (written at `dst_offset` plus
/// `dst_strides`). Indices must be in bounds of both slices (the program's shapes ensure it).
///
/// A large copy splits across threads along its outermost axis of more than one index, where
/// the parts write disjoint spans of `dst` (row-major destinations do): a prefill's permutes
/// and concats move hundreds of kilobytes each.
pub fn copy_strided<T: Copy + Send + Sync>(
    shape: &[usize],
    src: Strided<'_, T>,
    dst: &mut [T],
    dst_offset: usize,
    dst_strides: &[usize],
) {
    if shape.contains(&0) {
        return;
    }
    let threads = rayon::current_num_threads();
    let total: usize = shape.iter().product();
    if let Some(axis) = shape.iter().position(|&d| d > 1)
        && threads > 1
        && total >= super::PARALLEL_MIN_ELEMENTS
    {
        // Each index of `axis` writes below where the next one's writes start: the parts'
        // spans are disjoint, so `dst` splits into one slice per part.
        let inner: usize = shape.iter().zip(dst_strides).skip(axis + 1).map(|(d, s)| (d - 1) * s).sum();
        if inner < dst_strides[axis] {
            let parts = threads.min(shape[axis]);
            split_copy((shape, axis, 0..shape[axis], parts), src, (dst, dst_offset, dst_strides));
            return;
        }
    }
    copy_serial(shape, src, dst, dst_offset, dst_strides);
}

/// [`copy_strided`] of the indices `range` of `axis` (those before it have one index), in
/// `parts` parts across threads; `dst` starts at the first element the range writes, minus
/// `offset`.
fn split_copy<T: Copy + Send + Sync>(
    (shape, axis, range, parts): (&[usize], usize, std::ops::Range<usize>, usize),
    src: Strided<'_, T>,
    (dst, offset, dst_strides): (&mut [T], usize, &[usize]),
) {
    if parts <= 1 {
        let mut sub = [0; MAX_RANK];
        sub[..shape.len()].copy_from_slice(shape);
        sub[axis] = range.len();
        let src = Strided { offset: src.offset + range.start * src.strides[axis], ..src };
        copy_serial(&sub[..shape.len()], src, dst, offset, dst_strides);
        return;
    }
    let mid = range.start + range.len() * (parts / 2) / parts;
    // The second half's first element, in `dst`'s own indices.
    let cut = offset + (mid - range.start) * dst_strides[axis];
    let (low, high) = dst.split_at_mut(cut);
    rayon::join(
        || split_copy((shape, axis, range.start..mid, parts / 2), src, (low, offset, dst_strides)),
        || split_copy((shape, axis, mid..range.end, parts - parts / 2), src, (high, 0, dst_strides)),
    );
}

/// [`copy_strided`] on this thread, of a shape without empty axes.
fn copy_serial<T: Copy>(
    shape: &[usize],
    src: Strided<'_, T>,
    dst: &mut [T],
    dst_offset: usize,
    dst_strides: &[usize],
) {
    let rank = shape.len();
    if rank == 0 {
        dst[dst_offset] = src.data[src.offset];
        return;
    }
    let inner = shape[rank - 1];
    let (si, di) = (src.strides[rank - 1], dst_strides[rank - 1]);
    let mut index = [0usize; MAX_RANK];
    let (mut s, mut d) = (src.offset, dst_offset);
    loop {
        if si == 1 && di == 1 {
            dst[d..d + inner].copy_from_slice(&src.data[s..s + inner]);
        } else {
            for i in 0..inner {
                dst[d + i * di] = src.data[s + i * si];
            }
        }
        // Advance the outer axes like an odometer, moving both offsets incrementally.
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            s += src.strides[axis];
            d += dst_strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            s -= src.strides[axis] * shape[axis];
            d -= dst_strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
}

/// Strides that read `from` (right-aligned) broadcast to `to`: 0 along stretched or new axes.
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> [usize; MAX_RANK] {
    let own = row_major(from);
    let mut strides = [0; MAX_RANK];
    let lead = to.len() - from.len();
    for (axis, &d) in from.iter().enumerate() {
        strides[lead + axis] = if d == 1 { 0 } else { own[axis] };
    }
    strides
}

/// Rows of `table [V, row]` at `idx`; an index outside `0..V` is an error naming it.
pub fn gather(table: &[f32], row: usize, idx: &[i64], out: &mut [f32]) -> Result<(), String> {
    let rows = table.len().checked_div(row).unwrap_or(0);
    for (i, &at) in idx.iter().enumerate() {
        let r = usize::try_from(at).ok().filter(|&r| r < rows).ok_or_else(|| {
            format!("gather index {at} (at position {i}) is outside the table's {rows} rows")
        })?;
        out[i * row..(i + 1) * row].copy_from_slice(&table[r * row..(r + 1) * row]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permute_is_a_strided_read() {
        // x [2, 3] -> x^T [3, 2]
        let x = [0, 1, 2, 3, 4, 5];
        let own = row_major(&[2, 3]);
        let mut out = [9; 6];
        let src = Strided { data: &x[..], offset: 0, strides: &[own[1], own[0]] };
        copy_strided(&[3, 2], src, &mut out, 0, &row_major(&[3, 2])[..2]);
        assert_eq!(out, [0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn broadcasting_repeats_stretched_axes() {
        let x = [1, 2];
        let mut out = [0; 6];
        let s = broadcast_strides(&[1, 2], &[3, 1, 2]);
        copy_strided(
            &[3, 1, 2],
            Strided { data: &x[..], offset: 0, strides: &s[..3] },
            &mut out,
            0,
            &row_major(&[3, 1, 2])[..3],
        );
        assert_eq!(out, [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn gather_rejects_indices_outside_the_table() {
        let mut out = [0.0; 2];
        assert!(gather(&[1.0, 2.0], 2, &[1], &mut out).unwrap_err().contains("index 1"));
        gather(&[1.0, 2.0, 3.0, 4.0], 2, &[1], &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
    }
}
