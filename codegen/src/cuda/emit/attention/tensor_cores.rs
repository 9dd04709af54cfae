//! The split kernel of `mla_decode_attention` on tensor cores ([`SPLIT_MMA`]): its template,
//! the loads of its key tiles, and its tiling ([`MmaTiles`]). The combine kernel and the
//! choice between this and the f32 split are the parent's.

use super::{BLOCK, fill};

/// [`SPLIT`] on tensor cores (bf16 operands, f32 accumulators), for tensor-core programs
/// (`CudaOptions::tensor_cores`): the block's heads (up to 64, in 16-row tiles) and a tile of
/// keys meet in `mma.sync` products, scores and output alike, with an online softmax across the
/// chunk's key tiles (FlashMLA's structure). Queries and key tiles are rounded to bf16 in shared
/// memory and read as fragments by `ldmatrix`. For the scores, warp `w` takes one head tile and
/// 16 keys; for the output it owns every head tile over `NPW` column tiles, in registers, so
/// each key tile's latent rows are read from shared memory once.
pub(super) const SPLIT_MMA: &str = concat!(
    split_prologue!(),
    r#"  const int g = lane >> 2, t = lane & 3;
  // Shared memory: queries [HB][KS] and two key tiles [2][NK][KS] as bf16 (latent, then rope,
  // then zeros up to KP; rows padded to KS so the rows of an ldmatrix fall in distinct banks),
  // the tile's probabilities [HB][PS] as bf16, each scoring warp's row maxima and sums
  // [NK / 16][HB], and per head the running max and sum.
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned short* qs = (unsigned short*)smem;
  unsigned short* ks = qs + ${HB} * ${KS};
  unsigned short* ps = ks + 2 * ${NK} * ${KS};
  float* pmax = (float*)(ps + ${HB} * ${PS});
  float* psum = pmax + ${NK16} * ${HB};
  float* mrow = psum + ${NK16} * ${HB};
  float* lrow = mrow + ${HB};
  for (int i = tid; i < ${HB} * ${KP}; i += ${BLOCK}) {
    const int hh = i / ${KP}, c = i % ${KP}, h = hg * ${HB} + hh;
    float v = 0.0f;
    if (h < ${H}) {
      const long long row = (bz * ${H} + h) * S + s;
      if (c < ${C}) v = q_latent[row * ${C} + c];
      else if (c < ${C} + ${R}) v = q_rope[row * ${R} + (c - ${C})];
    }
    qs[hh * ${KS} + c] = (unsigned short)sat_bf16_bits(v);
  }
  if (tid < ${HB}) {
    mrow[tid] = __int_as_float(0xff800000);
    lrow[tid] = 0.0f;
  }
  const auto* lat0 = latent + (bz * T + t0) * ${C};
  const auto* kpe0 = k_pe + (bz * T + t0) * ${R};
  // The row this lane addresses in an ldmatrix of a 16 x 16 tile: as A (and, transposed, as
  // the output's B: keys by columns) rows 0-7 then 8-15 for the first 8 columns, then the same
  // for the next 8; as the scores' B (keys by width), two 8-key tiles by 16 of the width.
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;
  float acc[${MT}][${NPW}][4];
#pragma unroll
  for (int m = 0; m < ${MT}; ++m)
#pragma unroll
    for (int j = 0; j < ${NPW}; ++j) acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;
${PREPARE_TILES}
  // Key tiles double-buffered: tile j + 1 is fetched while tile j is used.
${LOAD_FIRST}
  for (int k0 = 0, buf = 0; k0 < nk; k0 += ${NK}, buf ^= 1) {
    const int nkt = nk - k0 < ${NK} ? nk - k0 : ${NK};
    if (k0 + ${NK} < nk) {
${LOAD_NEXT}
${WAIT_ONE}
    } else {
${WAIT_ALL}
    }
    __syncthreads();
    const unsigned short* kt = ks + buf * ${NK} * ${KS};
    // Scores, scaled: warp w < MT * NK / 16 takes head tile w % MT and keys 16 (w / MT)..+16,
    // then its part of the online softmax in registers: lane (g, t) holds rows tm * 16 + g and
    // + 8, keys 16 tn + 8 j + 2 t + {0, 1} (j = 0, 1).
    const bool scoring = warp < ${MT} * ${NK16};
    const int tm = warp % ${MT}, tn = warp / ${MT};
    float sv[2][4];
    if (scoring) {
      // Even and odd steps of the width into separate sums: four chains of dependent mma
      // rather than two.
      float d[2][2][4] = {};
      const unsigned short* qa = qs + (tm * 16 + a_row) * ${KS} + a_col;
      const unsigned short* kb = kt + (tn * 16 + b_row) * ${KS} + b_col;
#pragma unroll 4
      for (int c0 = 0; c0 < ${KP}; c0 += 16) {
        const int e = (c0 >> 4) & 1;
        unsigned int a[4], b[4];
        sat_ldmatrix_x4(a, qa + c0);
        sat_ldmatrix_x4(b, kb + c0);
        sat_mma_bf16(d[e][0], a, b);
        sat_mma_bf16(d[e][1], a, b + 2);
      }
      // Keys past the chunk's end take no part.
      float mx[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int kk = tn * 16 + j * 8 + 2 * t + (i & 1);
          sv[j][i] = kk < nkt ? (d[0][j][i] + d[1][j][i]) * ${SCALE} : __int_as_float(0xff800000);
          mx[i >> 1] = fmaxf(mx[i >> 1], sv[j][i]);
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(SAT_FULL_MASK, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(SAT_FULL_MASK, mx[r], 2));
        if (t == 0) pmax[tn * ${HB} + tm * 16 + g + 8 * r] = mx[r];
      }
    }
    __syncthreads();
    // Probabilities against the new max of each row (the old one, or the tile's), rounded to
    // bf16; the sum adds them as rounded, as the output's product uses them.
    if (scoring) {
      float sum[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = tm * 16 + g + 8 * r;
        float m_new = mrow[row];
#pragma unroll
        for (int q = 0; q < ${NK16}; ++q) m_new = fmaxf(m_new, pmax[q * ${HB} + row]);
        sum[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const unsigned int lo = sat_bf16_bits(expf(sv[j][2 * r] - m_new));
          const unsigned int hi = sat_bf16_bits(expf(sv[j][2 * r + 1] - m_new));
          *(unsigned int*)(ps + row * ${PS} + tn * 16 + j * 8 + 2 * t) = lo | (hi << 16);
          sum[r] += __uint_as_float(lo << 16) + __uint_as_float(hi << 16);
        }
        sum[r] += __shfl_xor_sync(SAT_FULL_MASK, sum[r], 1);
        sum[r] += __shfl_xor_sync(SAT_FULL_MASK, sum[r], 2);
        if (t == 0) psum[tn * ${HB} + row] = sum[r];
      }
    }
    __syncthreads();
    // Output: rescale by the new max, then add probabilities x the tile's latent rows; this
    // warp's column tiles are NPW from column tile warp * NPW, taken two per ldmatrix. Once
    // the running maxima settle no row moves (alpha is exactly 1) and the rescale is skipped.
    float alpha[${MT}][2];
    bool moved = false;
#pragma unroll
    for (int m = 0; m < ${MT}; ++m)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = m * 16 + g + 8 * r;
        const float m_old = mrow[row];
        float m_new = m_old;
#pragma unroll
        for (int q = 0; q < ${NK16}; ++q) m_new = fmaxf(m_new, pmax[q * ${HB} + row]);
        alpha[m][r] = expf(m_old - m_new);
        moved |= alpha[m][r] != 1.0f;
      }
    if (__any_sync(SAT_FULL_MASK, moved)) {
#pragma unroll
      for (int m = 0; m < ${MT}; ++m)
#pragma unroll
        for (int j = 0; j < ${NPW}; ++j) {
          acc[m][j][0] *= alpha[m][0];
          acc[m][j][1] *= alpha[m][0];
          acc[m][j][2] *= alpha[m][1];
          acc[m][j][3] *= alpha[m][1];
        }
    }
#pragma unroll
    for (int kk0 = 0; kk0 < ${NK}; kk0 += 16) {
      unsigned int pa[${MT}][4];
#pragma unroll
      for (int m = 0; m < ${MT}; ++m) sat_ldmatrix_x4(pa[m], ps + (m * 16 + a_row) * ${PS} + kk0 + a_col);
      const unsigned short* vb = kt + (kk0 + a_row) * ${KS} + warp * ${NPW} * 8 + a_col;
#pragma unroll
      for (int j = 0; j < ${NPW}; j += 2) {
        if (warp * ${NPW} + j < ${NT}) {
          unsigned int b[4];
          sat_ldmatrix_x4_trans(b, vb + j * 8);
#pragma unroll
          for (int m = 0; m < ${MT}; ++m) {
            sat_mma_bf16(acc[m][j], pa[m], b);
            sat_mma_bf16(acc[m][j + 1], pa[m], b + 2);
          }
        }
      }
    }
    // Each row's running max and sum move on; read before the barrier, written after it, so
    // that no warp still reads the old ones and the next tile's maxima do not overwrite them.
    float m_next = 0.0f, l_next = 0.0f;
    if (tid < ${HB}) {
      const float m_old = mrow[tid];
      m_next = m_old;
      l_next = 0.0f;
#pragma unroll
      for (int q = 0; q < ${NK16}; ++q) {
        m_next = fmaxf(m_next, pmax[q * ${HB} + tid]);
        l_next += psum[q * ${HB} + tid];
      }
      l_next += lrow[tid] * expf(m_old - m_next);
    }
    // This tile's keys and probabilities are no longer read.
    __syncthreads();
    if (tid < ${HB}) {
      mrow[tid] = m_next;
      lrow[tid] = l_next;
    }
  }
  // The chunk's unnormalised output, max and sum per head.
  const long long stride = S * splits * ${C};
  float* o0 = o_part + (((bz * ${H} + hg * ${HB}) * S + s) * splits + split) * ${C};
#pragma unroll
  for (int j = 0; j < ${NPW}; ++j) {
    const int col = (warp * ${NPW} + j) * 8 + 2 * t;
#pragma unroll
    for (int m = 0; m < ${MT}; ++m) {
      for (int r = 0; r < 2; ++r) {
        const int hh = m * 16 + g + 8 * r;
        if (hg * ${HB} + hh < ${H}) {
          if (col < ${C}) o0[hh * stride + col] = acc[m][j][2 * r];
          if (col + 1 < ${C}) o0[hh * stride + col + 1] = acc[m][j][2 * r + 1];
        }
      }
    }
  }
  if (tid < ${HB} && hg * ${HB} + tid < ${H}) {
    const long long at = ((bz * ${H} + hg * ${HB} + tid) * S + s) * splits + split;
    m_part[at] = mrow[tid];
    l_part[at] = lrow[tid];
  }
"#
);

/// [`SPLIT_MMA`]'s tile load for a cache stored as f32 (or any mix): keys `${K0}..+ NK` of the
/// chunk into key buffer `${BUF}`, rounded to bf16, zero rows past the chunk.
const LOAD_CONVERTED: &str = r#"  {
    unsigned short* kt = ks + (${BUF}) * ${NK} * ${KS};
    const int kb0 = ${K0}, nkt = nk - kb0 < ${NK} ? nk - kb0 : ${NK};
    for (int i = tid; i < ${NK} * ${KP}; i += ${BLOCK}) {
      const int kk = i / ${KP}, c = i % ${KP};
      float v = 0.0f;
      if (kk < nkt) {
        if (c < ${C}) v = lat0[(long long)(kb0 + kk) * ${C} + c];
        else if (c < ${C} + ${R}) v = kpe0[(long long)(kb0 + kk) * ${R} + (c - ${C})];
      }
      kt[kk * ${KS} + c] = (unsigned short)sat_bf16_bits(v);
    }
  }
"#;

/// [`SPLIT_MMA`]'s tile load for a bf16 cache with widths a multiple of 8: 16-byte row pieces
/// copied by `cp.async` (no registers, so the next tile streams in while this one is used),
/// zero rows past the chunk. `COPY_ROWS` copies the latent, then the rope part of the rows
/// ([`copy_rows`]). Padding columns are zeroed once, by [`ZERO_PADDING`].
const LOAD_COPIED: &str = r#"  {
    unsigned short* kt = ks + (${BUF}) * ${NK} * ${KS};
    const int kb0 = ${K0}, nkt = nk - kb0 < ${NK} ? nk - kb0 : ${NK};
${COPY_ROWS}
    sat_cp_async_commit();
  }
"#;

/// One part of the key rows (`P` pieces of 8 from `SRC`, `W` wide, to column `COL`) when the
/// block is a whole number of rows of pieces: each thread copies the same piece of every
/// `RPP`-th row, at offsets known when compiled.
const COPY_STRIDED: &str = r#"    {
      const int v = tid % ${P}, kk0 = tid / ${P};
      unsigned short* dst = kt + kk0 * ${KS} + ${COL} + v * 8;
      const auto* src = ${SRC} + (long long)(kb0 + kk0) * ${W} + v * 8;
#pragma unroll
      for (int j = 0; j < ${PASSES}; ++j) {
        const int kk = kk0 + j * ${RPP};
        if (kk < nkt) {
          sat_cp_async16(dst + j * ${RPP} * ${KS}, src + (long long)j * ${RPP} * ${W});
        } else if (kk < ${NK}) {
          unsigned int* z = (unsigned int*)(dst + j * ${RPP} * ${KS});
          z[0] = z[1] = z[2] = z[3] = 0u;
        }
      }
    }
"#;

/// [`COPY_STRIDED`] for any number of pieces per row.
const COPY_ANY: &str = r#"    for (int i = tid; i < ${NK} * ${P}; i += ${BLOCK}) {
      const int kk = i / ${P}, v = i % ${P};
      unsigned short* dst = kt + kk * ${KS} + ${COL} + v * 8;
      if (kk < nkt) {
        sat_cp_async16(dst, ${SRC} + (long long)(kb0 + kk) * ${W} + v * 8);
      } else {
        unsigned int* z = (unsigned int*)dst;
        z[0] = z[1] = z[2] = z[3] = 0u;
      }
    }
"#;

/// The copy of one part of the key rows for [`LOAD_COPIED`]: `width` columns (a multiple of 8)
/// from `src` to column `col` of the tile.
fn copy_rows(vars: &[(&'static str, String)], src: &str, width: u64, col: u64) -> String {
    let pieces = width / 8;
    if pieces == 0 {
        return String::new();
    }
    let mut at = vars.to_vec();
    at.extend([
        ("SRC", src.to_string()),
        ("W", width.to_string()),
        ("COL", col.to_string()),
        ("P", pieces.to_string()),
    ]);
    if BLOCK.is_multiple_of(pieces) {
        let rows_per_pass = BLOCK / pieces;
        at.extend([
            ("RPP", rows_per_pass.to_string()),
            ("PASSES", MMA_KEYS.div_ceil(rows_per_pass).to_string()),
        ]);
        fill(COPY_STRIDED, &at)
    } else {
        fill(COPY_ANY, &at)
    }
}

/// Zeroes the padding columns `C + R..KP` of both key buffers (`PAD` of them), which
/// [`LOAD_COPIED`] never writes.
const ZERO_PADDING: &str = r#"  for (int i = tid; i < 2 * ${NK} * ${PAD}; i += ${BLOCK}) {
    ks[(i / ${PAD}) * ${KS} + ${C} + ${R} + i % ${PAD}] = 0;
  }
"#;

/// Keys per tensor-core tile of [`SPLIT_MMA`] (two k-steps of the output product).
pub(super) const MMA_KEYS: u64 = 32;
/// Dynamic shared memory [`SPLIT_MMA`] may use: what an sm_80 block can opt into (163 KiB;
/// DeepSeek-V3's 64 heads x 576 wide with two key tiles take 152.5 KiB).
const MMA_MAX_SHARED: u64 = 163 * 1024;
/// Output accumulators per thread of [`SPLIT_MMA`], at most (4 per 16 x 8 tile): 128 keeps the
/// kernel within 255 registers, as V3's 64 heads x 512 columns over 8 warps need.
const MMA_MAX_ACCUMULATORS: u64 = 128;

/// The tiling of [`SPLIT_MMA`] for `h` heads, latent width `c` and rope width `r`.
pub(super) struct MmaTiles {
    /// 16-row tiles of heads per block: 1, 2 or 4.
    m_tiles: u64,
    pub heads: u64,
    /// The dot product's two parts (latent and rope), and their width padded to the 16 of an
    /// `mma` k-step.
    latent: u64,
    rope: u64,
    k_padded: u64,
    /// 8-column tiles of the output, and how many one warp owns (an even number: ldmatrix
    /// loads them in pairs).
    n_tiles: u64,
    per_warp: u64,
    pub shared_bytes: u32,
}

impl MmaTiles {
    /// `None` where the output accumulators or the shared memory would not fit.
    pub(super) fn new(h: u64, c: u64, r: u64) -> Option<MmaTiles> {
        let m_tiles = h.div_ceil(16).next_power_of_two().min(4);
        let heads = 16 * m_tiles;
        let k_padded = (c + r).div_ceil(16) * 16;
        let n_tiles = c.div_ceil(8);
        let per_warp = 2 * n_tiles.div_ceil(2).div_ceil(BLOCK / 32);
        let shared = 2 * (heads * (k_padded + 8) + 2 * MMA_KEYS * (k_padded + 8) + heads * (MMA_KEYS + 8))
            + 4 * (2 * (MMA_KEYS / 16) * heads + 2 * heads);
        let accumulators = 4 * m_tiles * per_warp;
        (c > 0 && accumulators <= MMA_MAX_ACCUMULATORS && shared <= MMA_MAX_SHARED).then_some(MmaTiles {
            m_tiles,
            heads,
            latent: c,
            rope: r,
            k_padded,
            n_tiles,
            per_warp,
            shared_bytes: shared as u32,
        })
    }

    /// Adds the template's variables to `vars` (which holds the parent's): the tiling, and the
    /// key tiles' loads, `copied` as stored from a bf16 cache or converted.
    pub(super) fn add_vars(&self, vars: &mut Vec<(&'static str, String)>, copied: bool) {
        let pad = self.k_padded - self.latent - self.rope;
        vars.extend([
            ("MT", self.m_tiles.to_string()),
            ("KP", self.k_padded.to_string()),
            ("KS", (self.k_padded + 8).to_string()),
            ("NK", MMA_KEYS.to_string()),
            ("NK16", (MMA_KEYS / 16).to_string()),
            ("PS", (MMA_KEYS + 8).to_string()),
            ("NT", self.n_tiles.to_string()),
            ("NPW", self.per_warp.to_string()),
            ("PAD", pad.to_string()),
        ]);
        let prepare = if copied && pad > 0 { fill(ZERO_PADDING, vars) } else { String::new() };
        let load = if copied { LOAD_COPIED } else { LOAD_CONVERTED };
        if copied {
            let rows =
                copy_rows(vars, "lat0", self.latent, 0) + &copy_rows(vars, "kpe0", self.rope, self.latent);
            vars.push(("COPY_ROWS", rows));
        }
        let load_at = |buf: &str, k0: &str| {
            let mut at = vars.clone();
            at.extend([("BUF", buf.to_string()), ("K0", k0.to_string())]);
            fill(load, &at)
        };
        let (first, next) = (load_at("0", "0"), load_at("buf ^ 1", &format!("k0 + {MMA_KEYS}")));
        // Copies in flight: wait for all but the next tile's (converted tiles are stored at once).
        let wait = |n: u32| if copied { format!("      sat_cp_async_wait<{n}>();") } else { String::new() };
        vars.extend([
            ("PREPARE_TILES", prepare),
            ("LOAD_FIRST", first),
            ("LOAD_NEXT", next),
            ("WAIT_ONE", wait(1)),
            ("WAIT_ALL", wait(0)),
        ]);
    }
}
