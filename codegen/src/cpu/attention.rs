//! `mla_decode_attention`: attention of every head and query straight over the latent cache,
//! as matrix products. For each batch element, the scores of all `h * s` (head, query) rows are
//! two products with the cache (`q_latent latent^T + q_rope k_pe^T`, the AVX-512 row blocks or
//! the GEMM of [`super::linalg::linear`], which read each cached row once for all heads), then a
//! softmax per row over the keys it sees, then one product with the cache again (`p latent`,
//! read row by row as it is stored, allocating nothing).
//! Reading the cache once for all heads is what makes this fast: with 128 heads an absorbed
//! decode step does about 110 multiply-adds per byte of cache.

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
    for e in 0..b {
        let latent = &ops.latent[e * t * c..(e + 1) * t * c];
        let (scores, rope) = (&mut scratch.scores[..rows * t], &mut scratch.rope[..rows * t]);
        linear(&ops.q_latent[e * rows * c..(e + 1) * rows * c], latent, rows, c, t, scores);
        linear(
            &ops.q_rope[e * rows * r..(e + 1) * rows * r],
            &ops.k_pe[e * t * r..(e + 1) * t * r],
            rows,
            r,
            t,
            rope,
        );
        let softmax = |(i, (row, rope)): (usize, (&mut [f32], &[f32]))| {
            // Query `i % s` sits at position `i % s + t - s`: it sees keys up to there.
            let visible = (i % s + t + 1).saturating_sub(s).min(t);
            softmax_visible(row, rope, visible, scale);
        };
        if rows * t >= PARALLEL_SOFTMAX {
            scores.par_chunks_exact_mut(t).zip(rope.par_chunks_exact(t)).enumerate().for_each(softmax);
        } else {
            scores.chunks_exact_mut(t).zip(rope.chunks_exact(t)).enumerate().for_each(softmax);
        }
        matmul_row_major(scores, latent, (rows, t, c), &mut out[e * rows * c..(e + 1) * rows * c]);
    }
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
