//! The CPU as a CUDA [`Device`] ([`HostDevice`]), so every generated kernel runs and is
//! checked against the interpreter where there is no GPU (CI), through the same executor
//! ([`ProgramSet`]: memory plan, carried cache, graph replay) a GPU uses.
//!
//! A program's `kernels.cu` is compiled as C++ by g++ with `emulation.h` (CUDA keywords,
//! intrinsics, and a fiber per thread of a block: barriers and warp shuffles behave as on a
//! GPU, see the header) and one launcher per kernel, then loaded. New allocations are NaN
//! bytes, so a read of an unwritten element shows. [`Emulator`] is one program on it, for
//! tests.
//!
//! It is a checker, not a fast runtime: blocks run one after another on the calling thread.

mod compile;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::Arc;

use saturn_ir::{ParamSource, Tensor};

use self::compile::Library;
use self::memory::Memory;
use super::exec::{Device, ProgramSet};
use super::{BlasGemm, CudaProgram};
use crate::CodegenError;

/// The CPU as a [`Device`]: host memory (new allocations are NaN bytes) and g++-compiled
/// kernels run by fibers. Graphs are recorded launch lists.
#[derive(Default)]
pub struct HostDevice {
    /// The launches recorded since `begin_capture`, while capturing.
    capture: Option<Vec<Recorded>>,
}

/// One recorded launch.
pub enum Recorded {
    Kernel {
        module: Arc<Library>,
        kernel: String,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        args: Vec<u64>,
    },
    Gemm {
        call: BlasGemm,
        a: u64,
        b: u64,
        c: u64,
    },
}

impl Device for HostDevice {
    type Mem = Memory;
    type Module = Arc<Library>;
    type Graph = Vec<Recorded>;

    fn begin_capture(&mut self) -> Result<(), CodegenError> {
        self.capture = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&mut self) -> Result<Vec<Recorded>, CodegenError> {
        self.capture
            .take()
            .ok_or_else(|| CodegenError::Run { node: "graph".into(), msg: "not capturing".into() })
    }

    fn replay(&mut self, graph: &Vec<Recorded>) -> Result<(), CodegenError> {
        for r in graph {
            match r {
                Recorded::Kernel { module, kernel, grid, block, shared_bytes, args } => {
                    run_launcher(module, kernel, *grid, *block, *shared_bytes, args).map_err(|msg| {
                        CodegenError::Run { node: kernel.clone(), msg: format!("replayed: {msg}") }
                    })?
                }
                // SAFETY: the executor checked the spans when it recorded the call, and the
                // memory is unchanged while the graph is (its signature holds the addresses).
                Recorded::Gemm { call, a, b, c } => unsafe { run_gemm(call, *a, *b, *c) },
            }
        }
        Ok(())
    }

    /// Launches run to completion on the calling thread: nothing is ever queued.
    fn synchronize(&mut self) -> Result<(), CodegenError> {
        Ok(())
    }

    fn load(&mut self, program: &CudaProgram) -> Result<Arc<Library>, CodegenError> {
        compile::library(program)
    }

    fn alloc(&mut self, bytes: usize) -> Result<Memory, CodegenError> {
        Ok(Memory::poisoned(bytes))
    }

    fn address(&self, mem: &Memory) -> u64 {
        mem.address()
    }

    fn upload(&mut self, mem: &mut Memory, offset: usize, data: &[u8]) -> Result<(), CodegenError> {
        mem.bytes_mut()[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn download(&mut self, mem: &Memory, offset: usize, out: &mut [u8]) -> Result<(), CodegenError> {
        out.copy_from_slice(&mem.bytes()[offset..offset + out.len()]);
        Ok(())
    }

    fn copy(
        &mut self,
        dst: &mut Memory,
        src: &Memory,
        offset: usize,
        bytes: usize,
    ) -> Result<(), CodegenError> {
        dst.bytes_mut()[..bytes].copy_from_slice(&src.bytes()[offset..offset + bytes]);
        Ok(())
    }

    fn launch(
        &mut self,
        module: &Arc<Library>,
        kernel: &str,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        args: &[u64],
    ) -> Result<(), String> {
        if let Some(capture) = &mut self.capture {
            let module = module.clone();
            capture.push(Recorded::Kernel {
                module,
                kernel: kernel.into(),
                grid,
                block,
                shared_bytes,
                args: args.to_vec(),
            });
            return Ok(());
        }
        run_launcher(module, kernel, grid, block, shared_bytes, args)
    }

    /// The BLAS definition on the host ([`BlasGemm::run_host`]).
    fn gemm(&mut self, call: &BlasGemm, a: u64, b: u64, c: u64) -> Result<(), String> {
        match &mut self.capture {
            Some(capture) => capture.push(Recorded::Gemm { call: *call, a, b, c }),
            // SAFETY: the executor checked that each operand's buffer holds its span.
            None => unsafe { run_gemm(call, a, b, c) },
        }
        Ok(())
    }
}

/// # Safety
/// As [`BlasGemm::run_host`], with host addresses.
unsafe fn run_gemm(call: &BlasGemm, a: u64, b: u64, c: u64) {
    // SAFETY: the caller's.
    unsafe { call.run_host(a as *const u8, b as *const u8, c as *mut u8) }
}

/// Runs `kernel`'s launcher over the grid.
fn run_launcher(
    module: &Library,
    kernel: &str,
    grid: [u32; 3],
    block: u32,
    shared_bytes: u32,
    args: &[u64],
) -> Result<(), String> {
    let f = module.launchers.get(kernel).ok_or("is not in the library")?;
    let params: Vec<*mut c_void> = args[1..].iter().map(|&a| a as *mut c_void).collect();
    let mut msg = [0 as std::ffi::c_char; 512];
    // SAFETY: `args[0]` is the `sym` array and the others point into memory holding each
    // buffer's extent at the run's symbols (the executor checked them against their memory).
    let rc = unsafe {
        f(
            args[0] as *const i64,
            params.as_ptr(),
            params.len() as u32,
            grid.as_ptr(),
            block,
            shared_bytes,
            msg.as_mut_ptr(),
            msg.len(),
        )
    };
    if rc != 0 {
        // SAFETY: the launcher writes a NUL-terminated message within `msg` (snprintf).
        return Err(unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned());
    }
    Ok(())
}

/// One [`CudaProgram`] on the [`HostDevice`], with its params and carried buffers: the test
/// executor (the runtime's plan, on the CPU).
pub struct Emulator {
    set: ProgramSet<HostDevice>,
}

impl Emulator {
    /// Compiles `program` (once per source in this process), loads its params from `params`
    /// and runs its `init` launches. Carried buffers start empty.
    pub fn new(program: &CudaProgram, params: &dyn ParamSource) -> Result<Emulator, CodegenError> {
        let mut set = ProgramSet::new(HostDevice::default());
        set.add(program.clone(), params)?;
        Ok(Emulator { set })
    }

    /// Runs the program once with `symbols` (name, value) and `inputs` by input name (extra
    /// entries are ignored) and returns every output by name. Carried buffers must hold the rows
    /// their input's shape has at these symbols; outputs appended to them grow them.
    pub fn run(
        &mut self,
        symbols: &[(&str, u64)],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, CodegenError> {
        self.set.run(0, symbols, inputs)?;
        let names: Vec<String> = self.set.program(0).outputs.iter().map(|(n, _)| n.clone()).collect();
        names.into_iter().map(|n| Ok((n.clone(), self.set.output(0, &n)?))).collect()
    }

    /// The rows a carried buffer holds, or `None` if `name` is not one.
    pub fn carried(&mut self, name: &str) -> Option<Tensor> {
        self.set.carried(name).ok().flatten()
    }

    /// Replaces the rows of carried buffer `name` (a cache filled by earlier steps).
    pub fn set_carried(&mut self, name: &str, rows: &Tensor) -> Result<(), CodegenError> {
        self.set.set_carried(name, rows)
    }
}
