//! `saturn compile --emit cuda,ptx`: the CUDA program of the optimised graph, written to a folder.
//!
//! - `cuda`: `kernels.cu` (the prelude and every kernel once) and `plan.json` (buffers,
//!   launches with their grid extents, the arena planned at the phase's costing symbols);
//! - `ptx`: each kernel compiled by NVRTC for every architecture (`ptx/<arch>/<kernel>.ptx`) and
//!   assembled by `ptxas -v`; `cuda_report.json` lists registers, spills, stack and shared
//!   memory per kernel and architecture.

use std::path::Path;

use anyhow::{Context, Result};
use saturn_codegen::cuda::{CudaOptions, CudaProgram, CudaTools};
use saturn_ir::{Graph, SymBindings};
use serde_json::json;

use super::output::write_atomically;

/// What `--emit` asked for, beyond the IR.
pub struct CudaEmit<'a> {
    pub ptx: bool,
    /// The folder with `lib/libnvrtc.so.13` and `bin/ptxas` (else `SATURN_CUDA_HOME`, PATH).
    pub cuda_home: Option<&'a Path>,
    /// How the program stores weights.
    pub options: CudaOptions,
}

/// Generates the CUDA program of `graph` and writes what `emit` asks for into `dir` (`ptx`
/// includes `cuda`).
pub fn write(graph: &Graph, symbols: &SymBindings, emit: &CudaEmit, dir: &Path) -> Result<()> {
    let program = CudaProgram::generate_with(graph, saturn_runtime::CACHE_PREFIX, emit.options)
        .with_context(|| format!("generating CUDA for `{}`", graph.name))?;
    let plan = serde_json::to_string_pretty(&plan_json(&program, symbols)?)? + "\n";
    // Compile before writing anything, so a rejected kernel leaves no partial output.
    let ptx = match emit.ptx {
        true => Some(super::ptx::compile(&program, &CudaTools::locate(emit.cuda_home)?)?),
        false => None,
    };
    write_atomically(&dir.join("kernels.cu"), program.source().as_bytes())?;
    write_atomically(&dir.join("plan.json"), plan.as_bytes())?;
    if let Some(ptx) = ptx {
        ptx.write(dir)?;
    }
    Ok(())
}

/// The plan: the program's buffers and launches, its kernels, and the arena planned for the
/// costing symbols (missing symbols count as 1).
fn plan_json(program: &CudaProgram, symbols: &SymBindings) -> Result<serde_json::Value> {
    let values: Vec<u64> = program.symbols.iter().map(|s| symbols.get(s).copied().unwrap_or(1)).collect();
    let arena = program
        .arena(&values)
        .with_context(|| format!("planning the arena of `{}` at {symbols:?}", program.name))?;
    let kernels: Vec<_> = program.kernels.iter().map(|k| json!({"name": k.name, "node": k.node})).collect();
    Ok(json!({
        "program": program,
        "kernels": kernels,
        "arena": {
            "symbols": program.symbols.iter().zip(&values).map(|(s, v)| (s.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "bytes": arena.bytes,
            "offsets": arena.offsets,
        },
    }))
}
