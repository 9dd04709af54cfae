//! Masks: `topk_mask`, `causal_mask`, and the top-k choice the router shares with them (the
//! interpreter's own `select_topk`, so both choose the same elements: ties go to the lower
//! index and NaN ranks below everything).

/// Marks the `k` largest of `row` in `mask` (1 = chosen); `idx` is reusable scratch.
pub fn topk_row(row: &[f32], k: usize, idx: &mut Vec<usize>, mask: &mut [u8]) {
    let n = row.len();
    let k = k.min(n);
    mask.fill(0);
    if k == 0 {
        return;
    }
    if k == n {
        mask.fill(1);
        return;
    }
    saturn_ir::select_topk(row, k, idx);
    for &i in &idx[..k] {
        mask[i] = 1;
    }
}

/// `topk_mask` along the last axis (`n` elements per row).
pub fn topk_mask(x: &[f32], n: usize, k: u64, idx: &mut Vec<usize>, out: &mut [u8]) {
    if n == 0 {
        return;
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    for (row, mask) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        topk_row(row, k, idx, mask);
    }
}

/// `x [..., sq, sk]` with entries of key `j > i + sk - sq` set to `-inf`.
pub fn causal_mask(x: &[f32], sq: usize, sk: usize, out: &mut [f32]) {
    out.copy_from_slice(x);
    if sq == 0 || sk == 0 {
        return;
    }
    let offset = sk as i128 - sq as i128;
    for block in out.chunks_exact_mut(sq * sk) {
        for (i, row) in block.chunks_exact_mut(sk).enumerate() {
            let first = (i as i128 + offset + 1).clamp(0, sk as i128) as usize;
            row[first..].fill(f32::NEG_INFINITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_index_and_nan_ranks_last() {
        let mut idx = Vec::new();
        let mut mask = [0u8; 5];
        topk_row(&[1.0, f32::NAN, 3.0, 3.0, 1.0], 3, &mut idx, &mut mask);
        assert_eq!(mask, [1, 0, 1, 1, 0]);
    }

    #[test]
    fn the_causal_mask_hides_later_keys() {
        let mut out = [0.0; 6];
        causal_mask(&[1.0; 6], 2, 3, &mut out);
        assert_eq!(out, [1.0, 1.0, f32::NEG_INFINITY, 1.0, 1.0, 1.0]);
    }
}
