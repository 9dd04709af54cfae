//! The split kernel of `mla_decode_attention` on tensor cores ([`SPLIT_MMA`]): its template,
//! the loads of its key tiles, and its tiling ([`MmaTiles`]). The combine kernel and the
//! choice between this and the f32 split are the parent's.

use super::{BLOCK, fill};

/// [`SPLIT`] on tensor cores (bf16 operands, f32 accumulators), for tensor-core programs
/// (`CudaOptions::tensor_cores`): the block's heads (up to 64, in 16-row tiles)
/// and a tile of keys meet in `mma.sync` products, scores and output alike, with an online
/// softmax across the chunk's key tiles (FlashMLA's structure). Queries and key tiles are
/// rounded to bf16 in shared memory; warp `w` owns rows `16 * (w % MT)..` of the output and
/// a `1 / (8 / MT)` share of its columns, in registers.
pub(super) const SPLIT_MMA: &str = concat!(
    split_prologue!(),
    r#"  const int g = lane >> 2, t = lane & 3;
  // Shared memory: queries [HB][KS] and two key tiles [2][NK][KS] as bf16 (latent, then rope,
  // then zeros up to KP; rows padded to KS so fragment loads spread over the banks), the tile's
  // probabilities [HB][PS] as bf16, its scores [HB][NK], and per head the running max, sum and
  // the factor that rescales the output.
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned short* qs = (unsigned short*)smem;
  unsigned short* ks = qs + ${HB} * ${KS};
  unsigned short* ps = ks + 2 * ${NK} * ${KS};
  float* sc = (float*)(ps + ${HB} * ${PS});
  float* mrow = sc + ${HB} * ${NK};
  float* lrow = mrow + ${HB};
  float* alpha = lrow + ${HB};
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
  const int mt = warp % ${MT}, part = warp / ${MT};
  float acc[${NPW}][4];
#pragma unroll
  for (int j = 0; j < ${NPW}; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
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
    // Scores, scaled: a warp per 16 x 8 tile of (heads, keys).
    for (int tile = warp; tile < ${MT} * ${NK8}; tile += ${WARPS}) {
      const int tm = tile / ${NK8}, tn = tile % ${NK8};
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const unsigned short* qa = qs + (tm * 16 + g) * ${KS} + 2 * t;
      const unsigned short* kb = kt + (tn * 8 + g) * ${KS} + 2 * t;
      for (int c0 = 0; c0 < ${KP}; c0 += 16) {
        unsigned int a[4], b[2];
        a[0] = *(const unsigned int*)(qa + c0);
        a[1] = *(const unsigned int*)(qa + 8 * ${KS} + c0);
        a[2] = *(const unsigned int*)(qa + c0 + 8);
        a[3] = *(const unsigned int*)(qa + 8 * ${KS} + c0 + 8);
        b[0] = *(const unsigned int*)(kb + c0);
        b[1] = *(const unsigned int*)(kb + c0 + 8);
        sat_mma_bf16(d, a, b);
      }
      float* o = sc + (tm * 16 + g) * ${NK} + tn * 8 + 2 * t;
      o[0] = d[0] * ${SCALE};
      o[1] = d[1] * ${SCALE};
      o[8 * ${NK}] = d[2] * ${SCALE};
      o[8 * ${NK} + 1] = d[3] * ${SCALE};
    }
    __syncthreads();
    // Online softmax: four threads per head, each over NK / 4 keys of the tile.
    {
      const int row = tid >> 2, sub = tid & 3;
      const bool live = row < ${HB};
      float v[${KPT}];
      float mx = __int_as_float(0xff800000);
#pragma unroll
      for (int j = 0; j < ${KPT}; ++j) {
        const int kk = sub * ${KPT} + j;
        v[j] = live && kk < nkt ? sc[row * ${NK} + kk] : __int_as_float(0xff800000);
        mx = fmaxf(mx, v[j]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(SAT_FULL_MASK, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(SAT_FULL_MASK, mx, 2));
      const float m_old = live ? mrow[row] : 0.0f;
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < ${KPT}; ++j) {
        const int kk = sub * ${KPT} + j;
        // The sum adds the probabilities as rounded, as the output's product uses them.
        const unsigned int p = live && kk < nkt ? sat_bf16_bits(expf(v[j] - m_new)) : 0u;
        if (live) ps[row * ${PS} + kk] = (unsigned short)p;
        sum += __uint_as_float(p << 16);
      }
      sum += __shfl_xor_sync(SAT_FULL_MASK, sum, 1);
      sum += __shfl_xor_sync(SAT_FULL_MASK, sum, 2);
      if (live && sub == 0) {
        const float a = expf(m_old - m_new);
        alpha[row] = a;
        mrow[row] = m_new;
        lrow[row] = lrow[row] * a + sum;
      }
    }
    __syncthreads();
    // Output: rescale by the new max, then add probabilities x the tile's latent rows.
    {
      const float a0 = alpha[mt * 16 + g], a1 = alpha[mt * 16 + g + 8];
#pragma unroll
      for (int j = 0; j < ${NPW}; ++j) {
        acc[j][0] *= a0;
        acc[j][1] *= a0;
        acc[j][2] *= a1;
        acc[j][3] *= a1;
      }
      const unsigned short* pa = ps + (mt * 16 + g) * ${PS} + 2 * t;
#pragma unroll
      for (int kk0 = 0; kk0 < ${NK}; kk0 += 16) {
        unsigned int a[4];
        a[0] = *(const unsigned int*)(pa + kk0);
        a[1] = *(const unsigned int*)(pa + 8 * ${PS} + kk0);
        a[2] = *(const unsigned int*)(pa + kk0 + 8);
        a[3] = *(const unsigned int*)(pa + 8 * ${PS} + kk0 + 8);
        const unsigned short* vb = kt + (kk0 + 2 * t) * ${KS} + part * ${NPW} * 8 + g;
#pragma unroll
        for (int j = 0; j < ${NPW}; ++j) {
          if (part * ${NPW} + j < ${NT}) {
            const unsigned short* v = vb + j * 8;
            unsigned int b[2];
            b[0] = (unsigned int)v[0] | ((unsigned int)v[${KS}] << 16);
            b[1] = (unsigned int)v[8 * ${KS}] | ((unsigned int)v[9 * ${KS}] << 16);
            sat_mma_bf16(acc[j], a, b);
          }
        }
      }
    }
    // This tile's keys and probabilities are no longer read.
    __syncthreads();
  }
  // The chunk's unnormalised output, max and sum per head.
  const long long stride = S * splits * ${C};
  float* o0 = o_part + (((bz * ${H} + hg * ${HB}) * S + s) * splits + split) * ${C};
  const int h0 = mt * 16 + g;
#pragma unroll
  for (int j = 0; j < ${NPW}; ++j) {
    const int col = (part * ${NPW} + j) * 8 + 2 * t;
    if (part * ${NPW} + j < ${NT}) {
      for (int r = 0; r < 2; ++r) {
        const int hh = h0 + 8 * r;
        if (hg * ${HB} + hh < ${H}) {
          if (col < ${C}) o0[hh * stride + col] = acc[j][2 * r];
          if (col + 1 < ${C}) o0[hh * stride + col + 1] = acc[j][2 * r + 1];
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
/// zero rows past the chunk. Padding columns are zeroed once, by [`ZERO_PADDING`].
const LOAD_COPIED: &str = r#"  {
    unsigned short* kt = ks + (${BUF}) * ${NK} * ${KS};
    const int kb0 = ${K0}, nkt = nk - kb0 < ${NK} ? nk - kb0 : ${NK};
    const int latent_pieces = ${C} / 8, pieces = (${C} + ${R}) / 8;
    for (int i = tid; i < ${NK} * pieces; i += ${BLOCK}) {
      const int kk = i / pieces, v = i % pieces;
      unsigned short* dst = kt + kk * ${KS} + v * 8;
      if (kk < nkt) {
        const long long key = kb0 + kk;
        if (v < latent_pieces) sat_cp_async16(dst, lat0 + key * ${C} + v * 8);
        else sat_cp_async16(dst, kpe0 + key * ${R} + (v - latent_pieces) * 8);
      } else {
        unsigned int* z = (unsigned int*)dst;
        z[0] = z[1] = z[2] = z[3] = 0u;
      }
    }
    sat_cp_async_commit();
  }
"#;

/// Zeroes the padding columns `C + R..KP` of both key buffers (`PAD` of them), which
/// [`LOAD_COPIED`] never writes.
const ZERO_PADDING: &str = r#"  for (int i = tid; i < 2 * ${NK} * ${PAD}; i += ${BLOCK}) {
    ks[(i / ${PAD}) * ${KS} + ${C} + ${R} + i % ${PAD}] = 0;
  }
"#;

/// Keys per tensor-core tile of [`SPLIT_MMA`] (two k-steps of the output product).
const MMA_KEYS: u64 = 32;
/// Dynamic shared memory [`SPLIT_MMA`] may use: what an sm_80 block can opt into (163 KiB;
/// DeepSeek-V3's 64 heads x 576 wide with two key tiles take 159.75 KiB).
const MMA_MAX_SHARED: u64 = 163 * 1024;
/// Output accumulators per thread of [`SPLIT_MMA`], at most (4 per 16 x 8 tile): 128 keeps the
/// kernel within 255 registers, as V3's 64 heads x 512 columns over 8 warps need.
const MMA_MAX_ACCUMULATORS: u64 = 128;

/// The tiling of [`SPLIT_MMA`] for `h` heads, latent width `c` and rope width `r`.
pub(super) struct MmaTiles {
    /// 16-row tiles of heads per block: 1, 2 or 4 (8 warps split evenly among them).
    m_tiles: u64,
    pub heads: u64,
    /// The dot-product width (latent and rope), and padded to the 16 of an `mma` k-step.
    width: u64,
    k_padded: u64,
    /// 8-column tiles of the output, and how many one warp owns.
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
        let per_warp = n_tiles.div_ceil(BLOCK / 32 / m_tiles);
        let shared = 2 * (heads * (k_padded + 8) + 2 * MMA_KEYS * (k_padded + 8) + heads * (MMA_KEYS + 8))
            + 4 * (heads * MMA_KEYS + 3 * heads);
        (c > 0 && 4 * per_warp <= MMA_MAX_ACCUMULATORS && shared <= MMA_MAX_SHARED).then_some(MmaTiles {
            m_tiles,
            heads,
            width: c + r,
            k_padded,
            n_tiles,
            per_warp,
            shared_bytes: shared as u32,
        })
    }

    /// Adds the template's variables to `vars` (which holds the parent's): the tiling, and the
    /// key tiles' loads, `copied` as stored from a bf16 cache or converted.
    pub(super) fn add_vars(&self, vars: &mut Vec<(&'static str, String)>, copied: bool) {
        let pad = self.k_padded - self.width;
        vars.extend([
            ("MT", self.m_tiles.to_string()),
            ("KP", self.k_padded.to_string()),
            ("KS", (self.k_padded + 8).to_string()),
            ("NK", MMA_KEYS.to_string()),
            ("NK8", (MMA_KEYS / 8).to_string()),
            ("PS", (MMA_KEYS + 8).to_string()),
            ("KPT", (MMA_KEYS / 4).to_string()),
            ("NT", self.n_tiles.to_string()),
            ("NPW", self.per_warp.to_string()),
            ("PAD", pad.to_string()),
        ]);
        let prepare = if copied && pad > 0 { fill(ZERO_PADDING, vars) } else { String::new() };
        let load = if copied { LOAD_COPIED } else { LOAD_CONVERTED };
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
