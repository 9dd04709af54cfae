//! CUDA kernels of the fused MoE and MLA ops (`router_topk`, `grouped_experts`,
//! `mla_decode_attention`): programs for small graphs of each kind (V3 and V2 routers, tokens
//! symbolic or one, with and without a shared expert, one query or several, wide and narrow
//! latents) are generated, and each kernel compiles with NVRTC for `compute_80` and
//! `compute_90a` and assembles with `ptxas -v` without spills.

mod common;

use saturn_codegen::cuda::{CudaArch, CudaOptions, CudaProgram, Storage, WeightStorage};
use saturn_ir::{DType, Dim, Graph, GroupScore, NodeId, Op, Router, RouterScoring, TensorType};

fn leaf(g: &mut Graph, name: &str, shape: &[Dim], param: bool) -> NodeId {
    let op = if param { Op::Param { key: name.into() } } else { Op::Input };
    g.add(name, op, &[], Some(TensorType::new(DType::F32, shape.to_vec()))).unwrap()
}

fn d(n: u64) -> Dim {
    Dim::constant(n)
}

/// DeepSeek-V3's router (`noaux_tc`): sigmoid, bias, 8 groups scored by their top 2.
fn v3_router(k: u64, n_group: u64, topk_group: u64) -> Router {
    Router {
        scoring: RouterScoring::Sigmoid,
        k,
        n_group,
        topk_group,
        group_score: GroupScore::SumTop2,
        masked_fill: 0.0,
        weights_from_candidates: false,
        normalize: true,
        scale: 2.5,
    }
}

/// DeepSeek-V2's routers: softmax, greedy or group-limited (group max).
fn v2_router(k: u64, n_group: u64, topk_group: u64) -> Router {
    Router {
        scoring: RouterScoring::Softmax,
        k,
        n_group,
        topk_group,
        group_score: GroupScore::Max,
        masked_fill: f64::NEG_INFINITY,
        weights_from_candidates: false,
        normalize: false,
        scale: 16.0,
    }
}

fn router_graph(tokens: Dim, e: u64, router: Router, bias: bool) -> Graph {
    let mut g = Graph::new("router");
    let logits = leaf(&mut g, "logits", &[tokens, d(e)], false);
    let mut args = vec![logits];
    if bias {
        args.push(leaf(&mut g, "bias", &[d(e)], true));
    }
    let y = g.add("y", Op::RouterTopK(router), &args, None).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// `grouped_experts` of `[tokens, h]` over `e` experts of width `i` (`k` per token), with a
/// shared expert of width `j` or none; the routing is an input.
fn experts_graph(tokens: Dim, (h, i, e, k): (u64, u64, u64, u64), shared: Option<u64>) -> Graph {
    let mut g = Graph::new("experts");
    let x = leaf(&mut g, "x", &[tokens.clone(), d(h)], false);
    let routing = leaf(&mut g, "routing", &[tokens, d(e)], false);
    let mut args = vec![
        x,
        routing,
        leaf(&mut g, "w_gate", &[d(e), d(i), d(h)], true),
        leaf(&mut g, "w_up", &[d(e), d(i), d(h)], true),
        leaf(&mut g, "w_down", &[d(e), d(h), d(i)], true),
    ];
    if let Some(j) = shared {
        args.push(leaf(&mut g, "s_gate", &[d(j), d(h)], true));
        args.push(leaf(&mut g, "s_up", &[d(j), d(h)], true));
        args.push(leaf(&mut g, "s_down", &[d(h), d(j)], true));
    }
    let y = g.add("y", Op::GroupedExperts { k }, &args, None).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// `mla_decode_attention` of `h` heads and `queries` queries over `P + queries` latent rows.
fn mla_graph(queries: Dim, (h, c, r): (u64, u64, u64)) -> Graph {
    let mut g = Graph::new("mla");
    let t = Dim::sym("P").add(&queries);
    let q = leaf(&mut g, "q_latent", &[d(h), queries.clone(), d(c)], false);
    let qr = leaf(&mut g, "q_rope", &[d(h), queries, d(r)], false);
    let latent = leaf(&mut g, "latent", &[t.clone(), d(c)], false);
    let k_pe = leaf(&mut g, "k_pe", &[t, d(r)], false);
    let y = g.add("y", Op::MlaDecodeAttention { scale: 0.1352338 }, &[q, qr, latent, k_pe], None).unwrap();
    g.set_output("y", y).unwrap();
    g
}

fn s() -> Dim {
    Dim::sym("S")
}

/// Every graph of the file, by name.
fn graphs() -> Vec<(&'static str, Graph)> {
    let v3 = (7168, 2048, 256, 8);
    let tiny = (64, 16, 16, 4);
    vec![
        ("router_v3", router_graph(s(), 256, v3_router(8, 8, 4), true)),
        ("router_v3_decode", router_graph(d(1), 256, v3_router(8, 8, 4), true)),
        ("router_v3_tiny", router_graph(s(), 16, v3_router(4, 4, 2), true)),
        ("router_v2_greedy", router_graph(s(), 160, v2_router(6, 1, 1), false)),
        ("router_v2_groups", router_graph(d(1), 160, v2_router(6, 8, 3), false)),
        ("router_v2_lite", router_graph(s(), 64, v2_router(6, 1, 1), false)),
        ("experts_v3_prefill", experts_graph(s(), v3, Some(2048))),
        ("experts_v3_decode", experts_graph(d(1), v3, Some(2048))),
        ("experts_tiny_prefill", experts_graph(s(), tiny, None)),
        ("experts_tiny_decode", experts_graph(d(1), tiny, Some(16))),
        ("experts_tiny_eight", experts_graph(d(8), tiny, Some(16))),
        ("mla_v3_decode", mla_graph(d(1), (128, 512, 64))),
        ("mla_v3_prefill", mla_graph(s(), (128, 512, 64))),
        ("mla_tiny_decode", mla_graph(d(1), (4, 16, 4))),
        ("mla_tiny_prefill", mla_graph(s(), (4, 16, 4))),
        ("mla_odd", mla_graph(s(), (3, 40, 8))),
    ]
}

fn generate(name: &str, g: &Graph) -> CudaProgram {
    CudaProgram::generate(g, "cache.").unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn each_op_becomes_its_kernels() {
    for (name, g) in graphs() {
        let p = generate(name, &g);
        let kernels: Vec<&str> = p.launches.iter().map(|l| l.what()).collect();
        let scratch = p.buffers.iter().filter(|b| b.name.contains(".scratch")).count();
        let want: (&[&str], usize) = match name {
            n if n.starts_with("router") => (&["router_topk"], 0),
            "experts_v3_prefill" | "experts_tiny_eight" => (
                &[
                    "moe_slots",
                    "moe_lists",
                    "moe_tiled_gate",
                    "moe_tiled_down",
                    "moe_tiled_gate_shared",
                    "moe_tiled_down_shared",
                    "moe_combine",
                ],
                7,
            ),
            "experts_tiny_prefill" => {
                (&["moe_slots", "moe_lists", "moe_tiled_gate", "moe_tiled_down", "moe_combine"], 6)
            }
            "experts_v3_decode" | "experts_tiny_decode" => (
                &[
                    "moe_slots",
                    "moe_matvec_gate",
                    "moe_matvec_down",
                    "moe_matvec_gate_shared",
                    "moe_matvec_down_shared",
                    "moe_combine",
                ],
                4,
            ),
            _ => (&["mla_decode_split", "mla_decode_combine"], 3),
        };
        assert_eq!(kernels, want.0, "{name}");
        assert_eq!(scratch, want.1, "{name}");
        assert!(p.buffers.iter().all(|b| !matches!(b.storage, Storage::Persistent)), "{name}");
        assert!(!p.source().contains("${"), "{name}: unfilled template");
    }
}

/// With `cublas`, the shared expert over a prefill's tokens runs as library products (after a
/// rounding to bf16 on tensor cores); the routed experts keep their tiles, and decode (a few
/// tokens) its matrix-vector kernels.
#[test]
fn the_shared_expert_runs_in_the_library_where_asked() {
    let f32 = CudaOptions { cublas: true, ..CudaOptions::default() };
    let bf16 = CudaOptions { weights: WeightStorage::Bf16, tensor_cores: true, cublas: true };
    let tiles = ["moe_slots", "moe_lists", "moe_tiled_gate", "moe_tiled_down"];
    let mma = ["moe_slots", "moe_lists", "moe_mma_gate", "moe_mma_down"];
    let cases: [(&str, CudaOptions, &[&str], &[&str]); 4] = [
        ("experts_v3_prefill", f32, &tiles, &["gemm", "gemm", "silu_mul", "gemm", "moe_combine"]),
        (
            "experts_v3_prefill",
            bf16,
            &mma,
            &["to_bf16", "gemm", "gemm", "silu_mul", "to_bf16_2", "gemm", "moe_combine"],
        ),
        ("experts_tiny_prefill", f32, &tiles, &["moe_combine"]),
        (
            "experts_tiny_eight",
            f32,
            &tiles,
            &["moe_tiled_gate_shared", "moe_tiled_down_shared", "moe_combine"],
        ),
    ];
    let graphs = graphs();
    for (name, options, routed, tail) in cases {
        let g = &graphs.iter().find(|(n, _)| *n == name).unwrap().1;
        let p = CudaProgram::generate_with(g, "cache.", options).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<&str> = p.launches.iter().map(|l| l.what()).collect();
        let want: Vec<&str> = routed.iter().chain(tail).copied().collect();
        assert_eq!(got, want, "{name} {options:?}");
    }
    let decode = &graphs.iter().find(|(n, _)| *n == "experts_v3_decode").unwrap().1;
    let p = CudaProgram::generate_with(decode, "cache.", f32).unwrap();
    assert!(p.launches.iter().all(|l| l.kernel().is_some()), "decode keeps its kernels");
}

/// Scratch and grids are sized from the symbols: a prefill program's buffers grow with `S`.
#[test]
fn extents_follow_the_symbols() {
    let g = experts_graph(s(), (64, 16, 16, 4), Some(16));
    let p = generate("experts", &g);
    let at = |v: u64| -> Vec<u64> {
        p.buffers
            .iter()
            .filter(|b| b.name.contains(".scratch"))
            .map(|b| b.bytes.eval(&p.symbols, &[v]).unwrap())
            .collect()
    };
    // pair -> expert, slot of (token, expert), meta, lists, activations, slot outputs, shared.
    assert_eq!(at(10), vec![160, 160, 132, 640, 10 * 4 * 16 * 4, 10 * 4 * 64 * 4, 10 * 16 * 4]);
    let tiles = p.launches.iter().filter_map(|l| l.kernel()).find(|l| l.kernel == "moe_tiled_gate").unwrap();
    // ceil(T k / 64) + E tiles cover any routing.
    assert_eq!(tiles.grid[0].eval(&p.symbols, &[100]), Some(7 + 16));

    let g = mla_graph(s(), (128, 512, 64));
    let p = generate("mla", &g);
    let (pi, si) =
        (p.symbols.iter().position(|x| x == "P").unwrap(), p.symbols.iter().position(|x| x == "S").unwrap());
    let mut syms = vec![0; 2];
    (syms[pi], syms[si]) = (4095, 1);
    let split = p.launches[0].kernel().unwrap();
    assert_eq!(split.grid[0].eval(&p.symbols, &syms), Some(16));
    assert_eq!(split.grid[1].eval(&p.symbols, &syms), Some(16));
    let o_part = p.buffers.iter().find(|b| b.name.ends_with(".scratch2")).unwrap();
    assert!(o_part.bytes.eval(&p.symbols, &syms).unwrap() >= 128 * 16 * 512 * 4);
}

#[test]
fn kernels_compile_and_assemble_without_spills() {
    let cache = tempfile::tempdir().unwrap();
    let tools = common::cuda_tools(cache.path());
    let mut report = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut spilled = Vec::new();
    for (name, g) in graphs() {
        let p = generate(name, &g);
        for k in &p.kernels {
            let source = CudaProgram::kernel_source(k);
            if !seen.insert(source.clone()) {
                continue;
            }
            for arch in CudaArch::ALL {
                let ptx = tools.compile_ptx(&k.name, &source, arch).unwrap_or_else(|e| panic!("{name}: {e}"));
                for r in tools.assemble(&ptx, arch).unwrap_or_else(|e| panic!("{name}: {e}")) {
                    report
                        .push_str(&format!("{name:22} {:26} {arch:7} {:3} registers\n", r.name, r.registers));
                    if r.spills() {
                        spilled.push(format!("{name}/{} on {arch}: {r:?}", k.name));
                    }
                }
            }
        }
    }
    eprint!("{report}");
    assert!(spilled.is_empty(), "spills: {spilled:?}");
}
