//! `grouped_experts`: each expert once on the tokens routed to it (the router is compiled,
//! `router.rs`). Experts use the program's matrix products.

use rayon::prelude::*;

use super::expf::silu_times;
use super::linalg::{SharedOut, linear_packed, par_ranges};
use super::packed::{Rows, STRIP, linear_strips, pad_stride};

/// The weights of one gated MLP, each [`packed`](super::packed) (`gate` and `up` as
/// `[inner, h]`, `down` as `[h, inner]`): `down(silu(gate x) * up x)`.
#[derive(Clone, Copy)]
pub struct Mlp<'a> {
    pub gate: &'a [f32],
    pub up: &'a [f32],
    pub down: &'a [f32],
    /// The hidden width (rows of `gate` and `up`).
    pub inner: usize,
}

/// Reusable buffers of [`grouped_experts`].
#[derive(Default)]
pub struct ExpertScratch {
    /// One token's active experts and their weights.
    active: Vec<(usize, f32)>,
    /// Rows grouped by expert: where each expert's start, their tokens and routing weights.
    starts: Vec<usize>,
    tokens: Vec<usize>,
    weights: Vec<f32>,
    /// The rows by token (`by_token[first[t]..first[t + 1]]`, expert order), and a cursor per
    /// token while they are listed.
    first: Vec<usize>,
    by_token: Vec<usize>,
    next: Vec<usize>,
    /// One token's pass: where each expert's strips start in the list of all of them.
    strips: Vec<usize>,
    /// The tokens' rows, gathered by expert, [`pad_stride`] apart.
    block: Vec<f32>,
    /// The shared expert's input rows, [`pad_stride`] apart where that pads them.
    shared_x: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    y: Vec<f32>,
    shared_y: Vec<f32>,
}

/// `grouped_experts`: `out [t, h] = sum_e routing[t, e] * mlp_e(x[t]) (+ shared(x[t]))`, the
/// experts in index order, each on the block of tokens with a non-zero weight for it.
/// `experts(e)` gives expert `e`'s weights.
pub fn grouped_experts<'w>(
    x: &[f32],
    routing: &[f32],
    (t, h, e): (usize, usize, usize),
    experts: impl Fn(usize) -> Mlp<'w> + Sync,
    shared: Option<Mlp<'_>>,
    s: &mut ExpertScratch,
    out: &mut [f32],
) {
    if t == 1 {
        one_token(x, routing, (h, e), experts, shared, s, out);
        return;
    }
    // Group the tokens by expert (expert order, token order within), as the rows of one
    // block per expert; `starts[x]` is where expert x's rows begin.
    s.tokens.clear();
    s.starts.clear();
    for expert in 0..e {
        s.starts.push(s.tokens.len());
        s.tokens.extend((0..t).filter(|&tok| routing[tok * e + expert] != 0.0));
    }
    s.starts.push(s.tokens.len());
    let rows = s.tokens.len();
    s.weights.clear();
    for expert in 0..e {
        s.weights.extend(
            s.tokens[s.starts[expert]..s.starts[expert + 1]].iter().map(|&tok| routing[tok * e + expert]),
        );
    }
    let inner = (0..e).map(|x| experts(x).inner).max().unwrap_or(0);
    let stride = pad_stride(h);
    s.block.resize(rows * stride, 0.0);
    s.gate.resize(rows * inner, 0.0);
    s.up.resize(rows * inner, 0.0);
    s.y.resize(rows * h, 0.0);
    // Experts run in parallel, each gathering its tokens into its own rows of the scratch
    // buffers (so the copies run in parallel too, and leave the rows in that core's cache).
    {
        let (starts, tokens) = (&s.starts, &s.tokens);
        let mut work: Vec<ExpertRows> = Vec::with_capacity(e);
        let (mut block, mut gate, mut up, mut y) =
            (&mut s.block[..], &mut s.gate[..], &mut s.up[..], &mut s.y[..]);
        for expert in 0..e {
            let n = starts[expert + 1] - starts[expert];
            let (b, br) = std::mem::take(&mut block).split_at_mut(n * stride);
            let (g, gr) = std::mem::take(&mut gate).split_at_mut(n * inner);
            let (u, ur) = std::mem::take(&mut up).split_at_mut(n * inner);
            let (o, yr) = std::mem::take(&mut y).split_at_mut(n * h);
            (block, gate, up, y) = (br, gr, ur, yr);
            if n > 0 {
                work.push((expert, [b, g, u, o]));
            }
        }
        work.into_par_iter().for_each(|(expert, [b, g, u, o])| {
            let n = starts[expert + 1] - starts[expert];
            for (dst, &tok) in b.chunks_exact_mut(stride).zip(&tokens[starts[expert]..]) {
                dst[..h].copy_from_slice(&x[tok * h..(tok + 1) * h]);
            }
            mlp_rows(Rows { data: b, stride }, (n, h), experts(expert), (g, u), o);
        });
    }
    // Each token's rows in expert order (`by_token[first[tok]..first[tok + 1]]`), so that
    // tokens can be summed in parallel, each in the order of the experts.
    s.first.clear();
    s.first.resize(t + 1, 0);
    for &tok in &s.tokens {
        s.first[tok + 1] += 1;
    }
    for tok in 0..t {
        s.first[tok + 1] += s.first[tok];
    }
    s.by_token.resize(rows, 0);
    s.next.clear();
    s.next.extend_from_slice(&s.first[..t]);
    for (row, &tok) in s.tokens.iter().enumerate() {
        s.by_token[s.next[tok]] = row;
        s.next[tok] += 1;
    }
    if let Some(mlp) = shared {
        shared_mlp(x, (t, h), mlp, s);
    }
    // out[tok] = 0 + the routed experts' weighted rows in expert order (+ the shared expert's).
    let (first, by_token, weights, y) = (&s.first, &s.by_token, &s.weights, &s.y);
    let shared_y = shared.map(|_| &s.shared_y);
    out[..t * h].par_chunks_mut(h.max(1)).enumerate().with_min_len(16).for_each(|(tok, o)| {
        o.fill(0.0);
        for &row in &by_token[first[tok]..first[tok + 1]] {
            let w = weights[row];
            o.iter_mut().zip(&y[row * h..(row + 1) * h]).for_each(|(o, &y)| *o += w * y);
        }
        if let Some(shared_y) = shared_y {
            o.iter_mut().zip(&shared_y[tok * h..(tok + 1) * h]).for_each(|(o, &y)| *o += y);
        }
    });
}

/// [`grouped_experts`] for one token (decode): every active expert's gate and up strips in one
/// parallel pass, then every expert's down strips in another, so a layer costs two thread
/// dispatches however many experts it runs. Sums run in expert order, then the shared expert,
/// as in the general path.
fn one_token<'w>(
    x: &[f32],
    routing: &[f32],
    (h, e): (usize, usize),
    experts: impl Fn(usize) -> Mlp<'w> + Sync,
    shared: Option<Mlp<'_>>,
    s: &mut ExpertScratch,
    out: &mut [f32],
) {
    s.active.clear();
    s.active.extend(routing[..e].iter().enumerate().filter(|(_, w)| **w != 0.0).map(|(i, &w)| (i, w)));
    let active = &s.active;
    // Expert `k` of the pass: the active ones in index order, then the shared one.
    let mlp = |k: usize| if k < active.len() { experts(active[k].0) } else { shared.expect("k < count") };
    let count = active.len() + usize::from(shared.is_some());
    // Where each expert's hidden units start in one flat activation vector, and its strips in
    // the list of every expert's strips.
    s.starts.clear();
    s.strips.clear();
    s.starts.push(0);
    s.strips.push(0);
    for k in 0..count {
        let inner = mlp(k).inner;
        s.starts.push(s.starts[k] + inner);
        s.strips.push(s.strips[k] + inner.div_ceil(STRIP));
    }
    let (starts, strips, rows) = (&s.starts, &s.strips, s.starts[count]);
    s.gate.resize(rows, 0.0);
    s.up.resize(rows, 0.0);
    let (act, up) = (SharedOut(s.gate.as_mut_ptr()), SharedOut(s.up.as_mut_ptr()));
    par_ranges(strips[count], rows * h * 2, |u0, u1| {
        for u in u0..u1 {
            let k = strips.partition_point(|&st| st <= u) - 1;
            let (m, strip) = (mlp(k), u - strips[k]);
            let (a, b) = (strip * STRIP, ((strip + 1) * STRIP).min(m.inner));
            // SAFETY: each expert's hidden units are inside the activation buffers, and this
            // task alone writes units a..b of expert k.
            unsafe {
                let (g, v) = ({ act }.0.add(starts[k]), { up }.0.add(starts[k]));
                let x = Rows::contiguous(x, h);
                linear_strips(x, m.gate, (1, h, m.inner), (strip, strip + 1), false, g);
                linear_strips(x, m.up, (1, h, m.inner), (strip, strip + 1), false, v);
                silu_times(
                    std::slice::from_raw_parts_mut(g.add(a), b - a),
                    std::slice::from_raw_parts(v.add(a), b - a),
                );
            }
        }
    });
    // Each expert's output, strip by strip of its down matrix, then the weighted sum in
    // expert order.
    let act = &s.gate[..rows];
    s.y.resize(count * h, 0.0);
    let ys = SharedOut(s.y.as_mut_ptr());
    let per = h.div_ceil(STRIP);
    par_ranges(count * per, rows * h, |u0, u1| {
        for u in u0..u1 {
            let (k, strip) = (u / per, u % per);
            let m = mlp(k);
            // SAFETY: expert k's output is row k of the count x h buffer, and this task alone
            // writes the strip's columns of it.
            unsafe {
                let y = { ys }.0.add(k * h);
                linear_strips(
                    Rows::contiguous(&act[starts[k]..starts[k + 1]], m.inner),
                    m.down,
                    (1, m.inner, h),
                    (strip, strip + 1),
                    false,
                    y,
                );
            }
        }
    });
    for (c, o) in out[..h].iter_mut().enumerate() {
        let mut sum = 0f32;
        for k in 0..count {
            let y = s.y[k * h + c];
            // The shared expert is added unweighted, after the routed ones.
            sum += if k < active.len() { active[k].1 * y } else { y };
        }
        *o = sum;
    }
}

/// One expert's share of the scratch buffers: its index, and its rows of the gathered tokens,
/// gate, up and output.
type ExpertRows<'a> = (usize, [&'a mut [f32]; 4]);

/// `s.shared_y [rows, h] = mlp(x [rows, h])`, with `x` first copied to rows [`pad_stride`]
/// apart where that pads them.
fn shared_mlp(x: &[f32], (rows, h): (usize, usize), mlp: Mlp, s: &mut ExpertScratch) {
    let i = mlp.inner;
    s.gate.resize(rows * i, 0.0);
    s.up.resize(rows * i, 0.0);
    s.shared_y.resize(rows * h, 0.0);
    let stride = pad_stride(h);
    let x = if stride == h {
        &x[..rows * h]
    } else {
        s.shared_x.resize(rows * stride, 0.0);
        for (dst, src) in s.shared_x.chunks_exact_mut(stride).zip(x.chunks_exact(h)) {
            dst[..h].copy_from_slice(src);
        }
        &s.shared_x[..]
    };
    mlp_rows(Rows { data: x, stride }, (rows, h), mlp, (&mut s.gate, &mut s.up), &mut s.shared_y);
}

/// `out [n, h] = mlp(x [n, h])`: `down(silu(gate x) * up x)`, with `gate` and `up` as
/// scratch of `n * mlp.inner` elements.
fn mlp_rows(
    x: Rows,
    (n, h): (usize, usize),
    mlp: Mlp,
    (gate, up): (&mut [f32], &mut [f32]),
    out: &mut [f32],
) {
    let i = mlp.inner;
    let (gate, up) = (&mut gate[..n * i], &mut up[..n * i]);
    linear_packed(x, mlp.gate, (n, h, i), gate);
    linear_packed(x, mlp.up, (n, h, i), up);
    silu_times(gate, up);
    linear_packed(Rows::contiguous(gate, i), mlp.down, (n, i, h), out);
}
