// saturn: device helpers shared by every generated kernel (no headers: NVRTC compiles this alone).
#define SAT_FULL_MASK 0xffffffffu
// A bf16 weight as stored (`--weights-dtype bf16`): the top half of an f32, read as that f32.
struct sat_bf16 {
  unsigned short bits;
  __device__ __forceinline__ operator float() const { return __uint_as_float((unsigned int)bits << 16); }
};
// Four bf16 weights loaded at once (8 bytes), as floats.
__device__ __forceinline__ float4 sat_bf16x4(uint2 q) {
  return make_float4(__uint_as_float(q.x << 16), __uint_as_float(q.x & 0xffff0000u),
                     __uint_as_float(q.y << 16), __uint_as_float(q.y & 0xffff0000u));
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
