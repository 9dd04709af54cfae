//! The Cranelift JIT setup every CPU kernel module shares: the host ISA, optimised for speed,
//! and the math functions kernels import (the Rust functions the interpreter calls, so compiled
//! and interpreted results agree bit for bit).

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

use super::CodegenError;

extern "C" fn saturn_expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn saturn_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn saturn_tanhf(x: f32) -> f32 {
    x.tanh()
}

/// The imported math functions: `saturn_expf`, `saturn_logf`, `saturn_tanhf` (`f32 -> f32`).
pub(super) const EXP: &str = "saturn_expf";
pub(super) const LOG: &str = "saturn_logf";
pub(super) const TANH: &str = "saturn_tanhf";

/// A JIT module for this machine; errors name `kernel`.
pub(super) fn host_module(kernel: &str) -> Result<JITModule, CodegenError> {
    let err = |msg: String| CodegenError::Compile { kernel: kernel.to_string(), msg };
    let mut flags = settings::builder();
    for (flag, value) in [("opt_level", "speed"), ("is_pic", "false"), ("use_colocated_libcalls", "false")] {
        flags.set(flag, value).map_err(|e| err(e.to_string()))?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| err(format!("this machine is not supported: {e}")))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| err(e.to_string()))?;
    let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
    builder.symbol(EXP, saturn_expf as *const u8);
    builder.symbol(LOG, saturn_logf as *const u8);
    builder.symbol(TANH, saturn_tanhf as *const u8);
    Ok(JITModule::new(builder))
}
