//! The CUDA toolchain (NVRTC + ptxas) on real tools, no GPU needed. The tools must be installed:
//! `scripts/install-cuda-tools.sh` puts them in `<repo>/.cuda-tools`, where these tests look when
//! `SATURN_CUDA_HOME` is unset. Missing tools fail the tests; they are never skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use saturn_codegen::cuda::toolchain::{CudaArch, CudaTools, ToolchainError, parse_ptxas_report, ptx_entries};

mod common;

fn tools(cache: &Path) -> CudaTools {
    common::cuda_tools(cache)
}

const ADD: &str = r#"
extern "C" __global__ void add_f32(float* out, const float* a, const float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}
"#;

const REDUCE: &str = r#"
extern "C" __global__ void block_sum(float* out, const float* a, int n) {
    __shared__ float buf[256];
    int t = threadIdx.x;
    buf[t] = t < n ? a[t] : 0.0f;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}
"#;

/// 320 values live across a dynamic loop: more than the 255 registers a thread may have.
const SPILL: &str = r#"
extern "C" __global__ void spill_regs(float* out, const float* a, int n) {
    float r[320];
#pragma unroll
    for (int i = 0; i < 320; ++i) r[i] = a[i * 64 + threadIdx.x];
    for (int k = 0; k < n; ++k) {
        float x = a[k];
#pragma unroll
        for (int i = 0; i < 320; ++i) r[i] = r[i] * x + r[(i + 1) % 320];
    }
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < 320; ++i) acc += r[i];
    out[threadIdx.x] = acc;
}
"#;

#[test]
fn small_kernel_compiles_and_assembles_for_both_archs() {
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let tools = tools(cache.path());
    eprintln!("locate: {:?}", t.elapsed());
    assert_eq!(tools.nvrtc_version(), (13, 0));
    assert_eq!(tools.ptxas_version(), "13.0.88");
    for arch in CudaArch::ALL {
        let t = Instant::now();
        let ptx = tools.compile_ptx("add_f32", ADD, arch).unwrap_or_else(|e| panic!("{e}"));
        let compiled = t.elapsed();
        assert!(ptx.contains(&format!(".target {}", arch.name())), "{ptx}");
        assert_eq!(ptx_entries(&ptx), ["add_f32"]);
        let t = Instant::now();
        let assembled = tools.assemble_cubin(&ptx, arch).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{arch}: NVRTC {compiled:?}, ptxas {:?}", t.elapsed());
        assert!(!assembled.cubin.is_empty());
        let [k] = assembled.kernels.as_slice() else { panic!("{:?}", assembled.kernels) };
        assert_eq!(k.name, "add_f32");
        assert!(k.registers > 0 && k.registers <= 32, "{k:?}");
        assert!(!k.spills() && k.stack_bytes == 0 && k.shared_bytes == 0, "{k:?}");
    }
}

#[test]
fn shared_memory_and_barriers_are_reported() {
    let cache = tempfile::tempdir().unwrap();
    let tools = tools(cache.path());
    let ptx = tools.compile_ptx("block_sum", REDUCE, CudaArch::Sm90a).unwrap_or_else(|e| panic!("{e}"));
    let kernels = tools.assemble(&ptx, CudaArch::Sm90a).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kernels.len(), 1);
    assert_eq!((kernels[0].shared_bytes, kernels[0].barriers), (1024, 1), "{:?}", kernels[0]);
}

#[test]
fn cache_returns_identical_ptx_and_persists_it() {
    let cache = tempfile::tempdir().unwrap();
    let tools = tools(cache.path());
    let first = tools.compile_ptx("add_f32", ADD, CudaArch::Sm80).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "ptx");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);
    assert_eq!(tools.compile_ptx("add_f32", ADD, CudaArch::Sm80).unwrap(), first);

    // Another arch is another entry.
    tools.compile_ptx("add_f32", ADD, CudaArch::Sm90a).unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);

    // A fresh `CudaTools` reads the disk cache: mark the file to see that it did not recompile.
    let marked = format!("{first}// from the cache\n");
    std::fs::write(&files[0], &marked).unwrap();
    let fresh = CudaTools::locate(Some(&common::cuda_home()))
        .unwrap()
        .with_cache_dir(Some(cache.path().to_path_buf()));
    assert_eq!(fresh.compile_ptx("add_f32", ADD, CudaArch::Sm80).unwrap(), marked);

    // An unwritable cache is no error.
    let blocked = cache.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let no_disk =
        CudaTools::locate(Some(&common::cuda_home())).unwrap().with_cache_dir(Some(blocked.join("sub")));
    assert_eq!(no_disk.compile_ptx("add_f32", ADD, CudaArch::Sm80).unwrap(), first);
}

#[test]
fn nvrtc_rejection_carries_the_log() {
    let cache = tempfile::tempdir().unwrap();
    let tools = tools(cache.path());
    let src = "extern \"C\" __global__ void broken(float* o) { o[0] = undefined_thing + ; }";
    let err = tools.compile_ptx("broken", src, CudaArch::Sm90a).unwrap_err();
    eprintln!("{err}");
    let ToolchainError::Nvrtc { kernel, log } = &err else { panic!("{err:?}") };
    assert_eq!(kernel, "broken");
    assert!(log.contains("broken.cu") && log.contains("error"), "{log}");
    assert!(log.contains("undefined_thing"), "{log}");
    assert!(err.to_string().contains("`broken`"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0), 0, "errors are not cached");
}

#[test]
fn ptxas_rejection_names_the_entry() {
    let cache = tempfile::tempdir().unwrap();
    let tools = tools(cache.path());
    let ptx = ".version 9.0\n.target sm_90a\n.address_size 64\n\
               .visible .entry bad_ptx(.param .u64 p) { mov.u32 %r1, 1; ret; }\n";
    let err = tools.assemble(ptx, CudaArch::Sm90a).unwrap_err();
    let ToolchainError::Ptxas { kernel, log } = &err else { panic!("{err:?}") };
    assert_eq!(kernel, "bad_ptx");
    assert!(log.contains("bad_ptx.ptx, line 4; error"), "{log}");
    assert!(!log.contains("saturn-ptxas-"), "the temp path is replaced: {log}");

    let err = tools.assemble(".version 9.0\n.target sm_90a\n.address_size 64\nnot ptx\n", CudaArch::Sm90a);
    assert!(matches!(err, Err(ToolchainError::Ptxas { ref kernel, .. }) if kernel == "module"), "{err:?}");
}

#[test]
fn spilling_kernel_reports_spills() {
    let cache = tempfile::tempdir().unwrap();
    let tools = tools(cache.path());
    let t = Instant::now();
    let ptx = tools.compile_ptx("spill_regs", SPILL, CudaArch::Sm90a).unwrap_or_else(|e| panic!("{e}"));
    let compiled = t.elapsed();
    let t = Instant::now();
    let kernels = tools.assemble(&ptx, CudaArch::Sm90a).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("spill_regs: NVRTC {compiled:?}, ptxas {:?}: {:?}", t.elapsed(), kernels[0]);
    let k = &kernels[0];
    assert_eq!(k.name, "spill_regs");
    assert!(k.spills() && k.spill_stores > 0 && k.spill_loads > 0, "{k:?}");
    assert!(k.registers >= 200 && k.stack_bytes > 0, "{k:?}");
}

#[test]
fn locate_in_a_missing_folder_says_how_to_install() {
    let err = CudaTools::locate(Some(Path::new("/nonexistent/cuda"))).unwrap_err();
    assert!(matches!(err, ToolchainError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("/nonexistent/cuda") && msg.contains("scripts/install-cuda-tools.sh"), "{msg}");
    assert!(msg.contains("SATURN_CUDA_HOME"), "{msg}");
}

/// ptxas 13.0 output, recorded: entries in reverse order, a device function's block between
/// entries, a cumulative stack size, and sm_80's cmem items.
#[test]
fn parses_a_recorded_ptxas_report() {
    let log = "\
ptxas info    : 0 bytes gmem, 64 bytes cmem[3]
ptxas info    : Compiling entry function 'callsfn' for 'sm_80'
ptxas info    : Function properties for callsfn
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers, 368 bytes cmem[0]
ptxas info    : Compile time = 1.492 ms
ptxas info    : Function properties for _Z6helperf
    16 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'spill' for 'sm_80'
ptxas info    : Function properties for spill
    400 bytes stack frame, 752 bytes spill stores, 748 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 2048 bytes cumulative stack size, 380 bytes cmem[0]
ptxas info    : Compile time = 15.634 ms
ptxas info    : Compiling entry function 'reduce_smem' for 'sm_80'
ptxas info    : Function properties for reduce_smem
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem, 372 bytes cmem[0]
ptxas info    : Compile time = 3.836 ms
";
    let ks = parse_ptxas_report(log);
    let names: Vec<&str> = ks.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["callsfn", "spill", "reduce_smem"]);
    assert_eq!((ks[0].registers, ks[0].stack_bytes, ks[0].spill_stores), (8, 0, 0));
    assert_eq!(
        (ks[1].registers, ks[1].spill_stores, ks[1].spill_loads, ks[1].stack_bytes),
        (255, 752, 748, 2048)
    );
    assert_eq!((ks[2].registers, ks[2].barriers, ks[2].shared_bytes), (10, 1, 1024));
}

/// Without a folder, `locate` reads `SATURN_CUDA_HOME`, else looks for ptxas on `PATH`; either it
/// finds the same tools or it explains what it looked for.
#[test]
fn locate_without_a_folder_uses_the_environment() {
    let env_home = std::env::var_os("SATURN_CUDA_HOME").filter(|v| !v.is_empty());
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ptxas").is_file()));
    match CudaTools::locate(None) {
        Ok(tools) => {
            assert!(env_home.is_some() || on_path);
            assert!(tools.ptxas_path().is_file());
        }
        Err(err) => {
            assert!(env_home.is_none() && !on_path, "{err}");
            assert!(err.to_string().contains("SATURN_CUDA_HOME"), "{err}");
        }
    }
}
