//! The CUDA programs of the shipped models: generated deterministically, snapshotted for the
//! tiny models (a change in a kernel shows up as a reviewed diff), and every kernel compiled by
//! NVRTC and assembled by `ptxas` for sm_90a and sm_80 without errors or spills.
//!
//! NVRTC and ptxas come from `scripts/install-cuda-tools.sh` (the test command,
//! `scripts/test.sh`, runs it): `SATURN_CUDA_HOME`, else `.cuda-tools/nvidia/cu13`.

mod common;

use std::collections::BTreeMap;

use common::{cuda_home, root, saturn, stderr};
use saturn_codegen::cuda::{CudaArch, CudaOptions, CudaProgram, CudaTools, WeightStorage};
use saturn_frontend::{CACHED, Phase, TOKENS, load_model, phase_graph};
use saturn_ir::SymBindings;
use saturn_passes::{OptimizeOptions, optimize};

const TINY: [&str; 2] = ["models/deepseek-v3-tiny", "models/deepseek-v2-lite-tiny"];

fn program(model: &str, phase: Phase) -> CudaProgram {
    program_with(model, phase, CudaOptions::default())
}

fn program_with(model: &str, phase: Phase, cuda: CudaOptions) -> CudaProgram {
    let model = load_model(&root().join(model)).unwrap();
    let mut options = OptimizeOptions::for_target("h100").unwrap();
    options.symbols = SymBindings::from([(TOKENS.to_string(), 2048), (CACHED.to_string(), 4096)]);
    let graph = optimize(&phase_graph(&model.config, phase).unwrap(), &options).unwrap().graph;
    CudaProgram::generate_with(&graph, saturn_runtime::CACHE_PREFIX, cuda).unwrap()
}

/// The CUDA tools; a missing install fails with what to run (these tests never skip).
fn tools() -> CudaTools {
    CudaTools::locate(Some(&cuda_home())).unwrap_or_else(|e| {
        panic!("{e}\nthe CUDA tests need NVRTC and ptxas: run scripts/install-cuda-tools.sh (scripts/test.sh does)")
    })
}

#[test]
fn tiny_model_kernels_match_their_snapshots() {
    for model in TINY {
        for (phase, name) in [(Phase::Prefill, "prefill"), (Phase::Decode, "decode")] {
            let stem = model.trim_start_matches("models/").replace('-', "_");
            insta::assert_snapshot!(format!("{stem}_{name}"), program(model, phase).source());
        }
    }
}

#[test]
fn generation_is_deterministic() {
    for phase in [Phase::Prefill, Phase::Decode] {
        let (a, b) = (program(TINY[0], phase), program(TINY[0], phase));
        assert_eq!(a.source(), b.source());
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }
}

/// Every distinct kernel of the tiny models and of DeepSeek-V3 671B, both phases, weights
/// stored as f32 and as bf16, and on tensor cores, through NVRTC for both architectures and
/// ptxas: no errors, no spills.
#[test]
fn every_kernel_assembles_without_spills() {
    let tools = tools();
    let mut kernels: BTreeMap<String, String> = BTreeMap::new(); // source -> where it came from
    let bf16 = |tensor_cores, cublas| CudaOptions { weights: WeightStorage::Bf16, tensor_cores, cublas };
    let f32_cublas = CudaOptions { cublas: true, ..CudaOptions::default() };
    for model in [TINY[0], TINY[1], "models/deepseek-v3-671b.toml"] {
        for (phase, options) in [Phase::Prefill, Phase::Decode].into_iter().flat_map(|p| {
            let all =
                [CudaOptions::default(), bf16(false, false), bf16(true, false), f32_cublas, bf16(true, true)];
            all.map(|o| (p, o))
        }) {
            let p = program_with(model, phase, options);
            assert!(!p.kernels.is_empty());
            // Decode attention is the tensor-core kernel exactly when asked for (these heads
            // and widths fit it).
            let mma = p.kernels.iter().any(|k| k.name.starts_with("mla_decode_split_mma"));
            assert_eq!(mma, phase == Phase::Decode && options.tensor_cores, "{model} {options:?}");
            for k in &p.kernels {
                kernels
                    .entry(CudaProgram::kernel_source(k))
                    .or_insert(format!("{model} {phase:?} {options:?} {}", k.name));
            }
        }
    }
    let mut spilling = Vec::new();
    for (source, origin) in &kernels {
        for arch in CudaArch::ALL {
            let ptx = tools.compile_ptx(origin, source, arch).unwrap_or_else(|e| panic!("{origin}: {e}"));
            for r in tools.assemble(&ptx, arch).unwrap_or_else(|e| panic!("{origin}: {e}")) {
                if r.spills() {
                    spilling.push(format!("{origin} on {arch}: {r:?}"));
                }
            }
        }
    }
    assert!(spilling.is_empty(), "kernels spill:\n{}", spilling.join("\n"));
    eprintln!("{} distinct kernels assembled for {} architectures", kernels.len(), CudaArch::ALL.len());
}

#[test]
fn compile_emits_cuda_ptx_plan_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let home = cuda_home();
    let out = saturn(&[
        "compile",
        "models/deepseek-v3-tiny",
        "--target",
        "h100",
        "--phase",
        "decode",
        "--emit",
        "cuda,ptx",
        "--cuda-home",
        home.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let source = std::fs::read_to_string(dir.path().join("kernels.cu")).unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap()).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cuda_report.json")).unwrap()).unwrap();
    let kernels = plan["kernels"].as_array().unwrap();
    assert!(!kernels.is_empty());
    for k in kernels {
        let name = k["name"].as_str().unwrap();
        assert!(source.contains(&format!(" {name}(")), "{name} is not in kernels.cu");
        for arch in CudaArch::ALL {
            let ptx = dir.path().join("ptx").join(arch.name()).join(format!("{name}.ptx"));
            let text = std::fs::read_to_string(&ptx).unwrap_or_else(|e| panic!("{}: {e}", ptx.display()));
            assert!(text.contains(&format!(".entry {name}(")), "{}", ptx.display());
        }
    }
    let resources = report["resources"].as_array().unwrap();
    assert_eq!(resources.len(), kernels.len() * CudaArch::ALL.len());
    assert!(resources.iter().all(|r| r["registers"].as_u64().unwrap() > 0));
    assert_eq!(report["spilling"], 0);
    // The arena is planned for the costing symbols, and every launch names a generated kernel.
    assert!(plan["arena"]["bytes"].as_u64().unwrap() > 0);
    for l in plan["program"]["launches"].as_array().unwrap() {
        assert!(kernels.iter().any(|k| k["name"] == l["kernel"]), "{l}");
    }

    // With bf16 weights every param buffer is bf16 (half the bytes of its f32 twin).
    let bf16 = tempfile::tempdir().unwrap();
    let out = saturn(&[
        "compile",
        "models/deepseek-v3-tiny",
        "--target",
        "h100",
        "--emit",
        "cuda",
        "--weights-dtype",
        "bf16",
        "-o",
        bf16.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan16: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bf16.path().join("plan.json")).unwrap()).unwrap();
    let params = |p: &serde_json::Value| -> Vec<serde_json::Value> {
        let buffers = p["program"]["buffers"].as_array().unwrap();
        buffers.iter().filter(|b| b["storage"]["kind"] == "param").cloned().collect()
    };
    let (wide, narrow) = (params(&plan), params(&plan16));
    assert_eq!(wide.len(), narrow.len());
    assert!(!narrow.is_empty() && narrow.iter().all(|b| b["dtype"] == "bf16"), "{narrow:?}");
    assert!(wide.iter().all(|b| b["dtype"] == "f32"));
}

#[test]
fn ptx_without_the_tools_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = saturn(&[
        "compile",
        "models/deepseek-v3-tiny",
        "--emit",
        "ptx",
        "--cuda-home",
        dir.path().join("missing").to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert!(!out_dir.join("ptx").exists());
}
