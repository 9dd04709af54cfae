//! The CUDA matrix-product kernels (`linear`, `matmul`, `rms_norm_linear`, `gated_linear`):
//! which kernel shape each case gets, how it is launched, and that the generated source compiles
//! with NVRTC for `compute_80` and `compute_90a` and assembles with ptxas for `sm_80` and
//! `sm_90a` without spills.

mod common;

use saturn_codegen::cuda::{CudaArch, CudaOptions, CudaProgram, WeightStorage, Work};
use saturn_ir::{DType, Dim, Graph, Op, TensorType};

fn d(s: &str) -> Dim {
    s.split('+')
        .map(|t| t.parse::<u64>().map(Dim::constant).unwrap_or_else(|_| Dim::sym(t)))
        .fold(Dim::constant(0), |a, b| a.add(&b))
}

fn ty(shape: &[&str]) -> TensorType {
    TensorType::new(DType::F32, shape.iter().map(|s| d(s)))
}

/// A graph of one `op` node over an input `x` and params `w0, w1, ...` of the given shapes.
fn one_op(op: Op, x: &[&str], params: &[&[&str]]) -> Graph {
    let mut g = Graph::new("linalg");
    let mut ids = vec![g.add("x", Op::Input, &[], Some(ty(x))).unwrap()];
    for (i, p) in params.iter().enumerate() {
        let name = format!("w{i}");
        ids.push(g.add(name.clone(), Op::Param { key: name }, &[], Some(ty(p))).unwrap());
    }
    let y = g.add("y", op, &ids, None).unwrap_or_else(|e| panic!("{e}"));
    g.set_output("y", y).unwrap();
    g
}

/// The program of `g` and the kernel names of its launches, in order.
fn generate(g: &Graph) -> (CudaProgram, Vec<String>) {
    let p = CudaProgram::generate(g, "cache.").unwrap_or_else(|e| panic!("{e}"));
    let names = p.launches.iter().map(|l| l.what().to_string()).collect();
    (p, names)
}

/// Every case of the tests: a name and its graph.
fn cases() -> Vec<(&'static str, Graph)> {
    let rnl = Op::RmsNormLinear { eps: 1e-6 };
    vec![
        ("linear M=1 K%4=0", one_op(Op::Linear, &["1", "64"], &[&["7", "64"]])),
        ("linear M=5 K=30", one_op(Op::Linear, &["5", "30"], &[&["9", "30"]])),
        ("linear M=2x3 K=37", one_op(Op::Linear, &["2", "3", "37"], &[&["5", "37"]])),
        ("linear M=16", one_op(Op::Linear, &["16", "128"], &[&["96", "128"]])),
        ("linear M=S", one_op(Op::Linear, &["S", "100"], &[&["33", "100"]])),
        ("gated_linear M=1", one_op(Op::GatedLinear, &["1", "48"], &[&["11", "48"], &["11", "48"]])),
        ("gated_linear M=S", one_op(Op::GatedLinear, &["S", "50"], &[&["13", "50"], &["13", "50"]])),
        ("rms_norm_linear M=1", one_op(rnl.clone(), &["1", "64"], &[&["64"], &["17", "64"]])),
        ("rms_norm_linear M=S", one_op(rnl, &["S", "70"], &[&["70"], &["9", "70"]])),
        ("matmul scores", one_op(Op::MatMul, &["4", "S", "24"], &[&["4", "24", "S+P"]])),
        ("matmul broadcast", one_op(Op::MatMul, &["2", "1", "5", "12"], &[&["3", "12", "7"]])),
        ("matmul M=1 heads", one_op(Op::MatMul, &["16", "1", "64"], &[&["16", "64", "51"]])),
        ("matmul 2-d", one_op(Op::MatMul, &["70", "33"], &[&["33", "65"]])),
        ("matmul batch of 1", one_op(Op::MatMul, &["1", "3", "S", "8"], &[&["1", "1", "8", "9"]])),
        ("linear vocab", one_op(Op::Linear, &["1", "7168"], &[&["129280", "7168"]])),
        (
            "gated_linear M=8 V3",
            one_op(Op::GatedLinear, &["8", "7168"], &[&["2048", "7168"], &["2048", "7168"]]),
        ),
    ]
}

#[test]
fn each_case_gets_its_kernel_shape_and_grid() {
    let want: &[(&str, &[&str])] = &[
        ("linear M=1 K%4=0", &["linear_gemv"]),
        ("linear M=5 K=30", &["linear_gemv"]),
        ("linear M=2x3 K=37", &["linear_gemv"]),
        ("linear M=16", &["linear_tiled"]),
        ("linear M=S", &["linear_tiled"]),
        ("gated_linear M=1", &["gated_linear_gemv"]),
        ("gated_linear M=S", &["gated_linear_tiled"]),
        ("rms_norm_linear M=1", &["rms_norm", "linear_gemv"]),
        ("rms_norm_linear M=S", &["rms_norm", "linear_tiled"]),
        ("matmul scores", &["matmul_tiled"]),
        ("matmul broadcast", &["matmul_skinny"]),
        ("matmul M=1 heads", &["matmul_skinny"]),
        ("matmul 2-d", &["matmul_tiled"]),
        ("matmul batch of 1", &["matmul_tiled"]),
        ("linear vocab", &["linear_gemv"]),
        ("gated_linear M=8 V3", &["gated_linear_gemv"]),
    ];
    assert_eq!(cases().len(), want.len());
    for ((name, g), (wname, kernels)) in cases().iter().zip(want) {
        assert_eq!(name, wname);
        let (_, launched) = generate(g);
        assert_eq!(launched, *kernels, "{name}");
    }
    let (p, _) = generate(&cases()[4].1);
    let grid: Vec<String> = p.launches[0].kernel().unwrap().grid.iter().map(ToString::to_string).collect();
    assert_eq!(grid, ["ceil(33/64)", "ceil((S)/64)", "1"]);
    let (p, _) = generate(&cases()[9].1);
    let grid: Vec<String> = p.launches[0].kernel().unwrap().grid.iter().map(ToString::to_string).collect();
    assert_eq!(grid, ["ceil((P+S)/64)", "ceil((S)/64)", "4"]);
}

#[test]
fn rms_norm_linear_normalises_into_scratch_and_shares_the_linear_kernel() {
    let mut g = Graph::new("shared");
    let x = g.add("x", Op::Input, &[], Some(ty(&["S", "70"]))).unwrap();
    let gain = g.add("g", Op::Param { key: "g".into() }, &[], Some(ty(&["70"]))).unwrap();
    let w = g.add("w", Op::Param { key: "w".into() }, &[], Some(ty(&["9", "70"]))).unwrap();
    let a = g.add("a", Op::RmsNormLinear { eps: 1e-5 }, &[x, gain, w], None).unwrap();
    let b = g.add("b", Op::Linear, &[x, w], None).unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    let (p, launched) = generate(&g);
    assert_eq!(launched, ["rms_norm", "linear_tiled", "linear_tiled"]);
    let scratch = p.buffers.iter().position(|b| b.name == "a.scratch0").expect("a scratch buffer");
    assert_eq!(p.buffers[scratch].bytes.to_string(), "(S)*70*4");
    assert_eq!(p.launches[0].args[2], scratch, "the norm writes the scratch");
    assert_eq!(p.launches[1].args[0], scratch, "the linear reads it");
    assert!(p.kernels[0].source.contains("1e-5"), "eps reaches the kernel");
}

/// With `cublas`, products where tiles would run become library products: with weights, after
/// a rounding to bf16 on tensor cores, each gated half into scratch and `silu(g) * u` after;
/// batched `matmul`s whose batches need no broadcast but a shared matrix, in f32 or on tensor
/// cores (an f32 operand rounded first, a bf16 weight read as stored). A few constant rows keep
/// their kernels, and so do bf16 operands computed in f32 (no library multiplies f32 by bf16).
#[test]
fn library_products_replace_tiles_where_they_apply() {
    let f32 = CudaOptions { cublas: true, ..CudaOptions::default() };
    let bf16 = |tensor_cores| CudaOptions { weights: WeightStorage::Bf16, tensor_cores, cublas: true };
    let want: &[(usize, CudaOptions, &[&str])] = &[
        (4, f32, &["gemm"]),
        (4, bf16(true), &["to_bf16", "gemm"]),
        (4, bf16(false), &["linear_tiled"]),
        (3, f32, &["gemm"]),
        (1, f32, &["linear_gemv"]),
        (6, f32, &["gemm", "gemm", "silu_mul"]),
        (6, bf16(true), &["to_bf16", "gemm", "gemm", "silu_mul"]),
        (8, bf16(true), &["rms_norm", "to_bf16", "gemm"]),
        (7, f32, &["rms_norm", "linear_gemv"]),
        (9, f32, &["gemm"]),
        (9, bf16(true), &["to_bf16", "gemm"]),
        (9, bf16(false), &["matmul_tiled"]),
        (10, f32, &["matmul_skinny"]),
        (12, f32, &["gemm"]),
        (13, f32, &["gemm"]),
    ];
    let cases = cases();
    for &(case, options, launches) in want {
        let (name, g) = &cases[case];
        let p = CudaProgram::generate_with(g, "cache.", options).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<&str> = p.launches.iter().map(|l| l.what()).collect();
        assert_eq!(got, launches, "{name} {options:?}");
    }
    // Operands stored differently (a bf16 param times an f32 input) keep the kernel.
    let mut g = Graph::new("mixed");
    let x = g.add("x", Op::Param { key: "x".into() }, &[], Some(ty(&["16", "64"]))).unwrap();
    let w = g.add("w", Op::Input, &[], Some(ty(&["33", "64"]))).unwrap();
    let y = g.add("y", Op::Linear, &[x, w], None).unwrap();
    g.set_output("y", y).unwrap();
    for options in [bf16(false), bf16(true)] {
        let p = CudaProgram::generate_with(&g, "cache.", options).unwrap();
        let got: Vec<&str> = p.launches.iter().map(|l| l.what()).collect();
        assert_eq!(got, ["linear_tiled"], "{options:?}");
    }
    // `linear M=S`: y [S, 33] = x [S, 100] w [33, 100]^T, reading x and the weight in place.
    let p = CudaProgram::generate_with(&cases[4].1, "cache.", f32).unwrap();
    let Work::Gemm(gemm) = &p.launches[0].work else { panic!("not a library product") };
    let sizes = [&gemm.m, &gemm.n, &gemm.k].map(ToString::to_string);
    assert_eq!(sizes, ["(S)", "33", "100"]);
    let names: Vec<&str> = p.launches[0].args.iter().map(|&a| p.buffers[a].name.as_str()).collect();
    assert_eq!(names, ["x", "w0", "y"]);
    // `matmul batch of 1`: [1, 3, S, 8] by [1, 1, 8, 9], a batch of 3 over one `b`.
    let p = CudaProgram::generate_with(&cases[13].1, "cache.", f32).unwrap();
    let Work::Gemm(gemm) = &p.launches[0].work else { panic!("not a library product") };
    let strides = gemm.strides.clone().map(|s| s.to_string());
    assert_eq!(
        (gemm.batch.to_string(), strides),
        ("1*3".into(), ["(S)*8".into(), "0".into(), "(S)*9".into()])
    );
}

#[test]
fn kernels_compile_and_assemble_without_spills() {
    let cache = tempfile::tempdir().unwrap();
    let tools = common::cuda_tools(cache.path());
    let mut seen = 0;
    for (name, g) in cases() {
        let (p, _) = generate(&g);
        for k in &p.kernels {
            for arch in CudaArch::ALL {
                let ptx = tools.compile_ptx(&k.name, &CudaProgram::kernel_source(k), arch).unwrap();
                for r in tools.assemble(&ptx, arch).unwrap() {
                    eprintln!("{name:22} {arch:7} {:20} {:3} registers", r.name, r.registers);
                    assert!(!r.spills(), "{name}: {} spills on {arch}: {r:?}", r.name);
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 0);
}
