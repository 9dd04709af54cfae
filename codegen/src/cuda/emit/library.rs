//! Products run by the device's BLAS library ([`crate::cuda::Gemm`]; cuBLAS on a GPU) instead
//! of generated tiles, in programs that ask for it ([`NodeCtx::cublas`]): where the tiles would
//! run (more than [`SKINNY_ROWS`] rows, or symbolic ones) and the library multiplies the
//! operands together. The kernels around them (a rounding to bf16, a gated product's
//! `silu(g) * u`) are one thread per element.

use saturn_ir::Dim;

use super::linalg::SKINNY_ROWS;
use super::{Bind, GemmDef, Group, KernelDef, NodeCtx, Param, Step, mma};
use crate::cuda::extent::Extent;
use crate::cuda::gemm::{Gemm, GemmRight, GemmType};

/// `x w^T` (or gated, with two weights) through the device's BLAS library
/// ([`NodeCtx::cublas`]), where tiles would run and the library multiplies the operands
/// together: f32 weights with f32 `x`, or bf16 weights on tensor cores ([`mma::applies`]),
/// `x` then rounded to bf16 into scratch first, as the tiles round it. A gated product's two
/// results go to scratch, then `silu(g) * u` to the result. `x` has operand 0's shape;
/// `scratch` is the group's so far. `None` where the kernels run.
pub(super) fn product(
    ctx: &NodeCtx,
    x: &Param,
    weights: &[Param],
    mut scratch: Vec<Extent>,
) -> Option<Group> {
    let xs = &ctx.operands[0].shape;
    let (k, lead) = xs.split_last()?;
    let rows = lead.iter().map(Dim::as_const).product::<Option<u64>>();
    if !ctx.cublas || rows.is_some_and(|m| (1..=SKINNY_ROWS).contains(&m)) {
        return None;
    }
    // One type for both operands of every call: f32 `x` with f32 weights, or bf16 weights (all
    // of them) on tensor cores, `x` rounded whatever its storage.
    let cty = weights[0].cty;
    let operands = match cty {
        _ if weights.iter().any(|w| w.cty != cty) => return None,
        "float" if x.cty == "float" => GemmType::F32,
        _ if mma::applies(ctx, &weights[0]) => GemmType::Bf16,
        _ => return None,
    };
    let n = ctx.out_shape().last()?.clone();
    let (m_ext, n_ext) = (Extent::of(lead.iter().cloned()), Extent::of([n.clone()]));
    let mut steps = Vec::new();
    let scratch_param = |scratch: &mut Vec<Extent>, cty: &'static str, name: &str, bytes: Extent| {
        scratch.push(bytes);
        Param { cty, name: name.into(), bind: Bind::Scratch(scratch.len() - 1), written: true }
    };
    let a = match operands {
        GemmType::F32 => x.clone(),
        GemmType::Bf16 => {
            let y = scratch_param(&mut scratch, "sat_bf16", "y", Extent::of(xs.iter().cloned()).times(2));
            steps.push(Step::Kernel(elementwise_kernel(
                ctx,
                "to_bf16",
                vec![reading(x, "x"), y.clone()],
                xs,
                "y[i] = x[i];",
            )));
            y
        }
    };
    let gated = weights.len() == 2;
    let mut results = Vec::new();
    for (j, w) in weights.iter().enumerate() {
        let c = if gated {
            scratch_param(
                &mut scratch,
                "float",
                ["g", "u"][j],
                Extent::of(lead.iter().chain([&n]).cloned()).times(4),
            )
        } else {
            ctx.out()
        };
        let gemm = Gemm {
            m: m_ext.clone(),
            n: n_ext.clone(),
            k: Extent::of([k.clone()]),
            right: GemmRight::Rows,
            batch: Extent::one(),
            strides: [no_stride(), no_stride(), no_stride()],
            operands,
        };
        steps.push(Step::Gemm(Box::new(GemmDef { a: reading(&a, "a"), b: w.clone(), c: c.clone(), gemm })));
        results.push(c);
    }
    if gated {
        let params = vec![reading(&results[0], "g"), reading(&results[1], "u"), ctx.out()];
        steps.push(Step::Kernel(elementwise_kernel(
            ctx,
            "silu_mul",
            params,
            ctx.out_shape(),
            "out[i] = sat_silu(g[i]) * u[i];",
        )));
    }
    Some(Group { steps, scratch })
}

/// The stride of an operand one matrix serves for the whole batch.
fn no_stride() -> Extent {
    Extent::one().times(0)
}

/// Batched `matmul` through the device's BLAS library ([`NodeCtx::cublas`]), where tiles would
/// run: f32 operands only (the products of activations; no tensor cores), each operand either
/// one matrix per product of the batch or one for all (a batch of ones; other broadcasts keep
/// the kernel). `None` where the kernel runs.
pub(super) fn matmul(ctx: &NodeCtx) -> Option<Group> {
    let (a, b) = (&ctx.operands[0].shape, &ctx.operands[1].shape);
    let out = ctx.out_shape();
    let r = out.len();
    let (m, n, k) = (&out[r - 2], &out[r - 1], &a[a.len() - 1]);
    let (pa, pb) = (ctx.operand(0, "a"), ctx.operand(1, "b"));
    let skinny = m.as_const().is_some_and(|m| (1..=SKINNY_ROWS).contains(&m));
    if !ctx.cublas || skinny || pa.cty != "float" || pb.cty != "float" {
        return None;
    }
    let batch = &out[..r - 2];
    // An operand's stride: its matrix size when its batch dims are the result's (right-aligned,
    // any it lacks being 1), none when all its batch dims are 1.
    let stride = |shape: &[Dim], matrix: [&Dim; 2]| -> Option<Extent> {
        let own = &shape[..shape.len() - 2];
        if own.iter().all(|d| d.as_const() == Some(1)) {
            return Some(no_stride());
        }
        let (lead, aligned) = batch.split_at(batch.len() - own.len());
        let full = aligned == own && lead.iter().all(|d| d.as_const() == Some(1));
        full.then(|| Extent::of(matrix.into_iter().cloned()))
    };
    let gemm = Gemm {
        m: Extent::of([m.clone()]),
        n: Extent::of([n.clone()]),
        k: Extent::of([k.clone()]),
        right: GemmRight::Cols,
        batch: Extent::of(batch.iter().cloned()),
        strides: [stride(a, [m, k])?, stride(b, [k, n])?, Extent::of([m.clone(), n.clone()])],
        operands: GemmType::F32,
    };
    Some(Group {
        steps: vec![Step::Gemm(Box::new(GemmDef { a: pa, b: pb, c: ctx.out(), gemm }))],
        scratch: Vec::new(),
    })
}

/// `p` as a read-only parameter named `name`.
fn reading(p: &Param, name: &str) -> Param {
    Param { name: name.into(), written: false, ..p.clone() }
}

/// One thread per element `i` of `shape`, running `statement`.
fn elementwise_kernel(
    ctx: &NodeCtx,
    stem: &str,
    params: Vec<Param>,
    shape: &[Dim],
    statement: &str,
) -> KernelDef {
    let body = format!(
        "  const long long n = {n};\n  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) {statement}\n",
        n = ctx.product(shape),
    );
    KernelDef {
        stem: stem.into(),
        params,
        body,
        block: super::ELEMENT_BLOCK,
        grid: super::element_grid(shape),
        shared_bytes: 0,
        globals: String::new(),
    }
}
