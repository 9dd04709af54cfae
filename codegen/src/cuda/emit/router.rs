//! `router_topk`: one warp per token scores its experts, keeps the best groups, picks the top
//! `k` and weighs them.
//!
//! It follows the interpreter's formulas and orders (f32 scores, f64 sums in index order, the
//! `select_topk` ranking), so it picks the same experts from the same logits, ties included.

use saturn_ir::{GroupScore, Router, RouterScoring};

use super::index::c_float;
use super::{KernelDef, NodeCtx, fill};
use crate::CodegenError;
use crate::cuda::extent::Extent;

/// The most experts a router picks per token (its picks live in registers).
const ROUTER_MAX_K: u64 = 32;

/// `router_topk`: one warp (a block of 32) per token. Lane `l` holds experts `l, l + 32, ...`.
pub(super) fn router_topk(ctx: &NodeCtx, r: &Router) -> Result<KernelDef, CodegenError> {
    let logits = &ctx.operands[0].shape;
    let e = ctx.constant(&logits[1], "the expert count")?;
    let nper = e.div_ceil(32);
    if r.k > ROUTER_MAX_K || nper > 32 {
        return Err(ctx.unsupported(format!("routers pick at most {ROUTER_MAX_K} of 1024 experts")));
    }
    let mut body = String::from(ROUTER_LOAD);
    body.push_str(match r.scoring {
        RouterScoring::Softmax => ROUTER_SOFTMAX,
        RouterScoring::Sigmoid => ROUTER_SIGMOID,
    });
    let mut params = vec![ctx.operand(0, "logits")];
    if ctx.operands.len() == 2 {
        params.push(ctx.operand(1, "bias"));
        body.push_str(ROUTER_BIAS);
    } else {
        body.push_str(ROUTER_NO_BIAS);
    }
    let groups = r.n_group > 1 && r.topk_group < r.n_group;
    if groups {
        body.push_str(ROUTER_GROUPS);
        body.push_str(match r.group_score {
            GroupScore::Max => ROUTER_GROUP_MAX,
            GroupScore::SumTop2 => ROUTER_GROUP_TOP2,
        });
        body.push_str(ROUTER_KEEP_GROUPS);
    }
    body.push_str(ROUTER_TOPK);
    if r.normalize {
        body.push_str(ROUTER_NORMALIZE);
    }
    if r.scale != 1.0 {
        body.push_str("#pragma unroll\n  for (int j = 0; j < ${NPER}; ++j) w[j] = w[j] * ${SCALE};\n");
    }
    body.push_str(ROUTER_STORE);
    params.push(ctx.out());
    let g = r.n_group.max(1);
    let body = fill(
        &body,
        &[
            ("T", ctx.dim(&logits[0])),
            ("E", e.to_string()),
            ("NPER", nper.to_string()),
            ("K", r.k.to_string()),
            ("G", g.to_string()),
            ("PER", (e / g).to_string()),
            ("KG", r.topk_group.to_string()),
            ("FILL", c_float(r.masked_fill as f32)),
            ("SRC", if r.weights_from_candidates { "c" } else { "s" }.into()),
            ("SCALE", c_float(r.scale as f32)),
            ("EPS", c_float(1e-20)),
        ],
    );
    Ok(KernelDef {
        stem: "router_topk".into(),
        params,
        body,
        block: 32,
        grid: [Extent::of([logits[0].clone()]), Extent::one(), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    })
}

const ROUTER_LOAD: &str = r#"  const long long t = blockIdx.x;
  if (t >= ${T}) return;
  const int lane = threadIdx.x;
  const float* row = logits + t * ${E}LL;
  float s[${NPER}], c[${NPER}];
#pragma unroll
  for (int j = 0; j < ${NPER}; ++j) s[j] = lane + 32 * j < ${E} ? row[lane + 32 * j] : 0.0f;
"#;

/// Softmax as the interpreter computes it: a max that skips NaN, f32 exponentials, an f64 sum
/// (each lane's in index order, then the lanes' in order), one rounding per score; a row of
/// -inf gives zeros.
const ROUTER_SOFTMAX: &str = r#"  {
    float m = __int_as_float(0xff800000);
    int nan = 0;
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j)
      if (lane + 32 * j < ${E}) { m = fmaxf(m, s[j]); nan |= s[j] != s[j]; }
    m = sat_warp_max(m);
    for (int o = 16; o > 0; o >>= 1) nan |= __shfl_xor_sync(SAT_FULL_MASK, nan, o);
    __shared__ double part[32];
    double sum = 0.0;
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j)
      if (lane + 32 * j < ${E}) { s[j] = expf(s[j] - m); sum += (double)s[j]; }
    part[lane] = sum;
    __syncthreads();
    sum = 0.0;
    for (int l = 0; l < 32; ++l) sum += part[l];
    const bool zero = m == __int_as_float(0xff800000) && !nan;
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j) s[j] = zero ? 0.0f : (float)((double)s[j] / sum);
  }
"#;

const ROUTER_SIGMOID: &str = r#"#pragma unroll
  for (int j = 0; j < ${NPER}; ++j) s[j] = sat_sigmoid(s[j]);
"#;

const ROUTER_BIAS: &str = r#"#pragma unroll
  for (int j = 0; j < ${NPER}; ++j) c[j] = lane + 32 * j < ${E} ? s[j] + bias[lane + 32 * j] : 0.0f;
"#;

const ROUTER_NO_BIAS: &str = r#"#pragma unroll
  for (int j = 0; j < ${NPER}; ++j) c[j] = s[j];
"#;

/// Groups: lane `g` scores group `g` from shared memory, then counts the groups ranked before it.
const ROUTER_GROUPS: &str = r#"  __shared__ float sb[${E}];
  __shared__ float gs[${G}];
  __shared__ int keep[${G}];
#pragma unroll
  for (int j = 0; j < ${NPER}; ++j)
    if (lane + 32 * j < ${E}) sb[lane + 32 * j] = c[j];
  __syncthreads();
  for (int g = lane; g < ${G}; g += 32) {
    const float* v = sb + g * ${PER};
"#;

/// The max of a group; a NaN member makes it NaN (the interpreter's max reduction).
const ROUTER_GROUP_MAX: &str = r#"    float a = __int_as_float(0xff800000);
    for (int i = 0; i < ${PER}; ++i)
      if (a == a && (v[i] != v[i] || v[i] > a)) a = v[i];
    gs[g] = a;
  }
"#;

/// The sum of a group's two best members (which two does not change the sum).
const ROUTER_GROUP_TOP2: &str = r#"    float b1 = __int_as_float(0x7fc00000), b2 = b1;
    for (int i = 0; i < ${PER}; ++i) {
      const float x = v[i];
      if (sat_topk_before(x, 1, b1, 0)) { b2 = b1; b1 = x; }
      else if (sat_topk_before(x, 1, b2, 0)) b2 = x;
    }
    gs[g] = b1 + b2;
  }
"#;

const ROUTER_KEEP_GROUPS: &str = r#"  __syncthreads();
  for (int g = lane; g < ${G}; g += 32) {
    int before = 0;
    for (int h = 0; h < ${G}; ++h) before += sat_topk_before(gs[h], h, gs[g], g) ? 1 : 0;
    keep[g] = before < ${KG};
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < ${NPER}; ++j)
    if (lane + 32 * j < ${E} && !keep[(lane + 32 * j) / ${PER}]) c[j] = ${FILL};
"#;

/// `k` rounds of a warp arg-max under the top-k order; the picks end up in every lane.
const ROUTER_TOPK: &str = r#"  unsigned taken = 0u;
  int pick[${K}];
#pragma unroll
  for (int q = 0; q < ${K}; ++q) {
    float bv = __int_as_float(0x7fc00000);
    int bi = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j) {
      const int e = lane + 32 * j;
      if (e < ${E} && !((taken >> j) & 1u) && sat_topk_before(c[j], e, bv, bi)) { bv = c[j]; bi = e; }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(SAT_FULL_MASK, bv, o);
      const int oi = __shfl_xor_sync(SAT_FULL_MASK, bi, o);
      if (sat_topk_before(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    pick[q] = bi;
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j)
      if (lane + 32 * j == bi) taken |= 1u << j;
  }
  float w[${NPER}];
#pragma unroll
  for (int j = 0; j < ${NPER}; ++j) w[j] = ((taken >> j) & 1u) ? ${SRC}[j] : 0.0f;
"#;

/// The f64 sum of the chosen weights in expert order (the zeros between them add nothing), as
/// the interpreter's sum over the row.
const ROUTER_NORMALIZE: &str = r#"  {
    __shared__ float sw[${E}];
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j)
      if (lane + 32 * j < ${E}) sw[lane + 32 * j] = w[j];
    __syncthreads();
    double sum = 0.0;
    int last = -1;
#pragma unroll
    for (int q = 0; q < ${K}; ++q) {
      int next = 0x7fffffff;
#pragma unroll
      for (int p = 0; p < ${K}; ++p)
        if (pick[p] > last && pick[p] < next) next = pick[p];
      // Fewer than k picks (impossible for k <= E) would leave `next` past the row.
      if (next < ${E}) sum += (double)sw[next];
      last = next;
    }
    const float den = (float)sum + ${EPS};
#pragma unroll
    for (int j = 0; j < ${NPER}; ++j) w[j] = w[j] / den;
  }
"#;

const ROUTER_STORE: &str = r#"#pragma unroll
  for (int j = 0; j < ${NPER}; ++j)
    if (lane + 32 * j < ${E}) out[t * ${E}LL + lane + 32 * j] = w[j];
"#;
