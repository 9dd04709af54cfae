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

/// A product with weights, as the library runs it: `dst = x w^T`, or gated with two weights,
/// `dst = silu(x w_gate^T) * (x w_up^T)`; `x` is `[lead.., k]` (`x_dims`), the weights `[n, k]`.
pub(super) struct WeightProduct<'a> {
    pub x: &'a Param,
    pub x_dims: &'a [Dim],
    pub weights: &'a [Param],
    pub n: &'a Dim,
    pub dst: Param,
}

/// `linear`, `gated_linear` and `rms_norm_linear`'s product (`x` has operand 0's shape, the
/// result is the node's) through the library, after the group's `scratch` so far: the group,
/// or `None` where the kernels run (see [`weight_product`]).
pub(super) fn product(
    ctx: &NodeCtx,
    x: &Param,
    weights: &[Param],
    mut scratch: Vec<Extent>,
) -> Option<Group> {
    let n = ctx.out_shape().last()?;
    let p = WeightProduct { x, x_dims: &ctx.operands[0].shape, weights, n, dst: ctx.out() };
    let steps = weight_product(ctx, &p, &mut scratch)?;
    Some(Group { steps, scratch })
}

/// The steps of `p` through the device's BLAS library ([`NodeCtx::cublas`]), adding their
/// scratch buffers to the group's `scratch`, where tiles would run and the library multiplies
/// the operands together: f32 weights with f32 `x`, or bf16 weights (all of one storage) on
/// tensor cores ([`mma::applies`]), `x` then rounded to bf16 into scratch first, as the tiles
/// round it. A gated product's two results go to scratch, then `silu(g) * u` to `dst`. `None`
/// (and no scratch added) where the kernels run.
pub(super) fn weight_product(
    ctx: &NodeCtx,
    p: &WeightProduct,
    scratch: &mut Vec<Extent>,
) -> Option<Vec<Step>> {
    let (k, lead) = p.x_dims.split_last()?;
    let rows = lead.iter().map(Dim::as_const).product::<Option<u64>>();
    if !ctx.cublas || rows.is_some_and(|m| (1..=SKINNY_ROWS).contains(&m)) {
        return None;
    }
    // One type for both operands of every call: f32 `x` with f32 weights, or bf16 weights (all
    // of them) on tensor cores, `x` rounded whatever its storage.
    let cty = p.weights[0].cty;
    let operands = match cty {
        _ if p.weights.iter().any(|w| w.cty != cty) => return None,
        "float" if p.x.cty == "float" => GemmType::F32,
        _ if mma::applies(ctx, &p.weights[0]) => GemmType::Bf16,
        _ => return None,
    };
    let (m_ext, n_ext) = (Extent::of(lead.iter().cloned()), Extent::of([p.n.clone()]));
    let mut steps = Vec::new();
    let scratch_param = |scratch: &mut Vec<Extent>, cty: &'static str, name: &str, bytes: Extent| {
        scratch.push(bytes);
        Param { cty, name: name.into(), bind: Bind::Scratch(scratch.len() - 1), written: true }
    };
    let a = match operands {
        GemmType::F32 => p.x.clone(),
        GemmType::Bf16 => {
            let y = scratch_param(scratch, "sat_bf16", "y", Extent::of(p.x_dims.iter().cloned()).times(2));
            let params = vec![reading(p.x, "x"), y.clone()];
            steps.push(Step::Kernel(elementwise_kernel(ctx, "to_bf16", params, p.x_dims, "y[i] = x[i];")));
            y
        }
    };
    let dst_dims: Vec<Dim> = lead.iter().chain([p.n]).cloned().collect();
    let gated = p.weights.len() == 2;
    let mut results = Vec::new();
    for (j, w) in p.weights.iter().enumerate() {
        let c = match gated {
            true => {
                scratch_param(scratch, "float", ["g", "u"][j], Extent::of(dst_dims.iter().cloned()).times(4))
            }
            false => p.dst.clone(),
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
        let params = vec![
            reading(&results[0], "g"),
            reading(&results[1], "u"),
            Param { name: "out".into(), ..p.dst.clone() },
        ];
        let statement = "out[i] = sat_silu(g[i]) * u[i];";
        steps.push(Step::Kernel(elementwise_kernel(ctx, "silu_mul", params, &dst_dims, statement)));
    }
    Some(steps)
}

/// The stride of an operand one matrix serves for the whole batch.
fn no_stride() -> Extent {
    Extent::one().times(0)
}

/// Batched `matmul` through the device's BLAS library ([`NodeCtx::cublas`]), where tiles would
/// run, each operand either one matrix per product of the batch or one for all (a batch of
/// ones; other broadcasts keep the kernel). In f32, or in programs that compute on tensor cores
/// ([`NodeCtx::tensor_cores`]) in bf16, an f32 operand rounded into scratch first (a bf16 one,
/// the KV cache or a weight, read as stored). `None` where the kernel runs.
pub(super) fn matmul(ctx: &NodeCtx) -> Option<Group> {
    let (a, b) = (&ctx.operands[0].shape, &ctx.operands[1].shape);
    let out = ctx.out_shape();
    let r = out.len();
    let (m, n, k) = (&out[r - 2], &out[r - 1], &a[a.len() - 1]);
    let skinny = m.as_const().is_some_and(|m| (1..=SKINNY_ROWS).contains(&m));
    let operands = match (ctx.operand(0, "a").cty, ctx.operand(1, "b").cty) {
        _ if !ctx.cublas || skinny => return None,
        _ if ctx.tensor_cores => GemmType::Bf16,
        ("float", "float") => GemmType::F32,
        _ => return None,
    };
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
        operands,
    };
    let (mut steps, mut scratch) = (Vec::new(), Vec::new());
    let [pa, pb] = [(0, "a", a), (1, "b", b)].map(|(i, name, shape)| {
        let p = ctx.operand(i, name);
        if operands == GemmType::F32 || p.cty != "float" {
            return p;
        }
        scratch.push(Extent::of(shape.iter().cloned()).times(2));
        let y = Param {
            cty: "sat_bf16",
            name: "y".into(),
            bind: Bind::Scratch(scratch.len() - 1),
            written: true,
        };
        let params = vec![reading(&p, "x"), y.clone()];
        steps.push(Step::Kernel(elementwise_kernel(ctx, "to_bf16", params, shape, "y[i] = x[i];")));
        reading(&y, name)
    });
    steps.push(Step::Gemm(Box::new(GemmDef { a: pa, b: pb, c: ctx.out(), gemm })));
    Some(Group { steps, scratch })
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
