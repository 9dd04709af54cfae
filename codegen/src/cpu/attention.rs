//! `mla_decode_attention`: attention of every head and query straight over the latent cache,
//! as matrix products. For each batch element, the scores of all `h * s` (head, query) rows are
//! two products with the cache (`q_latent latent^T + q_rope k_pe^T`, the AVX-512 row blocks or
//! the GEMM of [`super::linalg::linear`], which read each cached row once for all the rows),
//! then a softmax per row over the keys it sees, then one product with the cache again
//! (`p latent`, read row by row as it is stored, allocating nothing).
//! Reading the cache once for many heads is what makes this fast: with 128 heads an absorbed
//! decode step does about 110 multiply-adds per byte of cache. Large calls split the rows into
//! one part per thread, each part reading the cache once for its rows.

use rayon::prelude::*;

use super::expf::exp_in_place;
use super::linalg::{linear, matmul_row_major};

/// The operands of one call (`q_latent [b, h, s, c]`, `q_rope [b, h, s, r]`, `latent [b, t, c]`,
/// `k_pe [b, t, r]`, the batch `b` flattened from any leading dims).
pub struct MlaOperands<'a> {
    pub q_latent: &'a [f32],
    pub q_rope: &'a [f32],
    pub latent: &'a [f32],
    pub k_pe: &'a [f32],
}

/// Scratch of [`mla_decode_attention`]: scores and their rope parts, `h * s * t` floats each.
#[derive(Default)]
pub struct MlaScratch {
    scores: Vec<f32>,
    rope: Vec<f32>,
}

impl MlaScratch {
    /// Makes room for `floats` scores, so runs up to a plan's capacities do not grow the
    /// buffers step by step.
    pub fn reserve(&mut self, floats: usize) {
        for v in [&mut self.scores, &mut self.rope] {
            v.reserve(floats.saturating_sub(v.len()));
        }
    }
}

/// `out [b, h, s, c]`.
pub fn mla_decode_attention(
    ops: &MlaOperands,
    (b, h, s, c, r, t): (usize, usize, usize, usize, usize, usize),
    scale: f32,
    scratch: &mut MlaScratch,
    out: &mut [f32],
) {
    let rows = h * s;
    if rows * c == 0 {
        return;
    }
    if t == 0 {
        out[..b * rows * c].fill(0.0);
        return;
    }
    scratch.scores.resize(rows * t, 0.0);
    scratch.rope.resize(rows * t, 0.0);
    // Rows split across threads once their work pays for a dispatch; each part computes its
    // rows' scores, softmaxes and outputs exactly as the whole would (every output element is
    // one row's own sums), so the split never changes a result.
    let work = rows * t * (2 * c + r);
    let parts = if work >= PARALLEL_ROWS_WORK { rayon::current_num_threads().clamp(1, rows) } else { 1 };
    let per = rows.div_ceil(parts);
    for e in 0..b {
        let part = |p: usize, scores: &mut [f32], rope: &mut [f32], out: &mut [f32]| {
            let (r0, n) = (p * per, scores.len() / t);
            let q_latent = &ops.q_latent[(e * rows + r0) * c..(e * rows + r0 + n) * c];
            let q_rope = &ops.q_rope[(e * rows + r0) * r..(e * rows + r0 + n) * r];
            rows_attention(
                (q_latent, q_rope),
                (&ops.latent[e * t * c..(e + 1) * t * c], &ops.k_pe[e * t * r..(e + 1) * t * r]),
                (r0, n, s, c, r, t),
                scale,
                (scores, rope),
                out,
            );
        };
        let (scores, rope) = (&mut scratch.scores[..rows * t], &mut scratch.rope[..rows * t]);
        let out = &mut out[e * rows * c..(e + 1) * rows * c];
        if parts == 1 {
            part(0, scores, rope, out);
        } else {
            scores
                .par_chunks_mut(per * t)
                .zip(rope.par_chunks_mut(per * t))
                .zip(out.par_chunks_mut(per * c))
                .enumerate()
                .for_each(|(p, ((scores, rope), out))| part(p, scores, rope, out));
        }
    }
}

/// Multiply-adds of one call from which its rows split across threads. At a 144-position
/// cache 16 heads' attention is 0.7M: in the mid-size model's decode (alternate tokens split
/// and not, one process) the split took the op from 804 to 681 us per token (8 layers).
const PARALLEL_ROWS_WORK: usize = 1 << 18;

/// Attention of `n` (head, query) rows, the first being row `r0` of the batch element, over
/// its cache `(latent [t, c], k_pe [t, r])`: `out [n, c]`, with `scores` and `rope` `[n, t]`
/// scratch.
fn rows_attention(
    (q_latent, q_rope): (&[f32], &[f32]),
    (latent, k_pe): (&[f32], &[f32]),
    (r0, n, s, c, r, t): (usize, usize, usize, usize, usize, usize),
    scale: f32,
    (scores, rope): (&mut [f32], &mut [f32]),
    out: &mut [f32],
) {
    linear(q_latent, latent, n, c, t, scores);
    linear(q_rope, k_pe, n, r, t, rope);
    let softmax = |(i, (row, rope)): (usize, (&mut [f32], &[f32]))| {
        // Query `i % s` sits at position `i % s + t - s`: it sees keys up to there.
        let i = r0 + i;
        let visible = (i % s + t + 1).saturating_sub(s).min(t);
        softmax_visible(row, rope, visible, scale);
    };
    if n * t >= PARALLEL_SOFTMAX {
        scores.par_chunks_exact_mut(t).zip(rope.par_chunks_exact(t)).enumerate().for_each(softmax);
    } else {
        scores.chunks_exact_mut(t).zip(rope.chunks_exact(t)).enumerate().for_each(softmax);
    }
    matmul_row_major(scores, latent, (n, t, c), out);
}

/// Scores (heads x cached positions) from which the rows' softmaxes split across threads: at
/// a 2048-position cache, 16 heads' softmaxes took longer than both products over the cache.
const PARALLEL_SOFTMAX: usize = 1 << 14;

/// `row[..visible]` becomes `softmax((row + rope) * scale)` (exponentials in f32, 16 lanes at a
/// time with `f32::exp`'s bits, their sum in f64 in order), the rest zeros; a row that sees no
/// key is all zeros.
fn softmax_visible(row: &mut [f32], rope: &[f32], visible: usize, scale: f32) {
    let (seen, hidden) = row.split_at_mut(visible);
    hidden.fill(0.0);
    let mut max = f32::NEG_INFINITY;
    for (v, &q) in seen.iter_mut().zip(rope) {
        *v = (*v + q) * scale;
        max = max.max(*v);
    }
    seen.iter_mut().for_each(|v| *v -= max);
    exp_in_place(seen);
    let total = seen.iter().fold(0f64, |total, &v| total + f64::from(v));
    for v in seen.iter_mut() {
        *v = (f64::from(*v) / total) as f32;
    }
}
