//! The CUDA toolchain: NVRTC turns generated CUDA C into PTX, ptxas assembles PTX into a cubin and
//! reports what each kernel costs (registers, spills, stack, shared memory).
//!
//! Nothing here needs a GPU or a system CUDA toolkit: both tools come from pinned PyPI wheels
//! (`scripts/install-cuda-tools.sh`), NVRTC is loaded at run time through cudarc, and ptxas runs
//! as a child process. Compiled PTX is cached in memory and on disk, keyed by a stable hash of
//! everything that determines it, so a model compiles its kernels once per machine.
//!
//! Generated kernels must not `#include` anything: NVRTC gets no CUDA headers on its search path.

use std::collections::HashMap;
use std::ffi::c_int;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::nvrtc::{CompileError, CompileOptions, sys as nvrtc_sys};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use serde::Serialize;

/// Folder holding `lib/libnvrtc.so.13` and `bin/ptxas` (what the install script prints).
pub const CUDA_HOME_ENV: &str = "SATURN_CUDA_HOME";
/// Folder for the on-disk PTX cache; set to an empty string to keep the cache in memory only.
pub const KERNEL_CACHE_ENV: &str = "SATURN_KERNEL_CACHE";
const NVRTC_LIB: &str = "libnvrtc.so.13";
/// cuBLAS and the library it opens, in load order.
const CUBLAS_LIBS: [&str; 2] = ["libcublasLt.so.13", "libcublas.so.13"];
const FIX: &str = "run scripts/install-cuda-tools.sh and set SATURN_CUDA_HOME to the folder it prints \
                   (<DIR>/nvidia/cu13)";
/// Options passed to NVRTC besides the architecture; part of the cache key.
const NVRTC_OPTIONS: [&str; 2] = ["--std=c++17", "-default-device"];

/// The GPU architectures saturn generates code for: A100-class and H100-class (with the
/// architecture-specific `a` features, e.g. wgmma).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum CudaArch {
    Sm80,
    Sm90a,
}

impl CudaArch {
    pub const ALL: [CudaArch; 2] = [CudaArch::Sm80, CudaArch::Sm90a];

    /// The real architecture, as ptxas takes it: `sm_80`, `sm_90a`.
    pub fn name(self) -> &'static str {
        match self {
            CudaArch::Sm80 => "sm_80",
            CudaArch::Sm90a => "sm_90a",
        }
    }

    /// The virtual architecture NVRTC compiles for: `compute_80`, `compute_90a`.
    pub fn compute(self) -> &'static str {
        match self {
            CudaArch::Sm80 => "compute_80",
            CudaArch::Sm90a => "compute_90a",
        }
    }
}

impl fmt::Display for CudaArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What ptxas says one entry function uses; the numbers a kernel generator tunes against
/// (registers bound occupancy, spills mean local-memory traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub barriers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Per-thread stack (local memory) in bytes: the frame, or the cumulative size with callees
    /// when ptxas reports one.
    pub stack_bytes: u32,
    /// Static shared memory in bytes (dynamic shared memory is decided at launch).
    pub shared_bytes: u32,
}

impl KernelResources {
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// A PTX module assembled for one architecture: the cubin a driver loads without JIT, and the
/// resources of each entry in the module's order.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub cubin: Vec<u8>,
    pub kernels: Vec<KernelResources>,
    /// ptxas's full `-v` output.
    pub log: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("CUDA tools not found: looked for {looked}; {FIX}")]
    NotFound { looked: String },
    #[error("could not load {}: {reason}; {FIX}", .path.display())]
    Load { path: PathBuf, reason: String },
    #[error("NVRTC rejected kernel `{kernel}`:\n{log}")]
    Nvrtc { kernel: String, log: String },
    #[error("NVRTC failed on kernel `{kernel}`: {reason}")]
    NvrtcApi { kernel: String, reason: String },
    #[error("ptxas rejected kernel `{kernel}`:\n{log}")]
    Ptxas { kernel: String, log: String },
    #[error("ptxas's report for kernel `{kernel}` names no resources for `{missing}`:\n{log}")]
    Report { kernel: String, missing: String, log: String },
    #[error("could not run {}: {source}", .path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Located CUDA tools plus the PTX cache. Cheap to share (`&CudaTools` is `Sync`).
#[derive(Debug)]
pub struct CudaTools {
    nvrtc: Option<PathBuf>,
    ptxas: PathBuf,
    ptxas_version: String,
    nvrtc_version: (i32, i32),
    cache_dir: Option<PathBuf>,
    memory: Mutex<HashMap<u128, Arc<str>>>,
}

/// The libnvrtc this process loaded by path (the loader keeps one per soname, so the first wins).
static LOADED: Mutex<Option<(PathBuf, Library)>> = Mutex::new(None);

impl CudaTools {
    /// Finds NVRTC and ptxas: in `home`, else in `$SATURN_CUDA_HOME`, else `ptxas` on `PATH`
    /// (with `../lib/libnvrtc.so.13` beside it, or a libnvrtc the loader already finds).
    /// Loads NVRTC; errors say what was looked for and how to install the tools.
    pub fn locate(home: Option<&Path>) -> Result<CudaTools, ToolchainError> {
        let env_home = std::env::var_os(CUDA_HOME_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (nvrtc, ptxas) = match (home, env_home) {
            (Some(home), _) => from_home(home, "the given folder")?,
            (None, Some(home)) => from_home(&home, CUDA_HOME_ENV)?,
            (None, None) => from_path()?,
        };
        if let Some(lib) = &nvrtc {
            preload(lib)?;
        }
        // SAFETY: only probes whether the loader can open libnvrtc; cudarc panics if it cannot.
        if !unsafe { nvrtc_sys::is_culib_present() } {
            let path = nvrtc.clone().unwrap_or_else(|| PathBuf::from(NVRTC_LIB));
            return Err(ToolchainError::Load {
                path,
                reason: "cudarc cannot open libnvrtc by soname".into(),
            });
        }
        let nvrtc_version = nvrtc_version(&nvrtc)?;
        let ptxas_version = ptxas_version(&ptxas)?;
        Ok(CudaTools {
            nvrtc,
            ptxas,
            ptxas_version,
            nvrtc_version,
            cache_dir: default_cache_dir(),
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `dir` for the on-disk PTX cache (`None`: memory only) instead of the default
    /// (`$SATURN_KERNEL_CACHE`, else `$XDG_CACHE_HOME/saturn/ptx`, else `~/.cache/saturn/ptx`).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> CudaTools {
        self.cache_dir = dir;
        self
    }

    /// The libnvrtc loaded by path; `None` when the system loader found it by soname.
    pub fn nvrtc_path(&self) -> Option<&Path> {
        self.nvrtc.as_deref()
    }

    pub fn ptxas_path(&self) -> &Path {
        &self.ptxas
    }

    /// NVRTC's (major, minor) version, as the loaded library reports it.
    pub fn nvrtc_version(&self) -> (i32, i32) {
        self.nvrtc_version
    }

    /// ptxas's version, e.g. `13.0.88`.
    pub fn ptxas_version(&self) -> &str {
        &self.ptxas_version
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Makes cuBLAS loadable for cudarc (the library products of
    /// [`crate::cuda::CudaOptions::cublas`]): `libcublasLt.so.13` and `libcublas.so.13` are
    /// loaded by path from the folder of the NVRTC in use where they are there (a toolkit's
    /// `lib64`, or the wheels' `lib` with `nvidia-cublas`), else left to the system loader.
    pub fn load_cublas(&self) -> Result<(), ToolchainError> {
        let dir = self.nvrtc.as_deref().and_then(Path::parent);
        for path in dir.iter().flat_map(|d| CUBLAS_LIBS.map(|name| d.join(name))).filter(|p| p.is_file()) {
            std::mem::forget(open_global(&path)?);
        }
        // SAFETY: only probes whether the loader can open libcublas; cudarc panics if it cannot.
        if unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Ok(());
        }
        let looked =
            dir.map_or("the loader's path".into(), |d| format!("{} and the loader's path", d.display()));
        Err(ToolchainError::Load {
            path: PathBuf::from(CUBLAS_LIBS[1]),
            reason: format!(
                "cuBLAS is needed for --cublas and is not in {looked} (install the CUDA 13 toolkit's \
                 cuBLAS or the nvidia-cublas wheel, or run without --cublas)"
            ),
        })
    }

    /// Compiles CUDA C `source` to PTX for `arch` (C++17, IEEE math: no fast-math). `kernel_name`
    /// only names the program in NVRTC's messages and errors. Results are cached by a hash of
    /// (source, arch, options, NVRTC version), in memory and on disk.
    pub fn compile_ptx(
        &self,
        kernel_name: &str,
        source: &str,
        arch: CudaArch,
    ) -> Result<String, ToolchainError> {
        let key = cache_key(source, arch, self.nvrtc_version);
        if let Some(ptx) = self.memory.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(ptx.to_string());
        }
        let ptx = match self.read_disk(key) {
            Some(ptx) => ptx,
            None => {
                let ptx = nvrtc_compile(kernel_name, source, arch)?;
                self.write_disk(key, &ptx);
                ptx
            }
        };
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::from(ptx.as_str()));
        Ok(ptx)
    }

    /// Assembles `ptx` for `arch` with `ptxas -v` and reports each entry's resources.
    pub fn assemble(&self, ptx: &str, arch: CudaArch) -> Result<Vec<KernelResources>, ToolchainError> {
        self.assemble_cubin(ptx, arch).map(|a| a.kernels)
    }

    /// [`CudaTools::assemble`], also returning the cubin and ptxas's log.
    pub fn assemble_cubin(&self, ptx: &str, arch: CudaArch) -> Result<Assembled, ToolchainError> {
        let entries = ptx_entries(ptx);
        let kernel = entries.first().map_or("module", String::as_str).to_string();
        let io = |what: String| move |source| ToolchainError::Io { what, source };
        let dir = tempfile::Builder::new()
            .prefix("saturn-ptxas-")
            .tempdir()
            .map_err(io("creating a temporary folder for ptxas".into()))?;
        let stem = file_stem(&kernel);
        let ptx_path = dir.path().join(format!("{stem}.ptx"));
        let cubin_path = dir.path().join(format!("{stem}.cubin"));
        std::fs::write(&ptx_path, ptx).map_err(io(format!("writing {}", ptx_path.display())))?;
        let out = Command::new(&self.ptxas)
            .arg(format!("-arch={}", arch.name()))
            .arg("-v")
            .arg("-o")
            .arg(&cubin_path)
            .arg(&ptx_path)
            .output()
            .map_err(|source| ToolchainError::Spawn { path: self.ptxas.clone(), source })?;
        // ptxas writes its report to stderr; read both streams, and name the file as the kernel.
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            .replace(&ptx_path.display().to_string(), &format!("{stem}.ptx"));
        if !out.status.success() {
            return Err(ToolchainError::Ptxas { kernel, log });
        }
        let cubin = std::fs::read(&cubin_path).map_err(io(format!("reading {}", cubin_path.display())))?;
        let mut parsed = parse_ptxas_report(&log);
        let mut kernels = Vec::with_capacity(entries.len());
        for entry in &entries {
            match parsed.iter().position(|k| &k.name == entry) {
                Some(i) => kernels.push(parsed.swap_remove(i)),
                None => return Err(ToolchainError::Report { kernel, missing: entry.clone(), log }),
            }
        }
        Ok(Assembled { cubin, kernels, log })
    }

    fn disk_path(&self, key: u128) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|dir| dir.join(format!("{key:032x}.ptx")))
    }

    fn read_disk(&self, key: u128) -> Option<String> {
        let path = self.disk_path(key)?;
        let ptx = std::fs::read_to_string(&path).ok()?;
        if ptx.contains(".version") {
            tracing::debug!(path = %path.display(), "PTX cache hit");
            Some(ptx)
        } else {
            tracing::warn!(path = %path.display(), "ignoring a cached PTX file that is not PTX");
            None
        }
    }

    /// Writes atomically (temp file, then rename); a cache that cannot be written only warns.
    fn write_disk(&self, key: u128, ptx: &str) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let Some(path) = self.disk_path(key) else { return };
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, ptx))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "could not write the PTX cache");
        }
    }
}

fn from_home(home: &Path, origin: &str) -> Result<(Option<PathBuf>, PathBuf), ToolchainError> {
    let ptxas = home.join("bin").join("ptxas");
    let lib = ["lib", "lib64"].iter().map(|d| home.join(d).join(NVRTC_LIB)).find(|p| p.is_file());
    match lib {
        Some(lib) if ptxas.is_file() => Ok((Some(lib), ptxas)),
        _ => Err(ToolchainError::NotFound {
            looked: format!("lib/{NVRTC_LIB} and bin/ptxas in {} ({origin})", home.display()),
        }),
    }
}

fn from_path() -> Result<(Option<PathBuf>, PathBuf), ToolchainError> {
    let ptxas = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("ptxas")).find(|p| p.is_file()))
        .unwrap_or_default();
    if let Some(ptxas) = ptxas {
        let home = ptxas.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        if let Ok(found) = from_home(&home, "PATH") {
            return Ok(found);
        }
        // SAFETY: only probes whether the loader can open libnvrtc.
        if unsafe { nvrtc_sys::is_culib_present() } {
            return Ok((None, ptxas));
        }
    }
    Err(ToolchainError::NotFound {
        looked: format!("${CUDA_HOME_ENV} (unset), ptxas on PATH with a libnvrtc the loader can open (none)"),
    })
}

/// Loads libnvrtc (and its builtins, which it opens by soname) by full path with RTLD_GLOBAL, so
/// that cudarc's later `dlopen` by soname finds it without `LD_LIBRARY_PATH`.
fn preload(lib: &Path) -> Result<(), ToolchainError> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((first, _)) = loaded.as_ref() {
        if first != lib {
            tracing::warn!(used = %first.display(), ignored = %lib.display(), "libnvrtc is already loaded");
        }
        return Ok(());
    }
    let dir = lib.parent().unwrap_or(Path::new("."));
    let builtins = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc-builtins.so.13"))
    });
    for path in builtins {
        std::mem::forget(open_global(&path)?);
    }
    *loaded = Some((lib.to_path_buf(), open_global(lib)?));
    Ok(())
}

/// Opens a library by path with its symbols global, so that a later `dlopen` by soname (cudarc's)
/// finds it loaded.
fn open_global(path: &Path) -> Result<Library, ToolchainError> {
    // SAFETY: NVIDIA's libraries run no initialisers that depend on us.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| ToolchainError::Load { path: path.to_path_buf(), reason: e.to_string() })
}

type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> nvrtc_sys::nvrtcResult;

fn nvrtc_version(path: &Option<PathBuf>) -> Result<(i32, i32), ToolchainError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is present (checked by the caller); the call writes two ints.
    let rc = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        let path = path.clone().unwrap_or_else(|| PathBuf::from(NVRTC_LIB));
        return Err(ToolchainError::Load { path, reason: format!("nvrtcVersion failed: {rc:?}") });
    }
    // cudarc opens the first of several sonames that loads (`libnvrtc.so` before
    // `libnvrtc.so.13`), so a system libnvrtc can win over ours: say so when versions differ.
    let loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((ours, lib)) = loaded.as_ref() {
        // SAFETY: nvrtcVersion has this signature in every NVRTC.
        if let Ok(f) = unsafe { lib.get::<VersionFn>(b"nvrtcVersion\0") } {
            let (mut a, mut b) = (0, 0);
            // SAFETY: as above.
            unsafe { f(&mut a, &mut b) };
            if (a, b) != (major, minor) {
                tracing::warn!(ours = %ours.display(), "cudarc loaded NVRTC {major}.{minor}, not {a}.{b}");
            }
        }
    }
    Ok((major, minor))
}

fn ptxas_version(ptxas: &Path) -> Result<String, ToolchainError> {
    let out = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|source| ToolchainError::Spawn { path: ptxas.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('V')).filter(|v| v.contains('.'));
    match version {
        Some(v) if out.status.success() => Ok(v.trim_end_matches(',').to_string()),
        _ => Err(ToolchainError::Load {
            path: ptxas.to_path_buf(),
            reason: format!("`ptxas --version` said: {text}"),
        }),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let env = |k| std::env::var_os(k).map(PathBuf::from);
    match env(KERNEL_CACHE_ENV) {
        Some(dir) if dir.as_os_str().is_empty() => None,
        Some(dir) => Some(dir),
        None => env("XDG_CACHE_HOME")
            .filter(|d| d.is_absolute())
            .or_else(|| env("HOME").map(|h| h.join(".cache")))
            .map(|d| d.join("saturn").join("ptx")),
    }
}

fn nvrtc_compile(kernel: &str, source: &str, arch: CudaArch) -> Result<String, ToolchainError> {
    let api = |reason: String| ToolchainError::NvrtcApi { kernel: kernel.to_string(), reason };
    if source.contains('\0') {
        return Err(api("the source contains a NUL byte".into()));
    }
    let opts = CompileOptions {
        arch: Some(arch.compute()),
        options: NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect(),
        name: Some(format!("{}.cu", file_stem(kernel))),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => {
            let bytes = ptx.as_bytes().unwrap_or_default();
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
        }
        Err(CompileError::CompileError { log, .. }) => {
            Err(ToolchainError::Nvrtc { kernel: kernel.to_string(), log: log.to_string_lossy().into_owned() })
        }
        Err(e) => Err(api(format!("{e:?}"))),
    }
}

/// FNV-1a (128-bit) over length-prefixed fields: stable across Rust versions and runs.
fn cache_key(source: &str, arch: CudaArch, (major, minor): (i32, i32)) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    let mut feed = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h = (h ^ u128::from(b)).wrapping_mul(PRIME);
        }
    };
    feed(b"saturn-ptx-v1");
    feed(source.as_bytes());
    feed(arch.compute().as_bytes());
    for option in NVRTC_OPTIONS {
        feed(option.as_bytes());
    }
    feed(&major.to_le_bytes());
    feed(&minor.to_le_bytes());
    h
}

/// A kernel name made safe for a file name.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if stem.is_empty() { "kernel".into() } else { stem }
}

/// The names of the `.entry` functions of a PTX module, in order.
pub fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| {
            let line = line.split("//").next().unwrap_or_default();
            let rest = line.split_once(".entry")?.1;
            let name = rest.trim_start().split(|c: char| c == '(' || c.is_whitespace()).next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Reads `ptxas -v` output (ptxas 13.0; earlier releases print the same lines):
///
/// ```text
/// ptxas info    : Compiling entry function 'NAME' for 'sm_90a'
/// ptxas info    : Function properties for NAME
///     F bytes stack frame, S bytes spill stores, L bytes spill loads
/// ptxas info    : Used R registers, used B barriers, C bytes cumulative stack size, M bytes smem, K bytes cmem[0]
/// ```
///
/// "Function properties" blocks of non-entry (device) functions are skipped; items that are
/// absent (no shared memory, no cumulative stack) stay 0.
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    let (mut current, mut props) = (None, None);
    for line in log.lines() {
        let line = line.trim();
        let body =
            line.strip_prefix("ptxas info").map_or(line, |r| r.trim_start().trim_start_matches(':').trim());
        if let Some(rest) = body.strip_prefix("Compiling entry function ") {
            let name = rest.split('\'').nth(1).unwrap_or_default();
            kernels.push(KernelResources { name: name.to_string(), ..Default::default() });
            current = Some(kernels.len() - 1);
            props = None;
        } else if let Some(rest) = body.strip_prefix("Function properties for ") {
            let name = rest.trim().trim_matches('\'');
            props = kernels.iter().rposition(|k| k.name == name);
        } else if body.contains("bytes stack frame") || body.starts_with("Used ") {
            // The frame line belongs to the last "Function properties"; "Used" to the entry.
            let target = if body.starts_with("Used ") { current } else { props };
            if let Some(k) = target.and_then(|i| kernels.get_mut(i)) {
                apply_items(k, body);
            }
        }
    }
    kernels
}

/// Applies comma-separated `N unit` items such as `Used 10 registers` or `1024 bytes smem`.
fn apply_items(k: &mut KernelResources, line: &str) {
    for item in line.split(',') {
        let item = item.trim();
        let item = item.strip_prefix("Used ").or_else(|| item.strip_prefix("used ")).unwrap_or(item);
        let Some((n, unit)) = item.split_once(' ') else { continue };
        let Ok(n) = n.parse::<u32>() else { continue };
        match unit.trim() {
            "registers" => k.registers = n,
            "barriers" => k.barriers = n,
            "bytes smem" => k.shared_bytes = n,
            "bytes stack frame" | "bytes cumulative stack size" => k.stack_bytes = k.stack_bytes.max(n),
            "bytes spill stores" => k.spill_stores = n,
            "bytes spill loads" => k.spill_loads = n,
            _ => {}
        }
    }
}
