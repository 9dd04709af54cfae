//! `mla_decode_attention`: attention over a latent cache, computed per head and query without
//! materialising the scores of other queries.

use super::tensor::{Tensor, TensorData};
use super::{OpError, OpResult, elems};

/// See `Op::MlaDecodeAttention`: each batch element (leading dims) on its own cache.
pub(super) fn mla_decode_attention(args: &[&Tensor], scale: f64) -> OpResult {
    let (q, qr, lat, kpe) = (args[0], args[1], args[2], args[3]);
    let b = q.shape.len().saturating_sub(3);
    let [h, s, c] = q.shape[b..] else { return Err(OpError::Internal(format!("q_latent {:?}", q.shape))) };
    let r = qr.shape.get(b + 2).copied().unwrap_or(0);
    let t = lat.shape.get(b).copied().unwrap_or(0);
    let batch: usize = q.shape[..b].iter().product();
    let (qv, qrv, lv, kv) = (
        elems::<f32>(q, "q_latent")?,
        elems::<f32>(qr, "q_rope")?,
        elems::<f32>(lat, "latent")?,
        elems::<f32>(kpe, "k_pe")?,
    );
    let mut out = vec![0f32; batch * h * s * c];
    let mut scores = vec![0f32; t];
    for i in 0..batch {
        let one = Operands {
            q: &qv[i * h * s * c..],
            qr: &qrv[i * h * s * r..],
            lat: &lv[i * t * c..],
            kpe: &kv[i * t * r..],
        };
        one_sequence(&one, (h, s, c, r, t), scale, &mut scores, &mut out[i * h * s * c..(i + 1) * h * s * c]);
    }
    Ok(Tensor { shape: q.shape.clone(), data: TensorData::F32(out) })
}

/// One batch element's operands, each starting at its own slice.
struct Operands<'a> {
    q: &'a [f32],
    qr: &'a [f32],
    lat: &'a [f32],
    kpe: &'a [f32],
}

/// Attention of one batch element into `out [h, s, c]`; `scores` holds `t` floats.
fn one_sequence(
    x: &Operands,
    (h, s, c, r, t): (usize, usize, usize, usize, usize),
    scale: f64,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for head in 0..h {
        for query in 0..s {
            let row = head * s + query;
            let (ql, qp) = (&x.q[row * c..(row + 1) * c], &x.qr[row * r..(row + 1) * r]);
            // Query `query` sits at position `query + t - s`: it sees keys up to there.
            let visible = (query + t + 1).saturating_sub(s).min(t);
            let mut max = f32::NEG_INFINITY;
            for (key, score) in scores.iter_mut().enumerate().take(visible) {
                *score = (dot(ql, &x.lat[key * c..(key + 1) * c]) + dot(qp, &x.kpe[key * r..(key + 1) * r]))
                    * scale as f32;
                max = max.max(*score);
            }
            if visible == 0 {
                continue;
            }
            let mut total = 0f64;
            for score in scores.iter_mut().take(visible) {
                *score = (*score - max).exp();
                total += *score as f64;
            }
            let o = &mut out[row * c..(row + 1) * c];
            for (key, &e) in scores.iter().enumerate().take(visible) {
                let p = (e as f64 / total) as f32;
                for (dst, &l) in o.iter_mut().zip(&x.lat[key * c..(key + 1) * c]) {
                    *dst += p * l;
                }
            }
        }
    }
}
