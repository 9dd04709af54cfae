//! `saturn bench-op`: one fused op at a DeepSeek-V3 layer's shapes (by default), timed alone on
//! a backend, with the memory traffic or arithmetic it must do and, on a device, the share of
//! the device's measured copy bandwidth it reaches.
//!
//! - `mla-decode`: `mla_decode_attention` for a batch of sequences, each over its own latent
//!   cache (V3: 128 heads, latent 512, rope 64). It must read its inputs once and write its
//!   output: that traffic over the run time is its bandwidth. The cache is resident, as a
//!   model's is: a weight of the op's graph, so `--weights-dtype bf16` stores it as bf16 on the
//!   CUDA backends, as a tensor-core program stores its own KV cache.
//! - `grouped-experts`: `grouped_experts` on a batch of tokens with a balanced routing (token `t`
//!   uses experts `(t k + j) mod E`, `j < k`, each with weight `1/k`; the same rule as
//!   `scripts/bench_ops_torch.py`, which times PyTorch on the same problem).
//! - `linear`: `x w^T` at prefill sizes: the rate of the product kernels (tensor cores with bf16
//!   weights on CUDA), against cuBLAS through PyTorch (`bench_ops_torch.py linear`).
//! - `matmul`: a batch of `a b` over activations, the prefill attention's products, against
//!   PyTorch's batched products (`bench_ops_torch.py matmul`).
//!
//! Inputs and weights are uniform random from fixed seeds (weights in `[-0.02, 0.02)`, the
//! latent cache and inputs in `[-1, 1)`), made in parallel. `--check` runs the op once more on
//! a reference (the cpu backend, or the interpreter when the backend is cpu) and compares the
//! outputs.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use saturn_codegen::cuda::{CudaOptions, WeightStorage};
use saturn_ir::{DType, Dim, Graph, Op, ParamSource, Tensor, TensorType};
use saturn_runtime::op_bench::{self, OpCase, Timing};
use serde::Serialize;

use super::Backend;

#[derive(Debug, Subcommand)]
pub enum OpArgs {
    /// mla_decode_attention: a batch of sequences, each attending over its own latent cache.
    MlaDecode {
        /// Sequences decoding together.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Cached positions per sequence (the new queries included).
        #[arg(long, default_value_t = 4096)]
        context: usize,
        /// New tokens per sequence.
        #[arg(long, default_value_t = 1)]
        queries: usize,
        #[arg(long, default_value_t = 128)]
        heads: usize,
        /// The latent (kv_lora_rank) width.
        #[arg(long, default_value_t = 512)]
        latent: usize,
        /// The rope key width (qk_rope_head_dim).
        #[arg(long, default_value_t = 64)]
        rope: usize,
        #[command(flatten)]
        how: HowArgs,
    },
    /// grouped_experts: routed experts (balanced routing) plus the shared expert.
    GroupedExperts {
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 7168)]
        hidden: usize,
        /// Each expert's inner width (moe_intermediate_size).
        #[arg(long, default_value_t = 2048)]
        inner: usize,
        #[arg(long, default_value_t = 256)]
        experts: usize,
        /// Experts per token.
        #[arg(long, default_value_t = 8)]
        top_k: usize,
        /// The shared expert's inner width (0: none).
        #[arg(long, default_value_t = 2048)]
        shared: usize,
        #[command(flatten)]
        how: HowArgs,
    },
    /// matmul: `a b` over a batch, both operands activations: the prefill attention's products
    /// (by default the scores of 1024 tokens in V3's 128 heads; cuBLAS's strided batches with
    /// --cublas on the CUDA backends; compare: `scripts/bench_ops_torch.py matmul`).
    Matmul {
        /// Products in the batch (heads).
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Rows of `a` (queries).
        #[arg(long, default_value_t = 1024)]
        rows: usize,
        /// The depth (`a`'s width).
        #[arg(long, default_value_t = 192)]
        inner: usize,
        /// Columns of `b` (keys).
        #[arg(long, default_value_t = 1024)]
        cols: usize,
        #[command(flatten)]
        how: HowArgs,
    },
    /// linear: `x w^T`, a prefill-sized product with a weight (tensor cores with bf16 weights
    /// on the CUDA backends; compare with cuBLAS: `scripts/bench_ops_torch.py linear`).
    Linear {
        /// Rows of `x` (tokens).
        #[arg(long, default_value_t = 4096)]
        tokens: usize,
        /// The depth (`x`'s width).
        #[arg(long, default_value_t = 7168)]
        input: usize,
        /// Output columns (rows of `w`).
        #[arg(long, default_value_t = 2048)]
        output: usize,
        #[command(flatten)]
        how: HowArgs,
    },
}

/// Where and how an op is timed.
#[derive(Debug, Args)]
pub struct HowArgs {
    /// cpu, interp, cuda (GPU 0) or cuda-emulator.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// The CUDA tools for --backend cuda (default: $SATURN_CUDA_HOME).
    #[arg(long)]
    cuda_home: Option<std::path::PathBuf>,
    /// Timed runs after one warm-up run; the median is reported.
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// Also run the op on a reference (the cpu backend; the interpreter for --backend cpu) and
    /// fail if the outputs differ by more than 1e-4 of the largest output magnitude (1.6e-2
    /// with --tensor-cores on a CUDA backend).
    #[arg(long)]
    check: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// The weights (mla-decode's latent cache, the experts' and linear's weights): f32, or
    /// bf16-rounded (stored as bf16 on the CUDA backends, half the bytes; computed with as f32
    /// elsewhere and by --check); with --tensor-cores the CUDA backends compute in bf16 on
    /// tensor cores (all three ops), which --check then holds to bf16's tolerance, 1.6e-2 of
    /// the largest output.
    #[command(flatten)]
    precision: super::Precision,
}

#[derive(Serialize)]
struct Report {
    op: &'static str,
    backend: String,
    device: String,
    shapes: BTreeMap<&'static str, usize>,
    weights_dtype: &'static str,
    /// The CUDA backends computed on tensor cores (bf16 operands).
    tensor_cores: bool,
    /// The CUDA backends ran the tiled products in cuBLAS (`--cublas`).
    cublas: bool,
    repeat: usize,
    seconds: Vec<f64>,
    seconds_median: f64,
    /// Bytes the op must move at least (inputs read once, output written once).
    bytes: f64,
    bandwidth_bytes_per_s: f64,
    flops: f64,
    flops_per_s: f64,
    /// The device's copy bandwidth (read + write traffic per second), where measured.
    copy_bandwidth_bytes_per_s: Option<f64>,
    copy_bandwidth_fraction: Option<f64>,
    /// With --check: the largest difference from the reference, over the largest |output|.
    check_relative_error: Option<f64>,
}

/// One op to time: its graph, data and what it must do.
struct Problem {
    op: &'static str,
    graph: Graph,
    inputs: HashMap<String, Tensor>,
    params: Generated,
    shapes: BTreeMap<&'static str, usize>,
    bytes: f64,
    /// Weight elements among `bytes` (counted at 4 bytes each there).
    weight_elements: f64,
    flops: f64,
}

/// Bytes fewer per weight element than f32 when `backend` stores weights as `storage` (only the
/// CUDA backends store bf16 as bf16).
fn weight_saving(backend: Backend, storage: WeightStorage) -> f64 {
    match (backend, storage) {
        (Backend::Cuda | Backend::CudaEmulator, WeightStorage::Bf16) => 2.0,
        _ => 0.0,
    }
}

pub fn run(args: OpArgs) -> Result<()> {
    let (problem, how) = match args {
        OpArgs::MlaDecode { batch, context, queries, heads, latent, rope, how } => {
            (mla_decode(batch, context, queries, heads, latent, rope)?, how)
        }
        OpArgs::GroupedExperts { tokens, hidden, inner, experts, top_k, shared, how } => {
            (grouped_experts(tokens, hidden, inner, experts, top_k, shared)?, how)
        }
        OpArgs::Linear { tokens, input, output, how } => (linear(tokens, input, output)?, how),
        OpArgs::Matmul { batch, rows, inner, cols, how } => (matmul(batch, rows, inner, cols)?, how),
    };
    if how.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let options = how.precision.cuda_options()?;
    // Every backend, and the reference, computes with the weights as the dtype makes them.
    let weights = how.precision.weights(&problem.params);
    let case = OpCase { graph: &problem.graph, params: &weights, inputs: &problem.inputs, symbols: &[] };
    let (timing, device, copy) = time(&case, &how, options)?;
    let check_relative_error = how.check.then(|| check(&case, &how, &timing)).transpose()?;
    let bytes = problem.bytes - problem.weight_elements * weight_saving(how.backend, options.weights);
    let median = timing.median();
    // Tensor cores and cuBLAS are the CUDA backends' (the others ignore the flags).
    let cuda = matches!(how.backend, Backend::Cuda | Backend::CudaEmulator);
    let report = Report {
        op: problem.op,
        backend: how.backend.name(),
        device,
        shapes: problem.shapes,
        repeat: how.repeat,
        seconds_median: median,
        seconds: timing.seconds,
        weights_dtype: how.precision.weights_dtype.name(),
        tensor_cores: cuda && options.tensor_cores,
        cublas: cuda && options.cublas,
        bytes,
        bandwidth_bytes_per_s: bytes / median,
        flops: problem.flops,
        flops_per_s: problem.flops / median,
        copy_bandwidth_bytes_per_s: copy,
        copy_bandwidth_fraction: copy.map(|c| bytes / median / c),
        check_relative_error,
    };
    if how.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    // Tensor cores round the CUDA kernels' operands to bf16: torch.testing's bf16 tolerance.
    let tolerance = if report.tensor_cores { 1.6e-2 } else { 1e-4 };
    if let Some(e) = check_relative_error
        && e > tolerance
    {
        bail!(
            "{} on {}: outputs differ from the reference by {e:.3e} of the largest output",
            report.op,
            report.backend
        );
    }
    Ok(())
}

/// Times the op on the chosen backend; also names the device and measures its copy bandwidth
/// (on CUDA devices: a 1 GiB device-to-device copy; 64 MiB on the emulator).
fn time(case: &OpCase, how: &HowArgs, options: CudaOptions) -> Result<(Timing, String, Option<f64>)> {
    let threads = format!("{} threads", rayon::current_num_threads());
    Ok(match how.backend {
        Backend::Interp => (op_bench::time_interp(case, how.repeat)?, format!("cpu, {threads}"), None),
        Backend::Cpu => (op_bench::time_cpu(case, how.repeat)?, format!("cpu, {threads}"), None),
        Backend::Cuda => {
            let tools = saturn_codegen::cuda::CudaTools::locate(how.cuda_home.as_deref())?;
            let mut gpu = saturn_runtime::GpuDevice::open(0, tools)?;
            let name = gpu.name();
            let copy = op_bench::device_copy_bandwidth(&mut gpu, 1 << 30, 10)?;
            (op_bench::time_device(gpu, case, how.repeat, (options, true))?, name, Some(copy))
        }
        Backend::CudaEmulator => {
            let mut emu = saturn_codegen::cuda::emulate::HostDevice::default();
            let copy = op_bench::device_copy_bandwidth(&mut emu, 64 << 20, 3)?;
            (
                op_bench::time_device(emu, case, how.repeat, (options, false))?,
                "cuda emulator".into(),
                Some(copy),
            )
        }
    })
}

/// The largest difference between the timed outputs and a reference run's, over the largest
/// reference magnitude.
fn check(case: &OpCase, how: &HowArgs, timed: &Timing) -> Result<f64> {
    let reference = match how.backend {
        Backend::Cpu => op_bench::time_interp(case, 0)?,
        _ => op_bench::time_cpu(case, 0)?,
    };
    let mut worst = 0f64;
    for (name, want) in &reference.outputs {
        let (Some(got), Some(want)) = (timed.outputs.get(name).and_then(Tensor::as_f32), want.as_f32())
        else {
            bail!("output `{name}` is missing or not f32");
        };
        let scale = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs())).max(f64::MIN_POSITIVE);
        let diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
            let d = (f64::from(g) - f64::from(w)).abs();
            if d.is_nan() { f64::INFINITY } else { m.max(d) }
        });
        worst = worst.max(diff / scale);
    }
    Ok(worst)
}

fn print_report(r: &Report) {
    let shapes: Vec<String> = r.shapes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{} ({}) on {} ({})", r.op, shapes.join(", "), r.backend, r.device);
    println!(
        "{:.1} us per call (median of {}): {:.1} GB/s of {:.1} MB, {:.1} GFLOP/s",
        r.seconds_median * 1e6,
        r.repeat,
        r.bandwidth_bytes_per_s / 1e9,
        r.bytes / 1e6,
        r.flops_per_s / 1e9
    );
    if let (Some(c), Some(f)) = (r.copy_bandwidth_bytes_per_s, r.copy_bandwidth_fraction) {
        println!(
            "device copy bandwidth {:.1} GB/s (read + write): the op reaches {:.1}% of it",
            c / 1e9,
            100.0 * f
        );
    }
    if let Some(e) = r.check_relative_error {
        println!("check: largest difference from the reference {e:.2e} of the largest output");
    }
}

/// Sizes must be positive: a zero would make an empty problem, not a benchmark.
fn positive(sizes: &[(&str, usize)]) -> Result<()> {
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        bail!("--{name} must be at least 1");
    }
    Ok(())
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> Result<saturn_ir::NodeId> {
    let ty = TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)));
    Ok(g.add(name, Op::Input, &[], Some(ty))?)
}

fn param(g: &mut Graph, key: &str, shape: &[usize]) -> Result<saturn_ir::NodeId> {
    let ty = TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)));
    Ok(g.add(key, Op::Param { key: key.into() }, &[], Some(ty))?)
}

fn mla_decode(b: usize, t: usize, s: usize, h: usize, c: usize, r: usize) -> Result<Problem> {
    positive(&[("batch", b), ("context", t), ("queries", s), ("heads", h), ("latent", c), ("rope", r)])?;
    if s > t {
        bail!("--queries ({s}) cannot exceed --context ({t}): the context includes the new tokens");
    }
    let mut g = Graph::new("mla_decode");
    let queries = [("q_latent", vec![b, h, s, c]), ("q_rope", vec![b, h, s, r])];
    let mut ids = Vec::new();
    let mut inputs = HashMap::new();
    for (i, (name, shape)) in queries.iter().enumerate() {
        ids.push(input(&mut g, name, shape)?);
        inputs.insert(
            name.to_string(),
            Tensor::f32(shape.clone(), uniform(shape.iter().product(), i as u64, 1.0)),
        );
    }
    let mut params = Generated::default();
    for (i, (key, shape)) in [("latent", [b, t, c]), ("k_pe", [b, t, r])].iter().enumerate() {
        ids.push(param(&mut g, key, shape)?);
        params.seeds.insert(key.to_string(), Seed { seed: 2 + i as u64, scale: 1.0 });
    }
    // V3's softmax scale 1/sqrt(qk_nope + qk_rope); the value does not change the work.
    let y = g.add("y", Op::MlaDecodeAttention { scale: 1.0 / 192f64.sqrt() }, &ids, None)?;
    g.set_output("y", y)?;
    let (b, t, s, h, c, r) = (b as f64, t as f64, s as f64, h as f64, c as f64, r as f64);
    Ok(Problem {
        op: "mla-decode",
        graph: g,
        inputs,
        params,
        weight_elements: b * t * (c + r),
        shapes: BTreeMap::from([
            ("batch", b as usize),
            ("context", t as usize),
            ("queries", s as usize),
            ("heads", h as usize),
            ("latent", c as usize),
            ("rope", r as usize),
        ]),
        bytes: 4.0 * (b * h * s * (c + r) + b * t * (c + r) + b * h * s * c),
        // Scores (latent and rope dots) and the weighted sum of latent rows, every key.
        flops: b * h * s * t * (2.0 * (c + r) + 2.0 * c),
    })
}

fn grouped_experts(t: usize, hd: usize, i: usize, e: usize, k: usize, j: usize) -> Result<Problem> {
    positive(&[("tokens", t), ("hidden", hd), ("inner", i), ("experts", e), ("top-k", k)])?;
    if k > e {
        bail!("--top-k ({k}) cannot exceed --experts ({e})");
    }
    let mut g = Graph::new("grouped_experts");
    let x = input(&mut g, "x", &[t, hd])?;
    let routing = input(&mut g, "routing", &[t, e])?;
    let mut args = vec![x, routing];
    let mut params = Generated::default();
    let mut weights: Vec<(&str, Vec<usize>)> = vec![
        ("experts.gate", vec![e, i, hd]),
        ("experts.up", vec![e, i, hd]),
        ("experts.down", vec![e, hd, i]),
    ];
    if j > 0 {
        weights.extend([
            ("shared.gate", vec![j, hd]),
            ("shared.up", vec![j, hd]),
            ("shared.down", vec![hd, j]),
        ]);
    }
    for (n, (key, shape)) in weights.iter().enumerate() {
        args.push(param(&mut g, key, shape)?);
        params.seeds.insert(key.to_string(), Seed { seed: 100 + n as u64, scale: 0.02 });
    }
    let y = g.add("y", Op::GroupedExperts { k: k as u64 }, &args, None)?;
    g.set_output("y", y)?;
    // Balanced routing: token `tok` uses experts (tok k + j) mod e, j < k, weight 1/k each.
    let mut route = vec![0f32; t * e];
    let mut used = vec![false; e];
    for tok in 0..t {
        for jj in 0..k {
            let x = (tok * k + jj) % e;
            route[tok * e + x] = 1.0 / k as f32;
            used[x] = true;
        }
    }
    let distinct = used.iter().filter(|&&u| u).count() as f64;
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::f32(vec![t, hd], uniform(t * hd, 1, 1.0))),
        ("routing".to_string(), Tensor::f32(vec![t, e], route)),
    ]);
    let (tf, hf, i_f, kf, jf) = (t as f64, hd as f64, i as f64, k as f64, j as f64);
    Ok(Problem {
        op: "grouped-experts",
        graph: g,
        inputs,
        params,
        shapes: BTreeMap::from([
            ("tokens", t),
            ("hidden", hd),
            ("inner", i),
            ("experts", e),
            ("top_k", k),
            ("shared", j),
        ]),
        // The weights of the experts some token uses, the shared expert's, x, routing and y.
        bytes: 4.0 * (3.0 * hf * i_f * distinct + 3.0 * hf * jf + 2.0 * tf * hf + tf * e as f64),
        weight_elements: 3.0 * hf * (i_f * distinct + jf),
        flops: 2.0 * 3.0 * tf * hf * (kf * i_f + jf),
    })
}

fn linear(t: usize, k: usize, n: usize) -> Result<Problem> {
    positive(&[("tokens", t), ("input", k), ("output", n)])?;
    let mut g = Graph::new("linear");
    let x = input(&mut g, "x", &[t, k])?;
    let w = param(&mut g, "w", &[n, k])?;
    let y = g.add("y", Op::Linear, &[x, w], None)?;
    g.set_output("y", y)?;
    let params = Generated { seeds: HashMap::from([("w".to_string(), Seed { seed: 100, scale: 0.02 })]) };
    let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![t, k], uniform(t * k, 1, 1.0)))]);
    let (tf, kf, nf) = (t as f64, k as f64, n as f64);
    Ok(Problem {
        op: "linear",
        graph: g,
        inputs,
        params,
        shapes: BTreeMap::from([("tokens", t), ("input", k), ("output", n)]),
        bytes: 4.0 * (tf * kf + nf * kf + tf * nf),
        weight_elements: nf * kf,
        flops: 2.0 * tf * kf * nf,
    })
}

fn matmul(b: usize, m: usize, k: usize, n: usize) -> Result<Problem> {
    positive(&[("batch", b), ("rows", m), ("inner", k), ("cols", n)])?;
    let mut g = Graph::new("matmul");
    let mut ids = Vec::new();
    let mut inputs = HashMap::new();
    for (i, (name, shape)) in [("a", vec![b, m, k]), ("b", vec![b, k, n])].into_iter().enumerate() {
        ids.push(input(&mut g, name, &shape)?);
        inputs.insert(
            name.to_string(),
            Tensor::f32(shape.clone(), uniform(shape.iter().product(), 1 + i as u64, 1.0)),
        );
    }
    let y = g.add("y", Op::MatMul, &ids, None)?;
    g.set_output("y", y)?;
    let (bf, mf, kf, nf) = (b as f64, m as f64, k as f64, n as f64);
    Ok(Problem {
        op: "matmul",
        graph: g,
        inputs,
        params: Generated::default(),
        shapes: BTreeMap::from([("batch", b), ("rows", m), ("inner", k), ("cols", n)]),
        bytes: 4.0 * bf * (mf * kf + kf * nf + mf * nf),
        weight_elements: 0.0,
        flops: 2.0 * bf * mf * kf * nf,
    })
}

/// Weights made on demand from a seed per key: uniform in `[-scale, scale)`.
#[derive(Default)]
struct Generated {
    seeds: HashMap<String, Seed>,
}

/// A generated weight: its generator's seed and the half-width of its range.
struct Seed {
    seed: u64,
    scale: f32,
}

impl ParamSource for Generated {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let s = self.seeds.get(key).ok_or_else(|| format!("no generated weight named `{key}`"))?;
        Ok(Tensor::f32(shape.to_vec(), uniform(shape.iter().product(), s.seed, s.scale)))
    }
}

/// `n` values uniform in `[-scale, scale)`, the same for a seed whatever the thread count
/// (each block of 64 Ki values has its own generator).
fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    const BLOCK: usize = 1 << 16;
    let mut v = vec![0f32; n];
    v.par_chunks_mut(BLOCK).enumerate().for_each(|(b, chunk)| {
        let mut state =
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (b as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        for x in chunk {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            *x = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
        }
    });
    v
}
