//! The Cranelift JIT setup every CPU kernel module shares: the host ISA, optimised for speed,
//! and the math functions kernels import (the Rust functions the interpreter calls, so compiled
//! and interpreted results agree bit for bit).

use std::sync::{Mutex, PoisonError};

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

use super::CodegenError;

extern "C" fn saturn_expf(x: f32) -> f32 {
    x.exp()
}

/// `exp` in place over `n` elements `stride` apart from `p` (16 at a time where they are
/// contiguous: `expf::exp_in_place`).
///
/// # Safety
/// `p` points at `(n - 1) * stride + 1` writable f32s (none for `n = 0`).
unsafe extern "C" fn saturn_exp_strided(p: *mut f32, n: usize, stride: usize) {
    if n == 0 {
        return;
    }
    if stride == 1 {
        // SAFETY: the caller's contract, with stride 1.
        super::expf::exp_in_place(unsafe { std::slice::from_raw_parts_mut(p, n) });
        return;
    }
    for i in 0..n {
        // SAFETY: element i is inside the caller's range.
        unsafe {
            let e = p.add(i * stride);
            *e = (*e).exp();
        }
    }
}

extern "C" fn saturn_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn saturn_tanhf(x: f32) -> f32 {
    x.tanh()
}

/// The imported math functions: `saturn_expf`, `saturn_logf`, `saturn_tanhf` (`f32 -> f32`), and
/// `saturn_exp_strided`.
pub(super) const EXP: &str = "saturn_expf";
pub(super) const LOG: &str = "saturn_logf";
/// `(p, n, stride)`: `exp` in place over a strided run of f32s (bit-identical to `EXP`).
pub(super) const EXP_STRIDED: &str = "saturn_exp_strided";
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
    builder.symbol(EXP_STRIDED, saturn_exp_strided as *const u8);
    builder.symbol(LOG, saturn_logf as *const u8);
    builder.symbol(TANH, saturn_tanhf as *const u8);
    Ok(JITModule::new(builder))
}

/// The executable code of a finalized JIT module, freed when this is dropped. Cranelift's
/// default memory provider leaks finalized code so that stray pointers stay valid; the owner of
/// a `JitCode` keeps every pointer into it beside it, so they die together.
///
/// `Send + Sync`: nothing touches the module but `Drop`, through `&mut self`; the `Mutex` only
/// makes the module (which holds a `RefCell`) `Sync`, and is never contended.
pub(super) struct JitCode(Mutex<Option<JITModule>>);

impl JitCode {
    pub(super) fn new(module: JITModule) -> JitCode {
        JitCode(Mutex::new(Some(module)))
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(module) = self.0.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            // SAFETY: the only pointers into the module are its owner's, which die with it, and
            // no call is running: calls borrow the owner.
            unsafe { module.free_memory() };
        }
    }
}
