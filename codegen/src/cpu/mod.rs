//! CPU code: kernels compiled with Cranelift (JIT) and native loops, and [`CpuProgram`], a
//! graph compiled into kernel steps over a planned arena.

mod attention;
mod elementwise;
mod expf;
mod jit;
mod layout;
mod linalg;
mod masks;
mod moe;
mod packed;
mod program;
mod router;
mod router_ir;
#[cfg(target_arch = "x86_64")]
mod row_blocks;
mod rows;
mod rows_ir;
mod softmax_ir;
mod weight_memory;

pub use elementwise::{ElementwiseKernel, compile_elementwise};
pub use program::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
pub use rows::{RowKernels, rope_tables};

use thiserror::Error;

/// Whether the kernels use AVX-512: the CPU has AVX-512F and `SATURN_NO_AVX512` is not set.
/// Setting it runs the paths of CPUs without AVX-512 (AVX2 where the CPU has it, else portable
/// code) on one that has it, to measure and test them. Decided once per process.
pub(crate) fn avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return std::env::var_os("SATURN_NO_AVX512").is_none();
        }
        false
    })
}

/// Whether the CPU has AVX2 and FMA: the 256-bit kernels (one-row dot products, and strips on
/// CPUs without AVX-512).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Elements below which a row or elementwise kernel runs on the calling thread: a dispatch
/// costs microseconds, an element a nanosecond or a few.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

#[derive(Debug, Error)]
pub enum CodegenError {
    /// Cranelift could not set up for this machine or rejected a function.
    #[error("kernel `{kernel}`: {msg}")]
    Compile { kernel: String, msg: String },
    /// A kernel was called with buffers that do not fit it.
    #[error("kernel `{kernel}`: {msg}")]
    Call { kernel: String, msg: String },
    /// A node the CPU backend cannot compile.
    #[error("node `%{node}`: {msg}")]
    Unsupported { node: String, msg: String },
    /// A param that could not be loaded.
    #[error("param `{key}`: {msg}")]
    Param { key: String, msg: String },
    /// A value-dependent failure while running (a gather index out of range, say).
    #[error("node `%{node}`: {msg}")]
    Run { node: String, msg: String },
    /// NVRTC or ptxas rejected a CUDA kernel, or could not be found.
    #[error(transparent)]
    Toolchain(#[from] crate::cuda::ToolchainError),
}
