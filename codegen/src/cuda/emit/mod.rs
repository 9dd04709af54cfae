//! CUDA C for one fusion group (one node of the optimised graph): its kernels, their launch
//! geometry and the scratch memory they share.
//!
//! Every kernel has the signature `(const long long* sym, <params>)`: `sym` holds the values of
//! the program's symbols (so one compiled kernel serves every sequence length, and a captured
//! CUDA graph stays valid as `P` grows), then one pointer per [`Param`]. A family lives in its
//! own file next to the ops it concerns; [`emit`] picks the family.

mod attention;
mod index;
mod library;
mod linalg;
mod mma;
mod moe;
mod router;
mod rows;

use saturn_ir::{DType, Dim, Node, Op, TensorType};

use super::extent::{Extent, c_dim, c_product};
use super::gemm::Gemm;
use crate::CodegenError;

/// What a kernel parameter is bound to when the group is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    /// The node's operand `i`.
    Operand(usize),
    /// The node's result.
    Out,
    /// The group's scratch buffer `i`.
    Scratch(usize),
}

/// One pointer parameter of a kernel.
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub cty: &'static str,
    pub name: String,
    pub bind: Bind,
    /// Written by the kernel (else `const`).
    pub written: bool,
}

/// Shared memory of an SM on the least of the targeted GPUs (sm_80: 164 KiB).
const SM_SHARED_BYTES: u32 = 164 * 1024;

/// One kernel of a group: its code and how it is launched.
#[derive(Clone, Debug)]
pub(crate) struct KernelDef {
    /// What the kernel is (`rms_norm`, `mla_decode_split`): the start of its name.
    pub stem: String,
    pub params: Vec<Param>,
    /// The statements of the kernel's body.
    pub body: String,
    pub block: u32,
    pub grid: [Extent; 3],
    pub shared_bytes: u32,
    /// Module-scope declarations the kernel uses (`__constant__` tables); `$NAME` in them and in
    /// the body stands for the kernel's name, which keeps them unique in `kernels.cu`.
    pub globals: String,
}

impl KernelDef {
    /// The kernel's full CUDA C text under `name`.
    pub(crate) fn source(&self, name: &str) -> String {
        let mut params = vec!["const long long* __restrict__ sym".to_string()];
        for p in &self.params {
            let constness = if p.written { "" } else { "const " };
            params.push(format!("{constness}{}* __restrict__ {}", p.cty, p.name));
        }
        // Kernels with dynamic shared memory promise ptxas as many blocks per SM as that memory
        // allows, at most two: the tensor-core attention (up to 160 KiB) one block, which may
        // use every register (left to itself, for sm_90a ptxas capped the tiny models' attention
        // at 40 and spilled); the product tiles (54 KiB) two of at most 128 registers a thread,
        // whose loads in flight together stream the weights.
        let blocks = SM_SHARED_BYTES
            .checked_div(self.shared_bytes)
            .map_or(String::new(), |fit| format!(", {}", fit.clamp(1, 2)));
        let text = format!(
            "{globals}extern \"C\" __global__ void __launch_bounds__({block}{blocks}) {name}({params}) {{\n{body}}}\n",
            globals = self.globals,
            block = self.block,
            params = params.join(", "),
            body = self.body,
        );
        text.replace("$NAME", name)
    }
}

/// A product of a group run by the device's BLAS library, `gemm` over the buffers of `a`, `b`
/// and `c` (see [`crate::cuda::Gemm`]).
#[derive(Clone, Debug)]
pub(crate) struct GemmDef {
    pub a: Param,
    pub b: Param,
    pub c: Param,
    pub gemm: Gemm,
}

/// One step of a group.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Kernel(KernelDef),
    Gemm(Box<GemmDef>),
}

/// The steps of one group, run in order, and its scratch buffers (bytes each).
#[derive(Clone, Debug, Default)]
pub(crate) struct Group {
    pub steps: Vec<Step>,
    pub scratch: Vec<Extent>,
}

impl Group {
    /// A group of kernels alone.
    pub(crate) fn kernels(kernels: Vec<KernelDef>, scratch: Vec<Extent>) -> Group {
        Group { steps: kernels.into_iter().map(Step::Kernel).collect(), scratch }
    }
}

/// What an emitter sees of a node: its op, result and operand types, how each operand is
/// stored (bf16 weights are read through `sat_bf16`), and the program symbols.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a Node,
    pub operands: Vec<&'a TensorType>,
    pub stored: Vec<DType>,
    pub symbols: &'a [String],
    /// Products may round their operands to bf16 and run on tensor cores
    /// ([`crate::cuda::CudaOptions::tensor_cores`]).
    pub tensor_cores: bool,
    /// Tiled products may run in the device's BLAS library
    /// ([`crate::cuda::CudaOptions::cublas`]).
    pub cublas: bool,
}

impl NodeCtx<'_> {
    pub(crate) fn unsupported(&self, msg: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported { node: self.node.name.clone(), msg: msg.into() }
    }

    /// A dim as a C expression.
    pub(crate) fn dim(&self, d: &Dim) -> String {
        c_dim(d, self.symbols)
    }

    /// The product of dims as a C expression.
    pub(crate) fn product(&self, dims: &[Dim]) -> String {
        c_product(dims, self.symbols)
    }

    /// The value of a dim the kernels need at compile time.
    pub(crate) fn constant(&self, d: &Dim, what: &str) -> Result<u64, CodegenError> {
        d.as_const().ok_or_else(|| self.unsupported(format!("{what} `{d}` must be a constant")))
    }

    pub(crate) fn out_shape(&self) -> &[Dim] {
        &self.node.ty.shape
    }

    /// The parameter for operand `i`, named `name`, typed as the operand is stored.
    pub(crate) fn operand(&self, i: usize, name: &str) -> Param {
        Param { cty: cty(self.stored[i]), name: name.into(), bind: Bind::Operand(i), written: false }
    }

    /// The parameter for the result, named `out`.
    pub(crate) fn out(&self) -> Param {
        Param { cty: cty(self.node.ty.dtype), name: "out".into(), bind: Bind::Out, written: true }
    }
}

/// The C type of a dtype's elements (bool is one byte, 0 or 1).
pub(crate) fn cty(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::I64 => "long long",
        DType::Bool => "unsigned char",
        // Read as f32 by conversion (only weights and a tensor-core program's KV cache are
        // stored so).
        DType::BF16 => "sat_bf16",
        _ => "void",
    }
}

/// The prologue of a tiled kernel over plain rows: the block's `${TILE}` rows from
/// `blockIdx.x * ${TILE}` of `${M}` as `arow` (-1 past the end), results to the same rows
/// (`orow`), weights from row 0 (`wrow`).
pub(crate) const DENSE_ROWS: &str = r#"  const long long m0 = (long long)blockIdx.x * ${TILE};
  __shared__ long long arow[${TILE}];
  if (threadIdx.x < ${TILE}) arow[threadIdx.x] = m0 + threadIdx.x < ${M} ? m0 + threadIdx.x : -1;
  __syncthreads();
  const long long* orow = arow;
  const long long wrow = 0;
"#;

/// Threads per block of the one-thread-per-element kernels.
pub(crate) const ELEMENT_BLOCK: u32 = 256;

/// A grid of one thread per element of `shape`, in blocks of [`ELEMENT_BLOCK`].
pub(crate) fn element_grid(shape: &[Dim]) -> [Extent; 3] {
    [Extent::of(shape.iter().cloned()).ceil_div(u64::from(ELEMENT_BLOCK)), Extent::one(), Extent::one()]
}

/// `code` with each `${NAME}` replaced by its value, so long kernel bodies read as CUDA C rather
/// than as format strings with doubled braces.
pub(crate) fn fill(code: &str, vars: &[(&str, String)]) -> String {
    let mut out = code.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    debug_assert!(!out.contains("${"), "unfilled variable in {out}");
    out
}

/// The group for `ctx.node`. Dtypes were checked by the caller: every float is f32.
pub(crate) fn emit(ctx: &NodeCtx) -> Result<Group, CodegenError> {
    let one = |k: KernelDef| Ok(Group::kernels(vec![k], Vec::new()));
    match &ctx.node.op {
        Op::Unary(_) | Op::Binary(_) | Op::FusedElementwise { .. } => one(index::elementwise(ctx)?),
        Op::Where => one(index::select(ctx)),
        Op::Cast { .. } => one(index::cast(ctx)),
        Op::Arange { start, .. } => one(index::arange(ctx, start)),
        Op::CausalMask => one(index::causal_mask(ctx)),
        Op::Expand { .. } => one(index::expand(ctx)),
        Op::Permute { perm } => one(index::permute(ctx, perm)),
        Op::Slice { axis, start, .. } => one(index::slice(ctx, *axis, start)),
        Op::Concat { axis } => one(index::concat(ctx, *axis)),
        Op::Gather => one(index::gather(ctx)),
        Op::Reshape { .. } => one(index::copy(ctx)),
        Op::Reduce { op, axis, .. } => one(rows::reduce(ctx, *op, *axis)),
        Op::Softmax { axis } => one(rows::softmax(ctx, *axis)),
        Op::RmsNorm { eps } => one(rows::rms_norm(ctx, *eps)),
        Op::TopKMask { k } => one(rows::topk_mask(ctx, *k)),
        Op::Rope(r) => one(rows::rope(ctx, r)?),
        Op::Linear => linalg::linear(ctx),
        Op::MatMul => linalg::matmul(ctx),
        Op::RmsNormLinear { eps } => linalg::rms_norm_linear(ctx, *eps),
        Op::GatedLinear => linalg::gated_linear(ctx),
        Op::RouterTopK(r) => one(router::router_topk(ctx, r)?),
        Op::GroupedExperts { k } => moe::grouped_experts(ctx, *k),
        Op::MlaDecodeAttention { scale } => attention::mla_decode_attention(ctx, *scale),
        _ => Err(ctx.unsupported(format!("`{}` has no CUDA kernel yet", ctx.node.op.name()))),
    }
}
