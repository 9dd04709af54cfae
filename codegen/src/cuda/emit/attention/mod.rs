//! `mla_decode_attention` split over the cached length (as FlashMLA does): a block per group of
//! heads, query and chunk of keys computes the chunk's scores, its max `m`, its sum `l` and its
//! unnormalised output; a second kernel rescales and adds the chunks of each (head, query).
//!
//! The heads of a block share each latent row they read (all heads attend to the same latent
//! cache), so the cache is read once per head group rather than once per head. Batch elements
//! (leading dims, each with its own cache) are the grid's third axis. Programs that accept
//! bf16 rounding run the split on tensor cores instead ([`tensor_cores`]); the combine is the
//! same.

use saturn_ir::{DType, Dim};

use super::index::c_float;
use super::{Bind, Group, KernelDef, NodeCtx, Param, fill};
use crate::CodegenError;
use crate::cuda::extent::Extent;

/// Keys per split.
const CHUNK: u64 = 256;
/// Threads per block (8 warps) of both kernels.
const BLOCK: u64 = 256;
/// At most this many heads share a block (one warp each for the softmax).
const MAX_HEADS_PER_BLOCK: u64 = 8;
/// Static shared memory a block may use, in floats (48 KiB).
const SHARED_FLOATS: u64 = 48 * 1024 / 4;
/// Streaming multiprocessors of the GPUs saturn targets (H100 and H200 SXM: 132). The
/// tensor-core split, one block per multiprocessor, splits the context into enough chunks to
/// give each a block; on a GPU with fewer, the blocks take more than one wave.
const DEVICE_SMS: u64 = 132;
/// Most chunks of the tensor-core split (a short context leaves the later ones empty).
const MAX_SPLITS: u64 = 64;

fn scratch(i: usize, name: &str, written: bool) -> Param {
    Param { cty: "float", name: name.into(), bind: Bind::Scratch(i), written }
}

/// The start of both split kernels: this block's head group, query, chunk of keys and batch
/// element; a chunk past the query's position writes an empty part and returns.
macro_rules! split_prologue {
    () => {
        r#"  const long long S = ${S}, T = ${T};
  const long long splits = ${SPLITS}, chunk = ${CHUNK_LEN};
  const int hg = (int)(blockIdx.x % ${HG});
  const long long s = blockIdx.x / ${HG};
  const long long split = blockIdx.y;
  // This batch element: its queries are heads bz * H.. of the flattened [B * H, S, ..].
  const long long bz = blockIdx.z;
  const long long t0 = split * chunk;
  // Query s sits at position s + T - S and sees keys up to there.
  const long long pos = s + T - S;
  long long t1 = t0 + chunk;
  if (t1 > T) t1 = T;
  if (t1 > pos + 1) t1 = pos + 1;
  const int nk = t1 > t0 ? (int)(t1 - t0) : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (nk == 0) {
    if (tid < ${HB} && hg * ${HB} + tid < ${H}) {
      const long long at = ((bz * ${H} + hg * ${HB} + tid) * S + s) * splits + split;
      m_part[at] = __int_as_float(0xff800000);
      l_part[at] = 0.0f;
    }
    return;
  }
"#
    };
}

// After `split_prologue`, which the tensor-core split shares.
mod tensor_cores;

use tensor_cores::{MMA_KEYS, MmaTiles, SPLIT_MMA};

const SPLIT: &str = concat!(
    split_prologue!(),
    r#"  __shared__ float qs[${HB}][${C}];
  __shared__ float qr[${HB}][${RS}];
  __shared__ float sc[${HB}][${CHUNK}];
  for (int i = tid; i < ${HB} * ${C}; i += ${BLOCK}) {
    const int hh = i / ${C}, c = i % ${C}, h = hg * ${HB} + hh;
    qs[hh][c] = h < ${H} ? q_latent[((bz * ${H} + h) * S + s) * ${C} + c] : 0.0f;
  }
  for (int i = tid; i < ${HB} * ${R}; i += ${BLOCK}) {
    const int hh = i / ${R}, c = i % ${R}, h = hg * ${HB} + hh;
    qr[hh][c] = h < ${H} ? q_rope[((bz * ${H} + h) * S + s) * ${R} + c] : 0.0f;
  }
  // The cache as stored (f32, or bf16 read as f32).
  const auto* lat0 = latent + (bz * T + t0) * ${C};
  const auto* kpe0 = k_pe + (bz * T + t0) * ${R};
  __syncthreads();
  // Scores: a warp per key, its lanes along the row, every head of the block at once.
  for (int kk = warp; kk < nk; kk += ${WARPS}) {
    float d[${HB}];
#pragma unroll
    for (int hh = 0; hh < ${HB}; ++hh) d[hh] = 0.0f;
    const auto* lt = lat0 + kk * ${C};
    for (int c = lane; c < ${C}; c += 32) {
      const float v = lt[c];
#pragma unroll
      for (int hh = 0; hh < ${HB}; ++hh) d[hh] = fmaf(qs[hh][c], v, d[hh]);
    }
    const auto* kt = kpe0 + kk * ${R};
    for (int c = lane; c < ${R}; c += 32) {
      const float v = kt[c];
#pragma unroll
      for (int hh = 0; hh < ${HB}; ++hh) d[hh] = fmaf(qr[hh][c], v, d[hh]);
    }
#pragma unroll
    for (int hh = 0; hh < ${HB}; ++hh) {
      const float v = sat_warp_sum(d[hh]);
      if (lane == 0) sc[hh][kk] = v * ${SCALE};
    }
  }
  __syncthreads();
  // The chunk's max and sum per head: warp hh for head hh; scores become exp(score - m).
  if (warp < ${HB}) {
    float m = __int_as_float(0xff800000);
    for (int kk = lane; kk < nk; kk += 32) m = fmaxf(m, sc[warp][kk]);
    m = sat_warp_max(m);
    float l = 0.0f;
    for (int kk = lane; kk < nk; kk += 32) {
      const float p = expf(sc[warp][kk] - m);
      sc[warp][kk] = p;
      l += p;
    }
    l = sat_warp_sum(l);
    const int h = hg * ${HB} + warp;
    if (lane == 0 && h < ${H}) {
      const long long at = ((bz * ${H} + h) * S + s) * splits + split;
      m_part[at] = m;
      l_part[at] = l;
    }
  }
  __syncthreads();
  // The chunk's unnormalised output: a thread per latent column, every head of the block.
  const long long stride = S * splits;
  float* o0 = o_part + (((bz * ${H} + hg * ${HB}) * S + s) * splits + split) * ${C};
  for (int c = tid; c < ${C}; c += ${BLOCK}) {
    const auto* lc = lat0 + c;
    float acc[${HB}];
#pragma unroll
    for (int hh = 0; hh < ${HB}; ++hh) acc[hh] = 0.0f;
    for (int kk = 0; kk < nk; ++kk) {
      const float v = lc[kk * ${C}];
#pragma unroll
      for (int hh = 0; hh < ${HB}; ++hh) acc[hh] = fmaf(sc[hh][kk], v, acc[hh]);
    }
#pragma unroll
    for (int hh = 0; hh < ${HB}; ++hh) {
      if (hg * ${HB} + hh < ${H}) o0[hh * stride * ${C} + c] = acc[hh];
    }
  }
"#
);

/// Combines the chunks a query sees (the chunks past its position were never written); a query
/// that sees no key gives zeros, as in the interpreter. A block per (batch, head, query) row.
const COMBINE: &str = r#"  const long long S = ${S}, T = ${T};
  const long long splits = ${SPLITS}, chunk = ${CHUNK_LEN};
  const long long row = blockIdx.x, s = row % S;
  const long long pos = s + T - S;
  const int tid = threadIdx.x;
  float* o = out + row * ${C};
  if (pos < 0) {
    for (int c = tid; c < ${C}; c += ${BLOCK}) o[c] = 0.0f;
    return;
  }
  const long long n = pos / chunk + 1;
  const float* mp = m_part + row * splits;
  const float* lp = l_part + row * splits;
  __shared__ float red[32];
  __shared__ float wsh[${BLOCK}];
  float m = __int_as_float(0xff800000);
  for (long long i = tid; i < n; i += ${BLOCK}) m = fmaxf(m, mp[i]);
  m = sat_block_max(m, red);
  float l = 0.0f;
  for (long long i = tid; i < n; i += ${BLOCK}) l += expf(mp[i] - m) * lp[i];
  l = sat_block_sum(l, red);
  float acc[${CJ}];
#pragma unroll
  for (int j = 0; j < ${CJ}; ++j) acc[j] = 0.0f;
  for (long long i0 = 0; i0 < n; i0 += ${BLOCK}) {
    __syncthreads();
    if (i0 + tid < n) wsh[tid] = expf(mp[i0 + tid] - m);
    __syncthreads();
    const int nb = n - i0 < ${BLOCK} ? (int)(n - i0) : ${BLOCK};
    for (int i = 0; i < nb; ++i) {
      const float w = wsh[i];
      const float* op = o_part + (row * splits + i0 + i) * ${C};
#pragma unroll
      for (int j = 0; j < ${CJ}; ++j) {
        const int c = tid + ${BLOCK} * j;
        if (c < ${C}) acc[j] = fmaf(w, op[c], acc[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < ${CJ}; ++j) {
    const int c = tid + ${BLOCK} * j;
    if (c < ${C}) o[c] = acc[j] / l;
  }
"#;

/// `mla_decode_attention`: the split kernel over (head group x query, chunk, batch), then the
/// combine over (batch x head x query). Scratch: the chunks' max, sum and output per (batch,
/// head, query). With `ctx.tensor_cores`, the split runs on tensor cores ([`SPLIT_MMA`]) where
/// its tiles fit.
pub(super) fn mla_decode_attention(ctx: &NodeCtx, scale: f64) -> Result<Group, CodegenError> {
    let (q, qr, lat) = (&ctx.operands[0].shape, &ctx.operands[1].shape, &ctx.operands[2].shape);
    // Leading batch dims (the type checker made them the same on every operand).
    let nb = q.len() - 3;
    let batch = Extent::of(q[..nb].iter().cloned());
    let (h, c, r) = (
        ctx.constant(&q[nb], "the head count")?,
        ctx.constant(&q[nb + 2], "the latent width")?,
        ctx.constant(&qr[nb + 2], "the rope width")?,
    );
    let (s, t) = (&q[nb + 1], &lat[nb]);
    let mma = ctx.tensor_cores.then(|| MmaTiles::new(h, c, r)).flatten();
    let hb = match &mma {
        Some(m) => m.heads,
        None => {
            let per_head = c + r.max(1) + CHUNK;
            MAX_HEADS_PER_BLOCK.min(h).min(SHARED_FLOATS / per_head)
        }
    };
    if hb == 0 {
        return Err(ctx.unsupported(format!("a latent width of {c} does not fit shared memory")));
    }
    let hg = h.div_ceil(hb);
    // The f32 split holds a chunk's scores in shared memory: chunks of CHUNK keys, as many as
    // the context needs. The tensor-core split keeps a running softmax over tiles, so its
    // chunks can be as long as the context: a fixed number of them, enough to fill the GPU
    // (partial outputs cost traffic, so no more).
    let splits = mma.as_ref().map(|_| {
        let known = |d: &Dim| d.as_const().unwrap_or(1);
        let per_split = hg * q[..nb].iter().map(known).product::<u64>() * known(s);
        (DEVICE_SMS / per_split.max(1)).clamp(1, MAX_SPLITS)
    });
    let (splits_c, chunk_c) = match splits {
        Some(n) => (n.to_string(), format!("(((T + {n} - 1) / {n} + {k} - 1) / {k} * {k})", k = MMA_KEYS)),
        None => (format!("((T + {CHUNK} - 1) / {CHUNK})"), CHUNK.to_string()),
    };
    let mut vars = vec![
        ("SPLITS", splits_c),
        ("CHUNK_LEN", chunk_c),
        ("S", ctx.dim(s)),
        ("T", ctx.dim(t)),
        ("H", h.to_string()),
        ("C", c.to_string()),
        ("R", r.to_string()),
        ("RS", r.max(1).to_string()),
        ("HB", hb.to_string()),
        ("HG", hg.to_string()),
        ("CJ", c.div_ceil(BLOCK).max(1).to_string()),
        ("CHUNK", CHUNK.to_string()),
        ("BLOCK", BLOCK.to_string()),
        ("WARPS", (BLOCK / 32).to_string()),
        ("SCALE", c_float(scale as f32)),
    ];
    if let Some(m) = &mma {
        // A bf16 cache whose rows split into 16-byte pieces is copied as stored.
        let copied = ctx.stored[2] == DType::BF16 && ctx.stored[3] == DType::BF16 && c % 8 == 0 && r % 8 == 0;
        m.add_vars(&mut vars, copied);
    }
    // Splits per (head, query): the fixed count, or ceil(T / CHUNK) <= (T + CHUNK - 1) / CHUNK.
    let padded = t.add(&Dim::constant(CHUNK - 1));
    let per_split = |floats: u64| match splits {
        Some(n) => Extent::of(q[..nb].iter().cloned().chain([s.clone()])).times(4 * h * floats * n),
        None => Extent::of(q[..nb].iter().cloned().chain([s.clone(), padded.clone()]))
            .times(4 * h * floats)
            .ceil_div(CHUNK),
    };
    let split_grid = match splits {
        Some(n) => Extent::one().times(n),
        None => Extent::of([t.clone()]).ceil_div(CHUNK),
    };
    let split = KernelDef {
        stem: if mma.is_some() { "mla_decode_split_mma" } else { "mla_decode_split" }.into(),
        params: vec![
            ctx.operand(0, "q_latent"),
            ctx.operand(1, "q_rope"),
            ctx.operand(2, "latent"),
            ctx.operand(3, "k_pe"),
            scratch(0, "m_part", true),
            scratch(1, "l_part", true),
            scratch(2, "o_part", true),
        ],
        body: fill(if mma.is_some() { SPLIT_MMA } else { SPLIT }, &vars),
        block: BLOCK as u32,
        grid: [Extent::of([s.clone()]).times(hg), split_grid, batch],
        shared_bytes: mma.as_ref().map_or(0, |m| m.shared_bytes),
        globals: String::new(),
    };
    let combine = KernelDef {
        stem: "mla_decode_combine".into(),
        params: vec![
            scratch(0, "m_part", false),
            scratch(1, "l_part", false),
            scratch(2, "o_part", false),
            ctx.out(),
        ],
        body: fill(COMBINE, &vars),
        block: BLOCK as u32,
        grid: [Extent::of(q[..nb].iter().cloned().chain([s.clone()])).times(h), Extent::one(), Extent::one()],
        shared_bytes: 0,
        globals: String::new(),
    };
    Ok(Group::kernels(vec![split, combine], vec![per_split(1), per_split(1), per_split(c)]))
}
