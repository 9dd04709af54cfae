//! One-thread-per-element kernels: elementwise math (with numpy broadcasting), `where`, casts,
//! `arange`, the causal mask, and the layout ops that move elements (expand, permute, slice,
//! concat, gather, copies).

use std::fmt::Write as _;

use saturn_ir::{BinaryOp, DType, Dim, ElementwiseExpr, UnaryOp};

use super::{ELEMENT_BLOCK, KernelDef, NodeCtx, Param, cty, element_grid};
use crate::CodegenError;

/// A kernel over the elements of the result: `body` sees `i` (the flat index) and `c0, c1, ...`
/// (its coordinates), and writes `out[i]`.
fn per_element(ctx: &NodeCtx, stem: &str, mut params: Vec<Param>, body: &str) -> KernelDef {
    params.push(ctx.out());
    let shape = ctx.out_shape();
    let mut code = String::new();
    let _ = writeln!(code, "  const long long n = {};", ctx.product(shape));
    let _ = writeln!(code, "  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;");
    code.push_str("  if (i >= n) return;\n");
    code.push_str(&coords(ctx, shape));
    code.push_str(body);
    KernelDef {
        stem: stem.into(),
        params,
        body: code,
        block: ELEMENT_BLOCK,
        grid: element_grid(shape),
        shared_bytes: 0,
        globals: String::new(),
    }
}

/// Statements defining `c0 .. c{rank-1}`, the coordinates of flat index `i` in `shape`.
fn coords(ctx: &NodeCtx, shape: &[Dim]) -> String {
    let mut code = String::new();
    if shape.is_empty() {
        return code;
    }
    code.push_str("  long long r = i;\n");
    for k in (1..shape.len()).rev() {
        let d = ctx.dim(&shape[k]);
        let _ = writeln!(code, "  const long long c{k} = r % {d}; r /= {d};");
    }
    code.push_str("  const long long c0 = r;\n");
    code
}

/// The row-major offset of coordinates `coord(k)` in `shape`.
fn offset(ctx: &NodeCtx, shape: &[Dim], coord: impl Fn(usize) -> Option<String>) -> String {
    let mut terms = Vec::new();
    for k in 0..shape.len() {
        let Some(c) = coord(k) else { continue };
        let stride = &shape[k + 1..];
        if stride.is_empty() {
            terms.push(c);
        } else {
            terms.push(format!("{c} * {}", ctx.product(stride)));
        }
    }
    if terms.is_empty() { "0".into() } else { terms.join(" + ") }
}

/// The offset in an operand of `shape` broadcast (numpy rules) to the result's coordinates.
fn broadcast_offset(ctx: &NodeCtx, shape: &[Dim]) -> String {
    let lead = ctx.out_shape().len() - shape.len();
    offset(ctx, shape, |k| {
        // A dim of 1 stretches; any other dim equals the result's.
        (shape[k].as_const() != Some(1)).then(|| format!("c{}", k + lead))
    })
}

/// `expr` as a C expression of f32, `$i` reading `x{i}[o{i}]`.
fn c_expr(e: &ElementwiseExpr) -> String {
    match e {
        ElementwiseExpr::Input(i) => format!("x{i}[o{i}]"),
        ElementwiseExpr::Const(c) => c_float(*c as f32),
        ElementwiseExpr::Unary(u, a) => {
            let a = c_expr(a);
            match u {
                UnaryOp::Neg => format!("(-{a})"),
                UnaryOp::Exp => format!("expf({a})"),
                UnaryOp::Log => format!("logf({a})"),
                UnaryOp::Sqrt => format!("sqrtf({a})"),
                UnaryOp::Rsqrt => format!("(1.0f / sqrtf({a}))"),
                UnaryOp::Recip => format!("(1.0f / {a})"),
                UnaryOp::Sigmoid => format!("sat_sigmoid({a})"),
                UnaryOp::Silu => format!("sat_silu({a})"),
                UnaryOp::Tanh => format!("tanhf({a})"),
            }
        }
        ElementwiseExpr::Binary(b, x, y) => {
            let (x, y) = (c_expr(x), c_expr(y));
            match b {
                BinaryOp::Add => format!("({x} + {y})"),
                BinaryOp::Sub => format!("({x} - {y})"),
                BinaryOp::Mul => format!("({x} * {y})"),
                BinaryOp::Div => format!("({x} / {y})"),
                BinaryOp::Max => format!("sat_max({x}, {y})"),
                BinaryOp::Min => format!("sat_min({x}, {y})"),
            }
        }
    }
}

/// An f32 constant as a C literal that reads back to the same bits.
pub(crate) fn c_float(v: f32) -> String {
    if v.is_nan() {
        "__int_as_float(0x7fc00000)".into()
    } else if v.is_infinite() {
        if v > 0.0 { "__int_as_float(0x7f800000)".into() } else { "__int_as_float(0xff800000)".into() }
    } else {
        format!("{v:.9e}f")
    }
}

pub(super) fn elementwise(ctx: &NodeCtx) -> Result<KernelDef, CodegenError> {
    let expr = ctx.node.op.elementwise_expr().ok_or_else(|| ctx.unsupported("has no elementwise form"))?;
    if ctx.node.ty.dtype != DType::F32 || ctx.operands.iter().any(|t| t.dtype != DType::F32) {
        return Err(ctx.unsupported("only f32 elementwise math is generated"));
    }
    let params = (0..ctx.operands.len()).map(|i| ctx.operand(i, &format!("x{i}"))).collect();
    let mut body = String::new();
    for (i, t) in ctx.operands.iter().enumerate() {
        let _ = writeln!(body, "  const long long o{i} = {};", broadcast_offset(ctx, &t.shape));
    }
    let _ = writeln!(body, "  out[i] = {};", c_expr(&expr));
    Ok(per_element(ctx, "elementwise", params, &body))
}

pub(super) fn select(ctx: &NodeCtx) -> KernelDef {
    let params = vec![ctx.operand(0, "cond"), ctx.operand(1, "a"), ctx.operand(2, "b")];
    let [c, a, b] = [0, 1, 2].map(|k| broadcast_offset(ctx, &ctx.operands[k].shape));
    let body = format!("  out[i] = cond[{c}] ? a[{a}] : b[{b}];\n");
    per_element(ctx, "where", params, &body)
}

pub(super) fn cast(ctx: &NodeCtx) -> KernelDef {
    let (from, to) = (ctx.operands[0].dtype, ctx.node.ty.dtype);
    let value = match (from, to) {
        (_, DType::Bool) => "(x[i] != 0) ? 1 : 0".to_string(),
        // C truncates toward zero, as the IR's float-to-int cast does.
        _ => format!("({}) x[i]", cty(to)),
    };
    let stem = format!("cast_{}_{}", from.name(), to.name());
    per_element(ctx, &stem, vec![ctx.operand(0, "x")], &format!("  out[i] = {value};\n"))
}

pub(super) fn arange(ctx: &NodeCtx, start: &Dim) -> KernelDef {
    per_element(ctx, "arange", Vec::new(), &format!("  out[i] = {} + i;\n", ctx.dim(start)))
}

pub(super) fn causal_mask(ctx: &NodeCtx) -> KernelDef {
    let shape = ctx.out_shape();
    let r = shape.len();
    let (sq, sk) = (ctx.dim(&shape[r - 2]), ctx.dim(&shape[r - 1]));
    let body = format!(
        "  out[i] = (c{k} > c{q} + {sk} - {sq}) ? __int_as_float(0xff800000) : x[i];\n",
        k = r - 1,
        q = r - 2,
    );
    per_element(ctx, "causal_mask", vec![ctx.operand(0, "x")], &body)
}

pub(super) fn expand(ctx: &NodeCtx) -> KernelDef {
    let o = broadcast_offset(ctx, &ctx.operands[0].shape);
    per_element(ctx, "expand", vec![ctx.operand(0, "x")], &format!("  out[i] = x[{o}];\n"))
}

/// A copy of a value into fresh memory (reshapes that cannot alias).
pub(super) fn copy(ctx: &NodeCtx) -> KernelDef {
    per_element(ctx, "copy", vec![ctx.operand(0, "x")], "  out[i] = x[i];\n")
}

pub(super) fn permute(ctx: &NodeCtx, perm: &[usize]) -> KernelDef {
    // Result axis k is input axis perm[k]: input coordinate a is the result's c{k} with perm[k] = a.
    let o =
        offset(ctx, &ctx.operands[0].shape, |a| perm.iter().position(|&p| p == a).map(|k| format!("c{k}")));
    per_element(ctx, "permute", vec![ctx.operand(0, "x")], &format!("  out[i] = x[{o}];\n"))
}

pub(super) fn slice(ctx: &NodeCtx, axis: usize, start: &Dim) -> KernelDef {
    let start = ctx.dim(start);
    let o = offset(ctx, &ctx.operands[0].shape, |k| {
        Some(if k == axis { format!("(c{k} + {start})") } else { format!("c{k}") })
    });
    per_element(ctx, "slice", vec![ctx.operand(0, "x")], &format!("  out[i] = x[{o}];\n"))
}

pub(super) fn concat(ctx: &NodeCtx, axis: usize) -> KernelDef {
    let params: Vec<Param> = (0..ctx.operands.len()).map(|i| ctx.operand(i, &format!("x{i}"))).collect();
    let mut body = String::from("  long long at = 0;\n");
    for (j, t) in ctx.operands.iter().enumerate() {
        let len = ctx.dim(&t.shape[axis]);
        let o =
            offset(ctx, &t.shape, |k| Some(if k == axis { format!("(c{k} - at)") } else { format!("c{k}") }));
        let _ = writeln!(body, "  if (c{axis} < at + {len}) {{ out[i] = x{j}[{o}]; return; }}");
        let _ = writeln!(body, "  at += {len};");
    }
    per_element(ctx, "concat", params, &body)
}

pub(super) fn gather(ctx: &NodeCtx) -> KernelDef {
    // Result coordinates: the index's axes, then the table's axes after the first.
    let (table, idx) = (&ctx.operands[0].shape, &ctx.operands[1].shape);
    let ri = idx.len();
    let io = offset(ctx, idx, |k| Some(format!("c{k}")));
    let rows = ctx.dim(&table[0]);
    let inner = ctx.product(&table[1..]);
    let within = offset(ctx, &table[1..], |k| Some(format!("c{}", k + ri)));
    // An index outside the table gives NaN: the runtime checks the ids it uploads.
    let body = format!(
        "  const long long row = ix[{io}];\n  out[i] = (row >= 0 && row < {rows}) ? table[row * {inner} + {within}] : __int_as_float(0x7fc00000);\n"
    );
    per_element(ctx, "gather", vec![ctx.operand(0, "table"), ctx.operand(1, "ix")], &body)
}
