//! Subcommands: argument definitions and dispatch. Each command lives in its own file.

mod bench;
mod bench_op;
mod cuda;
mod dump;
mod eval;
mod generate;
mod memory;
mod optimize;
mod output;
mod ptx;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use saturn_frontend::Phase;

/// saturn: a compiler for DeepSeek-style model graphs.
///
/// MODEL is a Hugging Face checkpoint folder (config.json + model.safetensors or a sharded
/// index), a bare config.json (dump and memory only), or a saturn spec (models/*.toml).
#[derive(Debug, Parser)]
#[command(name = "saturn", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the lowered IR of a model for one phase.
    Dump {
        /// A checkpoint folder, a config.json, or a spec (.toml). No weights needed.
        model: PathBuf,
        /// Which graph: prefill (P = 0), decode (S = 1), or chunked (any S after any P).
        #[arg(long, value_enum, default_value_t = PhaseArg::Prefill)]
        phase: PhaseArg,
    },
    /// Run one prefill over token ids (then optional decode steps) and write the logits.
    Eval {
        /// A checkpoint folder or a spec (.toml).
        model: PathBuf,
        /// Comma-separated prompt token ids, e.g. 3,17,42.
        #[arg(long)]
        ids: String,
        /// Comma-separated ids fed one at a time after the prefill, through the KV cache.
        #[arg(long)]
        decode_ids: Option<String>,
        /// Where to write `logits` [S, vocab] (and `decode_logits` [D, vocab]) as safetensors.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Generate token ids after one or more prompts; prints one line of ids per prompt.
    Generate {
        /// A checkpoint folder or a spec (.toml).
        model: PathBuf,
        /// Comma-separated prompt token ids; repeat the option for a batch of prompts.
        #[arg(long, required = true)]
        ids: Vec<String>,
        /// The most tokens to generate per prompt.
        #[arg(long, default_value_t = 16)]
        max_new_tokens: usize,
        /// Sample with this temperature instead of taking the most likely token.
        #[arg(long)]
        temperature: Option<f32>,
        /// Sample among the k most likely tokens.
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample among the most likely tokens whose probabilities sum to p.
        #[arg(long)]
        top_p: Option<f32>,
        /// Seed of the sampler (prompt i uses seed + i).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep generating after the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Measure prefill and decode throughput (and decode against the memory-bandwidth limit).
    Bench {
        /// A checkpoint folder or a spec (.toml).
        model: PathBuf,
        /// Comma-separated prompt ids [default: --prompt-tokens ids (1 + 7919 i) mod vocab].
        #[arg(long)]
        ids: Option<String>,
        /// The prompt length when --ids is not given.
        #[arg(long, default_value_t = 32)]
        prompt_tokens: usize,
        /// Greedy decode steps after the prompt.
        #[arg(long, default_value_t = 32)]
        decode_tokens: usize,
        /// Timed rounds (after one warm-up round); the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Also time every kernel kind (one extra, untimed round; on stderr).
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time one fused op alone at a DeepSeek-V3 layer's shapes (by default) on a backend: its
    /// bandwidth or FLOP rate, and on a device the share of the device's copy bandwidth.
    BenchOp {
        #[command(subcommand)]
        op: bench_op::OpArgs,
    },
    /// Optimise a model for a target and phase; write the lowered and optimised IR and a report.
    Compile {
        /// A checkpoint folder, a config.json, or a spec (.toml). No weights needed.
        model: PathBuf,
        /// Which graph to optimise.
        #[arg(long, value_enum, default_value_t = PhaseArg::Decode)]
        phase: PhaseArg,
        /// What to write besides report.json: `ir` (lowered.ir, optimized.ir), `cuda`
        /// (kernels.cu, plan.json), `ptx` (with cuda: ptx/<arch>/<kernel>.ptx for sm_80 and
        /// sm_90a through NVRTC, and cuda_report.json with each kernel's registers and spills
        /// from `ptxas -v`).
        #[arg(long, value_delimiter = ',', default_value = "ir")]
        emit: Vec<String>,
        /// The CUDA tools for `--emit ptx`: a folder with lib/libnvrtc.so.13 and bin/ptxas
        /// (default: $SATURN_CUDA_HOME, else ptxas on PATH; scripts/install-cuda-tools.sh
        /// installs them).
        #[arg(long)]
        cuda_home: Option<PathBuf>,
        /// How the CUDA program stores the weights and computes (`--emit cuda`).
        #[command(flatten)]
        precision: Precision,
        /// The output folder.
        #[arg(short = 'o', long = "out-dir")]
        out_dir: PathBuf,
        #[command(flatten)]
        opt: optimize::OptArgs,
    },
    /// Explain what the optimiser does for a target and phase: rules fired, cost before and
    /// after, time per family, e-graph size, why saturation stopped.
    Explain {
        /// A checkpoint folder, a config.json, or a spec (.toml). No weights needed.
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = PhaseArg::Decode)]
        phase: PhaseArg,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opt: optimize::OptArgs,
    },
    /// Report the memory a model needs: weights, and the KV cache per token, per layer and in total.
    Memory {
        /// A checkpoint folder, a config.json, or a spec (.toml).
        model: PathBuf,
        /// Context length (positions per sequence) for the totals [default: 4096, or the model's
        /// max_position_embeddings if smaller].
        #[arg(long)]
        context: Option<u64>,
        /// Sequences held at once, for the totals.
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which graph `eval` and `generate` run, and on what.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// cpu: the graphs compiled into CPU kernels over a planned arena (weights loaded once, the
    /// KV cache appended in place); interp: the reference interpreter; cuda: the generated CUDA
    /// kernels on GPU 0 (NVRTC from --cuda-home or SATURN_CUDA_HOME); cuda-emulator: the same
    /// CUDA kernels and plan run on the CPU (slow; checks the CUDA path without a GPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// 1: run the optimised graph; 0: run the graph as lowered.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    opt_level: u8,
    /// The cost-model target the graph is optimised for (default: cpu, or h100 for the CUDA
    /// backends).
    #[arg(long = "opt-target")]
    opt_target: Option<String>,
    /// The CUDA tools for --backend cuda: a folder with lib/libnvrtc.so.13 (default:
    /// $SATURN_CUDA_HOME; scripts/install-cuda-tools.sh installs them).
    #[arg(long)]
    cuda_home: Option<PathBuf>,
    #[command(flatten)]
    precision: Precision,
}

/// `--weights-dtype` and `--tensor-cores`: how the weights are stored and how the CUDA backends
/// compute.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Precision {
    /// The weights: f32 as loaded, or bf16 (each rounded to the nearest bf16). The CUDA
    /// backends store bf16 weights as bf16 (half the bytes) and compute in f32; cpu and interp
    /// compute in f32 with the rounded weights, which checks the CUDA backends' results.
    #[arg(long, value_enum, default_value_t = WeightsDtype::F32)]
    weights_dtype: WeightsDtype,
    /// With --weights-dtype bf16, the CUDA backends run products with weights and decode
    /// attention on tensor cores (bf16 operands, f32 accumulation) and keep the KV cache in
    /// bf16: results then agree with cpu and interp at bf16's tolerance only.
    #[arg(long)]
    tensor_cores: bool,
    /// The CUDA backends run prefill-sized products (beyond 8 rows) in cuBLAS, where it
    /// multiplies the operands together: products with f32 weights, or bf16 weights with
    /// --tensor-cores (the dense ones and the MoE's shared expert), and batched matmuls (the
    /// attention's; in bf16 with --tensor-cores). BENCHMARKS.md: cuBLAS is 2.1x (f32) to 5.8x
    /// (bf16) faster than the generated tiles at 4096 x 7168 -> 2048 on an H100. Needs cuBLAS
    /// for CUDA 13 beside NVRTC or on the loader's path; the emulator computes these products
    /// on the host.
    #[arg(long)]
    cublas: bool,
}

impl Precision {
    /// The weights of `params` as `--weights-dtype` makes them (see [`WeightsDtype::weights`]).
    fn weights<'p>(
        &self,
        params: &'p dyn saturn_runtime::ParamSource,
    ) -> saturn_codegen::cuda::StoredWeights<'p> {
        self.weights_dtype.weights(params)
    }

    /// The CUDA programs' options; tensor cores need bf16 weights.
    fn cuda_options(&self) -> Result<saturn_codegen::cuda::CudaOptions> {
        if self.tensor_cores && self.weights_dtype != WeightsDtype::Bf16 {
            bail!("--tensor-cores needs --weights-dtype bf16 (the tensor cores multiply bf16 weights)");
        }
        Ok(saturn_codegen::cuda::CudaOptions {
            weights: self.weights_dtype.storage(),
            tensor_cores: self.tensor_cores,
            cublas: self.cublas,
        })
    }
}

/// `--weights-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WeightsDtype {
    F32,
    Bf16,
}

impl WeightsDtype {
    /// The dtype as `--weights-dtype` names it.
    fn name(self) -> &'static str {
        match self {
            WeightsDtype::F32 => "f32",
            WeightsDtype::Bf16 => "bf16",
        }
    }

    fn storage(self) -> saturn_codegen::cuda::WeightStorage {
        match self {
            WeightsDtype::F32 => saturn_codegen::cuda::WeightStorage::F32,
            WeightsDtype::Bf16 => saturn_codegen::cuda::WeightStorage::Bf16,
        }
    }

    /// The weights of `params` as this dtype makes them: bf16-rounded values for bf16, which
    /// the CUDA backends store as bf16 and the others compute with as f32.
    fn weights<'p>(
        self,
        params: &'p dyn saturn_runtime::ParamSource,
    ) -> saturn_codegen::cuda::StoredWeights<'p> {
        saturn_codegen::cuda::StoredWeights { params, storage: self.storage() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Cpu,
    Interp,
    Cuda,
    CudaEmulator,
}

impl Backend {
    /// The backend as `--backend` names it.
    fn name(self) -> String {
        self.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// What a backend compiled the graphs into.
enum Programs {
    Interp,
    Cpu(Box<saturn_runtime::CpuPrograms>),
    Cuda(saturn_runtime::CudaPrograms),
}

impl Programs {
    /// The CPU programs, where the backend is the CPU one.
    fn cpu(&self) -> Option<&saturn_runtime::CpuPrograms> {
        match self {
            Programs::Cpu(p) => Some(p),
            _ => None,
        }
    }
}

impl RunArgs {
    /// The backend as `--backend` names it.
    fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The target the graphs are optimised for.
    fn opt_target(&self) -> &str {
        match (&self.opt_target, self.backend) {
            (Some(t), _) => t,
            (None, Backend::Cuda | Backend::CudaEmulator) => "h100",
            (None, _) => "cpu",
        }
    }

    /// The prepared weights as `--weights-dtype` makes them: what programs and sessions load.
    fn weights<'p>(
        &self,
        prepared: &'p saturn_runtime::Prepared<'_>,
    ) -> saturn_codegen::cuda::StoredWeights<'p> {
        self.precision.weights(prepared)
    }

    /// Compiles the prepared graphs for the chosen backend.
    fn compile(&self, prepared: &saturn_runtime::Prepared<'_>) -> Result<Programs> {
        let (options, params) = (self.precision.cuda_options()?, self.weights(prepared));
        if self.backend == Backend::Interp {
            return Ok(Programs::Interp);
        }
        let (forward, phases) = optimize::RunGraphs::graphs(prepared)?;
        let start = std::time::Instant::now();
        // Loading a large model's weights takes seconds; indicatif draws only on a terminal.
        let spinner =
            indicatif::ProgressBar::new_spinner().with_message("loading weights and compiling kernels");
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let programs = match self.backend {
            Backend::Cuda => saturn_codegen::cuda::CudaTools::locate(self.cuda_home.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|tools| Ok(saturn_runtime::GpuDevice::open(0, tools)?))
                .and_then(|gpu| {
                    Ok(saturn_runtime::CudaPrograms::compile(gpu, forward, phases, &params, options)?)
                })
                .map(Programs::Cuda),
            Backend::CudaEmulator => saturn_runtime::CudaPrograms::compile(
                saturn_codegen::cuda::emulate::HostDevice::default(),
                forward,
                phases,
                &params,
                options,
            )
            .map(Programs::Cuda)
            .map_err(Into::into),
            _ => saturn_runtime::CpuPrograms::compile(forward, phases, &params)
                .map(|p| Programs::Cpu(Box::new(p)))
                .map_err(Into::into),
        };
        spinner.finish_and_clear();
        let programs = programs?;
        tracing::info!(
            seconds = start.elapsed().as_secs_f64(),
            "compiled the {} programs",
            self.backend_name()
        );
        Ok(programs)
    }
}

/// The executor for prepared graphs on `programs`.
fn executor<'a>(
    prepared: &'a saturn_runtime::Prepared<'_>,
    programs: &'a Programs,
) -> Result<saturn_runtime::Executor<'a>> {
    let (graph, phases) = optimize::RunGraphs::graphs(prepared)?;
    let backend = match programs {
        Programs::Cpu(p) => saturn_runtime::Backend::Cpu(p),
        Programs::Cuda(p) => saturn_runtime::Backend::Cuda(p),
        Programs::Interp => saturn_runtime::Backend::Interp,
    };
    Ok(saturn_runtime::Executor { graph, phases, backend })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PhaseArg {
    /// A whole prompt, nothing cached (P = 0).
    Prefill,
    /// One new token after a KV cache (S = 1).
    Decode,
    /// Any number of new tokens after a cache.
    Chunked,
}

impl From<PhaseArg> for Phase {
    fn from(p: PhaseArg) -> Phase {
        match p {
            PhaseArg::Prefill => Phase::Prefill,
            PhaseArg::Decode => Phase::Decode,
            PhaseArg::Chunked => Phase::Chunked,
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dump { model, phase } => dump::run(&model, phase.into()),
        Command::Eval { model, ids, decode_ids, out, run } => {
            let decode_ids = decode_ids.map(|d| parse_ids("--decode-ids", &d)).transpose()?;
            eval::run(&model, &parse_ids("--ids", &ids)?, decode_ids.as_deref(), &out, &run)
        }
        Command::Generate {
            model,
            ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            ignore_eos,
            run,
        } => {
            let prompts = ids.iter().map(|i| parse_ids("--ids", i)).collect::<Result<Vec<_>>>()?;
            let sampling = generate::SamplingArgs { temperature, top_k, top_p, seed };
            generate::run(&model, &prompts, max_new_tokens, sampling, ignore_eos, &run)
        }
        Command::Bench { model, ids, prompt_tokens, decode_tokens, repeat, json, profile, run } => {
            let prompt = match ids {
                Some(ids) => parse_ids("--ids", &ids)?,
                None => {
                    let vocab = saturn_frontend::load_model(&model)?.config.vocab_size;
                    (0..prompt_tokens as u64).map(|i| (1 + 7919 * i) % vocab).collect()
                }
            };
            bench::run(&model, &bench::BenchArgs { prompt, decode_tokens, repeat, json, profile }, &run)
        }
        Command::BenchOp { op } => bench_op::run(op),
        Command::Memory { model, context, batch, json } => memory::run(&model, context, batch, json),
        Command::Compile { model, phase, emit, cuda_home, precision, out_dir, opt } => {
            let cuda = (cuda_home.as_deref(), precision.cuda_options()?);
            optimize::compile(&model, phase.into(), &opt, &emit, cuda, &out_dir)
        }
        Command::Explain { model, phase, json, opt } => optimize::explain(&model, phase.into(), &opt, json),
    }
}

/// Parses `3,17,42` (spaces allowed) into token ids.
fn parse_ids(option: &str, s: &str) -> Result<Vec<u64>> {
    let ids: Vec<u64> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u64>().with_context(|| format!("{option}: `{t}` is not a token id")))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("{option}: the id list is empty; give at least one token id, e.g. {option} 3,17,42");
    }
    Ok(ids)
}
