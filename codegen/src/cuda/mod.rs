//! The CUDA backend's code generator: each fusion group of the optimised graph becomes CUDA C
//! kernels with launch geometry from the shapes ([`CudaProgram::generate`]); NVRTC compiles
//! them to PTX for `sm_80` and `sm_90a` and `ptxas` validates them ([`toolchain`]).
//!
//! Kernels take the symbol values from a device array, so one PTX serves every sequence length;
//! launch grids and buffer sizes are [`Extent`]s the host evaluates per run.

mod emit;
pub mod emulate;
pub mod exec;
mod extent;
mod gemm;
mod program;
pub mod toolchain;

pub use extent::Extent;
pub use gemm::{BlasGemm, Gemm, GemmRight, GemmType};
pub use program::{
    ArenaPlan, Buffer, CudaKernel, CudaOptions, CudaProgram, KernelLaunch, Launch, PRELUDE, Storage,
    StoredWeights, WeightStorage, Work,
};
pub use toolchain::{Assembled, CudaArch, CudaTools, KernelResources, ToolchainError};
