//! A program's kernels compiled with g++ into a shared library of launchers, once per source
//! within the process.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use crate::CodegenError;
use crate::cuda::CudaProgram;

/// The header that makes CUDA C compile as C++ with fibers for threads.
const EMULATION_H: &str = include_str!("emulation.h");

/// The flags of every compilation (the tiny fixture's prefill program takes 0.4 s at `-O2`, as
/// at `-O0`): no strict aliasing, as GPU code reinterprets buffers (`float4` loads) freely;
/// `-z defs` reports an unresolved name at link time rather than at load.
const FLAGS: &[&str] = &["-std=c++17", "-O2", "-shared", "-fPIC", "-fno-strict-aliasing", "-Wl,-z,defs"];

/// `sat_launch_<kernel>(sym, args, nargs, grid[3], block, shared_bytes, error, error_len)`: runs
/// the grid; 0, or 1 with a message in `error`.
pub(super) type LaunchFn = unsafe extern "C" fn(
    *const i64,
    *const *mut c_void,
    u32,
    *const u32,
    u32,
    u32,
    *mut c_char,
    usize,
) -> i32;

/// A loaded library and its launchers by kernel name.
pub struct Library {
    pub(super) launchers: HashMap<String, LaunchFn>,
    /// Keeps the launchers' code mapped (never unloaded: see [`library`]).
    _lib: libloading::Library,
}

/// The C++ translation unit of `program`: the header, the kernels (dynamic shared memory
/// rewritten, line numbers kept, so g++ messages point into `kernels.cu`), then the launchers.
pub(super) fn translation_unit(program: &CudaProgram) -> String {
    let mut s = String::from("#include \"emulation.h\"\n#line 1 \"kernels.cu\"\n");
    s.push_str(&rewrite_dynamic_shared(&program.source()));
    s.push_str("\n#line 1 \"launchers.cpp\"\n");
    for k in &program.kernels {
        let _ = writeln!(
            s,
            "extern \"C\" int sat_launch_{n}(const long long* sym, void** args, unsigned nargs, const unsigned* grid, \
             unsigned block, unsigned shared, char* error, unsigned long error_len) {{\n  return \
             ::sat_emu::launch({n}, sym, args, nargs, grid, block, shared, error, error_len);\n}}",
            n = k.name
        );
    }
    s
}

/// `extern __shared__ <type> name[];` becomes `SAT_DYNAMIC_SHARED(<type>, name);` (alignment
/// attributes dropped: the emulator's dynamic shared memory is 128-byte aligned).
fn rewrite_dynamic_shared(src: &str) -> String {
    const KEY: &str = "extern __shared__";
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find(KEY) {
        out.push_str(&rest[..at]);
        let after = &rest[at + KEY.len()..];
        let parsed = after.find(';').and_then(|end| {
            let decl = after[..end].trim();
            let open = decl.rfind('[')?;
            let head = decl[..open].trim_end();
            let name_at = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
            let ty = strip_align(&head[..name_at]);
            (!ty.is_empty() && name_at < head.len()).then(|| (end, ty, &head[name_at..]))
        });
        match parsed {
            Some((end, ty, name)) => {
                let _ = write!(out, "SAT_DYNAMIC_SHARED({ty}, {name})");
                rest = &after[end..];
            }
            // Left for g++ to reject (an undefined name at link time).
            None => {
                out.push_str(KEY);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `ty` without `__align__(n)`, trimmed.
fn strip_align(ty: &str) -> String {
    let mut s = ty.to_string();
    while let Some(at) = s.find("__align__(") {
        let end = s[at..].find(')').map_or(s.len(), |e| at + e + 1);
        s.replace_range(at..end, "");
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

type Slot = Arc<OnceLock<Result<Arc<Library>, String>>>;

/// Compiled libraries by source hash. Libraries stay loaded for the life of the process: their
/// thread-local fiber pools are freed at thread exit, which needs their code.
static LIBRARIES: Mutex<Option<HashMap<u64, Slot>>> = Mutex::new(None);

/// The library of `program`, compiled on first use (concurrent callers wait for one compile).
pub(super) fn library(program: &CudaProgram) -> Result<Arc<Library>, CodegenError> {
    let unit = translation_unit(program);
    let mut h = std::hash::DefaultHasher::new();
    (&unit, EMULATION_H, FLAGS).hash(&mut h);
    let slot: Slot = {
        let mut map = LIBRARIES.lock().unwrap_or_else(|e| e.into_inner());
        map.get_or_insert_with(HashMap::new).entry(h.finish()).or_default().clone()
    };
    let what = || format!("kernels of `{}`", program.name);
    slot.get_or_init(|| compile(program, &unit).map(Arc::new))
        .clone()
        .map_err(|msg| CodegenError::Compile { kernel: what(), msg })
}

fn compile(program: &CudaProgram, unit: &str) -> Result<Library, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (header, cpp, so) =
        (dir.path().join("emulation.h"), dir.path().join("kernels.cpp"), dir.path().join("kernels.so"));
    std::fs::write(&header, EMULATION_H).map_err(|e| format!("{}: {e}", header.display()))?;
    std::fs::write(&cpp, unit).map_err(|e| format!("{}: {e}", cpp.display()))?;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let out = Command::new(&cxx)
        .args(FLAGS)
        .arg("-I")
        .arg(dir.path())
        .arg("-o")
        .arg(&so)
        .arg(&cpp)
        .output()
        .map_err(|e| format!("cannot run `{cxx}` (the CPU emulator compiles kernels with it): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cxx} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    // SAFETY: the library is our generated code; loading runs only the header's static
    // initialisers (none with side effects).
    let lib =
        unsafe { libloading::Library::new(&so) }.map_err(|e| format!("loading {}: {e}", so.display()))?;
    let mut launchers = HashMap::new();
    for k in &program.kernels {
        let symbol = format!("sat_launch_{}", k.name);
        // SAFETY: every launcher is defined with exactly `LaunchFn`'s signature above.
        let f = unsafe { lib.get::<LaunchFn>(symbol.as_bytes()) }.map_err(|e| format!("{symbol}: {e}"))?;
        launchers.insert(k.name.clone(), *f);
    }
    Ok(Library { launchers, _lib: lib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_shared_declarations_become_pointers() {
        let src = "  extern __shared__ __align__(16) unsigned char smem[];\n  extern __shared__ float  t[ ];";
        assert_eq!(
            rewrite_dynamic_shared(src),
            "  SAT_DYNAMIC_SHARED(unsigned char, smem);\n  SAT_DYNAMIC_SHARED(float, t);"
        );
        assert_eq!(rewrite_dynamic_shared("extern __shared__ x;"), "extern __shared__ x;");
    }
}
