//! Kernels along one axis: sum/mean/max reductions, softmax, RMSNorm, the top-k mask, and RoPE.
//!
//! A reduction over the last axis runs one block per row (a block-wide tree reduction); over an
//! inner axis, one thread per output walks the axis (consecutive threads read consecutive
//! addresses). Sums accumulate in f32 per thread and combine as a tree, which stays well within
//! the backends' tolerance of the interpreter's f64 sums.

use std::fmt::Write as _;

use saturn_ir::{Dim, ReduceOp, Rope, RopeLayout};

use super::index::c_float;
use super::{ELEMENT_BLOCK, KernelDef, NodeCtx, element_grid};
use crate::CodegenError;
use crate::cuda::extent::Extent;

/// Threads per block of the one-block-per-row kernels.
const ROW_BLOCK: u32 = 256;

/// `(outer, n, inner)` of `shape` split at `axis`, as dims.
fn split(shape: &[Dim], axis: usize) -> (&[Dim], &Dim, &[Dim]) {
    (&shape[..axis], &shape[axis], &shape[axis + 1..])
}

/// A kernel with one block per row of `rows` rows; the body sees `row` and `tmp` (32 floats of
/// shared memory for the block reductions).
fn per_row(ctx: &NodeCtx, stem: &str, params: Vec<super::Param>, rows: &[Dim], body: &str) -> KernelDef {
    let mut code = String::from("  __shared__ float tmp[32];\n  const long long row = blockIdx.x;\n");
    let _ = writeln!(code, "  if (row >= {}) return;", ctx.product(rows));
    code.push_str(body);
    KernelDef {
        stem: stem.into(),
        params,
        body: code,
        block: ROW_BLOCK,
        grid: [Extent::of(rows.iter().cloned()), Extent::one(), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    }
}

/// A kernel with one thread per `(outer, inner)` pair; the body sees `o`, `in` and `n`.
fn per_column(ctx: &NodeCtx, stem: &str, params: Vec<super::Param>, axis: usize, body: &str) -> KernelDef {
    let (outer, n, inner) = split(&ctx.operands[0].shape, axis);
    let mut dims: Vec<Dim> = outer.to_vec();
    dims.extend(inner.iter().cloned());
    let mut code = String::new();
    let _ = writeln!(code, "  const long long inner = {};", ctx.product(inner));
    let _ = writeln!(code, "  const long long n = {};", ctx.dim(n));
    let _ = writeln!(code, "  const long long total = {} * inner;", ctx.product(outer));
    code.push_str("  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n");
    code.push_str("  if (t >= total) return;\n  const long long o = t / inner, in = t % inner;\n");
    code.push_str(body);
    KernelDef {
        stem: stem.into(),
        params,
        body: code,
        block: ELEMENT_BLOCK,
        grid: element_grid(&dims),
        shared_bytes: 0,
        globals: String::new(),
    }
}

fn last_axis_is_row(ctx: &NodeCtx, axis: usize) -> bool {
    axis + 1 == ctx.operands[0].shape.len()
}

pub(super) fn reduce(ctx: &NodeCtx, op: ReduceOp, axis: usize) -> KernelDef {
    let params = vec![ctx.operand(0, "x"), ctx.out()];
    let (outer, n, _) = split(&ctx.operands[0].shape, axis);
    let finish = |acc: &str| match op {
        ReduceOp::Mean => format!("{acc} / (float)n"),
        _ => acc.to_string(),
    };
    if last_axis_is_row(ctx, axis) {
        let (init, step, combine) = match op {
            ReduceOp::Max => {
                ("__int_as_float(0xff800000)", "acc = sat_max(acc, x[base + k]);", "sat_block_max")
            }
            _ => ("0.0f", "acc += x[base + k];", "sat_block_sum"),
        };
        // fmaxf-based block max drops NaN: count NaNs separately so reduce_max propagates them.
        let nan = if op == ReduceOp::Max {
            "  const float nans = sat_block_sum(acc != acc ? 1.0f : 0.0f, tmp);\n"
        } else {
            ""
        };
        let result =
            if op == ReduceOp::Max { "nans > 0.0f ? __int_as_float(0x7fc00000) : total" } else { "total" };
        let body = format!(
            "  const long long n = {n};\n  const long long base = row * n;\n  float acc = {init};\n  for (long long k = threadIdx.x; k < n; k += blockDim.x) {step}\n{nan}  const float total = {combine}(acc, tmp);\n  if (threadIdx.x == 0) {{ const float r = {result}; out[row] = {fin}; }}\n",
            n = ctx.dim(n),
            fin = finish("r"),
        );
        let stem = format!("{}_row", op.name());
        return per_row(ctx, &stem, params, outer, &body);
    }
    let step = match op {
        ReduceOp::Max => "acc = (acc != acc || v != v || v > acc) ? (acc != acc ? acc : v) : acc;",
        _ => "acc += v;",
    };
    let init = if op == ReduceOp::Max { "__int_as_float(0xff800000)" } else { "0.0f" };
    let body = format!(
        "  float acc = {init};\n  for (long long k = 0; k < n; ++k) {{ const float v = x[(o * n + k) * inner + in]; {step} }}\n  out[t] = {};\n",
        finish("acc")
    );
    per_column(ctx, op.name(), params, axis, &body)
}

pub(super) fn softmax(ctx: &NodeCtx, axis: usize) -> KernelDef {
    let params = vec![ctx.operand(0, "x"), ctx.out()];
    let (outer, n, _) = split(&ctx.operands[0].shape, axis);
    if last_axis_is_row(ctx, axis) {
        // An all -inf row (fully masked) gives zeros, as the interpreter does.
        let body = format!(
            "  const long long n = {n};\n  const float* xr = x + row * n;\n  float* yr = out + row * n;\n  float m = __int_as_float(0xff800000);\n  for (long long k = threadIdx.x; k < n; k += blockDim.x) m = fmaxf(m, xr[k]);\n  m = sat_block_max(m, tmp);\n  if (m == __int_as_float(0xff800000)) {{\n    float nans = 0.0f;\n    for (long long k = threadIdx.x; k < n; k += blockDim.x) nans += xr[k] != xr[k] ? 1.0f : 0.0f;\n    nans = sat_block_sum(nans, tmp);\n    for (long long k = threadIdx.x; k < n; k += blockDim.x) yr[k] = nans > 0.0f ? __int_as_float(0x7fc00000) : 0.0f;\n    return;\n  }}\n  float s = 0.0f;\n  for (long long k = threadIdx.x; k < n; k += blockDim.x) s += expf(xr[k] - m);\n  s = sat_block_sum(s, tmp);\n  for (long long k = threadIdx.x; k < n; k += blockDim.x) yr[k] = expf(xr[k] - m) / s;\n",
            n = ctx.dim(n)
        );
        return per_row(ctx, "softmax_row", params, outer, &body);
    }
    let body = "  float m = __int_as_float(0xff800000);\n  bool nan = false;\n  for (long long k = 0; k < n; ++k) { const float v = x[(o * n + k) * inner + in]; m = fmaxf(m, v); nan |= v != v; }\n  float s = 0.0f;\n  for (long long k = 0; k < n; ++k) s += expf(x[(o * n + k) * inner + in] - m);\n  for (long long k = 0; k < n; ++k) { const long long a = (o * n + k) * inner + in; out[a] = m == __int_as_float(0xff800000) ? (nan ? __int_as_float(0x7fc00000) : 0.0f) : expf(x[a] - m) / s; }\n";
    per_column(ctx, "softmax", params, axis, body)
}

pub(super) fn rms_norm(ctx: &NodeCtx, eps: f64) -> KernelDef {
    rms_norm_to(ctx, eps, ctx.out())
}

/// RMSNorm of operand 0 along its last axis times operand 1, written through `dest` (the
/// result, or a scratch buffer when a product follows). As the interpreter: the mean of
/// squares, one reciprocal root rounded to f32, then `(x * r) * w`; the squares are summed in
/// f32 (a tree across the block) where the interpreter sums in f64.
pub(super) fn rms_norm_to(ctx: &NodeCtx, eps: f64, dest: super::Param) -> KernelDef {
    let shape = &ctx.operands[0].shape;
    let (outer, d, _) = split(shape, shape.len() - 1);
    let body = format!(
        "  const long long d = {d};\n  const float* xr = x + row * d;\n  float* yr = {dest} + row * d;\n  float ss = 0.0f;\n  for (long long k = threadIdx.x; k < d; k += blockDim.x) ss += xr[k] * xr[k];\n  ss = sat_block_sum(ss, tmp);\n  const float r = (float)(1.0 / sqrt((double)ss / (double)d + {eps:e}));\n  for (long long k = threadIdx.x; k < d; k += blockDim.x) yr[k] = (xr[k] * r) * w[k];\n",
        d = ctx.dim(d),
        dest = dest.name,
    );
    per_row(ctx, "rms_norm", vec![ctx.operand(0, "x"), ctx.operand(1, "w"), dest], outer, &body)
}

pub(super) fn topk_mask(ctx: &NodeCtx, k: u64) -> KernelDef {
    let shape = &ctx.operands[0].shape;
    let (outer, n, _) = split(shape, shape.len() - 1);
    // One thread per row picks the k largest by k passes in `sat_topk_before` order (the
    // interpreter's); chosen entries are marked in `out` as it goes.
    let body = format!(
        "  const long long n = {n};\n  const long long rows = {rows};\n  const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (row >= rows) return;\n  const float* xr = x + row * n;\n  unsigned char* m = out + row * n;\n  for (long long j = 0; j < n; ++j) m[j] = 0;\n  const long long k = {k}LL < n ? {k}LL : n;\n  for (long long pass = 0; pass < k; ++pass) {{\n    long long best = -1;\n    for (long long j = 0; j < n; ++j) {{\n      if (m[j]) continue;\n      if (best < 0) {{ best = j; continue; }}\n      if (sat_topk_before(xr[j], (int)j, xr[best], (int)best)) best = j;\n    }}\n    m[best] = 1;\n  }}\n",
        n = ctx.dim(n),
        rows = ctx.product(outer),
    );
    KernelDef {
        stem: "topk_mask".into(),
        params: vec![ctx.operand(0, "x"), ctx.out()],
        body,
        block: ELEMENT_BLOCK,
        grid: element_grid(outer),
        shared_bytes: 0,
        globals: String::new(),
    }
}

pub(super) fn rope(ctx: &NodeCtx, r: &Rope) -> Result<KernelDef, CodegenError> {
    let shape = &ctx.operands[0].shape;
    let d = shape
        .last()
        .and_then(Dim::as_const)
        .ok_or_else(|| ctx.unsupported("the rotary dim must be constant"))?;
    if d % 2 != 0 || shape.len() < 2 {
        return Err(ctx.unsupported("rope needs an even last axis and rank >= 2"));
    }
    let half = d / 2;
    let inv = saturn_ir::rope_inv_freq(r, d as usize);
    let table: Vec<String> = inv.iter().map(|&f| c_float(f)).collect();
    let globals = format!("__constant__ float $NAME_inv_freq[{half}] = {{{}}};\n", table.join(", "));
    let (a, b) = match r.layout {
        RopeLayout::Interleaved => ("2 * j", "2 * j + 1"),
        RopeLayout::HalfSplit => ("j", &*format!("j + {half}")),
    };
    let body = format!(
        "  const long long pairs = {n} / 2;\n  const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (p >= pairs) return;\n  const long long per_row = {per_row} / 2;\n  const long long s = p / per_row;\n  const long long j = p % {half};\n  const long long base = (p / {half}) * {d};\n  const float angle = (float)pos[s] * $NAME_inv_freq[j];\n  const float c = cosf(angle) * {af}, sn = sinf(angle) * {af};\n  const float x0 = x[base + {a}], x1 = x[base + {b}];\n  out[base + {a}] = x0 * c - x1 * sn;\n  out[base + {b}] = x1 * c + x0 * sn;\n",
        n = ctx.product(shape),
        per_row = ctx.product(&shape[1..]),
        af = c_float(r.attention_factor as f32),
    );
    let mut dims = shape.clone();
    *dims.last_mut().expect("rank >= 2") = Dim::constant(half);
    Ok(KernelDef {
        stem: format!("rope_{}", r.layout.name()),
        params: vec![ctx.operand(0, "x"), ctx.operand(1, "pos"), ctx.out()],
        body,
        block: ELEMENT_BLOCK,
        grid: element_grid(&dims),
        shared_bytes: 0,
        globals,
    })
}
