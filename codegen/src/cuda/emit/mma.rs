//! Tensor-core tiles for products with bf16 weights, in tensor-core programs
//! ([`super::NodeCtx::tensor_cores`]): `A B^T` with `A` f32 rows
//! (rounded to bf16 on the way into shared memory) and `B` weight rows `[N, KD]` stored as
//! bf16, f32 accumulators.
//!
//! A block of 8 warps computes 64 rows x [`columns`] of the result, K in steps of 32 through
//! shared memory, `mma.sync` m16n8k16 per 16 of K; warps sit 2 (rows) x 4 (columns), each
//! with two 16-row tiles. A's rows come through `arow` (a source row per tile row, -1 for none)
//! and results go to `orow`, so one core serves plain products and the experts' routed rows.
//! Every result is summed by one warp in a fixed order: runs are bitwise repeatable.

use super::{NodeCtx, Param, fill};

/// Whether a tiled product with `weight` runs on these tiles: the weight is stored as bf16 and
/// the program accepts bf16 rounding.
pub(super) fn applies(ctx: &NodeCtx, weight: &Param) -> bool {
    ctx.tensor_cores && weight.cty == super::cty(saturn_ir::DType::BF16)
}

/// Rows of a block.
pub(super) const ROWS: u64 = 64;

/// Columns of a block: gated products (two weights) take half, so both keep 32 accumulators
/// per thread.
pub(super) fn columns(gated: bool) -> u64 {
    if gated { 64 } else { 128 }
}

/// The operands and result of one tiled product, as C expressions.
pub(super) struct Tile<'a> {
    /// The columns and the depth.
    pub n: &'a str,
    pub kd: &'a str,
    /// A (f32 rows of `kd`) and the weights (`sat_bf16` rows of `kd`, from row `wrow`).
    pub a: &'a str,
    pub b: &'a [String],
    /// Where result `(o, n)` goes: `DST[o * N + n]`, the value of `VALUE` over `g` (the first
    /// product), `u` (the second, when gated) and `wt` (the row's `WT`, which may read `r`,
    /// the row of the tile).
    pub dst: &'a str,
    pub value: &'a str,
    pub wt: &'a str,
}

/// The core's statements, after a prologue that defines `arow`, `orow` (`long long[64]` in
/// shared memory, ready) and `wrow`. Column tiles are `blockIdx.y`. Its own names are local to
/// it, and none is a kernel parameter's name (`h`, `x`, `out`, ...), which they would hide.
pub(super) fn core(tile: &Tile) -> String {
    let nb = tile.b.len() as u64;
    let tn = columns(nb == 2);
    // Weights of one row per thread in a slab, and threads per row.
    let ept = tn * SLAB_K / 256;
    fill(
        CORE,
        &[
            ("NB", nb.to_string()),
            ("TN", tn.to_string()),
            ("WN", (tn / 4).to_string()),
            ("NT", (tn / 32).to_string()),
            ("SK", SLAB_K.to_string()),
            ("SROW", (SLAB_K + 8).to_string()),
            ("EPT", ept.to_string()),
            ("TPR", (SLAB_K / ept).to_string()),
            ("N", tile.n.to_string()),
            ("KD", tile.kd.to_string()),
            ("A", tile.a.to_string()),
            ("B0", tile.b[0].clone()),
            ("B1", tile.b[tile.b.len() - 1].clone()),
            ("DST", tile.dst.to_string()),
            ("VALUE", tile.value.to_string()),
            ("WT", tile.wt.to_string()),
        ],
    )
}

/// K per slab of [`CORE`]: each thread has a slab's 16 elements of A and 16 or 32 weights in
/// flight while the previous slab is multiplied (at 32, two blocks per SM kept too few bytes in
/// flight to stream the experts' weights at more than half the copy bandwidth).
const SLAB_K: u64 = 64;

/// Dynamic shared memory of [`CORE`]: two slabs of A (64 rows) and of the weights (`columns`
/// rows), rows of `SLAB_K` + 8 bf16.
pub(super) fn shared_bytes(gated: bool) -> u32 {
    let rows = ROWS + columns(gated) * if gated { 2 } else { 1 };
    (2 * rows * (SLAB_K + 8) * 2) as u32
}

/// Shared-memory rows are `SK` + 8 bf16, so the eight rows of an `ldmatrix` fall in distinct
/// banks. Two slabs of K in dynamic shared memory ([`shared_bytes`]): the next slab's elements
/// are fetched into registers (16-byte loads where the rows are aligned) while this one is
/// multiplied, then stored into the other slab, so one barrier per slab suffices.
const CORE: &str = r#"  const long long nn = ${N}, kd = ${KD};
  const long long n0 = (long long)blockIdx.y * ${TN};
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp & 1, wn = warp >> 1;
  extern __shared__ __align__(16) unsigned char smem[];
  auto As = reinterpret_cast<unsigned short (*)[64][${SROW}]>(smem);
  auto Bs = reinterpret_cast<unsigned short (*)[${NB}][${TN}][${SROW}]>(smem + 2 * 64 * ${SROW} * 2);
  float acc[${NB}][2][${NT}][4];
#pragma unroll
  for (int j = 0; j < ${NB}; ++j)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < ${NT}; ++nt) acc[j][mt][nt][0] = acc[j][mt][nt][1] = acc[j][mt][nt][2] = acc[j][mt][nt][3] = 0.0f;
  const sat_bf16* bw[2] = {${B0} + wrow * kd, ${B1} + wrow * kd};
  // This thread's share of a slab: SK / 4 elements of A row tid / 4, and EPT weights of row
  // tid / TPR of each weight, whole 16-byte pieces where the rows allow.
  const int ar_r = tid >> 2, ar_c = (tid & 3) * (${SK} / 4);
  const int br_r = tid / ${TPR}, br_c = (tid % ${TPR}) * ${EPT};
  const long long ar = arow[ar_r], bn = n0 + br_r;
  const bool a_vec = kd % 4 == 0 && ((unsigned long long)(${A}) & 15) == 0;
  bool b_vec = kd % 8 == 0;
#pragma unroll
  for (int j = 0; j < ${NB}; ++j) b_vec = b_vec && ((unsigned long long)bw[j] & 15) == 0;
  unsigned int xa[${SK} / 8], xb[${NB}][${EPT} / 2];
  auto fetch = [&](long long k0) {
    const long long k = k0 + ar_c;
    if (ar >= 0 && a_vec && k + ${SK} / 4 <= kd) {
#pragma unroll
      for (int i = 0; i < ${SK} / 16; ++i) {
        const float4 v = *(const float4*)&${A}[ar * kd + k + 4 * i];
        xa[2 * i] = sat_bf16_bits(v.x) | (sat_bf16_bits(v.y) << 16);
        xa[2 * i + 1] = sat_bf16_bits(v.z) | (sat_bf16_bits(v.w) << 16);
      }
    } else {
#pragma unroll
      for (int i = 0; i < ${SK} / 8; ++i) {
        const float x0 = ar >= 0 && k + 2 * i < kd ? ${A}[ar * kd + k + 2 * i] : 0.0f;
        const float x1 = ar >= 0 && k + 2 * i + 1 < kd ? ${A}[ar * kd + k + 2 * i + 1] : 0.0f;
        xa[i] = sat_bf16_bits(x0) | (sat_bf16_bits(x1) << 16);
      }
    }
    const long long kb = k0 + br_c;
#pragma unroll
    for (int j = 0; j < ${NB}; ++j) {
      if (bn < nn && b_vec && kb + ${EPT} <= kd) {
#pragma unroll
        for (int i = 0; i < ${EPT} / 8; ++i) {
          const uint4 v = *(const uint4*)&bw[j][bn * kd + kb + 8 * i];
          xb[j][4 * i] = v.x;
          xb[j][4 * i + 1] = v.y;
          xb[j][4 * i + 2] = v.z;
          xb[j][4 * i + 3] = v.w;
        }
      } else {
#pragma unroll
        for (int i = 0; i < ${EPT} / 2; ++i) {
          const long long k2 = kb + 2 * i;
          const unsigned int w0 = bn < nn && k2 < kd ? (unsigned int)bw[j][bn * kd + k2].bits : 0u;
          const unsigned int w1 = bn < nn && k2 + 1 < kd ? (unsigned int)bw[j][bn * kd + k2 + 1].bits : 0u;
          xb[j][i] = w0 | (w1 << 16);
        }
      }
    }
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int i = 0; i < ${SK} / 32; ++i)
      *(uint4*)&As[buf][ar_r][ar_c + 8 * i] = make_uint4(xa[4 * i], xa[4 * i + 1], xa[4 * i + 2], xa[4 * i + 3]);
#pragma unroll
    for (int j = 0; j < ${NB}; ++j)
#pragma unroll
      for (int i = 0; i < ${EPT} / 8; ++i)
        *(uint4*)&Bs[buf][j][br_r][br_c + 8 * i] =
            make_uint4(xb[j][4 * i], xb[j][4 * i + 1], xb[j][4 * i + 2], xb[j][4 * i + 3]);
  };
  // The row this lane addresses in an ldmatrix: A's 16 x 16 tiles, and B's two 8-row tiles
  // by 16 of K.
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;
  fetch(0);
  stash(0);
  __syncthreads();
  for (long long k0 = 0, buf = 0; k0 < kd; k0 += ${SK}, buf ^= 1) {
    const bool more = k0 + ${SK} < kd;
    if (more) fetch(k0 + ${SK});
#pragma unroll
    for (int k16 = 0; k16 < ${SK}; k16 += 16) {
      unsigned int a[2][4], b[${NB}][${NT} / 2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) sat_ldmatrix_x4(a[mt], &As[buf][wm * 32 + mt * 16 + a_row][k16 + a_col]);
#pragma unroll
      for (int j = 0; j < ${NB}; ++j)
#pragma unroll
        for (int np = 0; np < ${NT} / 2; ++np)
          sat_ldmatrix_x4(b[j][np], &Bs[buf][j][wn * ${WN} + np * 16 + b_row][k16 + b_col]);
#pragma unroll
      for (int j = 0; j < ${NB}; ++j)
#pragma unroll
        for (int nt = 0; nt < ${NT}; ++nt)
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) sat_mma_bf16(acc[j][mt][nt], a[mt], b[j][nt / 2] + 2 * (nt % 2));
    }
    if (more) stash(buf ^ 1);
    __syncthreads();
  }
  const int lg = lane >> 2, lt = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = wm * 32 + mt * 16 + lg + 8 * half;
      const long long o = orow[r];
      if (o < 0) continue;
      const float wt = ${WT};
#pragma unroll
      for (int nt = 0; nt < ${NT}; ++nt)
#pragma unroll
        for (int col = 0; col < 2; ++col) {
          const long long n = n0 + wn * ${WN} + nt * 8 + 2 * lt + col;
          const float g = acc[0][mt][nt][2 * half + col], u = acc[${NB} - 1][mt][nt][2 * half + col];
          if (n < nn) ${DST}[o * nn + n] = ${VALUE};
        }
    }
"#;
