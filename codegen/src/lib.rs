//! saturn's code generators.
//!
//! - [`cpu`]: kernels JIT-compiled with Cranelift for the host CPU. Today: fused elementwise
//!   expressions (`fused_elementwise`, and any unary/binary op as a one-op expression), each
//!   compiled once into a loop over the output, bit-identical to the interpreter.
//!   [`CpuKernels`] plugs them into evaluation (`saturn_ir::Kernels`); the interpreter runs the
//!   nodes no kernel takes yet.
//!
//! CUDA C (NVRTC to PTX) lands beside it. This crate depends on `ir` only; it never runs a
//! model, the runtime does.

pub mod cpu;

pub use cpu::{CodegenError, CpuKernels, ElementwiseKernel, compile_elementwise};
