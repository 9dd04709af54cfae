//! Rotary position embedding, matching Hugging Face's f32 computation.
//!
//! For rotary dim `d` (the last axis) and `j < d/2`, `inv_freq_j = 1 / theta^(2j/d)` in f32 as
//! torch computes `base ** (arange(0, d, 2).float() / d)`. With YaRN, as
//! `_compute_yarn_parameters` (with `truncate`): `corr(r) = d ln(L / (2 pi r)) / (2 ln theta)`,
//! `low = max(floor(corr(beta_fast)), 0)`, `high = min(ceil(corr(beta_slow)), d - 1)` (`high +=
//! 0.001` when equal), `ramp_j = clamp((j - low) / (high - low), 0, 1)`, and with `e_j = 1 -
//! ramp_j`: `inv_freq_j = 1/(f * base_j) * (1 - e_j) + 1/base_j * e_j`. The angle is
//! `pos * inv_freq_j` in f32; `cos` and `sin` are scaled by `attention_factor`.

use std::f64::consts::PI;

use super::tensor::{Tensor, TensorData};
use super::{OpError, OpResult, elems};
use crate::{Rope, RopeLayout, Yarn};

/// The `d/2` inverse frequencies of rotary dim `d`.
pub fn inv_freq(rope: &Rope, d: usize) -> Vec<f32> {
    let half = d / 2;
    let base = rope.theta as f32;
    let pos_freqs: Vec<f32> = (0..half).map(|j| base.powf((2 * j) as f32 / d as f32)).collect();
    let Some(y) = rope.yarn else {
        return pos_freqs.iter().map(|&p| 1.0 / p).collect();
    };
    let (low, high) = yarn_range(&y, d, rope.theta);
    let factor = y.factor as f32;
    let span = (high - low) as f32;
    pos_freqs
        .iter()
        .enumerate()
        .map(|(j, &p)| {
            let extrapolation = 1.0 / p;
            let interpolation = 1.0 / (factor * p);
            let ramp = ((j as f32 - low as f32) / span).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}

/// YaRN's `(low, high)` correction range, in f64 as Python computes it.
pub(crate) fn yarn_range(y: &Yarn, d: usize, theta: f64) -> (f64, f64) {
    let d = d as f64;
    let corr = |rotations: f64| {
        d * (y.original_max_position as f64 / (rotations * 2.0 * PI)).ln() / (2.0 * theta.ln())
    };
    let low = corr(y.beta_fast).floor().max(0.0);
    let mut high = corr(y.beta_slow).ceil().min(d - 1.0);
    if low == high {
        high += 0.001;
    }
    (low, high)
}

/// Rotates the pairs of the last axis of `x [S, ..., d]`; row `s` uses position `pos[s]`.
pub(super) fn rope(r: &Rope, x: &Tensor, pos: &Tensor) -> OpResult {
    let v = elems::<f32>(x, "input")?;
    let p = elems::<i64>(pos, "positions")?;
    let d = x.shape.last().copied().unwrap_or(0);
    let s = x.shape.first().copied().unwrap_or(0);
    if x.shape.len() < 2 || d % 2 != 0 || p.len() != s {
        let msg = format!("rope of {:?} at positions {:?}", x.shape, pos.shape);
        return Err(OpError::Internal(msg));
    }
    let mut out = v.to_vec();
    if out.is_empty() || d == 0 {
        return Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) });
    }
    let half = d / 2;
    let inv = inv_freq(r, d);
    let af = r.attention_factor as f32;
    let per_row = out.len() / s;
    let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
    for (block, &position) in out.chunks_exact_mut(per_row).zip(p) {
        let position = position as f32;
        for j in 0..half {
            let a = position * inv[j];
            cos[j] = a.cos() * af;
            sin[j] = a.sin() * af;
        }
        for vec in block.chunks_exact_mut(d) {
            match r.layout {
                RopeLayout::Interleaved => {
                    for (j, pair) in vec.chunks_exact_mut(2).enumerate() {
                        let (x0, x1) = (pair[0], pair[1]);
                        pair[0] = x0 * cos[j] - x1 * sin[j];
                        pair[1] = x1 * cos[j] + x0 * sin[j];
                    }
                }
                RopeLayout::HalfSplit => {
                    let (lo, hi) = vec.split_at_mut(half);
                    for j in 0..half {
                        let (x0, x1) = (lo[j], hi[j]);
                        lo[j] = x0 * cos[j] - x1 * sin[j];
                        hi[j] = x1 * cos[j] + x0 * sin[j];
                    }
                }
            }
        }
    }
    Ok(Tensor { shape: x.shape.clone(), data: TensorData::F32(out) })
}
