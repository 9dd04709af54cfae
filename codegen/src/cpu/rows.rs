//! TEMPORARY stand-in for the Cranelift row kernels (being written); same API.

use saturn_ir::{ReduceOp, Rope, RopeLayout};

use super::CodegenError;

pub struct RowKernels;

impl RowKernels {
    pub fn compile() -> Result<RowKernels, CodegenError> {
        Ok(RowKernels)
    }

    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f64, out: &mut [f32]) {
        let d = w.len();
        if d == 0 {
            return;
        }
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = row.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / d as f64;
            let r = (1.0 / (ms + eps).sqrt()) as f32;
            for ((o, &s), &wk) in o.iter_mut().zip(row).zip(w) {
                *o = (s * r) * wk;
            }
        }
    }

    pub fn softmax(&self, x: &[f32], outer: usize, n: usize, inner: usize, out: &mut [f32]) {
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * n + k) * inner + i;
                let max = (0..n).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, |m, s| if s > m { s } else { m });
                if max == f32::NEG_INFINITY && (0..n).all(|k| !x[at(k)].is_nan()) {
                    (0..n).for_each(|k| out[at(k)] = 0.0);
                    continue;
                }
                let mut sum = 0f64;
                for k in 0..n {
                    out[at(k)] = (x[at(k)] - max).exp();
                    sum += f64::from(out[at(k)]);
                }
                for k in 0..n {
                    out[at(k)] = (f64::from(out[at(k)]) / sum) as f32;
                }
            }
        }
    }

    pub fn reduce(&self, op: ReduceOp, x: &[f32], outer: usize, n: usize, inner: usize, out: &mut [f32]) {
        for o in 0..outer {
            for i in 0..inner {
                let vals = (0..n).map(|k| x[(o * n + k) * inner + i]);
                out[o * inner + i] =
                    match op {
                        ReduceOp::Sum => vals.map(f64::from).sum::<f64>() as f32,
                        ReduceOp::Mean => (vals.map(f64::from).sum::<f64>() / n as f64) as f32,
                        ReduceOp::Max => vals.fold(f32::NEG_INFINITY, |a, s| {
                            if !a.is_nan() && (s.is_nan() || s > a) { s } else { a }
                        }),
                    };
            }
        }
    }

    pub fn rope(&self, layout: RopeLayout, x: &[f32], d: usize, cos: &[f32], sin: &[f32], out: &mut [f32]) {
        out.copy_from_slice(x);
        let half = d / 2;
        let s = cos.len() / half.max(1);
        if s == 0 || d == 0 {
            return;
        }
        let per_row = out.len() / s;
        for (p, block) in out.chunks_exact_mut(per_row).enumerate() {
            let (c, sn) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            for v in block.chunks_exact_mut(d) {
                for j in 0..half {
                    let (a, b) = match layout {
                        RopeLayout::Interleaved => (2 * j, 2 * j + 1),
                        RopeLayout::HalfSplit => (j, j + half),
                    };
                    let (x0, x1) = (v[a], v[b]);
                    v[a] = x0 * c[j] - x1 * sn[j];
                    v[b] = x1 * c[j] + x0 * sn[j];
                }
            }
        }
    }
}

pub fn rope_tables(rope: &Rope, d: usize, positions: &[i64], cos: &mut [f32], sin: &mut [f32]) {
    let half = d / 2;
    let inv = saturn_ir::rope_inv_freq(rope, d);
    let af = rope.attention_factor as f32;
    for (s, &p) in positions.iter().enumerate() {
        for j in 0..half {
            let a = p as f32 * inv[j];
            cos[s * half + j] = a.cos() * af;
            sin[s * half + j] = a.sin() * af;
        }
    }
}
