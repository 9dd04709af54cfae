//! Matrix products in f32 on CUDA cores: `linear` (`x w^T`), batched `matmul` with broadcast batch
//! dims, `rms_norm_linear` (a row-norm kernel into scratch, then the linear kernel on it) and
//! `gated_linear` (`silu(x w_gate^T) * (x w_up^T)`, both products in one kernel).
//!
//! With bf16 weights in a program that accepts bf16 rounding, the tiled `linear` kinds run on
//! tensor cores instead ([`super::mma`]); the rest of this file is f32 throughout. Programs
//! that ask for the device's BLAS library run the tiled products there ([`super::library`]).
//!
//! Two kernel shapes. When the rows of `x` are a constant of at most [`SKINNY_ROWS`] (decode),
//! the product is bound by reading the weight once: `linear` gives each warp one output column
//! and streams that weight row with float4 loads, every lane accumulating all rows; `matmul`
//! gives each lane a column of `b` and splits K over the warps. Otherwise a shared-memory tiled
//! GEMM (64x64 block tile, K in steps of 16, 256 threads with 4x4 results each) guards every
//! edge, so M, N and K may be any size, symbolic included.
//!
//! Every result is summed by one thread (or one warp, or one fixed tree of warps) in a fixed
//! order: no atomics, so runs are bitwise repeatable.

use std::fmt::Write as _;

use saturn_ir::Dim;

use super::{Bind, DENSE_ROWS, Group, KernelDef, NodeCtx, Param, Step, fill, library, mma};
use crate::CodegenError;
use crate::cuda::extent::Extent;

/// The most rows (constant) a product runs as a weight-streaming kernel instead of tiles.
pub(super) const SKINNY_ROWS: u64 = 8;
/// Warps per block of the skinny kernels.
const SKINNY_WARPS: u32 = 8;
/// The block tile of the tiled kernel (rows and columns), and its step along K.
const TILE: u64 = 64;
const TILE_K: u32 = 16;
/// Threads of a tiled block: one per 4x4 results of the 64x64 tile.
const TILE_THREADS: u32 = 256;
/// The most blocks along grid y and z.
const GRID_YZ_MAX: u64 = 65535;

/// How B is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `w [N, K]` row-major: B is its transpose (`linear`).
    Rows,
    /// `b [K, N]` row-major (`matmul`).
    Cols,
}

/// One product `C = A B` (or gated: `C = silu(A B0) * (A B1)`) as the kernels see it.
struct Product {
    /// `linear`, `gated_linear`, `matmul`: the start of the kernel names.
    stem: &'static str,
    /// The node, for errors.
    node: String,
    /// The A operand, the B operands (one or two), then the output.
    params: Vec<Param>,
    /// Statements defining `M`, `N`, `K` and this block's `pa`, `pb0` (`pb1`), `pc`.
    setup: String,
    /// M when it is a known constant.
    rows: Option<u64>,
    n: Dim,
    /// The result's batch dims (`matmul`; none for `linear`).
    batch: Vec<Dim>,
    /// Dims whose product is M (for grids).
    m_dims: Vec<Dim>,
    layout: Layout,
    /// The product runs on tensor cores when tiled ([`mma::applies`]).
    tensor_cores: bool,
}

impl Product {
    fn gated(&self) -> bool {
        self.params.len() == 4
    }

    /// The B pointers: `pb0`, and `pb1` when gated.
    fn bs(&self) -> Vec<String> {
        (0..self.params.len() - 2).map(|j| format!("pb{j}")).collect()
    }

    /// Whether the B operands are bf16 weights.
    fn bf16_weights(&self) -> bool {
        self.params[1].cty == "sat_bf16"
    }

    /// The result from the accumulators `acc0{ix}` (and `acc1{ix}`).
    fn epilogue(&self, ix: &str) -> String {
        if self.gated() { format!("sat_silu(acc0{ix}) * acc1{ix}") } else { format!("acc0{ix}") }
    }

    fn kernel(self) -> Result<KernelDef, CodegenError> {
        match (self.rows, self.layout) {
            (Some(m), Layout::Rows) if (1..=SKINNY_ROWS).contains(&m) => Ok(self.gemv()),
            (Some(m), Layout::Cols) if (1..=SKINNY_ROWS).contains(&m) => self.skinny_matmul(),
            (_, Layout::Rows) if self.tensor_cores => self.tiled_mma(),
            _ => self.tiled(),
        }
    }

    /// The batch extent as grid z, refused when it is a constant over the grid's limit.
    fn grid_z(&self) -> Result<Extent, CodegenError> {
        let z = Extent::of(self.batch.iter().cloned());
        match z.eval(&[], &[]) {
            Some(v) if v > GRID_YZ_MAX => Err(CodegenError::Unsupported {
                node: self.node.clone(),
                msg: format!("{v} batched products exceed the grid's {GRID_YZ_MAX} blocks along z"),
            }),
            _ => Ok(z),
        }
    }

    /// `x w^T` for a few constant rows: one warp per output column streams its weight row once
    /// (float4 when K and the pointers allow), each lane accumulating every row, then the warp
    /// sums. Bound by the weight read. `M` is a literal, so the accumulators stay in registers.
    fn gemv(self) -> KernelDef {
        let bs = self.bs();
        let mut c = self.setup.clone();
        let _ = writeln!(c, "  const int lane = threadIdx.x & 31;");
        let _ =
            writeln!(c, "  const long long n = (long long)blockIdx.x * {SKINNY_WARPS} + (threadIdx.x >> 5);");
        c.push_str("  if (n >= N) return;\n");
        let wty = self.params[1].cty;
        for j in 0..bs.len() {
            let _ = writeln!(c, "  float acc{j}[M];");
            let _ = writeln!(c, "  const {wty}* __restrict__ row{j} = pb{j} + n * K;");
        }
        let _ = writeln!(c, "#pragma unroll\n  for (int r = 0; r < M; ++r) {{");
        for j in 0..bs.len() {
            let _ = writeln!(c, "    acc{j}[r] = 0.0f;");
        }
        c.push_str("  }\n");
        // Four weights per load: a float4, or four bf16 in 8 bytes; the rows of A as float4.
        let (wload, walign) = if self.bf16_weights() {
            ("sat_bf16x4(*(const uint2*)(row{j} + k))", 7)
        } else {
            ("*(const float4*)(row{j} + k)", 15)
        };
        let ptrs = |ps: &[String]| ps.iter().map(|p| format!("(unsigned long long){p}")).collect::<Vec<_>>();
        let condition = match (self.params[0].cty, walign) {
            ("float", 15) => {
                format!("(({}) & 15ULL) == 0", ptrs(&[&["pa".to_string()][..], &bs].concat()).join(" | "))
            }
            ("float", _) => {
                format!(
                    "((unsigned long long)pa & 15ULL) == 0 && (({}) & {walign}ULL) == 0",
                    ptrs(&bs).join(" | ")
                )
            }
            // A stored narrower than f32 (a product of weights): element by element.
            _ => "false".to_string(),
        };
        let _ = writeln!(c, "  if ((K & 3LL) == 0 && {condition}) {{");
        c.push_str("#pragma unroll 4\n    for (long long k = lane * 4LL; k < K; k += 128) {\n");
        for j in 0..bs.len() {
            let _ = writeln!(c, "      const float4 w{j} = {};", wload.replace("{j}", &j.to_string()));
        }
        let _ = writeln!(c, "#pragma unroll\n      for (int r = 0; r < M; ++r) {{");
        c.push_str("        const float4 v = *(const float4*)(pa + r * K + k);\n");
        for j in 0..bs.len() {
            for f in ["x", "y", "z", "w"] {
                let _ = writeln!(c, "        acc{j}[r] += v.{f} * w{j}.{f};");
            }
        }
        c.push_str("      }\n    }\n  } else {\n");
        c.push_str("    for (long long k = lane; k < K; k += 32) {\n");
        for j in 0..bs.len() {
            let _ = writeln!(c, "      const float w{j} = row{j}[k];");
        }
        let _ = writeln!(c, "#pragma unroll\n      for (int r = 0; r < M; ++r) {{");
        c.push_str("        const float v = pa[r * K + k];\n");
        for j in 0..bs.len() {
            let _ = writeln!(c, "        acc{j}[r] += v * w{j};");
        }
        c.push_str("      }\n    }\n  }\n");
        let _ = writeln!(c, "#pragma unroll\n  for (int r = 0; r < M; ++r) {{");
        for j in 0..bs.len() {
            let _ = writeln!(c, "    acc{j}[r] = sat_warp_sum(acc{j}[r]);");
        }
        let _ = writeln!(c, "    if (lane == r) pc[r * N + n] = {};", self.epilogue("[r]"));
        c.push_str("  }\n");
        KernelDef {
            stem: format!("{}_gemv", self.stem),
            params: self.params,
            body: c,
            block: SKINNY_WARPS * 32,
            grid: [Extent::of([self.n]).ceil_div(u64::from(SKINNY_WARPS)), Extent::one(), Extent::one()],
            shared_bytes: 0,
            globals: String::new(),
        }
    }

    /// `a b` for a few constant rows of `a`: each lane owns a column of `b` (coalesced reads of
    /// its rows), the warps split K, and warp `r` sums row `r`'s partials in warp order.
    fn skinny_matmul(self) -> Result<KernelDef, CodegenError> {
        let w = SKINNY_WARPS;
        let mut c = self.setup.clone();
        c.push_str("  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;\n");
        c.push_str("  const long long n = (long long)blockIdx.x * 32 + lane;\n");
        let _ = writeln!(c, "  __shared__ float part[{w}][M][32];");
        let _ = writeln!(c, "  float acc0[M];");
        let _ = writeln!(c, "#pragma unroll\n  for (int r = 0; r < M; ++r) acc0[r] = 0.0f;");
        c.push_str("  if (n < N) {\n");
        let _ = writeln!(c, "    for (long long k = warp; k < K; k += {w}) {{");
        c.push_str("      const float bv = pb0[k * N + n];\n");
        let _ =
            writeln!(c, "#pragma unroll\n      for (int r = 0; r < M; ++r) acc0[r] += pa[r * K + k] * bv;");
        c.push_str("    }\n  }\n");
        let _ = writeln!(c, "#pragma unroll\n  for (int r = 0; r < M; ++r) part[warp][r][lane] = acc0[r];");
        c.push_str("  __syncthreads();\n");
        let _ = writeln!(c, "  if (warp < M && n < N) {{");
        let _ = writeln!(c, "    float s = part[0][warp][lane];");
        let _ = writeln!(c, "#pragma unroll\n    for (int v = 1; v < {w}; ++v) s += part[v][warp][lane];");
        c.push_str("    pc[warp * N + n] = s;\n  }\n");
        Ok(KernelDef {
            stem: format!("{}_skinny", self.stem),
            grid: [Extent::of([self.n.clone()]).ceil_div(32), Extent::one(), self.grid_z()?],
            params: self.params,
            body: c,
            block: w * 32,
            shared_bytes: 0,
            globals: String::new(),
        })
    }

    /// The tiled GEMM: a 64x64 tile of C per block; each step stages a 64x16 slice of A and a
    /// 16x64 slice of each B in shared memory (K-major, zero past the edges), then every thread
    /// accumulates its 4x4 results in K order.
    fn tiled(self) -> Result<KernelDef, CodegenError> {
        let bs = self.bs();
        let (t, tk) = (TILE, TILE_K);
        // Rows padded to 68 floats: float4-aligned, and the transposed stores conflict 2-way only.
        let pad = t + 4;
        let loads = (t * u64::from(tk)) / u64::from(TILE_THREADS);
        let mut c = self.setup.clone();
        c.push_str("  const int t = threadIdx.x, tx = t & 15, ty = t >> 4;\n");
        let _ = writeln!(
            c,
            "  const long long m0 = (long long)blockIdx.y * {t}, n0 = (long long)blockIdx.x * {t};"
        );
        let _ = writeln!(c, "  __shared__ __align__(16) float as[{tk}][{pad}];");
        for j in 0..bs.len() {
            let _ = writeln!(c, "  __shared__ __align__(16) float bs{j}[{tk}][{pad}];");
            let _ = writeln!(c, "  float acc{j}[4][4];");
            let _ =
                writeln!(c, "#pragma unroll\n  for (int i = 0; i < 16; ++i) acc{j}[i >> 2][i & 3] = 0.0f;");
        }
        let _ = writeln!(c, "  for (long long k0 = 0; k0 < K; k0 += {tk}) {{");
        let _ = writeln!(c, "#pragma unroll\n    for (int l = 0; l < {loads}; ++l) {{");
        let _ = writeln!(c, "      const int e = t + l * {TILE_THREADS};");
        // A tile and `w` tiles: 16 consecutive k of one row per 16 threads (coalesced along K).
        c.push_str("      const int r = e >> 4, kk = e & 15;\n");
        c.push_str("      const long long gk = k0 + kk;\n");
        c.push_str("      as[kk][r] = (m0 + r < M && gk < K) ? pa[(m0 + r) * K + gk] : 0.0f;\n");
        match self.layout {
            Layout::Rows => {
                for j in 0..bs.len() {
                    let _ = writeln!(
                        c,
                        "      bs{j}[kk][r] = (n0 + r < N && gk < K) ? pb{j}[(n0 + r) * K + gk] : 0.0f;"
                    );
                }
            }
            Layout::Cols => {
                // `b` tiles: 64 consecutive n of one row of b per 64 threads (coalesced along N).
                let _ = writeln!(c, "      const int bk = e >> 6, bn = e & 63;");
                let _ = writeln!(
                    c,
                    "      bs0[bk][bn] = (k0 + bk < K && n0 + bn < N) ? pb0[(k0 + bk) * N + n0 + bn] : 0.0f;"
                );
            }
        }
        c.push_str("    }\n    __syncthreads();\n");
        let _ = writeln!(c, "#pragma unroll\n    for (int kk = 0; kk < {tk}; ++kk) {{");
        c.push_str("      const float4 a4 = *(const float4*)&as[kk][ty * 4];\n");
        c.push_str("      const float av[4] = {a4.x, a4.y, a4.z, a4.w};\n");
        for j in 0..bs.len() {
            let _ = writeln!(c, "      const float4 b{j}4 = *(const float4*)&bs{j}[kk][tx * 4];");
            let _ = writeln!(c, "      const float bv{j}[4] = {{b{j}4.x, b{j}4.y, b{j}4.z, b{j}4.w}};");
        }
        c.push_str("#pragma unroll\n      for (int i = 0; i < 16; ++i) {\n");
        for j in 0..bs.len() {
            let _ = writeln!(c, "        acc{j}[i >> 2][i & 3] += av[i >> 2] * bv{j}[i & 3];");
        }
        c.push_str("      }\n    }\n    __syncthreads();\n  }\n");
        c.push_str("#pragma unroll\n  for (int i = 0; i < 16; ++i) {\n");
        c.push_str("    const long long gm = m0 + ty * 4 + (i >> 2), gn = n0 + tx * 4 + (i & 3);\n");
        let _ =
            writeln!(c, "    if (gm < M && gn < N) pc[gm * N + gn] = {};", self.epilogue("[i >> 2][i & 3]"));
        c.push_str("  }\n");
        let m_tiles = Extent::of(self.m_dims.iter().cloned()).ceil_div(t);
        if let Some(v) = m_tiles.eval(&[], &[]).filter(|&v| v > GRID_YZ_MAX) {
            return Err(CodegenError::Unsupported {
                node: self.node.clone(),
                msg: format!("{v} row tiles exceed the grid's {GRID_YZ_MAX} blocks along y"),
            });
        }
        Ok(KernelDef {
            stem: format!("{}_tiled", self.stem),
            grid: [Extent::of([self.n.clone()]).ceil_div(t), m_tiles, self.grid_z()?],
            params: self.params,
            body: c,
            block: TILE_THREADS,
            shared_bytes: 0,
            globals: String::new(),
        })
    }
}

impl Product {
    /// [`Product::tiled`] on tensor cores ([`mma`]): the rows of `x` in tiles of 64.
    fn tiled_mma(self) -> Result<KernelDef, CodegenError> {
        let gated = self.gated();
        let mut c = self.setup.clone();
        c.push_str(&fill(DENSE_ROWS, &[("TILE", mma::ROWS.to_string()), ("M", "M".into())]));
        let b = self.bs();
        let value = if gated { "sat_silu(g) * u" } else { "g" };
        c.push_str(&mma::core(&mma::Tile { n: "N", kd: "K", a: "pa", b: &b, dst: "pc", value, wt: "1.0f" }));
        let m_tiles = Extent::of(self.m_dims.iter().cloned()).ceil_div(mma::ROWS);
        Ok(KernelDef {
            stem: format!("{}_mma", self.stem),
            grid: [m_tiles, Extent::of([self.n.clone()]).ceil_div(mma::columns(gated)), Extent::one()],
            params: self.params,
            body: c,
            block: 256,
            shared_bytes: mma::shared_bytes(gated),
            globals: String::new(),
        })
    }
}

/// The product `x w^T` (or gated, with two weights) for `x [..., K]` (operand 0's shape) read
/// through `x`; the weights are `[N, K]`.
fn linear_product(ctx: &NodeCtx, stem: &'static str, x: Param, weights: Vec<Param>) -> Product {
    let xs = &ctx.operands[0].shape;
    let (k, lead) = xs.split_last().expect("linear operands have rank >= 1");
    let n = ctx.out_shape().last().expect("linear results have rank >= 1").clone();
    let rows = lead.iter().map(Dim::as_const).product::<Option<u64>>();
    let mut setup = String::new();
    let _ = writeln!(setup, "  const long long M = {};", ctx.product(lead));
    let _ = writeln!(setup, "  const long long N = {};", ctx.dim(&n));
    let _ = writeln!(setup, "  const long long K = {};", ctx.dim(k));
    let _ = writeln!(setup, "  const {}* __restrict__ pa = {};", x.cty, x.name);
    for (j, w) in weights.iter().enumerate() {
        let _ = writeln!(setup, "  const {}* __restrict__ pb{j} = {};", w.cty, w.name);
    }
    setup.push_str("  float* __restrict__ pc = out;\n");
    let tensor_cores = mma::applies(ctx, &weights[0]);
    let mut params = vec![x];
    params.extend(weights);
    params.push(ctx.out());
    Product {
        stem,
        node: ctx.node.name.clone(),
        params,
        setup,
        rows,
        n,
        batch: Vec::new(),
        m_dims: lead.to_vec(),
        layout: Layout::Rows,
        tensor_cores,
    }
}

pub(super) fn linear(ctx: &NodeCtx) -> Result<Group, CodegenError> {
    let (x, weights) = (ctx.operand(0, "x"), vec![ctx.operand(1, "w")]);
    if let Some(group) = library::product(ctx, &x, &weights, Vec::new()) {
        return Ok(group);
    }
    let p = linear_product(ctx, "linear", x, weights);
    Ok(Group::kernels(vec![p.kernel()?], Vec::new()))
}

pub(super) fn gated_linear(ctx: &NodeCtx) -> Result<Group, CodegenError> {
    let (x, weights) = (ctx.operand(0, "x"), vec![ctx.operand(1, "w_gate"), ctx.operand(2, "w_up")]);
    if let Some(group) = library::product(ctx, &x, &weights, Vec::new()) {
        return Ok(group);
    }
    let p = linear_product(ctx, "gated_linear", x, weights);
    Ok(Group::kernels(vec![p.kernel()?], Vec::new()))
}

/// `rms_norm(x, g)` into scratch (one block per row), then `linear` on it: the second kernel is
/// the plain linear kernel, shared with any `linear` of the same shapes.
pub(super) fn rms_norm_linear(ctx: &NodeCtx, eps: f64) -> Result<Group, CodegenError> {
    if !eps.is_finite() {
        return Err(ctx.unsupported(format!("eps {eps} is not finite")));
    }
    let xs = &ctx.operands[0].shape;
    if xs.is_empty() {
        return Err(ctx.unsupported("rank-0 input"));
    }
    let normed = Param { cty: "float", name: "y".into(), bind: Bind::Scratch(0), written: true };
    let norm = super::rows::rms_norm_to(ctx, eps, normed);
    let x = Param { cty: "float", name: "x".into(), bind: Bind::Scratch(0), written: false };
    let weights = vec![ctx.operand(2, "w")];
    let scratch = vec![Extent::of(xs.iter().cloned()).times(4)];
    if let Some(mut group) = library::product(ctx, &x, &weights, scratch.clone()) {
        group.steps.insert(0, Step::Kernel(norm));
        return Ok(group);
    }
    let p = linear_product(ctx, "linear", x, weights);
    Ok(Group::kernels(vec![norm, p.kernel()?], scratch))
}

/// The offset (elements) of batch `z`'s matrix in an operand of `shape`, whose batch dims are
/// right-aligned to the result's and stretch where they are 1; the result's batch coordinates
/// are `c0, c1, ...`.
fn batch_offset(ctx: &NodeCtx, shape: &[Dim], batch_rank: usize) -> String {
    let own = shape.len() - 2;
    let mut terms = Vec::new();
    for i in 0..own {
        if shape[i].as_const() == Some(1) {
            continue;
        }
        terms.push(format!("c{} * {}", i + batch_rank - own, ctx.product(&shape[i + 1..])));
    }
    if terms.is_empty() { "0".into() } else { terms.join(" + ") }
}

pub(super) fn matmul(ctx: &NodeCtx) -> Result<Group, CodegenError> {
    if let Some(group) = library::matmul(ctx) {
        return Ok(group);
    }
    let (a, b) = (&ctx.operands[0].shape, &ctx.operands[1].shape);
    let out = ctx.out_shape();
    let r = out.len();
    let (m, n, k) = (&out[r - 2], &out[r - 1], &a[a.len() - 1]);
    let batch = &out[..r - 2];
    let mut setup = String::new();
    let _ = writeln!(setup, "  const long long M = {};", ctx.dim(m));
    let _ = writeln!(setup, "  const long long N = {};", ctx.dim(n));
    let _ = writeln!(setup, "  const long long K = {};", ctx.dim(k));
    setup.push_str("  const long long z = blockIdx.z;\n");
    // The batch coordinates `c{j}` of z; a batch dim of 1 has none (no operand strides along it).
    let used: Vec<usize> = (0..batch.len()).filter(|&j| batch[j].as_const() != Some(1)).collect();
    if let Some((&first, rest)) = used.split_first() {
        setup.push_str("  long long zr = z;\n");
        for &j in rest.iter().rev() {
            let d = ctx.dim(&batch[j]);
            let _ = writeln!(setup, "  const long long c{j} = zr % {d}; zr /= {d};");
        }
        let _ = writeln!(setup, "  const long long c{first} = zr;");
    }
    let (ao, bo) = (batch_offset(ctx, a, batch.len()), batch_offset(ctx, b, batch.len()));
    let (pa, pb) = (ctx.operand(0, "a"), ctx.operand(1, "b"));
    let _ = writeln!(setup, "  const {}* __restrict__ pa = a + ({ao});", pa.cty);
    let _ = writeln!(setup, "  const {}* __restrict__ pb0 = b + ({bo});", pb.cty);
    setup.push_str("  float* __restrict__ pc = out + z * M * N;\n");
    let p = Product {
        stem: "matmul",
        node: ctx.node.name.clone(),
        params: vec![pa, pb, ctx.out()],
        setup,
        rows: m.as_const(),
        n: n.clone(),
        batch: batch.to_vec(),
        m_dims: vec![m.clone()],
        layout: Layout::Cols,
        tensor_cores: false,
    };
    Ok(Group::kernels(vec![p.kernel()?], Vec::new()))
}
