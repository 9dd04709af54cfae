//! The cost model: the targets file, and node costs checked against hand-computed values.

use std::path::Path;

use saturn_ir::{DType, Dim, ElementwiseExpr, Op, SymBindings, TensorType, UnaryOp};
use saturn_passes::cost::{CostError, NodeCost, Target, Targets, node_cost};

fn h100() -> Target {
    Targets::builtin().get("h100").unwrap().clone()
}

fn ty(dtype: DType, shape: &[&str]) -> TensorType {
    let dim = |d: &&str| d.parse::<u64>().map_or_else(|_| Dim::sym(d), Dim::constant);
    TensorType { dtype, shape: shape.iter().map(dim).collect() }
}

fn bind(pairs: &[(&str, u64)]) -> SymBindings {
    pairs.iter().map(|&(s, v)| (s.to_string(), v)).collect()
}

fn cost(
    op: Op,
    inputs: &[&TensorType],
    output: &TensorType,
    syms: &SymBindings,
    target: &Target,
) -> NodeCost {
    node_cost(&op, inputs, output, syms, target)
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()), "{a} != {b}");
}

fn write_user_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const USER_TARGET: &str = r#"
[h100]
description = "a slower H100"
memory_bandwidth = { value = 1.0e12, source = "estimate: test" }
launch_overhead = { value = 5.0e-6, source = "measured: plain stream launches" }
on_chip_bytes = { value = 1024, source = "spec sheet" }
[h100.peak_flops]
f32 = { value = 1.0e13, source = "estimate: test" }
"#;

#[test]
fn builtin_has_gpu_and_cpu_targets_with_every_float_dtype_and_sources() {
    let targets = Targets::builtin();
    assert_eq!(targets.names(), ["cpu", "h100", "h200"]);
    for name in targets.names() {
        let t = targets.get(name).unwrap();
        assert_eq!(t.name, name);
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            assert!(t.peak_flops[&dtype] > 0.0, "{name} {dtype}");
            assert!(!t.sources.peak_flops[&dtype].is_empty());
        }
        assert!(t.memory_bandwidth > 0.0 && t.launch_overhead > 0.0 && t.on_chip_bytes > 0.0);
        for source in [&t.sources.memory_bandwidth, &t.sources.launch_overhead, &t.sources.on_chip_bytes] {
            assert!(["spec", "measured", "estimate"].iter().any(|kind| source.starts_with(kind)), "{source}");
        }
    }
    let h100 = targets.get("h100").unwrap();
    assert_eq!(h100.memory_bandwidth, 3.0e12);
    assert_eq!(h100.peak_flops[&DType::BF16], 8.0e14);
    assert_eq!(targets.get("h200").unwrap().memory_bandwidth, 4.3e12);
    // Dtypes without an entry use the f32 peak.
    assert_eq!(h100.peak_flops_for(DType::I64), Some(h100.peak_flops[&DType::F32]));
}

#[test]
fn unknown_target_lists_the_known_ones() {
    let err = Targets::builtin().get("tpu").unwrap_err();
    assert!(matches!(err, CostError::UnknownTarget { .. }));
    assert_eq!(err.to_string(), "unknown target `tpu` (known targets: cpu, h100, h200)");
}

#[test]
fn user_file_replaces_a_target_and_adds_others() {
    let text = format!("{USER_TARGET}{}", USER_TARGET.replace("[h100", "[laptop"));
    let (_dir, path) = write_user_file(&text);
    let targets = Targets::from_file(&path).unwrap();
    assert_eq!(targets.names(), ["cpu", "h100", "h200", "laptop"]);
    let h100 = targets.get("h100").unwrap();
    assert_eq!(h100.description, "a slower H100");
    assert_eq!((h100.memory_bandwidth, h100.on_chip_bytes), (1.0e12, 1024.0));
    // Replaced as a whole: the built-in bf16 entry is gone, bf16 falls back to f32.
    assert_eq!(h100.peak_flops_for(DType::BF16), Some(1.0e13));
    assert_eq!(targets.get("h200").unwrap(), Targets::builtin().get("h200").unwrap());
}

/// The message of the error for a user file holding `text`, after its `path:` prefix.
fn file_error(text: &str) -> String {
    let (_dir, path) = write_user_file(text);
    let err = Targets::from_file(&path).unwrap_err();
    assert!(matches!(err, CostError::File { .. }), "{err:?}");
    let msg = err.to_string();
    msg.strip_prefix(&format!("{}:", path.display()))
        .unwrap_or_else(|| panic!("no path in {msg}"))
        .to_string()
}

#[test]
fn malformed_user_files_report_line_and_column() {
    // TOML syntax.
    let msg = file_error("[h100]\ndescription = \"x\"\nmemory_bandwidth = { value = 1.0e12, source = }\n");
    assert!(msg.starts_with("3:"), "{msg}");
    // An invalid value points at the value.
    let bad_value = USER_TARGET.replace("value = 1.0e12", "value = -1.0");
    let msg = file_error(&bad_value);
    assert!(msg.starts_with("4:30: `h100.memory_bandwidth.value` must be finite and positive"), "{msg}");
    // An unknown dtype points at its key, an empty source at the source.
    let msg = file_error(&USER_TARGET.replace("f32 = {", "f8 = {"));
    assert!(msg.starts_with("8:1: `h100.peak_flops`: unknown dtype `f8`"), "{msg}");
    let msg = file_error(&USER_TARGET.replace("\"spec sheet\"", "\" \""));
    assert!(msg.starts_with("6:42: `h100.on_chip_bytes.source` is empty"), "{msg}");
    // Missing f32, missing and unknown fields.
    let msg = file_error(&USER_TARGET.replace("f32 =", "bf16 ="));
    assert!(msg.contains("`h100.peak_flops` needs an `f32` entry"), "{msg}");
    assert!(file_error(&USER_TARGET.replace("launch_overhead", "launch")).contains("launch"));
    let missing_source = USER_TARGET.replace(", source = \"spec sheet\"", "");
    assert!(file_error(&missing_source).contains("source"));
}

#[test]
fn unreadable_user_file_names_the_path() {
    let err = Targets::from_file(Path::new("/nonexistent/targets.toml")).unwrap_err();
    assert!(matches!(err, CostError::Io { .. }));
    assert!(err.to_string().starts_with("/nonexistent/targets.toml: "), "{err}");
}

#[test]
fn linear_costs_match_hand_computed_values() {
    let target = h100();
    let (x, w, out) =
        (ty(DType::F32, &["S", "8"]), ty(DType::F32, &["16", "8"]), ty(DType::F32, &["S", "16"]));
    let c = cost(Op::Linear, &[&x, &w], &out, &bind(&[("S", 4)]), &target);
    // 2 * M * N * K = 2 * 4 * 16 * 8; bytes = 4 * (4*8 + 16*8 + 4*16).
    assert_eq!((c.flops, c.bytes, c.launches), (1024.0, 896.0, 1));
    let compute = 1024.0 / target.peak_flops[&DType::F32];
    let memory = 896.0 / target.memory_bandwidth;
    assert_close(c.seconds, compute.max(memory) + target.launch_overhead);
}

/// A DeepSeek-V3-sized projection `x [S, 7168] w [18432, 7168]^T` in bf16.
fn projection(s: u64, target: &Target) -> NodeCost {
    let x = ty(DType::BF16, &["S", "7168"]);
    let w = ty(DType::BF16, &["18432", "7168"]);
    let out = ty(DType::BF16, &["S", "18432"]);
    cost(Op::Linear, &[&x, &w], &out, &bind(&[("S", s)]), target)
}

#[test]
fn decode_linear_is_memory_bound_and_prefill_compute_bound() {
    let target = h100();
    let peak = target.peak_flops[&DType::BF16];
    let decode = projection(1, &target);
    assert!(decode.flops / peak < decode.bytes / target.memory_bandwidth / 100.0);
    assert_close(decode.seconds, decode.bytes / target.memory_bandwidth + target.launch_overhead);

    let prefill = projection(4096, &target);
    assert!(prefill.flops / peak > 2.0 * prefill.bytes / target.memory_bandwidth);
    assert_close(prefill.seconds, prefill.flops / peak + target.launch_overhead);
}

#[test]
fn rms_norm_linear_is_cheaper_than_rms_norm_then_linear() {
    let (x, g) = (ty(DType::BF16, &["S", "7168"]), ty(DType::BF16, &["7168"]));
    let (w, out) = (ty(DType::BF16, &["1536", "7168"]), ty(DType::BF16, &["S", "1536"]));
    for target in ["h100", "h200", "cpu"].map(|n| Targets::builtin().get(n).unwrap().clone()) {
        for s in [1, 4096] {
            let syms = bind(&[("S", s)]);
            let unfused = cost(Op::RmsNorm { eps: 1e-6 }, &[&x, &g], &x, &syms, &target)
                + cost(Op::Linear, &[&x, &w], &out, &syms, &target);
            let fused = cost(Op::RmsNormLinear { eps: 1e-6 }, &[&x, &g, &w], &out, &syms, &target);
            assert_eq!(fused.flops, unfused.flops);
            assert_eq!((fused.launches, unfused.launches), (1, 2));
            // The normalised activation is neither written nor read back.
            assert_eq!(fused.bytes, unfused.bytes - 2.0 * 2.0 * 7168.0 * s as f64);
            assert!(fused.seconds < unfused.seconds, "{} S={s}", target.name);
        }
    }
}

#[test]
fn gated_linear_is_cheaper_than_its_parts() {
    let target = h100();
    let syms = bind(&[("S", 1)]);
    let (x, w, out) = (
        ty(DType::BF16, &["S", "7168"]),
        ty(DType::BF16, &["2048", "7168"]),
        ty(DType::BF16, &["S", "2048"]),
    );
    let parts = [
        cost(Op::Linear, &[&x, &w], &out, &syms, &target),
        cost(Op::Linear, &[&x, &w], &out, &syms, &target),
        cost(Op::Unary(UnaryOp::Silu), &[&out], &out, &syms, &target),
        cost(Op::Binary(saturn_ir::BinaryOp::Mul), &[&out, &out], &out, &syms, &target),
    ];
    let unfused: NodeCost = parts.into_iter().sum();
    let fused = cost(Op::GatedLinear, &[&x, &w, &w], &out, &syms, &target);
    assert_eq!(fused.flops, unfused.flops);
    assert_eq!((fused.launches, unfused.launches), (1, 4));
    assert_eq!(fused.bytes, 2.0 * (7168.0 + 2.0 * 2048.0 * 7168.0 + 2048.0));
    assert!(fused.bytes < unfused.bytes && fused.seconds < unfused.seconds);
}

#[test]
fn symbolic_dims_are_evaluated_under_the_bindings() {
    let target = h100();
    // Attention scores: q [H=128, S, 576] against the cache k [128, P+S, 576]^T.
    let q = ty(DType::F32, &["128", "S", "576"]);
    let mut k = ty(DType::F32, &["128", "S", "576"]);
    k.shape[1] = Dim::sym("P").add(&Dim::sym("S"));
    let mut scores = ty(DType::F32, &["128", "S", "S"]);
    scores.shape[2] = k.shape[1].clone();
    let kt =
        TensorType { dtype: DType::F32, shape: vec![k.shape[0].clone(), 576u64.into(), k.shape[1].clone()] };
    let flops = |syms: &SymBindings| cost(Op::MatMul, &[&q, &kt], &scores, syms, &target).flops;
    assert_eq!(flops(&bind(&[("S", 1), ("P", 4095)])), 2.0 * 128.0 * 4096.0 * 576.0);
    assert_eq!(flops(&bind(&[("S", 4096), ("P", 0)])), 2.0 * 128.0 * 4096.0 * 4096.0 * 576.0);
    // An unbound symbol counts as 1.
    assert_eq!(flops(&bind(&[("S", 2)])), 2.0 * 128.0 * 2.0 * 3.0 * 576.0);
}

#[test]
fn views_and_leaves_are_free_and_other_ops_follow_their_rules() {
    let target = h100();
    let syms = bind(&[("S", 3)]);
    let x = ty(DType::F32, &["S", "8"]);
    let free = [
        Op::Input,
        Op::Param { key: "w".into() },
        Op::Reshape { shape: vec![Dim::sym("S"), 2u64.into(), 4u64.into()] },
        Op::Permute { perm: vec![1, 0] },
        Op::Slice { axis: 1, start: 0u64.into(), end: 4u64.into() },
        Op::Expand { shape: vec![2u64.into(), Dim::sym("S"), 8u64.into()] },
        Op::Arange { start: Dim::sym("P"), len: Dim::sym("S") },
    ];
    for op in free {
        assert_eq!(cost(op, &[&x], &x, &syms, &target), NodeCost::default());
    }
    let flops =
        |op: Op, inputs: &[&TensorType], out: &TensorType| cost(op, inputs, out, &syms, &target).flops;
    let expr: ElementwiseExpr = "mul(silu($0), add($0, 1.0))".parse().unwrap();
    assert_eq!(flops(Op::FusedElementwise { expr }, &[&x], &x), 3.0 * 24.0);
    assert_eq!(flops(Op::Softmax { axis: 1 }, &[&x], &x), 5.0 * 24.0);
    assert_eq!(flops(Op::TopKMask { k: 4 }, &[&x], &ty(DType::Bool, &["S", "8"])), 2.0 * 24.0);
    let row_sums = ty(DType::F32, &["S"]);
    assert_eq!(
        flops(Op::Reduce { op: saturn_ir::ReduceOp::Sum, axis: 1, keepdim: false }, &[&x], &row_sums),
        24.0
    );

    // A gather reads the rows it gathers, not the table.
    let (table, ids, rows) =
        (ty(DType::BF16, &["129280", "7168"]), ty(DType::I64, &["S"]), ty(DType::BF16, &["S", "7168"]));
    let gather = cost(Op::Gather, &[&table, &ids], &rows, &syms, &target);
    assert_eq!((gather.flops, gather.bytes, gather.launches), (0.0, 2.0 * 3.0 * 7168.0 * 2.0 + 3.0 * 8.0, 1));
}

#[test]
fn empty_tensors_cost_only_a_launch() {
    let target = h100();
    let x = ty(DType::F32, &["S", "8"]);
    let c = cost(Op::Unary(UnaryOp::Exp), &[&x], &x, &bind(&[("S", 0)]), &target);
    assert_eq!(c, NodeCost { flops: 0.0, bytes: 0.0, launches: 1, seconds: target.launch_overhead });
}

#[test]
fn costs_add_field_by_field() {
    let a = NodeCost { flops: 1.0, bytes: 2.0, launches: 3, seconds: 4.0 };
    let b = NodeCost { flops: 10.0, bytes: 20.0, launches: u32::MAX, seconds: 40.0 };
    assert_eq!(a + b, NodeCost { flops: 11.0, bytes: 22.0, launches: u32::MAX, seconds: 44.0 });
}

/// Every node of the full DeepSeek-V3 graphs (from the dump snapshots) gets a finite cost, with
/// all symbols bound and with none bound.
#[test]
fn every_node_of_deepseek_v3_has_a_finite_cost() {
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots");
    for (phase, syms) in [("decode", bind(&[("P", 4096)])), ("prefill", bind(&[("S", 4096)]))] {
        let file = snapshots.join(format!("dump_snapshots__hf_deepseek_v3_671b_{phase}.snap"));
        let text = std::fs::read_to_string(&file).unwrap();
        let graph_text = text.splitn(3, "---\n").nth(2).expect("an insta header");
        let graph = saturn_ir::text::parse(graph_text).unwrap();
        for target_name in ["h100", "cpu"] {
            let target = Targets::builtin().get(target_name).unwrap().clone();
            for bindings in [&syms, &SymBindings::new()] {
                let total: NodeCost = graph
                    .node_ids()
                    .map(|id| {
                        let inputs = graph.inputs(id);
                        let input_types: Vec<&TensorType> = inputs.iter().map(|&i| graph.ty(i)).collect();
                        let node = graph.node(id);
                        let c = node_cost(&node.op, &input_types, &node.ty, bindings, &target);
                        assert!(c.seconds.is_finite() && c.seconds >= 0.0, "{} {c:?}", node.name);
                        c
                    })
                    .sum();
                assert!(
                    total.flops > 0.0 && total.bytes > 0.0 && total.launches > 1000,
                    "{phase}: {total:?}"
                );
            }
        }
    }
}
