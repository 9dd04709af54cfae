//! `grouped_experts` over many tokens (prefill): each expert's tokens gathered into rows, run
//! through its MLP, and summed per token.
//!
//! Routing is uneven: in the mid-size model's 128-token prefill, experts get 0 to 77 of the
//! 768 rows. An expert with a few rows is bound by memory (its 6 MB of weights stream past a
//! few rows each), one with many by arithmetic (each strip of weights meets several tiles of
//! rows from cache). Run on one core each, the two kinds overlap: one core computes while the
//! other streams. So every expert's rows, and the shared expert's (all the tokens), become
//! items of at most [`MAX_ITEM_ROWS`] rows, sorted by rows, and each thread takes items from
//! one end of that queue, alternate threads from the heavy end and the light end, each item
//! computed by the thread that takes it. In the 128-token prefill this took 0.904x the time of
//! the experts in index order, each split across the threads (BENCHMARKS.md, paired rounds).
//!
//! Which thread computes an item changes nothing in the results: every row's sums run in the
//! same order, and each token adds its experts' rows in expert order, then the shared one's.

use std::sync::Mutex;

use rayon::prelude::*;

use super::super::expf::silu_times;
use super::super::linalg::{SharedOut, linear_packed_serial};
use super::super::packed::{Rows, balanced, pad_stride};
use super::Mlp;

/// Rows per item at most: an expert with more is split into items of balanced rows, so that
/// the shared expert's rows (every token) and the heaviest experts' spread over the threads
/// (a 1024-token prompt's shared expert alone is 1.6 GFLOP). Each item reads its expert's
/// weights again, so items stay large: eight tiles of 12 rows, which on their own are bound by
/// arithmetic (items of 48 rows did no better in the mid-size model at 128 and 1024 tokens).
const MAX_ITEM_ROWS: usize = 96;

/// Reusable buffers of [`many_tokens`].
#[derive(Default)]
pub(super) struct Scratch {
    /// Rows grouped by MLP (the experts in index order, then the shared one): where each
    /// MLP's rows start, their tokens, and the routed rows' weights.
    starts: Vec<usize>,
    tokens: Vec<usize>,
    weights: Vec<f32>,
    /// The routed rows by token (`by_token[first[t]..first[t + 1]]`, expert order), and a
    /// cursor per token while they are listed.
    first: Vec<usize>,
    by_token: Vec<usize>,
    next: Vec<usize>,
    /// The work, heaviest first.
    items: Vec<Item>,
    /// Per row: the gathered token ([`pad_stride`] apart), its gate and up activations (up to
    /// the widest MLP's), and its MLP's output.
    block: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    y: Vec<f32>,
}

/// Rows `r0..r1` (of all MLPs' rows) of MLP `mlp`: an expert's index, or the expert count for
/// the shared expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    mlp: usize,
    r0: usize,
    r1: usize,
}

/// [`super::grouped_experts`] for `t > 1` tokens.
pub(super) fn many_tokens<'w>(
    x: &[f32],
    routing: &[f32],
    (t, h, e): (usize, usize, usize),
    experts: impl Fn(usize) -> Mlp<'w> + Sync,
    shared: Option<Mlp<'_>>,
    s: &mut Scratch,
    out: &mut [f32],
) {
    group_rows(routing, (t, e), shared.is_some(), s);
    let mlp = |m: usize| if m < e { experts(m) } else { shared.expect("the shared expert's rows") };
    let mlps = e + usize::from(shared.is_some());
    let rows = s.starts[mlps];
    let (stride, inner) = (pad_stride(h), (0..mlps).map(|m| mlp(m).inner).max().unwrap_or(0));
    grow(&mut s.block, rows * stride);
    grow(&mut s.gate, rows * inner);
    grow(&mut s.up, rows * inner);
    grow(&mut s.y, rows * h);
    list_items(&s.starts[..=mlps], &mut s.items);
    let buffers = [&mut s.block, &mut s.gate, &mut s.up, &mut s.y].map(|b| SharedOut(b.as_mut_ptr()));
    let (tokens, items) = (&s.tokens, &s.items);
    let run = |item: Item| {
        let (n, m) = (item.r1 - item.r0, mlp(item.mlp));
        let [block, gate, up, y] = buffers;
        // SAFETY: the buffers hold `rows` rows of their widths (grown above), and an item owns
        // its rows r0..r1 of each: items are disjoint and each is run once.
        let (block, gate, up, y) = unsafe {
            (
                std::slice::from_raw_parts_mut({ block }.0.add(item.r0 * stride), n * stride),
                std::slice::from_raw_parts_mut({ gate }.0.add(item.r0 * inner), n * m.inner),
                std::slice::from_raw_parts_mut({ up }.0.add(item.r0 * inner), n * m.inner),
                std::slice::from_raw_parts_mut({ y }.0.add(item.r0 * h), n * h),
            )
        };
        for (dst, &tok) in block.chunks_exact_mut(stride).zip(&tokens[item.r0..item.r1]) {
            dst[..h].copy_from_slice(&x[tok * h..(tok + 1) * h]);
        }
        let x = Rows { data: block, stride };
        linear_packed_serial(x, m.gate, (n, h, m.inner), gate);
        linear_packed_serial(x, m.up, (n, h, m.inner), up);
        silu_times(gate, up);
        linear_packed_serial(Rows::contiguous(gate, m.inner), m.down, (n, m.inner, h), y);
    };
    // Both ends of the queue: `front..back` are the items not yet taken.
    let queue = Mutex::new((0, items.len()));
    rayon::broadcast(|thread| {
        let heavy_end = thread.index() % 2 == 0;
        loop {
            let item = {
                let mut ends = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let (front, back) = &mut *ends;
                if front == back {
                    break;
                }
                if heavy_end {
                    *front += 1;
                    items[*front - 1]
                } else {
                    *back -= 1;
                    items[*back]
                }
            };
            run(item);
        }
    });
    combine(s, (t, h, e), shared.is_some(), out);
}

/// Groups the tokens by expert (expert order, token order within) into `s.starts`,
/// `s.tokens` and `s.weights`, then every token as the shared expert's rows; and lists each
/// token's routed rows in expert order (`s.first`, `s.by_token`).
fn group_rows(routing: &[f32], (t, e): (usize, usize), shared: bool, s: &mut Scratch) {
    s.tokens.clear();
    s.starts.clear();
    s.weights.clear();
    for expert in 0..e {
        s.starts.push(s.tokens.len());
        for tok in 0..t {
            let w = routing[tok * e + expert];
            if w != 0.0 {
                s.tokens.push(tok);
                s.weights.push(w);
            }
        }
    }
    let routed = s.tokens.len();
    s.starts.push(routed);
    if shared {
        s.tokens.extend(0..t);
        s.starts.push(s.tokens.len());
    }
    s.first.clear();
    s.first.resize(t + 1, 0);
    for &tok in &s.tokens[..routed] {
        s.first[tok + 1] += 1;
    }
    for tok in 0..t {
        s.first[tok + 1] += s.first[tok];
    }
    s.by_token.resize(routed, 0);
    s.next.clear();
    s.next.extend_from_slice(&s.first[..t]);
    for (row, &tok) in s.tokens[..routed].iter().enumerate() {
        s.by_token[s.next[tok]] = row;
        s.next[tok] += 1;
    }
}

/// Each MLP's rows (`starts[m]..starts[m + 1]`) as items of at most [`MAX_ITEM_ROWS`]
/// balanced rows, the most rows first (ties in MLP and row order, so the queue is the same
/// from run to run).
fn list_items(starts: &[usize], items: &mut Vec<Item>) {
    items.clear();
    for (mlp, pair) in starts.windows(2).enumerate() {
        let mut r0 = pair[0];
        for rows in balanced(pair[1] - pair[0], MAX_ITEM_ROWS) {
            items.push(Item { mlp, r0, r1: r0 + rows });
            r0 += rows;
        }
    }
    items.sort_by_key(|item| (std::cmp::Reverse(item.r1 - item.r0), *item));
}

/// `out[tok] = 0 +` the token's routed rows of `s.y` weighted, in expert order (`+` its shared
/// row, the shared expert's rows being the tokens in order after the routed ones).
fn combine(s: &Scratch, (t, h, e): (usize, usize, usize), shared: bool, out: &mut [f32]) {
    let (first, by_token, weights, y) = (&s.first, &s.by_token, &s.weights, &s.y);
    let shared_rows = shared.then(|| s.starts[e]);
    out[..t * h].par_chunks_mut(h.max(1)).enumerate().with_min_len(16).for_each(|(tok, o)| {
        o.fill(0.0);
        for &row in &by_token[first[tok]..first[tok + 1]] {
            let w = weights[row];
            o.iter_mut().zip(&y[row * h..(row + 1) * h]).for_each(|(o, &y)| *o += w * y);
        }
        if let Some(start) = shared_rows {
            let row = start + tok;
            o.iter_mut().zip(&y[row * h..(row + 1) * h]).for_each(|(o, &y)| *o += y);
        }
    });
}

/// Grows `v` to at least `n` elements (buffers are grown, never shrunk).
fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items cover every MLP's rows once, none over the limit, the heaviest first.
    #[test]
    fn items_cover_the_rows_heaviest_first() {
        let starts = [0, 3, 3, 100, 101, 229, 429];
        let mut items = Vec::new();
        list_items(&starts, &mut items);
        let mut covered = vec![0; 429];
        for item in &items {
            assert!(item.r1 - item.r0 <= MAX_ITEM_ROWS && item.r1 > item.r0, "{item:?}");
            assert!(starts[item.mlp] <= item.r0 && item.r1 <= starts[item.mlp + 1], "{item:?}");
            covered[item.r0..item.r1].iter_mut().for_each(|c| *c += 1);
        }
        assert!(covered.iter().all(|&c| c == 1));
        assert!(items.windows(2).all(|p| p[0].r1 - p[0].r0 >= p[1].r1 - p[1].r0));
        // 97 rows are two items of 49 and 48; 128 are two of 64.
        let sizes: Vec<_> = items.iter().filter(|i| i.mlp == 2).map(|i| i.r1 - i.r0).collect();
        assert_eq!(sizes, [49, 48]);
    }
}
