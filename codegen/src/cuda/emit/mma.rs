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
    let per = tn / 8;
    fill(
        CORE,
        &[
            ("NB", nb.to_string()),
            ("TN", tn.to_string()),
            ("WN", (tn / 4).to_string()),
            ("NT", (tn / 32).to_string()),
            ("EPT", per.to_string()),
            ("TPR", (32 / per).to_string()),
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

/// Shared-memory rows are 40 bf16 (32 of K and 8 of padding), so a warp's fragment loads fall
/// in 32 distinct banks.
const CORE: &str = r#"  const long long nn = ${N}, kd = ${KD};
  const long long n0 = (long long)blockIdx.y * ${TN};
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, lg = lane >> 2, lt = lane & 3;
  const int wm = warp & 1, wn = warp >> 1;
  __shared__ __align__(16) unsigned short As[64][40];
  __shared__ __align__(16) unsigned short Bs[${NB}][${TN}][40];
  float acc[${NB}][2][${NT}][4];
#pragma unroll
  for (int j = 0; j < ${NB}; ++j)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < ${NT}; ++nt) acc[j][mt][nt][0] = acc[j][mt][nt][1] = acc[j][mt][nt][2] = acc[j][mt][nt][3] = 0.0f;
  const sat_bf16* bw[2] = {${B0} + wrow * kd, ${B1} + wrow * kd};
  for (long long k0 = 0; k0 < kd; k0 += 32) {
    // A: eight consecutive elements of row tid / 4 per thread, rounded to bf16.
    {
      const int r = tid >> 2, c = (tid & 3) * 8;
      const long long ar = arow[r];
      unsigned int* d = (unsigned int*)&As[r][c];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const long long k = k0 + c + 2 * i;
        const float x0 = ar >= 0 && k < kd ? ${A}[ar * kd + k] : 0.0f;
        const float x1 = ar >= 0 && k + 1 < kd ? ${A}[ar * kd + k + 1] : 0.0f;
        d[i] = sat_bf16_bits(x0) | (sat_bf16_bits(x1) << 16);
      }
    }
    // B: EPT consecutive weights of one row per thread, as stored.
#pragma unroll
    for (int j = 0; j < ${NB}; ++j) {
      const int r = tid / ${TPR}, c = (tid % ${TPR}) * ${EPT};
      const long long n = n0 + r;
      unsigned int* d = (unsigned int*)&Bs[j][r][c];
#pragma unroll
      for (int i = 0; i < ${EPT} / 2; ++i) {
        const long long k = k0 + c + 2 * i;
        const unsigned int w0 = n < nn && k < kd ? (unsigned int)bw[j][n * kd + k].bits : 0u;
        const unsigned int w1 = n < nn && k + 1 < kd ? (unsigned int)bw[j][n * kd + k + 1].bits : 0u;
        d[i] = w0 | (w1 << 16);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 32; kk += 16) {
      unsigned int a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const unsigned short* p = &As[wm * 32 + mt * 16 + lg][kk + 2 * lt];
        a[mt][0] = *(const unsigned int*)p;
        a[mt][1] = *(const unsigned int*)(p + 8 * 40);
        a[mt][2] = *(const unsigned int*)(p + 8);
        a[mt][3] = *(const unsigned int*)(p + 8 * 40 + 8);
      }
#pragma unroll
      for (int j = 0; j < ${NB}; ++j)
#pragma unroll
        for (int nt = 0; nt < ${NT}; ++nt) {
          const unsigned short* q = &Bs[j][wn * ${WN} + nt * 8 + lg][kk + 2 * lt];
          const unsigned int b[2] = {*(const unsigned int*)q, *(const unsigned int*)(q + 8)};
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) sat_mma_bf16(acc[j][mt][nt], a[mt], b);
        }
    }
    __syncthreads();
  }
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
