//! `--emit ptx`: every kernel of a CUDA program through NVRTC and `ptxas -v`, for every
//! architecture. Everything is compiled before anything is written ([`compile`], then
//! [`Compiled::write`]), so a kernel that NVRTC or ptxas rejects leaves no partial output (the
//! error names the kernel and carries the compiler's log).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use saturn_codegen::cuda::{CudaArch, CudaProgram, CudaTools, KernelResources};
use serde::Serialize;

use super::output::write_atomically;

#[derive(Serialize)]
struct KernelReport<'a> {
    node: &'a str,
    arch: &'static str,
    #[serde(flatten)]
    resources: KernelResources,
}

#[derive(Serialize)]
struct Report<'a> {
    program: &'a str,
    nvrtc: String,
    ptxas: String,
    kernels: usize,
    spilling: usize,
    max_registers: u32,
    resources: Vec<KernelReport<'a>>,
}

/// Every kernel of a program compiled and assembled for every architecture, not yet written.
pub struct Compiled<'a> {
    files: Vec<(PathBuf, String)>,
    report: Report<'a>,
}

/// Compiles and assembles every kernel of `program` with `tools`.
pub fn compile<'a>(program: &'a CudaProgram, tools: &CudaTools) -> Result<Compiled<'a>> {
    let total = (program.kernels.len() * CudaArch::ALL.len()) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} kernels ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("NVRTC + ptxas for {}", program.name));
    // NVRTC and ptxas run on every core (a program of its own for each kernel); the results
    // are collected in (architecture, kernel) order, so the files and report do not depend on
    // which finishes first.
    let jobs: Vec<_> =
        CudaArch::ALL.into_iter().flat_map(|arch| program.kernels.iter().map(move |k| (arch, k))).collect();
    let done = jobs
        .par_iter()
        .map(|&(arch, k)| {
            let ptx = tools.compile_ptx(&k.name, &CudaProgram::kernel_source(k), arch)?;
            let assembled = tools.assemble(&ptx, arch)?;
            bar.inc(1);
            Ok((ptx, assembled))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    let mut files = Vec::new();
    let mut resources = Vec::new();
    for (&(arch, k), (ptx, assembled)) in jobs.iter().zip(done) {
        for r in assembled {
            resources.push(KernelReport { node: &k.node, arch: arch.name(), resources: r });
        }
        files.push((Path::new("ptx").join(arch.name()).join(format!("{}.ptx", k.name)), ptx));
    }
    let (major, minor) = tools.nvrtc_version();
    let report = Report {
        program: &program.name,
        nvrtc: format!("{major}.{minor}"),
        ptxas: tools.ptxas_version().to_string(),
        kernels: program.kernels.len(),
        spilling: resources.iter().filter(|r| r.resources.spills()).count(),
        max_registers: resources.iter().map(|r| r.resources.registers).max().unwrap_or(0),
        resources,
    };
    Ok(Compiled { files, report })
}

impl Compiled<'_> {
    /// Writes `ptx/<arch>/<kernel>.ptx` and `cuda_report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        for (path, ptx) in &self.files {
            let path = dir.join(path);
            let parent = path.parent().expect("ptx files live in a folder");
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create the folder", parent.display()))?;
            write_atomically(&path, ptx.as_bytes())?;
        }
        let r = &self.report;
        write_atomically(
            &dir.join("cuda_report.json"),
            (serde_json::to_string_pretty(r)? + "\n").as_bytes(),
        )?;
        eprintln!(
            "{}: {} kernels x {} architectures assembled; at most {} registers; {} with spills",
            dir.display(),
            r.kernels,
            CudaArch::ALL.len(),
            r.max_registers,
            r.spilling
        );
        Ok(())
    }
}
