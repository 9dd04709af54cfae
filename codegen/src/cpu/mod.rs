//! CPU kernels compiled with Cranelift (JIT).

mod elementwise;
mod kernels;

pub use elementwise::{ElementwiseKernel, compile_elementwise};
pub use kernels::CpuKernels;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CodegenError {
    /// Cranelift could not set up for this machine or rejected a function.
    #[error("kernel `{kernel}`: {msg}")]
    Compile { kernel: String, msg: String },
    /// A kernel was called with buffers that do not fit it.
    #[error("kernel `{kernel}`: {msg}")]
    Call { kernel: String, msg: String },
}
