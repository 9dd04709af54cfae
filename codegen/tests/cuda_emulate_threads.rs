//! The CPU emulator's thread semantics, on hand-written kernels: block barriers, warp shuffles
//! and votes, shared memory (static and dynamic) seen across barriers, multi-dimensional grids,
//! and the failures a GPU would hang on or leave undefined, reported as errors.

use std::collections::HashMap;

use saturn_codegen::cuda::emulate::Emulator;
use saturn_codegen::cuda::{Buffer, CudaKernel, CudaProgram, Extent, KernelLaunch, Launch, Storage, Work};
use saturn_ir::{Dim, Tensor};

/// One launch of a hand-made program: kernel, grid, threads per block, dynamic shared bytes,
/// buffers (by name).
struct L<'a>(&'a str, [u64; 3], u32, u32, &'a [&'a str]);

/// A program of `kernels` (full CUDA C definitions) over f32 buffers: `inputs` and `outputs`
/// (name, elements), the outputs in the arena.
fn program(
    kernels: &[&str],
    inputs: &[(&str, usize)],
    outputs: &[(&str, usize)],
    launches: &[L],
) -> CudaProgram {
    let buffer = |(name, n): &(&str, usize), storage| Buffer {
        name: name.to_string(),
        dtype: "f32".into(),
        shape: vec![Dim::from(*n)],
        bytes: Extent::of([Dim::from(*n)]).times(4),
        storage,
    };
    let mut buffers: Vec<Buffer> = inputs.iter().map(|b| buffer(b, Storage::Input)).collect();
    let last = launches.len();
    buffers.extend(outputs.iter().map(|b| buffer(b, Storage::Arena { first: 0, last })));
    let index = |name: &str| buffers.iter().position(|b| b.name == name).unwrap();
    let kernels = kernels
        .iter()
        .map(|src| {
            let head = &src[..src.find("(const long long*").unwrap()];
            let name = head.rsplit(' ').next().unwrap().to_string();
            CudaKernel { name, node: "test".into(), source: src.to_string() }
        })
        .collect();
    let launches = launches
        .iter()
        .map(|L(kernel, grid, block, shared, args)| Launch {
            node: format!("launch.{kernel}"),
            work: Work::Kernel(KernelLaunch {
                kernel: kernel.to_string(),
                grid: grid.map(|g| Extent::of([Dim::from(g as usize)])),
                block: *block,
                shared_bytes: *shared,
            }),
            args: args.iter().map(|a| index(a)).collect(),
        })
        .collect();
    CudaProgram {
        name: "threads".into(),
        symbols: vec![],
        inputs: inputs.iter().map(|(n, _)| (n.to_string(), index(n))).collect(),
        outputs: outputs.iter().map(|(n, _)| (n.to_string(), index(n))).collect(),
        buffers,
        kernels,
        init: vec![],
        launches,
    }
}

fn run(p: &CudaProgram, inputs: &[(&str, Vec<f32>)]) -> Result<HashMap<String, Vec<f32>>, String> {
    let inputs = inputs.iter().map(|(n, v)| (n.to_string(), Tensor::f32(vec![v.len()], v.clone()))).collect();
    let mut emu = Emulator::new(p, &HashMap::new()).map_err(|e| e.to_string())?;
    let out = emu.run(&[], &inputs).map_err(|e| e.to_string())?;
    Ok(out.into_iter().map(|(n, t)| (n, t.as_f32().unwrap().to_vec())).collect())
}

/// Small integers: sums are exact in any order.
fn ints(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect()
}

const BLOCK_SUMS: &str = r#"extern "C" __global__ void __launch_bounds__(1024) block_sums(const long long* __restrict__ sym, const float* __restrict__ x, float* __restrict__ sums, float* __restrict__ every) {
  __shared__ float tmp[32];
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const float s = sat_block_sum(x[i], tmp);
  const float m = sat_block_max(x[i], tmp);
  every[i] = s + 1000.0f * m;
  if (threadIdx.x == 0) sums[blockIdx.x] = s;
}
"#;

#[test]
fn block_reductions_give_every_thread_the_block_result() {
    for block in [256usize, 1024, 64] {
        let blocks = 3;
        let n = block * blocks;
        let p = program(
            &[BLOCK_SUMS],
            &[("x", n)],
            &[("sums", blocks), ("every", n)],
            &[L("block_sums", [blocks as u64, 1, 1], block as u32, 0, &["x", "sums", "every"])],
        );
        let x = ints(n);
        let out = run(&p, &[("x", x.clone())]).unwrap();
        for b in 0..blocks {
            let part = &x[b * block..(b + 1) * block];
            let (sum, max) = (part.iter().sum::<f32>(), part.iter().fold(f32::MIN, |a, &v| a.max(v)));
            assert_eq!(out["sums"][b], sum, "block {b} of {block}");
            assert!(out["every"][b * block..(b + 1) * block].iter().all(|&v| v == sum + 1000.0 * max));
        }
    }
}

const WARP_OPS: &str = r#"extern "C" __global__ void __launch_bounds__(96) warp_ops(const long long* __restrict__ sym, const float* __restrict__ x, float* __restrict__ out) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned lane = threadIdx.x & 31;
  const float v = x[i];
  float* o = out + i * 8;
  o[0] = sat_warp_sum(v);
  o[1] = __shfl_sync(SAT_FULL_MASK, v, 3);
  o[2] = __shfl_down_sync(SAT_FULL_MASK, v, 5);
  o[3] = __shfl_up_sync(SAT_FULL_MASK, v, 2);
  o[4] = (float)__popc(__ballot_sync(SAT_FULL_MASK, v > 0.0f));
  o[5] = __shfl_sync(SAT_FULL_MASK, v, 1, 8);
  // Two half-warp groups with their own masks.
  o[6] = lane < 16 ? __shfl_xor_sync(0x0000ffffu, v, 1) : __shfl_sync(0xffff0000u, v, 31);
  o[7] = (float)(__any_sync(SAT_FULL_MASK, v > 10.0f) + 2 * __all_sync(SAT_FULL_MASK, v > -12.0f));
  __syncwarp();
}
"#;

#[test]
fn warp_shuffles_and_votes_exchange_lane_values() {
    let (blocks, block) = (2, 96);
    let n = blocks * block;
    let p = program(
        &[WARP_OPS],
        &[("x", n)],
        &[("out", n * 8)],
        &[L("warp_ops", [2, 1, 1], 96, 0, &["x", "out"])],
    );
    let x = ints(n);
    let out = &run(&p, &[("x", x.clone())]).unwrap()["out"];
    for i in 0..n {
        let (w, lane) = (i / 32 * 32, i % 32);
        let warp = &x[w..w + 32];
        let want = [
            warp.iter().sum::<f32>(),
            warp[3],
            if lane + 5 < 32 { warp[lane + 5] } else { warp[lane] },
            if lane >= 2 { warp[lane - 2] } else { warp[lane] },
            warp.iter().filter(|&&v| v > 0.0).count() as f32,
            warp[lane / 8 * 8 + 1],
            if lane < 16 { warp[lane ^ 1] } else { warp[31] },
            (warp.iter().any(|&v| v > 10.0) as u8 + 2 * warp.iter().all(|&v| v > -12.0) as u8) as f32,
        ];
        assert_eq!(&out[i * 8..i * 8 + 8], &want, "thread {i}");
    }
}

const SHARED: &str = r#"extern "C" __global__ void __launch_bounds__(128) shared_rounds(const long long* __restrict__ sym, const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float buf[128];
  __shared__ float one;
  const unsigned t = threadIdx.x, n = blockDim.x;
  const long long i = (long long)blockIdx.x * n + t;
  buf[t] = x[i];
  if (t == 0) one = 1.0f;
  for (int r = 0; r < 3; r++) {
    __syncthreads();
    const float v = buf[(t + 1) % n];
    __syncthreads();
    buf[t] = v + one;
    __syncthreads();
    if (t == 7) one += 1.0f;
  }
  __syncthreads();
  out[i] = buf[t];
}
"#;

const DYNAMIC: &str = r#"extern "C" __global__ void __launch_bounds__(128) reverse(const long long* __restrict__ sym, const float* __restrict__ x, float* __restrict__ out) {
  extern __shared__ __align__(16) float smem[];
  const unsigned t = threadIdx.x;
  const long long i = (long long)(blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x * blockDim.x + blockIdx.x * blockDim.x + t;
  if (t >= 100) return;  // exited threads do not hold the barrier
  smem[t] = x[i];
  __syncthreads();
  out[i] = smem[99 - t];
}
"#;

#[test]
fn shared_memory_is_seen_across_barriers() {
    let n = 128 * 2;
    let p = program(
        &[SHARED],
        &[("x", n)],
        &[("out", n)],
        &[L("shared_rounds", [2, 1, 1], 128, 0, &["x", "out"])],
    );
    let x = ints(n);
    let out = &run(&p, &[("x", x.clone())]).unwrap()["out"];
    for (i, &got) in out.iter().enumerate() {
        let (b, t) = (i / 128, i % 128);
        // Round r adds `one` = r + 1 to the value of the next thread.
        assert_eq!(got, x[b * 128 + (t + 3) % 128] + 6.0, "thread {i}");
    }
    let grid = [3u64, 2, 2];
    let n = 128 * 12;
    let p = program(&[DYNAMIC], &[("x", n)], &[("out", n)], &[L("reverse", grid, 128, 400, &["x", "out"])]);
    let x = ints(n);
    let out = &run(&p, &[("x", x.clone())]).unwrap()["out"];
    for b in 0..12 {
        for t in 0..128 {
            let want = if t < 100 { x[b * 128 + 99 - t] } else { f32::NAN };
            let got = out[b * 128 + t];
            assert!(got == want || (got.is_nan() && want.is_nan()), "block {b} thread {t}: {got}");
        }
    }
}

const BAD: &str = r#"extern "C" __global__ void __launch_bounds__(64) bad(const long long* __restrict__ sym, const float* __restrict__ x, float* __restrict__ out) {
  const unsigned t = threadIdx.x;
  const long long mode = (long long)x[0];
  float v = x[t];
  if (mode == 0 && t == 5) return;
  if (mode == 1 && t < 16) __syncthreads();
  if (mode == 2 && t == 40) __trap();
  v = __shfl_xor_sync(SAT_FULL_MASK, v, 1);
  out[t] = v;
}
"#;

#[test]
fn hangs_and_undefined_warp_operations_are_errors() {
    let p = program(&[BAD], &[("x", 64)], &[("out", 64)], &[L("bad", [1, 1, 1], 64, 0, &["x", "out"])]);
    let expect = [
        (0.0, "thread 5 exited before __shfl_xor_sync"),
        (1.0, "deadlock: thread 16 waits at __shfl_xor_sync"),
        (2.0, "thread 40 of block (0, 0, 0) called __trap()"),
    ];
    for (mode, message) in expect {
        let mut x = vec![1.0; 64];
        x[0] = mode;
        let err = run(&p, &[("x", x)]).unwrap_err();
        assert!(err.contains("launch.bad") && err.contains(message), "{err}");
    }
    // The same library runs again after its fibers were abandoned mid-kernel.
    let mut x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    x[0] = 3.0;
    let out = &run(&p, &[("x", x.clone())]).unwrap()["out"];
    assert!((0..64).all(|t| out[t] == x[t ^ 1]), "{out:?}");

    let too_tall =
        program(&[BAD], &[("x", 64)], &[("out", 64)], &[L("bad", [1, 70000, 1], 64, 0, &["x", "out"])]);
    let err = run(&too_tall, &[("x", x.clone())]).unwrap_err();
    assert!(err.contains("grid 1 is 70000") && err.contains("65535"), "{err}");
    let short = program(&[BAD], &[("x", 64)], &[("out", 64)], &[L("bad", [1, 1, 1], 64, 0, &["x"])]);
    let err = run(&short, &[("x", x)]).unwrap_err();
    assert!(err.contains("called with 1 buffers, the kernel takes 2"), "{err}");
}

#[test]
fn compiler_errors_carry_the_log() {
    let broken = "extern \"C\" __global__ void broken(const long long* __restrict__ sym, float* __restrict__ out) {\n  out[0] = undefined_name;\n}\n";
    let p = program(&[broken], &[], &[("out", 1)], &[L("broken", [1, 1, 1], 32, 0, &["out"])]);
    let err = run(&p, &[]).unwrap_err();
    // g++ names the line of `kernels.cu` (the program's source) that is wrong.
    let line = p.source().lines().position(|l| l.contains("undefined_name")).unwrap() + 1;
    assert!(err.contains(&format!("kernels.cu:{line}")) && err.contains("undefined_name"), "{err}");
}
