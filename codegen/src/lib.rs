//! saturn's code generators (CUDA C to PTX through NVRTC, Cranelift for the CPU).
//!
//! Not built yet: this crate holds the place of code generation in the workspace so that the
//! dependency structure (`codegen` depends on `ir` only) is fixed from the start. See
//! ARCHITECTURE.md.
