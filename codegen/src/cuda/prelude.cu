// saturn: device helpers shared by every generated kernel (no headers: NVRTC compiles this alone).
#define SAT_FULL_MASK 0xffffffffu
// An f32 as bf16 bits, rounded to nearest even (NaN stays a quiet NaN), as the host rounds
// weights on upload (`half::bf16::from_f32`).
__device__ __forceinline__ unsigned int sat_bf16_bits(float f) {
  const unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
// A value stored as bf16 (bf16 weights, and the KV cache of tensor-core programs): the top half
// of an f32, read as that f32, written rounded to nearest even.
struct sat_bf16 {
  unsigned short bits;
  __device__ __forceinline__ operator float() const { return __uint_as_float((unsigned int)bits << 16); }
  __device__ __forceinline__ sat_bf16& operator=(float f) {
    bits = (unsigned short)sat_bf16_bits(f);
    return *this;
  }
};
// Four bf16 weights loaded at once (8 bytes), as floats.
__device__ __forceinline__ float4 sat_bf16x4(uint2 q) {
  return make_float4(__uint_as_float(q.x << 16), __uint_as_float(q.x & 0xffff0000u),
                     __uint_as_float(q.y << 16), __uint_as_float(q.y & 0xffff0000u));
}
// d[16x8] += a[16x16] b[16x8]: bf16 operands, f32 accumulators, one warp (`mma.sync` m16n8k16,
// A row-major, B column-major). Fragments as the PTX ISA lays them out, with g = lane / 4 and
// t = lane % 4: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
// a[3] = A[g+8][2t+8..]; b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]; d[0..1] = D[g][2t..2t+1],
// d[2..3] = D[g+8][2t..]. Every lane of the warp must call it (sm_80 and later).
__device__ __forceinline__ void sat_mma_bf16(float* d, const unsigned int* a, const unsigned int* b) {
#ifdef SAT_EMULATED
  // The emulator has no tensor cores: each lane gathers the rows of A and columns of B its four
  // results need from the lanes that hold them.
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  for (int q = 0; q < 4; ++q) {
    unsigned int ar[4], bc[2][2];
    for (int i = 0; i < 4; ++i) ar[i] = __shfl_sync(SAT_FULL_MASK, a[i], g * 4 + q);
    for (int j = 0; j < 2; ++j)
      for (int i = 0; i < 2; ++i) bc[j][i] = __shfl_sync(SAT_FULL_MASK, b[i], (2 * t + j) * 4 + q);
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 2; ++j) {
        float acc = d[2 * r + j];
        for (int half = 0; half < 2; ++half) {
          const unsigned int x = ar[r + 2 * half], y = bc[j][half];
          acc = fmaf(__uint_as_float(x << 16), __uint_as_float(y << 16), acc);
          acc = fmaf(__uint_as_float(x & 0xffff0000u), __uint_as_float(y & 0xffff0000u), acc);
        }
        d[2 * r + j] = acc;
      }
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
// Four 8 x 8 bf16 matrices from shared memory (`ldmatrix` .x4, sm_75 and later): lane `8m + i`
// gives the address of row i of matrix m (16 bytes, 16-byte aligned), and each lane gets, in
// r[m], row g = lane / 4, columns 2t..2t+1 (t = lane % 4) of matrix m: the layout of an mma
// fragment. Transposed (`sat_ldmatrix_x4_trans`), r[m] holds rows 2t and 2t+1 of column g.
// Every lane of the warp must call them.
template <bool Trans>
__device__ __forceinline__ void sat_ldmatrix(unsigned int* r, const unsigned short* row) {
#ifdef SAT_EMULATED
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  for (int m = 0; m < 4; ++m) {
    const auto row_of = [&](int i) {
      return (const unsigned short*)__shfl_sync(SAT_FULL_MASK, (unsigned long long)row, m * 8 + i);
    };
    unsigned int lo, hi;
    if (Trans) {
      lo = row_of(2 * t)[g];
      hi = row_of(2 * t + 1)[g];
    } else {
      const unsigned short* p = row_of(g);
      lo = p[2 * t];
      hi = p[2 * t + 1];
    }
    r[m] = lo | (hi << 16);
  }
#else
  const unsigned int a = (unsigned int)__cvta_generic_to_shared(row);
  if (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}
__device__ __forceinline__ void sat_ldmatrix_x4(unsigned int* r, const unsigned short* row) {
  sat_ldmatrix<false>(r, row);
}
__device__ __forceinline__ void sat_ldmatrix_x4_trans(unsigned int* r, const unsigned short* row) {
  sat_ldmatrix<true>(r, row);
}
// 16 bytes from global to shared memory without passing through registers (`cp.async`, sm_80
// and later), in groups: `sat_cp_async_commit` closes a group, `sat_cp_async_wait<N>` waits
// until at most N groups are in flight. The emulator copies at once.
__device__ __forceinline__ void sat_cp_async16(void* shared_dst, const void* global_src) {
#ifdef SAT_EMULATED
  std::memcpy(shared_dst, global_src, 16);
#else
  const unsigned int dst = (unsigned int)__cvta_generic_to_shared(shared_dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
#endif
}
__device__ __forceinline__ void sat_cp_async_commit() {
#ifndef SAT_EMULATED
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void sat_cp_async_wait() {
#ifndef SAT_EMULATED
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
__device__ __forceinline__ float sat_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float sat_silu(float x) { return x / (1.0f + expf(-x)); }
// max and min propagate NaN, as torch.maximum does.
__device__ __forceinline__ float sat_max(float a, float b) { return (a != a || a > b) ? a : b; }
__device__ __forceinline__ float sat_min(float a, float b) { return (a != a || a < b) ? a : b; }
// Whether value `a` at index `i` comes before value `b` at index `j` in a top-k: larger first,
// NaN last, ties to the lower index (the interpreter's `select_topk` order).
__device__ __forceinline__ bool sat_topk_before(float a, int i, float b, int j) {
  const bool an = a != a, bn = b != b;
  if (an != bn) return bn;
  if (!an && a != b) return a > b;
  return i < j;
}
__device__ __forceinline__ float sat_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SAT_FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float sat_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(SAT_FULL_MASK, v, o));
  return v;
}
// Block-wide reductions (blockDim.x a multiple of 32, at most 1024); `tmp` holds 32 floats of
// shared memory. Every thread of the block must call them and gets the result.
__device__ __forceinline__ float sat_block_sum(float v, float* tmp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = sat_warp_sum(v);
  __syncthreads();
  if (lane == 0) tmp[warp] = v;
  __syncthreads();
  v = lane < warps ? tmp[lane] : 0.0f;
  return sat_warp_sum(v);
}
__device__ __forceinline__ float sat_block_max(float v, float* tmp) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = sat_warp_max(v);
  __syncthreads();
  if (lane == 0) tmp[warp] = v;
  __syncthreads();
  v = lane < warps ? tmp[lane] : __int_as_float(0xff800000);
  return sat_warp_max(v);
}
