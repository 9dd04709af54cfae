//! `mla_decode_attention`: attention of each head and query straight over the latent cache,
//! with no `[H, S, T]` score tensor: one pass of dot products, a softmax over the visible keys,
//! and a weighted sum of latent rows. Heads run in parallel when the work pays for a dispatch.

use rayon::prelude::*;

use super::linalg::dot;

/// The operands of one call (`q_latent [h, s, c]`, `q_rope [h, s, r]`, `latent [t, c]`,
/// `k_pe [t, r]`).
pub struct MlaOperands<'a> {
    pub q_latent: &'a [f32],
    pub q_rope: &'a [f32],
    pub latent: &'a [f32],
    pub k_pe: &'a [f32],
}

/// Work (multiply-adds) below which heads run on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// `out [h, s, c]`; `scores` is scratch (grown to `h * s * t`).
pub fn mla_decode_attention(
    ops: &MlaOperands,
    (h, s, c, r, t): (usize, usize, usize, usize, usize),
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    if h * s * c == 0 {
        return;
    }
    if t == 0 {
        out[..h * s * c].fill(0.0);
        return;
    }
    scores.resize(h * s * t, 0.0);
    let row = |(i, (o, sc)): (usize, (&mut [f32], &mut [f32]))| {
        let query = i % s;
        let (ql, qp) = (&ops.q_latent[i * c..(i + 1) * c], &ops.q_rope[i * r..(i + 1) * r]);
        // Query `query` sits at position `query + t - s`: it sees keys up to there.
        let visible = (query + t + 1).saturating_sub(s).min(t);
        o.fill(0.0);
        if visible == 0 {
            return;
        }
        let mut max = f32::NEG_INFINITY;
        for (key, score) in sc.iter_mut().enumerate().take(visible) {
            *score = (dot(ql, &ops.latent[key * c..(key + 1) * c])
                + dot(qp, &ops.k_pe[key * r..(key + 1) * r]))
                * scale;
            max = max.max(*score);
        }
        let mut total = 0f64;
        for score in sc.iter_mut().take(visible) {
            *score = (*score - max).exp();
            total += f64::from(*score);
        }
        for (key, &e) in sc.iter().enumerate().take(visible) {
            let p = (f64::from(e) / total) as f32;
            for (dst, &l) in o.iter_mut().zip(&ops.latent[key * c..(key + 1) * c]) {
                *dst += p * l;
            }
        }
    };
    let rows = out[..h * s * c].chunks_mut(c).zip(scores.chunks_mut(t));
    if h * s > 1 && h * s * t * (c + r) >= PARALLEL_MIN_WORK {
        out[..h * s * c].par_chunks_mut(c).zip(scores.par_chunks_mut(t)).enumerate().for_each(row);
    } else {
        rows.enumerate().for_each(row);
    }
}
