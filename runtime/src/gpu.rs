//! An NVIDIA GPU as a [`Device`], through `cudarc`'s driver API: kernels compiled by NVRTC
//! for the GPU's architecture (sm_90a from compute capability 9.0, else sm_80 from 8.x) and
//! loaded as modules; buffers are device allocations; launches go to one stream (not the legacy
//! default stream, which cannot be captured into a CUDA graph). Everything is ordered on that
//! stream, so cudarc's per-buffer event tracking is turned off (its events would also break a
//! capture).
//!
//! `cudarc` loads `libcuda.so` at first use and panics if it is missing, so [`GpuDevice::open`]
//! checks for it first: a machine without a GPU driver gets [`RuntimeError::Device`].

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

use cudarc::cublas::sys::{
    self as cublas_sys, cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::cublas::{CudaBlas, result as cublas_result};

use cudarc::driver::sys::{CUfunction_attribute_enum, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use rayon::prelude::*;
use saturn_codegen::CodegenError;
use saturn_codegen::cuda::exec::Device;
use saturn_codegen::cuda::{BlasGemm, CudaArch, CudaProgram, CudaTools, GemmType, Work};

use crate::RuntimeError;

/// One GPU, its stream, and the tools that compile kernels for it.
pub struct GpuDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    tools: CudaTools,
    arch: CudaArch,
    /// cuBLAS on `stream` with its workspace, made when a program with library products loads.
    blas: Option<(CudaBlas, CudaSlice<u8>)>,
}

/// cuBLAS's workspace, ours so that it never allocates while a CUDA graph is captured (NVIDIA
/// advises 32 MiB on Hopper).
const BLAS_WORKSPACE: usize = 32 << 20;

fn device_error(what: &str, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Run { node: "cuda".into(), msg: format!("{what}: {e}") }
}

impl GpuDevice {
    /// GPU `ordinal`, with `tools` (NVRTC) to compile kernels for it.
    pub fn open(ordinal: usize, tools: CudaTools) -> Result<GpuDevice, RuntimeError> {
        // SAFETY: only probes whether the driver library can be loaded.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(RuntimeError::Device(
                "no CUDA driver (libcuda.so) on this machine: run on a GPU machine, or use --backend cpu \
                 (or cuda-emulator to run the CUDA kernels on the CPU)"
                    .into(),
            ));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| RuntimeError::Device(format!("GPU {ordinal}: {e}")))?;
        let (major, minor) =
            ctx.compute_capability().map_err(|e| RuntimeError::Device(format!("GPU {ordinal}: {e}")))?;
        let arch = match (major, minor) {
            (9, _) => CudaArch::Sm90a,
            (8, _) | (10.., _) => CudaArch::Sm80,
            _ => {
                return Err(RuntimeError::Device(format!(
                    "GPU {ordinal} has compute capability {major}.{minor}; saturn's kernels need 8.0 or newer"
                )));
            }
        };
        // SAFETY: every operation of this device goes to `stream`, which orders them.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| RuntimeError::Device(format!("GPU {ordinal}: {e}")))?;
        Ok(GpuDevice { ctx, stream, tools, arch, blas: None })
    }

    /// Creates the cuBLAS handle on the stream, with its workspace, unless there is one.
    fn ensure_blas(&mut self) -> Result<(), CodegenError> {
        if self.blas.is_some() {
            return Ok(());
        }
        self.tools.load_cublas()?;
        let blas = CudaBlas::new(self.stream.clone()).map_err(|e| device_error("cuBLAS", e))?;
        let workspace =
            self.stream.alloc_zeros::<u8>(BLAS_WORKSPACE).map_err(|e| device_error("cuBLAS", e))?;
        let ptr = self.address(&workspace);
        // SAFETY: the workspace is device memory of that size, kept alive with the handle.
        unsafe { cublas_sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut c_void, BLAS_WORKSPACE) }
            .result()
            .map_err(|e| device_error("cuBLAS workspace", e))?;
        self.blas = Some((blas, workspace));
        Ok(())
    }

    /// The GPU's name, as the driver gives it.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|e| format!("(unnamed: {e})"))
    }
}

impl Device for GpuDevice {
    type Mem = CudaSlice<u8>;
    type Module = HashMap<String, CudaFunction>;
    type Graph = CudaGraph;

    fn begin_capture(&mut self) -> Result<(), CodegenError> {
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.stream.begin_capture(mode).map_err(|e| device_error("begin capture", e))
    }

    fn end_capture(&mut self) -> Result<CudaGraph, CodegenError> {
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| device_error("end capture", e))?;
        graph.ok_or_else(|| device_error("end capture", "an empty graph"))
    }

    fn replay(&mut self, graph: &CudaGraph) -> Result<(), CodegenError> {
        graph.launch().map_err(|e| device_error("graph launch", e))
    }

    fn synchronize(&mut self) -> Result<(), CodegenError> {
        self.stream.synchronize().map_err(|e| device_error("synchronize", e))
    }

    fn load(&mut self, program: &CudaProgram) -> Result<Self::Module, CodegenError> {
        // Before any capture: creating the handle allocates.
        if program.init.iter().chain(&program.launches).any(|l| matches!(l.work, Work::Gemm(_))) {
            self.ensure_blas()?;
        }
        // NVRTC compiles every kernel at once (one program each, on every core: a cold load
        // of a model's kernels is otherwise seconds of one core); modules load in order.
        let (tools, arch) = (&self.tools, self.arch);
        let ptxs = program
            .kernels
            .par_iter()
            .map(|k| tools.compile_ptx(&k.name, &CudaProgram::kernel_source(k), arch))
            .collect::<Result<Vec<_>, _>>()?;
        let mut functions = HashMap::new();
        for (k, ptx) in program.kernels.iter().zip(ptxs) {
            let module = self.ctx.load_module(Ptx::from_src(ptx)).map_err(|e| device_error(&k.name, e))?;
            let f = module.load_function(&k.name).map_err(|e| device_error(&k.name, e))?;
            // Beyond 48 KiB, a kernel's dynamic shared memory must be opted into, once per
            // function (the device's limit is checked by the executor at each launch).
            let launches = program.init.iter().chain(&program.launches).filter_map(|l| l.kernel());
            let shared = launches.filter(|l| l.kernel == k.name).map(|l| l.shared_bytes);
            if let Some(bytes) = shared.max().filter(|&b| b > 48 * 1024) {
                f.set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
                .map_err(|e| {
                    device_error(&format!("{}: {bytes} bytes of dynamic shared memory", k.name), e)
                })?;
            }
            functions.insert(k.name.clone(), f);
        }
        Ok(functions)
    }

    fn alloc(&mut self, bytes: usize) -> Result<CudaSlice<u8>, CodegenError> {
        // SAFETY: the executor writes every byte it reads (kernels, uploads) before reading it.
        unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| device_error(&format!("{bytes} bytes"), e))
    }

    fn address(&self, mem: &CudaSlice<u8>) -> u64 {
        let (ptr, _sync) = mem.device_ptr(&self.stream);
        ptr
    }

    fn upload(&mut self, mem: &mut CudaSlice<u8>, offset: usize, data: &[u8]) -> Result<(), CodegenError> {
        let mut dst = mem.slice_mut(offset..offset + data.len());
        self.stream.memcpy_htod(data, &mut dst).map_err(|e| device_error("upload", e))
    }

    fn download(&mut self, mem: &CudaSlice<u8>, offset: usize, out: &mut [u8]) -> Result<(), CodegenError> {
        let src = mem.slice(offset..offset + out.len());
        self.stream.memcpy_dtoh(&src, out).map_err(|e| device_error("download", e))?;
        self.stream.synchronize().map_err(|e| device_error("download", e))
    }

    fn copy(
        &mut self,
        dst: &mut CudaSlice<u8>,
        src: &CudaSlice<u8>,
        offset: usize,
        bytes: usize,
    ) -> Result<(), CodegenError> {
        if bytes == 0 {
            return Ok(());
        }
        let from = src.slice(offset..offset + bytes);
        let mut to = dst.slice_mut(..bytes);
        self.stream.memcpy_dtod(&from, &mut to).map_err(|e| device_error("copy", e))
    }

    fn launch(
        &mut self,
        module: &Self::Module,
        kernel: &str,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        args: &[u64],
    ) -> Result<(), String> {
        let f = module.get(kernel).ok_or("is not loaded")?;
        let mut launch = self.stream.launch_builder(f);
        for a in args {
            launch.arg(a);
        }
        let config = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (block, 1, 1),
            shared_mem_bytes: shared_bytes,
        };
        // SAFETY: the kernel's parameters are `sym` and one pointer per buffer, in `args`'
        // order (the program's launch), each pointing at device memory holding the buffer's
        // extent at the run's symbols (checked by the executor).
        unsafe { launch.launch(config) }.map(|_| ()).map_err(|e| e.to_string())
    }

    fn gemm(&mut self, call: &BlasGemm, a: u64, b: u64, c: u64) -> Result<(), String> {
        let (blas, _) = self.blas.as_ref().ok_or("cuBLAS was not set up when the program loaded")?;
        let int = |v: usize| c_int::try_from(v).map_err(|_| format!("{v} is beyond cuBLAS's 32-bit sizes"));
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let ty = match call.operands {
            GemmType::F32 => cudaDataType_t::CUDA_R_32F,
            GemmType::Bf16 => cudaDataType_t::CUDA_R_16BF,
        };
        // cuBLAS runs in the calling thread's current context (the launches bind theirs).
        self.ctx.bind_to_thread().map_err(|e| e.to_string())?;
        let (alpha, beta) = (1f32, 0f32);
        let (alpha, beta) = ((&alpha as *const f32).cast(), (&beta as *const f32).cast());
        let (a, b, c) = (a as *const c_void, b as *const c_void, c as *mut c_void);
        let (m, n, k) = (int(call.m)?, int(call.n)?, int(call.k)?);
        let (lda, ldb, ldc) = (int(call.lda)?, int(call.ldb)?, int(call.ldc)?);
        let (ta, tb) = (op(call.trans_a), op(call.trans_b));
        let (f32_out, compute, algo) = (
            cudaDataType_t::CUDA_R_32F,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        );
        let handle = *blas.handle();
        // SAFETY: the executor checked that `a`, `b` and `c` are device memory holding the
        // call's spans; alpha and beta are host scalars (cuBLAS's default pointer mode), read
        // before the call returns; CUBLAS_COMPUTE_32F is f32 arithmetic (no TF32).
        unsafe {
            if call.batch == 1 {
                cublas_result::gemm_ex(
                    handle, ta, tb, m, n, k, alpha, a, ty, lda, b, ty, ldb, beta, c, f32_out, ldc, compute,
                    algo,
                )
            } else {
                let stride = |v: usize| i64::try_from(v).map_err(|_| format!("stride {v} is too large"));
                let (sa, sb, sc) = (stride(call.stride_a)?, stride(call.stride_b)?, stride(call.stride_c)?);
                cublas_result::gemm_strided_batched_ex(
                    handle,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    alpha,
                    a,
                    ty,
                    lda,
                    sa,
                    b,
                    ty,
                    ldb,
                    sb,
                    beta,
                    c,
                    f32_out,
                    ldc,
                    sc,
                    int(call.batch)?,
                    compute,
                    algo,
                )
            }
        }
        .map_err(|e| format!("cuBLAS: {e:?}"))
    }
}
