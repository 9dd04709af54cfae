//! `grouped_experts`: each expert once on the tokens routed to it (the router is compiled,
//! `router.rs`). One token (decode) runs here, as two parallel passes over the active
//! experts' strips; more tokens run in `prefill.rs`, each expert's rows as items of a queue.

mod prefill;

use super::expf::silu_times;
use super::linalg::{SharedOut, par_ranges};
use super::packed::{Rows, STRIP, linear_strips};

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
    /// One token's pass: where each expert's hidden units and strips start.
    starts: Vec<usize>,
    strips: Vec<usize>,
    gate: Vec<f32>,
    up: Vec<f32>,
    y: Vec<f32>,
    prefill: prefill::Scratch,
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
    } else {
        prefill::many_tokens(x, routing, (t, h, e), experts, shared, &mut s.prefill, out);
    }
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
