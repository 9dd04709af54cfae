//! Row kernels: RMSNorm, softmax, the reductions and RoPE, each a loop nest compiled once with
//! Cranelift into one JIT module ([`RowKernels`]).
//!
//! Every kernel repeats the interpreter's arithmetic (`ir/src/interp/reduce.rs` and `rope.rs`)
//! operation for operation: the same f64 accumulations in the same order, the same roundings
//! to f32, `exp` through an imported Rust function that gives `f32::exp`'s bits (`expf.rs`,
//! 16 lanes at a time over a contiguous run) and square roots through Cranelift's correctly
//! rounded `sqrt`, so results are bit-identical. RMSNorm, softmax and the reductions walk
//! `[outer, n, inner]` slices with stride `inner` along `n`, four at a time with their sums as
//! interleaved chains: each accumulator stays in a register, no scratch buffer is needed, and
//! each output's sum runs over `k = 0..n` in the interpreter's order.
//!
//! The Rust wrappers never panic and never touch memory outside their slices: loop counts are
//! derived from the slice lengths and clamped to them; lengths that do not fit the arguments
//! trip a `debug_assert!` only.
//!
//! RoPE's cos/sin tables ([`rope_tables`]) are computed in Rust, once per call rather than once
//! per vector, with the interpreter's f32 formulas; the kernel then repeats its rotation, so the
//! result is bit-identical to the `rope` op as well.

use rayon::prelude::*;

use cranelift_codegen::ir::types;
use saturn_ir::{ReduceOp, Rope, RopeLayout};

use super::jit::JitCode;
use super::rows_ir::{Jit, emit_reduce, emit_rms_norm, emit_rope};
use super::softmax_ir::{emit_causal_softmax, emit_softmax};
use super::{CodegenError, PARALLEL_MIN_ELEMENTS};

/// `(x, w, out, rows, d, eps)`.
type RmsNormFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, usize, usize, f64);
/// `(x, out, outer, n, inner)`: softmax and the reductions.
type AxisFn = unsafe extern "C" fn(*const f32, *mut f32, usize, usize, usize);
/// `(x, out, rows, n, sq, first, scale)`: the causal softmax.
type CausalFn = unsafe extern "C" fn(*const f32, *mut f32, usize, usize, usize, usize, f32);
/// `(x, cos, sin, out, rows, vectors, d)`: `rows` table rows of `vectors` vectors of `d`.
type RopeFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, usize, usize, usize);

/// Norm, softmax, reduction and RoPE loops compiled once with Cranelift (one JIT module).
///
/// `Send + Sync`: the kernels keep no state, so any number of threads may call them at once.
pub struct RowKernels {
    rms_norm: RmsNormFn,
    softmax: AxisFn,
    /// Softmax along a contiguous axis (`inner == 1`, the usual case), compiled with that
    /// stride as a constant so that addresses need no multiply.
    softmax_rows: AxisFn,
    causal_softmax: CausalFn,
    sum: AxisFn,
    mean: AxisFn,
    max: AxisFn,
    rope_interleaved: RopeFn,
    rope_half_split: RopeFn,
    /// Owns the code: every pointer into it is a field here.
    _code: JitCode,
}

impl RowKernels {
    /// Compiles every kernel; done once, the kernels serve any shape.
    pub fn compile() -> Result<RowKernels, CodegenError> {
        let mut jit = Jit::new()?;
        let p = jit.pointer_type();
        let rms_norm = jit.define("rms_norm", [p, p, p, p, p, types::F64], emit_rms_norm)?;
        let softmax = jit.define("softmax", [p; 5], |e, args| emit_softmax(e, args, false))?;
        let softmax_rows = jit.define("softmax_rows", [p; 5], |e, [x, out, outer, n, _]| {
            let one = e.unit();
            emit_softmax(e, [x, out, outer, n, one], true)
        })?;
        let causal_softmax =
            jit.define("causal_softmax", [p, p, p, p, p, p, types::F32], emit_causal_softmax)?;
        let sum = jit.define("reduce_sum", [p; 5], |e, a| emit_reduce(e, ReduceOp::Sum, a))?;
        let mean = jit.define("reduce_mean", [p; 5], |e, a| emit_reduce(e, ReduceOp::Mean, a))?;
        let max = jit.define("reduce_max", [p; 5], |e, a| emit_reduce(e, ReduceOp::Max, a))?;
        let interleaved =
            jit.define("rope_interleaved", [p; 7], |e, a| emit_rope(e, RopeLayout::Interleaved, a))?;
        let half_split =
            jit.define("rope_half_split", [p; 7], |e, a| emit_rope(e, RopeLayout::HalfSplit, a))?;
        let module = jit.finish()?;
        let [rms_norm, softmax, softmax_rows, causal_softmax, sum, mean, max, interleaved, half_split] =
            [rms_norm, softmax, softmax_rows, causal_softmax, sum, mean, max, interleaved, half_split]
                .map(|id| module.get_finalized_function(id));
        // SAFETY: each pointer is a function finalized just above from a signature matching its
        // type (pointer-sized ints for the pointers and counts, f64 for `eps`, no result, the
        // platform's C convention), and the code lives until `Drop` frees `module`.
        unsafe {
            Ok(RowKernels {
                rms_norm: std::mem::transmute::<*const u8, RmsNormFn>(rms_norm),
                softmax: std::mem::transmute::<*const u8, AxisFn>(softmax),
                softmax_rows: std::mem::transmute::<*const u8, AxisFn>(softmax_rows),
                causal_softmax: std::mem::transmute::<*const u8, CausalFn>(causal_softmax),
                sum: std::mem::transmute::<*const u8, AxisFn>(sum),
                mean: std::mem::transmute::<*const u8, AxisFn>(mean),
                max: std::mem::transmute::<*const u8, AxisFn>(max),
                rope_interleaved: std::mem::transmute::<*const u8, RopeFn>(interleaved),
                rope_half_split: std::mem::transmute::<*const u8, RopeFn>(half_split),
                _code: JitCode::new(module),
            })
        }
    }

    /// RMSNorm of each contiguous row of length `d = w.len()`: `out[r] = (x[r] * rinv) * w` with
    /// `rinv = 1 / sqrt(mean(x[r]^2) + eps)` taken in f64 and rounded to f32 once.
    /// `x.len() == out.len()`, a multiple of `d`.
    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f64, out: &mut [f32]) {
        let d = w.len();
        debug_assert!(
            x.len() == out.len() && x.len().is_multiple_of(d),
            "rms_norm: {} into {} by {d}",
            x.len(),
            out.len()
        );
        let rows = x.len().min(out.len()).checked_div(d).unwrap_or(0);
        let kernel = self.rms_norm;
        split_rows(rows, (d, d), x, out, |_, rows, x, out| {
            // SAFETY: the kernel reads `x[..rows * d]` and `w[..d]` and writes `out[..rows * d]`,
            // which `split_rows` hands over.
            unsafe { kernel(x.as_ptr(), w.as_ptr(), out.as_mut_ptr(), rows, d, eps) }
        });
    }

    /// Softmax of `x` viewed as `[outer, n, inner]`, along `n`, into `out` (same size): the
    /// max, `e = exp(x - max)` in f32, their sum in f64, `p = (e as f64 / sum) as f32`; a slice
    /// that is all `-inf` (no NaN) gives zeros.
    pub fn softmax(&self, x: &[f32], outer: usize, n: usize, inner: usize, out: &mut [f32]) {
        let per = n.checked_mul(inner);
        debug_assert!(
            per.and_then(|p| p.checked_mul(outer)) == Some(x.len()) && x.len() == out.len(),
            "softmax: [{outer}, {n}, {inner}] over {} into {}",
            x.len(),
            out.len()
        );
        let len = x.len().min(out.len());
        if len == 0 {
            return;
        }
        let outer = fit(outer, per, len);
        let kernel = if inner == 1 { self.softmax_rows } else { self.softmax };
        let per = n * inner;
        split_rows(outer, (per, per), x, out, |_, outer, x, out| {
            // SAFETY: the kernel touches elements below `outer * n * inner` of `x` and `out`,
            // which `split_rows` hands over.
            unsafe { kernel(x.as_ptr(), out.as_mut_ptr(), outer, n, inner) }
        });
    }

    /// `softmax(causal_mask(x * scale))` of `x` viewed as `[rows, n]` (keys along the contiguous
    /// last axis) into `out` (same size), row `r` being query `r % sq` of `sq` against `n` keys:
    /// exactly what the three ops give (`x * scale` in f32; key `j` of query `i` masked when
    /// `j > i + n - sq`), without reading masked scores or writing the scaled ones.
    pub fn causal_softmax(
        &self,
        x: &[f32],
        (rows, n, sq): (usize, usize, usize),
        scale: f32,
        out: &mut [f32],
    ) {
        debug_assert!(
            rows.checked_mul(n) == Some(x.len()) && x.len() == out.len() && sq > 0,
            "causal_softmax: [{rows}, {n}] of {sq} queries over {} into {}",
            x.len(),
            out.len()
        );
        let len = x.len().min(out.len());
        if len == 0 || n == 0 || sq == 0 {
            return;
        }
        let rows = rows.min(len / n);
        let kernel = self.causal_softmax;
        split_rows(rows, (n, n), x, out, |first, rows, x, out| {
            // SAFETY: the kernel touches elements below `rows * n` of `x` and `out`, which
            // `split_rows` hands over, `first` being the part's first row.
            unsafe { kernel(x.as_ptr(), out.as_mut_ptr(), rows, n, sq, first, scale) }
        });
    }

    /// Reduces `x` viewed as `[outer, n, inner]` along `n` into `out` `[outer, inner]`: `Sum`
    /// and `Mean` accumulate in f64 and round once (`Mean` divides by `n` in f64, NaN over an
    /// empty axis); `Max` propagates NaN and gives `-inf` over an empty axis.
    pub fn reduce(&self, op: ReduceOp, x: &[f32], outer: usize, n: usize, inner: usize, out: &mut [f32]) {
        debug_assert!(
            n.checked_mul(inner).and_then(|p| p.checked_mul(outer)) == Some(x.len())
                && outer.checked_mul(inner) == Some(out.len()),
            "{}: [{outer}, {n}, {inner}] over {} into {}",
            op.name(),
            x.len(),
            out.len()
        );
        if out.is_empty() {
            return;
        }
        let outer = fit(fit(outer, n.checked_mul(inner), x.len()), Some(inner), out.len());
        let kernel = match op {
            ReduceOp::Sum => self.sum,
            ReduceOp::Mean => self.mean,
            ReduceOp::Max => self.max,
        };
        split_rows(outer, (n * inner, inner), x, out, |_, outer, x, out| {
            // SAFETY: the kernel reads `x` below `outer * n * inner` and writes `out` below
            // `outer * inner`, which `split_rows` hands over.
            unsafe { kernel(x.as_ptr(), out.as_mut_ptr(), outer, n, inner) }
        });
    }

    /// RoPE of `x` `[S, rest.., d]` (row-major) into `out` (same size): every vector in row `s`
    /// of axis 0 uses row `s` of the `[S, d/2]` tables from [`rope_tables`]
    /// (scaled by the attention factor). Pair `j` is `(x[2j], x[2j+1])` (`Interleaved`) or
    /// `(x[j], x[j + d/2])` (`HalfSplit`), rotated to `(x0 cos - x1 sin, x1 cos + x0 sin)`.
    pub fn rope(&self, layout: RopeLayout, x: &[f32], d: usize, cos: &[f32], sin: &[f32], out: &mut [f32]) {
        let half = d / 2;
        let rows = cos.len().min(sin.len()).checked_div(half).unwrap_or(0);
        let vectors = x.len().min(out.len()).checked_div(rows * d).unwrap_or(0);
        debug_assert!(
            d.is_multiple_of(2)
                && cos.len() == sin.len()
                && x.len() == out.len()
                && rows * vectors * d == x.len(),
            "rope: {} by {d} with tables of {} and {} into {}",
            x.len(),
            cos.len(),
            sin.len(),
            out.len()
        );
        let kernel = match layout {
            RopeLayout::Interleaved => self.rope_interleaved,
            RopeLayout::HalfSplit => self.rope_half_split,
        };
        // SAFETY: the kernel reads `cos` and `sin` below `rows * d/2` and touches `x` and `out`
        // below `rows * vectors * d`, all within the slices.
        unsafe { kernel(x.as_ptr(), cos.as_ptr(), sin.as_ptr(), out.as_mut_ptr(), rows, vectors, d) }
    }
}

/// The cos/sin tables `[S, d/2]` of `positions` (`S` of them), as the interpreter computes
/// them: `angle = (pos as f32) * inv_freq[j]` in f32, `cos = angle.cos() * af` and
/// `sin = angle.sin() * af` with `af = rope.attention_factor as f32`, `inv_freq` (`d/2` of
/// them) from `saturn_ir::rope_inv_freq`, computed once by the caller. Writes `cos` and `sin`
/// (`S * d/2` each) so that a caller can reuse them: nothing is allocated.
pub fn rope_tables(rope: &Rope, inv_freq: &[f32], positions: &[i64], cos: &mut [f32], sin: &mut [f32]) {
    let half = inv_freq.len();
    debug_assert!(
        cos.len() == positions.len() * half && sin.len() == cos.len(),
        "rope_tables: {} positions by {half} into {} and {}",
        positions.len(),
        cos.len(),
        sin.len()
    );
    if half == 0 {
        return;
    }
    let af = rope.attention_factor as f32;
    for ((cos, sin), &position) in cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half)).zip(positions) {
        let position = position as f32;
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
            let angle = position * f;
            *c = angle.cos() * af;
            *s = angle.sin() * af;
        }
    }
}

/// Runs `f(first, rows, x, out)` over `rows` independent rows of `per.0` input and `per.1` output
/// elements, in contiguous parts across threads when the input is large enough. Each row's
/// arithmetic is the same wherever it runs, so the results are too.
fn split_rows(
    rows: usize,
    (per_in, per_out): (usize, usize),
    x: &[f32],
    out: &mut [f32],
    f: impl Fn(usize, usize, &[f32], &mut [f32]) + Sync,
) {
    let threads = rayon::current_num_threads();
    if rows < 2 || threads < 2 || per_in == 0 || per_out == 0 || rows * per_in < PARALLEL_MIN_ELEMENTS {
        f(0, rows, x, out);
        return;
    }
    let chunk = rows.div_ceil(threads);
    let (x, out) = (&x[..rows * per_in], &mut out[..rows * per_out]);
    x.par_chunks(chunk * per_in)
        .zip(out.par_chunks_mut(chunk * per_out))
        .enumerate()
        .for_each(|(part, (x, out))| f(part * chunk, x.len() / per_in, x, out));
}

/// `outer` clamped so that `outer` blocks of `per` elements fit in `len`; an overflowing `per`
/// fits none, and blocks of no elements fit any number.
fn fit(outer: usize, per: Option<usize>, len: usize) -> usize {
    match per {
        Some(0) => outer,
        Some(per) => outer.min(len / per),
        None => 0,
    }
}
