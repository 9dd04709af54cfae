//! `mla_decode_attention`: attention of each head and query straight over the latent cache,
//! with no `[H, S, T]` score tensor: one pass of dot products, a softmax over the visible keys,
//! and a weighted sum of latent rows. Heads (and batch elements, each over its own cache) run
//! in parallel when the work pays for a dispatch.

use rayon::prelude::*;

use super::linalg::dot;

/// The operands of one call (`q_latent [b, h, s, c]`, `q_rope [b, h, s, r]`, `latent [b, t, c]`,
/// `k_pe [b, t, r]`, the batch `b` flattened from any leading dims).
pub struct MlaOperands<'a> {
    pub q_latent: &'a [f32],
    pub q_rope: &'a [f32],
    pub latent: &'a [f32],
    pub k_pe: &'a [f32],
}

/// Work (multiply-adds) below which heads run on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// `out [b, h, s, c]`; `scores` is scratch (grown to `b * h * s * t`).
pub fn mla_decode_attention(
    ops: &MlaOperands,
    (b, h, s, c, r, t): (usize, usize, usize, usize, usize, usize),
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let rows = b * h * s;
    if rows * c == 0 {
        return;
    }
    if t == 0 {
        out[..rows * c].fill(0.0);
        return;
    }
    scores.resize(rows * t, 0.0);
    let row = |(i, (o, sc)): (usize, (&mut [f32], &mut [f32]))| {
        let query = i % s;
        // This batch element's cache.
        let e = i / (h * s);
        let (latent, k_pe) = (&ops.latent[e * t * c..(e + 1) * t * c], &ops.k_pe[e * t * r..(e + 1) * t * r]);
        let (ql, qp) = (&ops.q_latent[i * c..(i + 1) * c], &ops.q_rope[i * r..(i + 1) * r]);
        // Query `query` sits at position `query + t - s`: it sees keys up to there.
        let visible = (query + t + 1).saturating_sub(s).min(t);
        o.fill(0.0);
        if visible == 0 {
            return;
        }
        let mut max = f32::NEG_INFINITY;
        for (key, score) in sc.iter_mut().enumerate().take(visible) {
            *score =
                (dot(ql, &latent[key * c..(key + 1) * c]) + dot(qp, &k_pe[key * r..(key + 1) * r])) * scale;
            max = max.max(*score);
        }
        let mut total = 0f64;
        for score in sc.iter_mut().take(visible) {
            *score = (*score - max).exp();
            total += f64::from(*score);
        }
        for (key, &e) in sc.iter().enumerate().take(visible) {
            let p = (f64::from(e) / total) as f32;
            for (dst, &l) in o.iter_mut().zip(&latent[key * c..(key + 1) * c]) {
                *dst += p * l;
            }
        }
    };
    if rows > 1 && rows * t * (c + r) >= PARALLEL_MIN_WORK {
        out[..rows * c].par_chunks_mut(c).zip(scores.par_chunks_mut(t)).enumerate().for_each(row);
    } else {
        out[..rows * c].chunks_mut(c).zip(scores.chunks_mut(t)).enumerate().for_each(row);
    }
}
