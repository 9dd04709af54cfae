//! Arena offsets from lifetimes, shared by the CPU and CUDA memory plans.

/// Offsets are aligned for any element type, for SIMD loads and for coalesced GPU access.
pub(crate) const ALIGN: usize = 64;

/// Plans arena offsets: `sizes[v]` bytes (`None`: not an arena value) alive over steps
/// `live[v] = (first, last)` inclusive. Larger values are placed first, each at the lowest
/// offset that overlaps no placed value alive at the same time (deterministic: ties by index).
pub(crate) fn assign_offsets(sizes: &[Option<usize>], live: &[(usize, usize)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&v| sizes[v].is_some()).collect();
    order.sort_by_key(|&v| (std::cmp::Reverse(sizes[v].unwrap_or(0)), v));
    let mut offsets = vec![usize::MAX; sizes.len()];
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (offset, end, value)
    let mut total = 0;
    for v in order {
        let size = sizes[v].unwrap_or(0).div_ceil(ALIGN) * ALIGN;
        let (first, last) = live[v];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, u)| live[u].0 <= last && first <= live[u].1)
            .map(|&(o, e, _)| (o, e))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (o, e) in busy {
            if offset + size <= o {
                break;
            }
            offset = offset.max(e);
        }
        placed.push((offset, offset + size, v));
        offsets[v] = offset;
        total = total.max(offset + size);
    }
    (offsets, total)
}

/// The capacities for a run at `values` after a plan for `old` (if any): each symbol at least
/// doubles its old capacity when it grows, so a growing context replans rarely.
pub(crate) fn grow_caps(old: Option<&[u64]>, values: &[u64]) -> Vec<u64> {
    match old {
        None => values.to_vec(),
        Some(old) => old
            .iter()
            .zip(values)
            .map(|(&o, &v)| if v <= o { o } else { v.max(o.saturating_mul(2)) })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_alive_together_never_overlap_and_dead_ones_share() {
        let sizes = [Some(100), Some(64), Some(64), None, Some(10)];
        let live = [(0, 2), (1, 3), (3, 4), (0, 4), (4, 4)];
        let (offsets, total) = assign_offsets(&sizes, &live);
        let overlaps = |a: usize, b: usize| {
            let (ea, eb) = (offsets[a] + sizes[a].unwrap(), offsets[b] + sizes[b].unwrap());
            offsets[a] < eb && offsets[b] < ea
        };
        for a in [0, 1, 2, 4] {
            for b in [0, 1, 2, 4] {
                let together = live[a].0 <= live[b].1 && live[b].0 <= live[a].1;
                if a != b && together {
                    assert!(!overlaps(a, b), "{a} and {b} overlap: {offsets:?}");
                }
            }
        }
        assert_eq!(offsets[3], usize::MAX);
        assert_eq!(offsets[2], offsets[0], "value 2 reuses value 0's memory");
        assert!(total <= 128 + 64 + 64, "{total}");
    }

    #[test]
    fn capacities_double_when_they_grow() {
        assert_eq!(grow_caps(None, &[3, 0]), vec![3, 0]);
        assert_eq!(grow_caps(Some(&[3, 8]), &[3, 9]), vec![3, 16]);
        assert_eq!(grow_caps(Some(&[3, 8]), &[1, 40]), vec![3, 40]);
    }
}
