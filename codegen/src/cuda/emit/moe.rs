//! `grouped_experts`: a mixture of experts over the routing weights of `router_topk`.
//!
//! It first numbers each token's experts in index order (its (token, slot) pairs). With a
//! symbolic or larger token count, one block then lists each expert's pairs in token order, and
//! tiled products run over each expert's pairs (grouped GEMM); with a few const tokens (decode),
//! one warp per output column reads each weight row once per pair instead. The shared expert runs
//! over all tokens (in the device's BLAS library where the program asks for it,
//! [`super::library`]). Nothing adds with atomics: each pair's weighted output has its own scratch
//! row and the combine adds them in expert order, then the shared expert's, as the interpreter
//! does, so results do not depend on scheduling. A token's non-zero weights past its first `k`
//! are ignored (the op promises at most `k`).

use saturn_ir::Dim;

use super::{
    Bind, DENSE_ROWS, ELEMENT_BLOCK, Group, KernelDef, NodeCtx, Param, Step, element_grid, fill, library, mma,
};
use crate::CodegenError;
use crate::cuda::extent::Extent;

/// The most experts a token is routed to in `grouped_experts` (a slot fits a byte).
const EXPERTS_MAX_K: u64 = 64;
/// Rows (tokens) of a block of the tiled products (the tensor-core tiles' too), and its columns
/// in a gated product.
const TILE: u64 = mma::ROWS;
/// Const token counts up to this run the per-pair matrix-vector path (decode).
const GEMV_MAX_TOKENS: u64 = 4;
/// Output columns per block of the matrix-vector kernels (one warp each).
const GEMV_COLS: u64 = 8;

/// A scratch buffer of the group, as kernels see it.
#[derive(Clone, Copy)]
struct Buf {
    index: usize,
    cty: &'static str,
    name: &'static str,
}

impl Buf {
    /// Appends a buffer of `bytes`.
    fn add(scratch: &mut Vec<Extent>, cty: &'static str, name: &'static str, bytes: Extent) -> Buf {
        scratch.push(bytes);
        Buf { index: scratch.len() - 1, cty, name }
    }

    fn param(self, written: bool) -> Param {
        Param { cty: self.cty, name: self.name.into(), bind: Bind::Scratch(self.index), written }
    }
}

/// The dims of a `grouped_experts` node and their C expressions.
struct Experts {
    t: Dim,
    h: Dim,
    i: Dim,
    shared: Option<Dim>,
    e: u64,
    k: u64,
    vars: Vec<(&'static str, String)>,
}

impl Experts {
    fn new(ctx: &NodeCtx, k: u64) -> Result<Experts, CodegenError> {
        let x = &ctx.operands[0].shape;
        let e = ctx.constant(&ctx.operands[1].shape[1], "the expert count")?;
        if k > EXPERTS_MAX_K {
            return Err(ctx.unsupported(format!("at most {EXPERTS_MAX_K} experts per token")));
        }
        let (t, h, i) = (x[0].clone(), x[1].clone(), ctx.operands[2].shape[1].clone());
        let shared = (ctx.operands.len() == 8).then(|| ctx.operands[5].shape[0].clone());
        let vars =
            vec![("T", ctx.dim(&t)), ("H", ctx.dim(&h)), ("E", format!("{e}LL")), ("K", format!("{k}LL"))];
        Ok(Experts { t, h, i, shared, e, k, vars })
    }

    fn fill(&self, code: &str, extra: &[(&'static str, String)]) -> String {
        // The extras first: their values may name the node's dims.
        let mut vars = extra.to_vec();
        vars.extend_from_slice(&self.vars);
        fill(code, &vars)
    }

    /// The (token, slot) pairs, `T * k`.
    fn pairs(&self) -> Extent {
        Extent::of([self.t.clone()]).times(self.k)
    }
}

/// `grouped_experts`: the (token, slot) lists, then the gated and down products of the routed
/// experts (tiled over each expert's tokens, or one warp per output for a few const tokens), the
/// shared expert over all tokens, and the combine.
pub(super) fn grouped_experts(ctx: &NodeCtx, k: u64) -> Result<Group, CodegenError> {
    let x = Experts::new(ctx, k)?;
    let gemv = x.t.as_const().is_some_and(|t| t <= GEMV_MAX_TOKENS);
    let mut bytes = Vec::new();
    let f32s = |dims: [&Dim; 2], times: u64| Extent::of(dims.map(Dim::clone)).times(4 * times);
    let pair = Buf::add(&mut bytes, "int", "pair_expert", x.pairs().times(4));
    // Tiled only: the slot of each (token, expert), `[count[E], tile_start[E + 1]]`, and each
    // expert's pairs.
    let lists_of = (!gemv).then(|| {
        (
            Buf::add(&mut bytes, "unsigned char", "slot_of", Extent::of([x.t.clone()]).times(x.e)),
            Buf::add(&mut bytes, "int", "meta", Extent::of([Dim::constant(4 * (2 * x.e + 1))])),
            Buf::add(&mut bytes, "int", "list", Extent::of([x.t.clone()]).times(4 * x.e)),
        )
    });
    let act = Buf::add(&mut bytes, "float", "h", f32s([&x.t, &x.i], x.k));
    let ys = Buf::add(&mut bytes, "float", "ys", f32s([&x.t, &x.h], x.k));
    let shared_act = x.shared.as_ref().map(|j| Buf::add(&mut bytes, "float", "hs", f32s([&x.t, j], 1)));

    let mut steps = vec![Step::Kernel(slots(ctx, &x, pair.param(true), lists_of.map(|l| l.0.param(true))))];
    let routed_rows = match lists_of {
        None => vec![pair.param(false)],
        Some((slot_of, meta, list)) => {
            steps.push(Step::Kernel(lists(&x, slot_of.param(false), meta.param(true), list.param(true))));
            vec![meta.param(false), list.param(false)]
        }
    };
    let mut jobs = vec![
        Job { stage: Stage::Gate, shared: None, input: None, output: Some(act.param(true)) },
        Job { stage: Stage::Down, shared: None, input: Some(act.param(false)), output: Some(ys.param(true)) },
    ];
    if let (Some(j), Some(hs)) = (&x.shared, shared_act) {
        jobs.push(Job {
            stage: Stage::Gate,
            shared: Some(j.clone()),
            input: None,
            output: Some(hs.param(true)),
        });
        jobs.push(Job {
            stage: Stage::Down,
            shared: Some(j.clone()),
            input: Some(hs.param(false)),
            output: None,
        });
    }
    for job in &jobs {
        // The shared expert is a plain product over all tokens: the device's library may run it.
        if job.shared.is_some() {
            let p = product(ctx, &x, job);
            let x_dims = [x.t.clone(), p.kd.clone()];
            let weights =
                library::WeightProduct { x: &p.a, x_dims: &x_dims, weights: &p.b, n: &p.n, dst: p.dst };
            if let Some(library) = library::weight_product(ctx, &weights, &mut bytes) {
                steps.extend(library);
                continue;
            }
        }
        let rows = if job.shared.is_none() { routed_rows.clone() } else { Vec::new() };
        steps.push(Step::Kernel(if gemv { matvec(ctx, &x, job, rows) } else { tiled(ctx, &x, job, rows)? }));
    }
    steps.push(Step::Kernel(combine(ctx, &x, pair.param(false), ys.param(false))));
    Ok(Group { steps, scratch: bytes })
}

const SLOTS: &str = r#"  const long long t = (long long)blockIdx.x * 4 + (threadIdx.x >> 5);
  if (t >= ${T}) return;
  const int lane = threadIdx.x & 31;
  const float* r = routing + t * ${E};
  int base = 0;
  for (int e0 = 0; e0 < ${E}; e0 += 32) {
    const int e = e0 + lane;
    const int nz = (e < ${E} && r[e] != 0.0f) ? 1 : 0;
    int incl = nz;
    for (int d = 1; d < 32; d <<= 1) {
      const int o = __shfl_sync(SAT_FULL_MASK, incl, lane >= d ? lane - d : lane);
      if (lane >= d) incl += o;
    }
    const int slot = base + incl - nz;
    if (nz && slot < ${K}) pair_expert[t * ${K} + slot] = e;
${RECORD}    base += __shfl_sync(SAT_FULL_MASK, incl, 31);
  }
  for (int q = base + lane; q < ${K}; q += 32) pair_expert[t * ${K} + q] = -1;
"#;

/// Each token's experts in index order: slot `q` of token `t` is its `q`-th expert with a
/// non-zero weight (`-1` past the last). One warp per token, a shuffle scan per 32 experts.
fn slots(ctx: &NodeCtx, x: &Experts, pair: Param, slot_of: Option<Param>) -> KernelDef {
    let record = if slot_of.is_some() {
        "    if (e < ${E}) slot_of[t * ${E} + e] = (nz && slot < ${K}) ? slot : 255;\n"
    } else {
        ""
    };
    let body = x.fill(SLOTS, &[("RECORD", record.into())]);
    let mut params = vec![ctx.operand(1, "routing"), pair];
    params.extend(slot_of);
    KernelDef {
        stem: "moe_slots".into(),
        params,
        body,
        block: 128,
        grid: [Extent::of([x.t.clone()]).ceil_div(4), Extent::one(), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    }
}

/// Per expert, its pairs in token order (thread `e` scans the tokens), its count and the first of
/// its row tiles: `meta = [count[E], tile_start[E + 1]]`. One block: the order is fixed.
fn lists(x: &Experts, slot_of: Param, meta: Param, list: Param) -> KernelDef {
    let body = x.fill(
        r#"  const long long T = ${T};
  __shared__ int count[${E}];
  for (int e = threadIdx.x; e < ${E}; e += blockDim.x) {
    int n = 0;
    for (long long t = 0; t < T; ++t) {
      const int q = slot_of[t * ${E} + e];
      if (q != 255) list[e * T + n++] = (int)(t * ${K} + q);
    }
    count[e] = n;
    meta[e] = n;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int at = 0;
    for (int e = 0; e < ${E}; ++e) { meta[${E} + e] = at; at += (count[e] + ${TILE} - 1) / ${TILE}; }
    meta[2 * ${E}] = at;
  }
"#,
        &[("TILE", TILE.to_string())],
    );
    let block = (x.e.div_ceil(32) * 32).min(1024) as u32;
    KernelDef {
        stem: "moe_lists".into(),
        params: vec![slot_of, meta, list],
        body,
        block,
        grid: [Extent::one(), Extent::one(), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `silu(a w_gate^T) * (a w_up^T)`.
    Gate,
    /// `a w_down^T`, times the routing weight for a routed expert.
    Down,
}

/// One matrix product of the group.
struct Job {
    stage: Stage,
    /// `None` for the routed experts, else the shared expert's width.
    shared: Option<Dim>,
    /// The scratch it reads as its left operand (a gate product reads `x`).
    input: Option<Param>,
    /// The scratch it writes (the shared expert's down product writes the result).
    output: Option<Param>,
}

/// A job's operands and shape: `dst[row, n] = value(g, u)` with `g = a[row] . b[0][n]` (and
/// `u` with `b[1]`) over `kd` columns.
struct Product {
    a: Param,
    b: Vec<Param>,
    dst: Param,
    kd: Dim,
    n: Dim,
    value: &'static str,
    /// Parameters before the operands: the routing where the value needs its weight.
    lead: Vec<Param>,
}

fn product(ctx: &NodeCtx, x: &Experts, job: &Job) -> Product {
    let (wg, wu, wd) = if job.shared.is_none() { (2, 3, 4) } else { (5, 6, 7) };
    let inner = job.shared.as_ref().unwrap_or(&x.i);
    let input = || job.input.clone().unwrap_or_else(|| ctx.operand(0, "x"));
    let dst = job.output.clone().unwrap_or_else(|| ctx.out());
    match (job.stage, job.shared.is_none()) {
        (Stage::Gate, _) => Product {
            a: input(),
            b: vec![ctx.operand(wg, "w_gate"), ctx.operand(wu, "w_up")],
            dst,
            kd: x.h.clone(),
            n: inner.clone(),
            value: "sat_silu(g) * u",
            lead: Vec::new(),
        },
        (Stage::Down, routed) => Product {
            a: input(),
            b: vec![ctx.operand(wd, "w_down")],
            dst,
            kd: inner.clone(),
            n: x.h.clone(),
            value: if routed { "wt * g" } else { "g" },
            lead: if routed { vec![ctx.operand(1, "routing")] } else { Vec::new() },
        },
    }
}

impl Product {
    /// `lead`, the rows' parameters, then the operands and the destination.
    fn params(&self, rows: Vec<Param>) -> Vec<Param> {
        let mut params = self.lead.clone();
        params.extend(rows);
        params.push(self.a.clone());
        params.extend(self.b.iter().cloned());
        params.push(self.dst.clone());
        params
    }
}

/// Block prologue of a routed matrix-vector product: row `blockIdx.x` is a (token, slot) pair.
const MATVEC_ROUTED: &str = r#"  const long long row = blockIdx.x;
  const int e = pair_expert[row];
  if (e < 0) return;
  const long long wrow = (long long)e * ${N};
"#;

const MATVEC_DENSE: &str = r#"  const long long row = blockIdx.x;
  const long long wrow = 0;
"#;

/// Warp `w` of block `(row, y)` computes column `8 y + w` of `row`.
const MATVEC_CORE: &str = r#"  const long long n = (long long)blockIdx.y * ${COLS} + (threadIdx.x >> 5);
  if (n >= ${N}) return;
  const int lane = threadIdx.x & 31;
  const ${AT}* av = ${A} + (${AROW}) * ${KD};
  const ${BT}* w0 = ${B0} + (wrow + n) * ${KD};
  const ${BT}* w1 = ${B1} + (wrow + n) * ${KD};
  float g = 0.0f, u = 0.0f;
#pragma unroll 4
  for (int c = lane; c < ${KD}; c += 32) {
    const float v = av[c];
    g = fmaf(v, w0[c], g);
    if (${GATED}) u = fmaf(v, w1[c], u);
  }
  g = sat_warp_sum(g);
  if (${GATED}) u = sat_warp_sum(u);
  const float wt = ${WT};
  if (lane == 0) ${DST}[row * ${N} + n] = ${VALUE};
"#;

/// One warp per output column of one (token, slot) pair or token: a dot product per weight row,
/// reading each row once (the decode path, where weights dominate the traffic).
fn matvec(ctx: &NodeCtx, x: &Experts, job: &Job, rows: Vec<Param>) -> KernelDef {
    let p = product(ctx, x, job);
    let routed = job.shared.is_none();
    let gated = p.b.len() == 2;
    let mut body = String::from(if routed { MATVEC_ROUTED } else { MATVEC_DENSE });
    body.push_str(MATVEC_CORE);
    let body = x.fill(
        &body,
        &[
            ("N", ctx.dim(&p.n)),
            ("KD", ctx.dim(&p.kd)),
            ("COLS", GEMV_COLS.to_string()),
            ("A", p.a.name.clone()),
            ("AT", p.a.cty.into()),
            ("BT", p.b[0].cty.into()),
            ("AROW", if routed && job.stage == Stage::Gate { "row / ${K}" } else { "row" }.into()),
            ("B0", p.b[0].name.clone()),
            ("B1", p.b[usize::from(gated)].name.clone()),
            ("GATED", gated.to_string()),
            ("WT", if p.lead.is_empty() { "1.0f" } else { "routing[(row / ${K}) * ${E} + e]" }.into()),
            ("DST", p.dst.name.clone()),
            ("VALUE", p.value.into()),
        ],
    );
    let grid_rows = if routed { x.pairs() } else { Extent::of([x.t.clone()]) };
    KernelDef {
        stem: stem("moe_matvec", job),
        params: p.params(rows),
        body,
        block: 32 * GEMV_COLS as u32,
        grid: [grid_rows, Extent::of([p.n.clone()]).ceil_div(GEMV_COLS), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    }
}

fn stem(base: &str, job: &Job) -> String {
    let stage = if job.stage == Stage::Gate { "gate" } else { "down" };
    let who = if job.shared.is_some() { "_shared" } else { "" };
    format!("{base}_{stage}{who}")
}

/// Block prologue of a routed tiled product: the block's tile (expert `e`, rows `m0..` of its
/// list) from the tile starts, then each tile row's A row, output row and routing weight.
const TILED_ROUTED: &str = r#"  const long long T = ${T};
  const int b = blockIdx.x;
  if (b >= meta[2 * ${E}]) return;
  int lo = 0, hi = ${E};
  while (hi - lo > 1) { const int mid = (lo + hi) / 2; if (meta[${E} + mid] <= b) lo = mid; else hi = mid; }
  const int e = lo;
  const long long m0 = (long long)(b - meta[${E} + e]) * ${TILE};
  const long long cnt = meta[e];
  __shared__ long long arow[${TILE}], orow[${TILE}];
  __shared__ float rw[${TILE}];
  if (threadIdx.x < ${TILE}) {
    const long long j = m0 + threadIdx.x;
    const long long p = j < cnt ? (long long)list[e * T + j] : -1;
    arow[threadIdx.x] = p < 0 ? -1 : ${AROW};
    orow[threadIdx.x] = p;
    rw[threadIdx.x] = p < 0 ? 0.0f : ${RW};
  }
  __syncthreads();
  const long long wrow = (long long)e * ${N};
"#;

/// The tiled product: 64 rows x `TN` columns per block of 256 threads, K in steps of 16 through
/// shared memory, a 4 x `NJ` register tile per thread (rows `ty + 16 i`, columns `tx + 16 j`).
/// Plain products take twice the columns of gated ones, so both keep 32 accumulators.
const TILED_CORE: &str = r#"  const int N = (int)(${N}), KD = (int)(${KD});
  const int n0 = blockIdx.y * ${TN};
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const ${BT}* w0 = ${B0} + wrow * KD;
  const ${BT}* w1 = ${B1} + wrow * KD;
  __shared__ float As[16][${TILE} + 1];
  __shared__ float Bg[16][${TN} + 1];
  __shared__ float Bu[16][${TNU}];
  // This thread loads rows ty + 16 i of the A and B tiles at column tx of each K step.
  const ${AT}* ap[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const long long ar = arow[ty + 16 * i];
    ap[i] = ar >= 0 ? ${A} + ar * KD + tx : nullptr;
  }
  int bo[${NJ}];
#pragma unroll
  for (int i = 0; i < ${NJ}; ++i) bo[i] = n0 + ty + 16 * i < N ? (n0 + ty + 16 * i) * KD + tx : -1;
  float acc_g[4][${NJ}] = {}, acc_u[4][${NJ}] = {};
  for (int k0 = 0; k0 < KD; k0 += 16) {
    const bool kin = k0 + tx < KD;
#pragma unroll
    for (int i = 0; i < 4; ++i) As[tx][ty + 16 * i] = (ap[i] && kin) ? ap[i][k0] : 0.0f;
#pragma unroll
    for (int i = 0; i < ${NJ}; ++i) {
      Bg[tx][ty + 16 * i] = (bo[i] >= 0 && kin) ? w0[bo[i] + k0] : 0.0f;
      if (${GATED}) Bu[tx][ty + 16 * i] = (bo[i] >= 0 && kin) ? w1[bo[i] + k0] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
      float av[4], bg[${NJ}], bu[${NJ}];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < ${NJ}; ++j) { bg[j] = Bg[kk][tx + 16 * j]; bu[j] = ${GATED} ? Bu[kk][tx + 16 * j] : 0.0f; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < ${NJ}; ++j) {
          acc_g[i][j] = fmaf(av[i], bg[j], acc_g[i][j]);
          if (${GATED}) acc_u[i][j] = fmaf(av[i], bu[j], acc_u[i][j]);
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    const long long o = orow[r];
    if (o < 0) continue;
    const float wt = ${WT};
#pragma unroll
    for (int j = 0; j < ${NJ}; ++j) {
      const int n = n0 + tx + 16 * j;
      const float g = acc_g[i][j], u = acc_u[i][j];
      if (n < N) ${DST}[o * N + n] = ${VALUE};
    }
  }
"#;

/// A tiled product over each expert's routed rows (`shared = None`) or over all tokens.
fn tiled(ctx: &NodeCtx, x: &Experts, job: &Job, rows: Vec<Param>) -> Result<KernelDef, CodegenError> {
    let p = product(ctx, x, job);
    let gated = p.b.len() == 2;
    let routed = job.shared.is_none();
    // Offsets within one weight matrix are 32-bit.
    if p.n.as_const().zip(p.kd.as_const()).is_none_or(|(n, kd)| n * kd >= 1 << 31) {
        return Err(ctx.unsupported(format!("expert weights of {} x {} are not generated", p.n, p.kd)));
    }
    let mma = mma::applies(ctx, &p.b[0]);
    let tn = match (mma, gated) {
        (true, _) => mma::columns(gated),
        (false, true) => TILE,
        (false, false) => 2 * TILE,
    };
    let mut body = String::from(if routed { TILED_ROUTED } else { DENSE_ROWS });
    let b: Vec<String> = p.b.iter().map(|b| b.name.clone()).collect();
    let (kd, n) = (ctx.dim(&p.kd), ctx.dim(&p.n));
    let wt = if routed { "rw[r]" } else { "1.0f" };
    if mma {
        let tile = mma::Tile { n: &n, kd: &kd, a: &p.a.name, b: &b, dst: &p.dst.name, value: p.value, wt };
        body.push_str(&mma::core(&tile));
    } else {
        body.push_str(TILED_CORE);
    }
    let grid_rows = if routed {
        // Every expert's last tile may be partial: at most ceil(T k / 64) + E tiles in all.
        let t = &x.t;
        let bound = Dim::linear(
            t.constant_part() * x.k as i64 + (TILE * x.e) as i64,
            t.terms().map(|(s, c)| (s.to_string(), c * x.k as i64)),
        );
        Extent::of([bound]).ceil_div(TILE)
    } else {
        Extent::of([x.t.clone()]).ceil_div(TILE)
    };
    let body = x.fill(
        &body,
        &[
            ("M", "${T}".into()),
            ("N", n),
            ("KD", kd),
            ("TILE", TILE.to_string()),
            ("TN", tn.to_string()),
            ("TNU", if gated { tn + 1 } else { 1 }.to_string()),
            ("NJ", (tn / 16).to_string()),
            ("A", p.a.name.clone()),
            ("AT", p.a.cty.into()),
            ("BT", p.b[0].cty.into()),
            ("B0", p.b[0].name.clone()),
            ("B1", p.b[usize::from(gated)].name.clone()),
            ("GATED", gated.to_string()),
            ("AROW", if job.stage == Stage::Gate { "p / ${K}" } else { "p" }.into()),
            ("RW", if p.lead.is_empty() { "1.0f" } else { "routing[(p / ${K}) * ${E} + e]" }.into()),
            ("WT", wt.into()),
            ("DST", p.dst.name.clone()),
            ("VALUE", p.value.into()),
        ],
    );
    Ok(KernelDef {
        stem: stem(if mma { "moe_mma" } else { "moe_tiled" }, job),
        params: p.params(rows),
        body,
        block: 256,
        grid: [grid_rows, Extent::of([p.n.clone()]).ceil_div(tn), Extent::one()],
        shared_bytes: if mma { mma::shared_bytes(gated) } else { 0 },
        globals: String::new(),
    })
}

/// `y[t] = sum over slots (in expert order) + shared[t]`: the shared expert's down product wrote
/// `out` first; without one the sum starts from zero.
fn combine(ctx: &NodeCtx, x: &Experts, pair: Param, ys: Param) -> KernelDef {
    let tail = if x.shared.is_some() { "acc + out[i]" } else { "acc" };
    let body = x.fill(
        r#"  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= ${T} * ${H}) return;
  const long long t = i / ${H}, c = i % ${H};
  float acc = 0.0f;
  for (int q = 0; q < ${K}; ++q)
    if (pair_expert[t * ${K} + q] >= 0) acc += ys[(t * ${K} + q) * ${H} + c];
  out[i] = ${TAIL};
"#,
        &[("TAIL", tail.into())],
    );
    KernelDef {
        stem: "moe_combine".into(),
        params: vec![pair, ys, ctx.out()],
        body,
        block: ELEMENT_BLOCK,
        grid: element_grid(&[x.t.clone(), x.h.clone()]),
        shared_bytes: 0,
        globals: String::new(),
    }
}
