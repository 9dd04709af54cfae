//! saturn's code generators.
//!
//! - [`cpu`]: the CPU backend. [`CpuProgram::compile`] turns a graph into kernel steps over one
//!   memory-planned arena: elementwise expressions, norms, softmax, reductions and RoPE are
//!   loops JIT-compiled with Cranelift ([`compile_elementwise`], [`RowKernels`]); matrix
//!   products run on threaded GEMV/GEMM; `grouped_experts`, `router_topk` and
//!   `mla_decode_attention` are real kernels. [`CpuProgram::run`] executes it on a
//!   [`Workspace`] with the KV cache in [`Carried`] buffers, appended in place.
//!
//! CUDA C (NVRTC to PTX) lands beside it. This crate depends on `ir` only; the runtime decides
//! what runs when.

mod arena;
pub mod cpu;
pub mod cuda;

pub use cpu::{
    Carried, CodegenError, CpuProgram, ElementwiseKernel, InputData, ProgramCache, RowKernels, Workspace,
    compile_elementwise, rope_tables,
};
