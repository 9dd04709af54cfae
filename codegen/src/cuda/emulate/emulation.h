// saturn: generated CUDA C compiled as C++17 by g++, for the CPU emulator (a test executor:
// see emulate/mod.rs). The CUDA keywords become C++, and the threads of a block run as fibers
// on the calling OS thread under a small scheduler:
//   - a fiber runs until it exits, reaches __syncthreads (a block barrier) or a warp operation
//     (a shuffle, vote or __syncwarp: its lanes exchange values), then the next ready one runs;
//   - once no fiber is ready, a warp operation completes when every live lane its mask names has
//     reached it (same operation, same mask), and the block barrier releases when every live
//     fiber of the block waits at it; if nothing can complete, the launch fails (a deadlock or a
//     divergent barrier), as it would hang or be undefined on a GPU.
// A fiber is started on its own stack once (makecontext/setcontext) and then switched with
// _setjmp/_longjmp, which unlike swapcontext make no system call (10x faster); after a turn it
// waits for the next block of any launch. Switches happen only in `park` and `resume`, calls
// the compiler cannot see through, so no fiber keeps a shared value in registers across one.
// Blocks run one after another, so `__shared__` variables are block-scope `thread_local`s
// (static storage per OS thread: concurrent tests may launch the same library from several
// threads). `extern __shared__ T name[];` is rewritten by the emulator to
// `SAT_DYNAMIC_SHARED(T, name);`, a pointer to this launch's dynamic shared memory.
#pragma once
#undef _FORTIFY_SOURCE  // its longjmp check rejects jumps between fiber stacks
#include <csetjmp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <type_traits>
#include <ucontext.h>
#include <utility>

// Lets shared device code choose an emulated path (tensor-core instructions).
#define SAT_EMULATED 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local
#define __constant__ const
// Dropped: the fibers of a block reach shared global memory through their own copies of a
// pointer, which `__restrict__` would let g++ keep in registers across a barrier.
#define __restrict__

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
struct __align__(8) float2 { float x, y; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
constexpr int warpSize = 32;

// The running thread's coordinates: set by the scheduler before it resumes a fiber.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

// Math: <cmath> has the f32 functions (expf, logf, sqrtf, fmaxf, tanhf, ...); CUDA's extras.
using std::isfinite;
using std::isinf;
using std::isnan;
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
// CUDA's overloaded min/max: float ones ignore NaN (fminf/fmaxf), integer ones compare.
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) return std::fmin(T(a), T(b));
  else return T(b) < T(a) ? T(b) : T(a);
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) return std::fmax(T(a), T(b));
  else return T(a) < T(b) ? T(b) : T(a);
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline void __threadfence() {}
inline void __threadfence_block() {}
// Atomics: the threads of a launch never run at the same time, so plain updates are atomic.
template <class T, class V> inline T atomicAdd(T* p, V v) { T old = *p; *p = T(old + v); return old; }
template <class T, class V> inline T atomicSub(T* p, V v) { T old = *p; *p = T(old - v); return old; }
template <class T, class V> inline T atomicMax(T* p, V v) { T old = *p; *p = max(old, T(v)); return old; }
template <class T, class V> inline T atomicMin(T* p, V v) { T old = *p; *p = min(old, T(v)); return old; }
template <class T, class V> inline T atomicExch(T* p, V v) { T old = *p; *p = T(v); return old; }
template <class T, class V> inline T atomicOr(T* p, V v) { T old = *p; *p = T(old | v); return old; }
template <class T, class V> inline T atomicAnd(T* p, V v) { T old = *p; *p = T(old & v); return old; }
template <class T, class C, class V> inline T atomicCAS(T* p, C cmp, V v) {
  T old = *p;
  if (old == T(cmp)) *p = T(v);
  return old;
}

namespace sat_emu {

enum class State : unsigned char { Ready, AtBarrier, AtWarp, Done };
enum class WarpOp : unsigned char { Idx, Xor, Down, Up, Ballot, Any, All, Sync };
const char* const kWarpOpNames[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync",
                                    "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};

// Bytes of each fiber's stack, and of the inaccessible guard page below it (an overflow faults
// instead of corrupting the neighbour's stack).
constexpr size_t kStack = 64 * 1024, kGuard = 4096;
constexpr unsigned kMaxThreads = 1024;

struct Fiber {
  jmp_buf at;       // where it parked
  ucontext_t start; // its first start on its stack
  bool started;     // it waits in `fiber_main` for the next block (else it starts afresh)
  State state;
  // The pending warp operation and its result.
  WarpOp op;
  unsigned mask;
  int arg, width;
  uint64_t value, result;
};

// Per OS thread: fibers and their stacks, allocated on first use and kept for later launches.
struct Pool {
  Fiber* fibers = nullptr;
  char* stacks = nullptr;
  unsigned char* shared = nullptr;
  size_t shared_cap = 0;
  ~Pool() {
    delete[] fibers;
    if (stacks) munmap(stacks, kMaxThreads * (kStack + kGuard));
    std::free(shared);
  }
  bool ready() {
    if (fibers) return true;
    const size_t bytes = kMaxThreads * (kStack + kGuard);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    stacks = static_cast<char*>(p);
    for (unsigned i = 0; i < kMaxThreads; i++) mprotect(stacks + i * (kStack + kGuard), kGuard, PROT_NONE);
    fibers = new Fiber[kMaxThreads]();
    return true;
  }
};

// The launch running on this OS thread.
struct Launch {
  Fiber* fibers;
  unsigned n, current;
  jmp_buf scheduler;
  void (*body)(void*);
  void* env;
  unsigned char* shared;
  char* error;
  size_t error_len;
  bool failed;
};

inline thread_local Pool pool;
inline thread_local Launch* running = nullptr;

inline Fiber& me() { return running->fibers[running->current]; }

// Records the launch's first failure.
template <class... A> inline void fail(const char* fmt, A... a) {
  if (running->failed) return;
  running->failed = true;
  std::snprintf(running->error, running->error_len, fmt, a...);
}

// Parks the running fiber in `state` and returns to the scheduler; returns when resumed.
__attribute__((noinline)) inline void park(State state) {
  Fiber& f = me();
  f.state = state;
  if (!_setjmp(f.at)) _longjmp(running->scheduler, 1);
}

// A fiber's life: one thread of a block per turn, for every block of every launch.
inline void fiber_main() {
  for (;;) {
    running->body(running->env);
    park(State::Done);
  }
}

// Runs fiber `i` until it parks.
__attribute__((noinline)) inline void resume(Launch& l, unsigned i) {
  Fiber& f = l.fibers[i];
  l.current = i;
  threadIdx = {i, 0, 0};
  if (_setjmp(l.scheduler)) return;
  if (f.started) _longjmp(f.at, 1);
  f.started = true;
  getcontext(&f.start);
  f.start.uc_stack.ss_sp = pool.stacks + i * (kStack + kGuard) + kGuard;
  f.start.uc_stack.ss_size = kStack;
  f.start.uc_link = nullptr;
  makecontext(&f.start, fiber_main, 0);
  setcontext(&f.start);
}

inline unsigned char* dynamic_shared() { return running->shared; }

// A warp operation by the running lane: posts its part, waits for the others, gets the result.
inline uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Fiber& f = me();
  f.op = op, f.mask = mask, f.value = value, f.arg = arg, f.width = width;
  park(State::AtWarp);
  return me().result;
}

// The lane whose value `lane` receives from a shuffle (itself when out of its segment).
inline unsigned source_lane(const Fiber& f, unsigned lane) {
  const unsigned w = (f.width > 0 && f.width <= 32) ? unsigned(f.width) : 32u, base = lane & ~(w - 1);
  switch (f.op) {
    case WarpOp::Idx: return base + (unsigned(f.arg) & (w - 1));
    case WarpOp::Xor: { unsigned s = lane ^ unsigned(f.arg); return (s & ~(w - 1)) == base ? s : lane; }
    case WarpOp::Down: { unsigned s = lane + unsigned(f.arg); return s < base + w ? s : lane; }
    case WarpOp::Up: return lane >= base + unsigned(f.arg) ? lane - unsigned(f.arg) : lane;
    default: return lane;
  }
}

// Completes the warp operation that warp `w`'s lane `leader` waits at, if every live lane its
// mask names has arrived. Returns whether it did; sets the launch's error on a misuse.
inline bool complete_warp(Launch& l, unsigned w, unsigned leader) {
  const Fiber& lf = l.fibers[leader];
  const unsigned first = w * 32, end = first + 32 < l.n ? first + 32 : l.n;
  if (!(lf.mask >> (leader - first) & 1u)) {
    fail("thread %u calls %s with a mask (0x%08x) that leaves itself out", leader, kWarpOpNames[int(lf.op)], lf.mask);
    return false;
  }
  unsigned arrived = 0;
  for (unsigned t = first; t < end; t++) {
    if (!(lf.mask >> (t - first) & 1u)) continue;
    const Fiber& f = l.fibers[t];
    if (f.state == State::Done) {
      fail("thread %u exited before %s (mask 0x%08x) of thread %u", t, kWarpOpNames[int(lf.op)], lf.mask, leader);
      return false;
    }
    if (f.state != State::AtWarp) return false;
    if (f.op != lf.op || f.mask != lf.mask) {
      fail("threads %u and %u of one warp meet at different warp operations (%s mask 0x%08x, %s mask 0x%08x)", leader,
           t, kWarpOpNames[int(lf.op)], lf.mask, kWarpOpNames[int(f.op)], f.mask);
      return false;
    }
    arrived |= 1u << (t - first);
  }
  unsigned votes = 0;
  for (unsigned t = first; t < end; t++)
    if ((arrived >> (t - first) & 1u) && l.fibers[t].value) votes |= 1u << (t - first);
  for (unsigned t = first; t < end; t++) {
    if (!(arrived >> (t - first) & 1u)) continue;
    Fiber& f = l.fibers[t];
    switch (f.op) {
      case WarpOp::Ballot: f.result = votes; break;
      case WarpOp::Any: f.result = votes != 0; break;
      case WarpOp::All: f.result = votes == arrived; break;
      case WarpOp::Sync: f.result = 0; break;
      default: {
        const unsigned s = source_lane(f, t - first) + first;
        if (s >= end || !(arrived >> (s - first) & 1u)) {
          fail("thread %u reads thread %u in %s, which does not take part (mask 0x%08x)", t, s, kWarpOpNames[int(f.op)],
               f.mask);
          return false;
        }
        f.result = l.fibers[s].value;
      }
    }
  }
  for (unsigned t = first; t < end; t++)
    if (arrived >> (t - first) & 1u) l.fibers[t].state = State::Ready;
  return true;
}

// Runs one block to completion; false on a failure (recorded in `l.error`).
inline bool run_block(Launch& l) {
  for (unsigned i = 0; i < l.n; i++) l.fibers[i].state = State::Ready;
  for (;;) {
    // Run every ready fiber until it parks or exits.
    for (unsigned i = 0; i < l.n; i++) {
      if (l.fibers[i].state != State::Ready) continue;
      resume(l, i);
      if (l.failed) return false;
    }
    // Nothing is ready: complete warp operations, else release the block barrier.
    bool progress = false, live = false, all_at_barrier = true;
    for (unsigned i = 0; i < l.n; i++) {
      const State s = l.fibers[i].state;
      live |= s != State::Done;
      all_at_barrier &= s == State::Done || s == State::AtBarrier;
      if (s == State::AtWarp) progress |= complete_warp(l, i / 32, i);
      if (l.failed) return false;
    }
    if (!live) return true;
    if (progress) continue;
    if (all_at_barrier) {
      for (unsigned i = 0; i < l.n; i++)
        if (l.fibers[i].state == State::AtBarrier) l.fibers[i].state = State::Ready;
      continue;
    }
    for (unsigned i = 0; i < l.n; i++) {
      if (l.fibers[i].state != State::AtWarp) continue;
      fail("deadlock: thread %u waits at %s (mask 0x%08x) while others of its block wait at __syncthreads", i,
           kWarpOpNames[int(l.fibers[i].op)], l.fibers[i].mask);
      break;
    }
    return false;
  }
}

// Runs a grid of `threads`-thread blocks, each thread calling `body(env)`. Returns 0, or 1 with
// a message in `error`.
inline int run_grid(void (*body)(void*), void* env, const unsigned* grid, unsigned threads, unsigned shared_bytes,
                    char* error, size_t error_len) {
  Launch l{};
  l.body = body, l.env = env, l.n = threads, l.error = error, l.error_len = error_len;
  Launch* const outer = running;
  running = &l;
  struct Restore { Launch* outer; ~Restore() { running = outer; } } restore{outer};
  if (outer) return fail("a kernel launched from a kernel"), 1;
  if (threads == 0 || threads > kMaxThreads) return fail("%u threads per block (1 to %u)", threads, kMaxThreads), 1;
  if (!pool.ready()) return fail("cannot map fiber stacks"), 1;
  l.fibers = pool.fibers;
  if (shared_bytes > pool.shared_cap) {
    std::free(pool.shared);
    pool.shared = nullptr, pool.shared_cap = 0;
    void* p = nullptr;
    if (posix_memalign(&p, 128, shared_bytes) != 0) return fail("cannot allocate %u bytes of shared memory", shared_bytes), 1;
    pool.shared = static_cast<unsigned char*>(p);
    pool.shared_cap = shared_bytes;
  }
  l.shared = pool.shared;
  blockDim = {threads, 1, 1};
  gridDim = {grid[0], grid[1], grid[2]};
  for (unsigned z = 0; z < grid[2]; z++)
    for (unsigned y = 0; y < grid[1]; y++)
      for (unsigned x = 0; x < grid[0]; x++) {
        blockIdx = {x, y, z};
        // Shared memory starts undefined: NaN bytes make a read before a write visible.
        if (shared_bytes) std::memset(l.shared, 0xff, shared_bytes);
        if (!run_block(l)) {
          // Fibers stopped inside the kernel start afresh next time.
          for (unsigned i = 0; i < threads; i++) l.fibers[i].started = false;
          return 1;
        }
      }
  return 0;
}

template <class... P, size_t... I>
inline void call(void (*kernel)(const long long*, P...), const long long* sym, void** args, std::index_sequence<I...>) {
  kernel(sym, static_cast<P>(args[I])...);
}

// Launches `kernel` with `args` (its pointer parameters after `sym`, in order).
template <class... P>
inline int launch(void (*kernel)(const long long*, P...), const long long* sym, void** args, unsigned nargs,
                  const unsigned* grid, unsigned threads, unsigned shared_bytes, char* error, size_t error_len) {
  if (nargs != sizeof...(P)) {
    std::snprintf(error, error_len, "called with %u buffers, the kernel takes %zu", nargs, sizeof...(P));
    return 1;
  }
  struct Env { void (*kernel)(const long long*, P...); const long long* sym; void** args; } env{kernel, sym, args};
  auto body = [](void* e) {
    Env& v = *static_cast<Env*>(e);
    call(v.kernel, v.sym, v.args, std::index_sequence_for<P...>{});
  };
  return run_grid(body, &env, grid, threads, shared_bytes, error, error_len);
}

template <class T> inline uint64_t bits(T v) {
  static_assert(sizeof(T) <= 8, "warp operations move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T> inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace sat_emu

#define SAT_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(::sat_emu::dynamic_shared())

inline void __syncthreads() { ::sat_emu::park(::sat_emu::State::AtBarrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::sat_emu::warp_op(::sat_emu::WarpOp::Sync, mask, 0, 0, 32); }
inline void __trap() {
  ::sat_emu::fail("thread %u of block (%u, %u, %u) called __trap()", threadIdx.x, blockIdx.x, blockIdx.y, blockIdx.z);
  ::sat_emu::park(::sat_emu::State::Done);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::sat_emu::from_bits<T>(::sat_emu::warp_op(::sat_emu::WarpOp::Idx, mask, ::sat_emu::bits(v), src, width));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::sat_emu::from_bits<T>(::sat_emu::warp_op(::sat_emu::WarpOp::Xor, mask, ::sat_emu::bits(v), lane_mask, width));
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::sat_emu::from_bits<T>(::sat_emu::warp_op(::sat_emu::WarpOp::Down, mask, ::sat_emu::bits(v), int(delta), width));
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::sat_emu::from_bits<T>(::sat_emu::warp_op(::sat_emu::WarpOp::Up, mask, ::sat_emu::bits(v), int(delta), width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(::sat_emu::warp_op(::sat_emu::WarpOp::Ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return int(::sat_emu::warp_op(::sat_emu::WarpOp::Any, mask, pred != 0, 0, 32)); }
inline int __all_sync(unsigned mask, int pred) { return int(::sat_emu::warp_op(::sat_emu::WarpOp::All, mask, pred != 0, 0, 32)); }
