//! Soundness of every rewrite rule: random instances (random shapes and values) are rewritten
//! by the rule alone, and the rewritten graph must compute what the original computes, in the
//! interpreter. A rule without a test here fails `every_rule_has_a_soundness_test`.

use std::collections::HashMap;

use proptest::prelude::*;
use saturn_ir::{
    BinaryOp, Bindings, DType, ElementwiseExpr, Graph, NodeId, Op, SymBindings, Tensor, TensorType, UnaryOp,
    evaluate,
};
use saturn_ir::{Dim, ReduceOp};

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn dim(&mut self) -> u64 {
        1 + self.next() % 4
    }
    fn value(&mut self) -> f32 {
        (self.next() % 2001) as f32 / 1000.0 - 1.0
    }
    fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
        p
    }
}

/// Builds a graph of inputs and ops, fills the inputs with random values.
struct Case {
    g: Graph,
    inputs: HashMap<String, Tensor>,
    rng: Rng,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case { g: Graph::new("case"), inputs: HashMap::new(), rng: Rng(seed | 1) }
    }
    fn input(&mut self, shape: &[u64]) -> NodeId {
        let name = format!("x{}", self.inputs.len());
        let n: usize = shape.iter().product::<u64>() as usize;
        let data = (0..n).map(|_| self.rng.value()).collect();
        self.inputs.insert(name.clone(), Tensor::f32(shape.iter().map(|&d| d as usize).collect(), data));
        self.g.add(name, Op::Input, &[], Some(TensorType::new(DType::F32, shape.iter().copied()))).unwrap()
    }
    fn op(&mut self, op: Op, args: &[NodeId]) -> NodeId {
        let name = self.g.fresh_name("n");
        self.g.add(name, op, args, None).unwrap()
    }
    fn scalar(&mut self, value: f64) -> NodeId {
        let name = self.g.fresh_name("c");
        self.g
            .add(name, Op::Scalar { value }, &[], Some(TensorType { dtype: DType::F32, shape: vec![] }))
            .unwrap()
    }
    /// Marks `root` as the output, rewrites with `rule`, and compares both graphs.
    fn check(mut self, root: NodeId, rule: &str) -> Result<(), TestCaseError> {
        self.g.set_output("y", root).unwrap();
        let (rewritten, applied) = saturn_passes::testing::apply_rule_for_test(&self.g, rule).unwrap();
        prop_assert!(applied > 0, "rule {} did not fire on\n{}", rule, saturn_ir::text::print(&self.g));
        saturn_ir::verify(&rewritten).unwrap();
        let run = |g: &Graph| {
            let params: HashMap<String, Tensor> = HashMap::new();
            let b = Bindings { symbols: SymBindings::new(), inputs: self.inputs.clone(), params: &params };
            evaluate(g, &b).unwrap().remove("y").unwrap()
        };
        let (want, got) = (run(&self.g), run(&rewritten));
        prop_assert_eq!(&want.shape, &got.shape);
        for (a, b) in want.as_f32().unwrap().iter().zip(got.as_f32().unwrap()) {
            prop_assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{} vs {} after {}:\n{}",
                a,
                b,
                rule,
                saturn_ir::text::print(&rewritten)
            );
        }
        Ok(())
    }
}

/// Rules with a test below; checked against the optimiser's list.
const TESTED: &[&str] = &[
    "permute-permute",
    "permute-identity",
    "reshape-reshape",
    "reshape-identity",
    "matmul-assoc-right",
    "matmul-assoc-left",
    "transpose-of-matmul",
    "linear-as-matmul",
    "matmul-as-linear",
    "factor-mul",
    "factor-matmul",
    "fuse-elementwise",
    "rms-norm-into-linear",
    "silu-mul-into-linears",
    "fused-silu-mul-into-linears",
    "router-topk",
    "router-normalize",
    "router-scale",
    "grouped-experts",
    "shared-expert-into-grouped",
    "permute-concat",
    "slice-of-permute",
    "permute-expand",
    "linear-head-split",
    "linear-head-merge",
    "slice-of-matmul",
    "matmul-split-contraction",
    "matmul-unexpand",
    "mla-decode-attention",
];

#[test]
fn every_rule_has_a_soundness_test() {
    let mut tested: Vec<&str> = TESTED.to_vec();
    tested.sort();
    assert_eq!(saturn_passes::all_rule_names(), tested, "each rule needs a soundness test here");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn permute_permute(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let shape = [c.rng.dim(), c.rng.dim(), c.rng.dim()];
        let x = c.input(&shape);
        let (p, q) = (c.rng.perm(3), c.rng.perm(3));
        let a = c.op(Op::Permute { perm: p }, &[x]);
        let y = c.op(Op::Permute { perm: q }, &[a]);
        c.check(y, "permute-permute")?;
    }

    #[test]
    fn permute_identity(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let shape = [c.rng.dim(), c.rng.dim()];
        let x = c.input(&shape);
        let p = c.op(Op::Permute { perm: vec![0, 1] }, &[x]);
        let y = c.op(Op::Unary(UnaryOp::Exp), &[p]);
        c.check(y, "permute-identity")?;
    }

    #[test]
    fn reshape_reshape(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (a, b, d) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let x = c.input(&[a, b, d]);
        let r = c.op(Op::Reshape { shape: vec![(a * b).into(), d.into()] }, &[x]);
        let y = c.op(Op::Reshape { shape: vec![a.into(), (b * d).into()] }, &[r]);
        c.check(y, "reshape-reshape")?;
    }

    #[test]
    fn reshape_identity(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (a, b) = (c.rng.dim(), c.rng.dim());
        let x = c.input(&[a, b]);
        let r = c.op(Op::Reshape { shape: vec![a.into(), b.into()] }, &[x]);
        let y = c.op(Op::Unary(UnaryOp::Tanh), &[r]);
        c.check(y, "reshape-identity")?;
    }

    #[test]
    fn matmul_assoc_right(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (m, k, n, p) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (a, b, d) = (c.input(&[m, k]), c.input(&[k, n]), c.input(&[n, p]));
        let ab = c.op(Op::MatMul, &[a, b]);
        let y = c.op(Op::MatMul, &[ab, d]);
        c.check(y, "matmul-assoc-right")?;
    }

    #[test]
    fn matmul_assoc_left(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (m, k, n, p) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (a, b, d) = (c.input(&[m, k]), c.input(&[k, n]), c.input(&[n, p]));
        let bd = c.op(Op::MatMul, &[b, d]);
        let y = c.op(Op::MatMul, &[a, bd]);
        c.check(y, "matmul-assoc-left")?;
    }

    #[test]
    fn transpose_of_matmul(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (bt, m, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (a, b) = (c.input(&[bt, m, k]), c.input(&[bt, k, n]));
        let ab = c.op(Op::MatMul, &[a, b]);
        let y = c.op(Op::Permute { perm: vec![0, 2, 1] }, &[ab]);
        c.check(y, "transpose-of-matmul")?;
    }

    #[test]
    fn linear_as_matmul(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (s, h, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let x = c.input(&[s, h, k]);
        let w = c.input(&[n, k]);
        let y = c.op(Op::Linear, &[x, w]);
        c.check(y, "linear-as-matmul")?;
    }

    #[test]
    fn matmul_as_linear(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (m, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let x = c.input(&[m, k]);
        let w = c.input(&[n, k]);
        let wt = c.op(Op::Permute { perm: vec![1, 0] }, &[w]);
        let y = c.op(Op::MatMul, &[x, wt]);
        c.check(y, "matmul-as-linear")?;
    }

    #[test]
    fn factor_mul(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let shape = [c.rng.dim(), c.rng.dim()];
        let (a, b, f) = (c.input(&shape), c.input(&shape), c.input(&shape));
        let left = if c.rng.next().is_multiple_of(2) { [a, f] } else { [f, a] };
        let right = if c.rng.next().is_multiple_of(2) { [b, f] } else { [f, b] };
        let l = c.op(Op::Binary(BinaryOp::Mul), &left);
        let r = c.op(Op::Binary(BinaryOp::Mul), &right);
        let y = c.op(Op::Binary(BinaryOp::Add), &[l, r]);
        c.check(y, "factor-mul")?;
    }

    #[test]
    fn factor_matmul(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (m, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let a = c.input(&[m, k]);
        let (b, d) = (c.input(&[k, n]), c.input(&[k, n]));
        let ab = c.op(Op::MatMul, &[a, b]);
        let ad = c.op(Op::MatMul, &[a, d]);
        let y = c.op(Op::Binary(BinaryOp::Add), &[ab, ad]);
        c.check(y, "factor-matmul")?;
    }

    #[test]
    fn fuse_elementwise(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (m, n) = (c.rng.dim(), c.rng.dim());
        let x = c.input(&[m, n]);
        let v = c.input(&[n]);
        let s = c.scalar(0.5);
        // A random chain of unary and binary ops over x, a broadcast row v and a scalar.
        let mut cur = x;
        for _ in 0..(1 + c.rng.next() % 4) {
            cur = match c.rng.next() % 4 {
                0 => {
                    let u = [UnaryOp::Silu, UnaryOp::Tanh, UnaryOp::Neg, UnaryOp::Sigmoid][(c.rng.next() % 4) as usize];
                    c.op(Op::Unary(u), &[cur])
                }
                1 => c.op(Op::Binary(BinaryOp::Mul), &[cur, v]),
                2 => c.op(Op::Binary(BinaryOp::Add), &[s, cur]),
                _ => c.op(Op::Binary(BinaryOp::Max), &[cur, x]),
            };
        }
        let y = c.op(Op::Binary(BinaryOp::Sub), &[cur, v]);
        c.check(y, "fuse-elementwise")?;
    }

    #[test]
    fn rms_norm_into_linear(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (s, k, n) = (c.rng.dim(), c.rng.dim() + 1, c.rng.dim());
        let (x, g, w) = (c.input(&[s, k]), c.input(&[k]), c.input(&[n, k]));
        let normed = c.op(Op::RmsNorm { eps: 1e-6 }, &[x, g]);
        let y = c.op(Op::Linear, &[normed, w]);
        c.check(y, "rms-norm-into-linear")?;
    }

    #[test]
    fn silu_mul_into_linears(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (s, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (x, wg, wu) = (c.input(&[s, k]), c.input(&[n, k]), c.input(&[n, k]));
        let gate = c.op(Op::Linear, &[x, wg]);
        let up = c.op(Op::Linear, &[x, wu]);
        let act = c.op(Op::Unary(UnaryOp::Silu), &[gate]);
        let args = if c.rng.next().is_multiple_of(2) { [act, up] } else { [up, act] };
        let y = c.op(Op::Binary(BinaryOp::Mul), &args);
        c.check(y, "silu-mul-into-linears")?;
    }

    #[test]
    fn fused_silu_mul_into_linears(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (s, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (x, wg, wu) = (c.input(&[s, k]), c.input(&[n, k]), c.input(&[n, k]));
        let gate = c.op(Op::Linear, &[x, wg]);
        let up = c.op(Op::Linear, &[x, wu]);
        let expr: ElementwiseExpr = if c.rng.next().is_multiple_of(2) { "mul(silu($0), $1)" } else { "mul($1, silu($0))" }.parse().unwrap();
        let y = c.op(Op::FusedElementwise { expr }, &[gate, up]);
        c.check(y, "fused-silu-mul-into-linears")?;
    }
}

/// A rule whose condition does not hold leaves the graph as it was: elementwise fusion skips
/// bf16 chains (fusing would skip the rounding between ops).
#[test]
fn a_rule_whose_condition_fails_changes_nothing() {
    let mut g = Graph::new("bf16");
    let x = g.add("x", Op::Input, &[], Some(TensorType::new(DType::BF16, [4u64]))).unwrap();
    let a = g.add("a", Op::Unary(UnaryOp::Silu), &[x], None).unwrap();
    let b = g.add("b", Op::Binary(BinaryOp::Mul), &[a, x], None).unwrap();
    g.set_output("y", b).unwrap();
    let (rewritten, applied) = saturn_passes::testing::apply_rule_for_test(&g, "fuse-elementwise").unwrap();
    assert_eq!(applied, 0);
    assert_eq!(saturn_ir::text::print(&rewritten), saturn_ir::text::print(&g));
}

/// A router written out as the frontend lowers it, for random expert and group counts, top-k,
/// scoring, bias, group score and fill.
struct RouterCase {
    t: u64,
    e: u64,
    weights: NodeId,
    normalize: bool,
}

fn written_out_router(c: &mut Case) -> RouterCase {
    let t = c.rng.dim();
    let n_group = 1 + c.rng.next() % 3;
    let sum_top2 = c.rng.next().is_multiple_of(2);
    let per_group = if sum_top2 { 2 + c.rng.next() % 3 } else { 1 + c.rng.next() % 3 };
    let e = n_group * per_group;
    let topk_group = 1 + c.rng.next() % n_group;
    let k = 1 + c.rng.next() % (topk_group * per_group);
    let logits = c.input(&[t, e]);
    let sigmoid = c.rng.next().is_multiple_of(2);
    let scores = if sigmoid {
        c.op(Op::Unary(UnaryOp::Sigmoid), &[logits])
    } else {
        c.op(Op::Softmax { axis: 1 }, &[logits])
    };
    let biased = if c.rng.next().is_multiple_of(2) {
        let bias = c.input(&[e]);
        c.op(Op::Binary(BinaryOp::Add), &[scores, bias])
    } else {
        scores
    };
    let candidates = if n_group > 1 {
        let grouped =
            c.op(Op::Reshape { shape: vec![Dim::constant(t), n_group.into(), per_group.into()] }, &[biased]);
        let group_scores = if sum_top2 {
            let top2 = c.op(Op::TopKMask { k: 2 }, &[grouped]);
            let zero = c.scalar(0.0);
            let kept = c.op(Op::Where, &[top2, grouped, zero]);
            c.op(Op::Reduce { op: ReduceOp::Sum, axis: 2, keepdim: false }, &[kept])
        } else {
            c.op(Op::Reduce { op: ReduceOp::Max, axis: 2, keepdim: false }, &[grouped])
        };
        let kept = c.op(Op::TopKMask { k: topk_group }, &[group_scores]);
        let kept = c.op(Op::Reshape { shape: vec![Dim::constant(t), n_group.into(), 1u64.into()] }, &[kept]);
        let kept =
            c.op(Op::Expand { shape: vec![Dim::constant(t), n_group.into(), per_group.into()] }, &[kept]);
        let kept = c.op(Op::Reshape { shape: vec![Dim::constant(t), e.into()] }, &[kept]);
        let fill = if c.rng.next().is_multiple_of(2) { f64::NEG_INFINITY } else { 0.0 };
        let fill = c.scalar(fill);
        c.op(Op::Where, &[kept, biased, fill])
    } else {
        biased
    };
    let chosen = c.op(Op::TopKMask { k }, &[candidates]);
    let zero = c.scalar(0.0);
    let source = if c.rng.next().is_multiple_of(2) { scores } else { candidates };
    let mut weights = c.op(Op::Where, &[chosen, source, zero]);
    let normalize = c.rng.next().is_multiple_of(2);
    if normalize {
        let sum = c.op(Op::Reduce { op: ReduceOp::Sum, axis: 1, keepdim: true }, &[weights]);
        let eps = c.scalar(1e-20);
        let denominator = c.op(Op::Binary(BinaryOp::Add), &[sum, eps]);
        weights = c.op(Op::Binary(BinaryOp::Div), &[weights, denominator]);
    }
    RouterCase { t, e, weights, normalize }
}

/// Fuses a written-out router with the three router rules, in order, on the graph `c` holds.
fn fused_router(c: &Case) -> Graph {
    let mut g = c.g.clone();
    for rule in ["router-topk", "router-normalize", "router-scale"] {
        g = saturn_passes::testing::apply_rule_for_test(&g, rule).unwrap().0;
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn router_topk(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let r = written_out_router(&mut c);
        // The first step fuses `where(topk_mask(..), .., 0)`; a normalisation stays above it.
        let y = c.op(Op::Unary(UnaryOp::Neg), &[r.weights]);
        c.check(y, "router-topk")?;
    }

    #[test]
    fn router_normalize(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let r = written_out_router(&mut c);
        prop_assume!(r.normalize);
        c.g.set_output("y", r.weights).unwrap();
        let step1 = saturn_passes::testing::apply_rule_for_test(&c.g, "router-topk").unwrap().0;
        let mut c2 = Case { g: step1, inputs: c.inputs.clone(), rng: Rng(seed | 1) };
        let y = c2.g.outputs()[0].1;
        c2.g = strip_outputs(&c2.g);
        c2.check(y, "router-normalize")?;
    }

    #[test]
    fn router_scale(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let r = written_out_router(&mut c);
        let scale = c.scalar(2.5);
        let scaled = c.op(Op::Binary(BinaryOp::Mul), &[r.weights, scale]);
        c.g.set_output("y", scaled).unwrap();
        let mut g = c.g.clone();
        for rule in ["router-topk", "router-normalize"] {
            g = saturn_passes::testing::apply_rule_for_test(&g, rule).unwrap().0;
        }
        let c2 = Case { g: strip_outputs(&g), inputs: c.inputs.clone(), rng: Rng(seed | 1) };
        let y = g.outputs()[0].1;
        c2.check(y, "router-scale")?;
    }

    #[test]
    fn grouped_experts(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let r = written_out_router(&mut c);
        let (h, i) = (c.rng.dim(), c.rng.dim());
        let x = c.input(&[r.t, h]);
        let (wg, wu, wd) = (c.input(&[r.e, i, h]), c.input(&[r.e, i, h]), c.input(&[r.e, h, i]));
        let y = dense_experts(&mut c, x, r.weights, [wg, wu, wd], r.e, r.t);
        c.g.set_output("y", y).unwrap();
        let fused = fused_router(&c);
        let c2 = Case { g: strip_outputs(&fused), inputs: c.inputs.clone(), rng: Rng(seed | 1) };
        c2.check(fused.outputs()[0].1, "grouped-experts")?;
    }

    #[test]
    fn shared_expert_into_grouped(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let r = written_out_router(&mut c);
        let (h, i, j) = (c.rng.dim(), c.rng.dim(), c.rng.dim());
        let x = c.input(&[r.t, h]);
        let (wg, wu, wd) = (c.input(&[r.e, i, h]), c.input(&[r.e, i, h]), c.input(&[r.e, h, i]));
        let routed = dense_experts(&mut c, x, r.weights, [wg, wu, wd], r.e, r.t);
        let (sg, su, sd) = (c.input(&[j, h]), c.input(&[j, h]), c.input(&[h, j]));
        let gated = c.op(Op::GatedLinear, &[x, sg, su]);
        let shared = c.op(Op::Linear, &[gated, sd]);
        let y = c.op(Op::Binary(BinaryOp::Add), &[routed, shared]);
        c.g.set_output("y", y).unwrap();
        let mut g = fused_router(&c);
        g = saturn_passes::testing::apply_rule_for_test(&g, "grouped-experts").unwrap().0;
        let c2 = Case { g: strip_outputs(&g), inputs: c.inputs.clone(), rng: Rng(seed | 1) };
        c2.check(g.outputs()[0].1, "shared-expert-into-grouped")?;
    }
}

/// Every expert on every token, weighted by the routing matrix, as the frontend lowers it.
fn dense_experts(c: &mut Case, x: NodeId, routing: NodeId, w: [NodeId; 3], e: u64, t: u64) -> NodeId {
    let [gate_t, up_t, down_t] = w.map(|w| c.op(Op::Permute { perm: vec![0, 2, 1] }, &[w]));
    let gate = c.op(Op::MatMul, &[x, gate_t]);
    let up = c.op(Op::MatMul, &[x, up_t]);
    let act = c.op(Op::Unary(UnaryOp::Silu), &[gate]);
    let act = c.op(Op::Binary(BinaryOp::Mul), &[act, up]);
    let out = c.op(Op::MatMul, &[act, down_t]);
    let column = c.op(Op::Permute { perm: vec![1, 0] }, &[routing]);
    let column = c.op(Op::Reshape { shape: vec![e.into(), Dim::constant(t), 1u64.into()] }, &[column]);
    let weighted = c.op(Op::Binary(BinaryOp::Mul), &[out, column]);
    c.op(Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }, &[weighted])
}

/// A copy of `g` without outputs, so a test can set its own.
fn strip_outputs(g: &Graph) -> Graph {
    let mut out = Graph::new(g.name.clone());
    for id in g.node_ids() {
        let n = g.node(id);
        let declared = n.op.is_leaf().then(|| n.ty.clone());
        out.add(n.name.clone(), n.op.clone(), &g.inputs(id), declared).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn transpose_of_matmul_with_broadcast(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (bt, m, k, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (a, b) = (c.input(&[m, k]), c.input(&[bt, k, n]));
        let ab = c.op(Op::MatMul, &[a, b]);
        let y = c.op(Op::Permute { perm: vec![0, 2, 1] }, &[ab]);
        c.check(y, "transpose-of-matmul")?;
    }

    #[test]
    fn permute_concat(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (a, b, d1, d2) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let axis = (c.rng.next() % 3) as usize;
        let mut s1 = [a, b, d1];
        let mut s2 = [a, b, d1];
        s1[axis] = d1;
        s2[axis] = d2;
        let (x, z) = (c.input(&s1), c.input(&s2));
        let cat = c.op(Op::Concat { axis }, &[x, z]);
        let p = c.rng.perm(3);
        let y = c.op(Op::Permute { perm: p }, &[cat]);
        c.check(y, "permute-concat")?;
    }

    #[test]
    fn slice_of_permute(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let shape = [c.rng.dim() + 1, c.rng.dim() + 1, c.rng.dim() + 1];
        let x = c.input(&shape);
        let p = c.rng.perm(3);
        let permuted = c.op(Op::Permute { perm: p.clone() }, &[x]);
        let axis = (c.rng.next() % 3) as usize;
        let len = shape[p[axis]];
        let start = c.rng.next() % len;
        let end = start + 1 + c.rng.next() % (len - start);
        let y = c.op(Op::Slice { axis, start: start.into(), end: end.into() }, &[permuted]);
        c.check(y, "slice-of-permute")?;
    }

    #[test]
    fn permute_expand(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (t, h, d) = (c.rng.dim(), c.rng.dim() + 1, c.rng.dim());
        let x = c.input(&[t, 1, d]);
        let e = c.op(Op::Expand { shape: vec![t.into(), h.into(), d.into()] }, &[x]);
        let p = c.rng.perm(3);
        let y = c.op(Op::Permute { perm: p }, &[e]);
        c.check(y, "permute-expand")?;
    }

    #[test]
    fn linear_head_split(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (t, k, h, n) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (x, w) = (c.input(&[t, k]), c.input(&[h * n, k]));
        let lin = c.op(Op::Linear, &[x, w]);
        let y = c.op(Op::Reshape { shape: vec![t.into(), h.into(), n.into()] }, &[lin]);
        c.check(y, "linear-head-split")?;
    }

    #[test]
    fn slice_of_matmul(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (bt, m, k, n) = (c.rng.dim(), c.rng.dim() + 1, c.rng.dim(), c.rng.dim() + 1);
        let (a, b) = (c.input(&[m, k]), c.input(&[bt, k, n]));
        let ab = c.op(Op::MatMul, &[a, b]);
        let (axis, len) = if c.rng.next().is_multiple_of(2) { (2, n) } else { (1, m) };
        let start = c.rng.next() % len;
        let end = start + 1 + c.rng.next() % (len - start);
        let y = c.op(Op::Slice { axis, start: start.into(), end: end.into() }, &[ab]);
        c.check(y, "slice-of-matmul")?;
    }

    #[test]
    fn matmul_split_contraction(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (h, s, t, k1, k2) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (a, b) = (c.input(&[h, s, k1]), c.input(&[h, s, k2]));
        let (d, e) = (c.input(&[h, k1, t]), c.input(&[1, k2, t]));
        let e = c.op(Op::Expand { shape: vec![h.into(), k2.into(), t.into()] }, &[e]);
        let left = c.op(Op::Concat { axis: 2 }, &[a, b]);
        let right = c.op(Op::Concat { axis: 1 }, &[d, e]);
        let y = c.op(Op::MatMul, &[left, right]);
        c.check(y, "matmul-split-contraction")?;
    }

    #[test]
    fn matmul_unexpand(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (h, s, k, t) = (c.rng.dim() + 1, c.rng.dim(), c.rng.dim(), c.rng.dim());
        let a = c.input(&[h, s, k]);
        let b = c.input(&[1, k, t]);
        let e = c.op(Op::Expand { shape: vec![h.into(), k.into(), t.into()] }, &[b]);
        let y = c.op(Op::MatMul, &[a, e]);
        c.check(y, "matmul-unexpand")?;
    }

    #[test]
    fn mla_decode_attention(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (h, s, cdim, r) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), 2 * c.rng.dim());
        let t = s + c.rng.next() % 5;
        let (q_latent, q_rope) = (c.input(&[h, s, cdim]), c.input(&[h, s, r]));
        let (latent, k_pe) = (c.input(&[t, cdim]), c.input(&[t, r]));
        let nope = c.op(Op::Linear, &[q_latent, latent]);
        let column = c.op(Op::Reshape { shape: vec![t.into(), 1u64.into(), r.into()] }, &[k_pe]);
        let key = c.op(Op::Permute { perm: vec![1, 2, 0] }, &[column]);
        let rope = c.op(Op::MatMul, &[q_rope, key]);
        let sum = c.op(Op::Binary(BinaryOp::Add), &[nope, rope]);
        let scale = c.scalar(0.37);
        let scaled = c.op(Op::Binary(BinaryOp::Mul), &[sum, scale]);
        let masked = c.op(Op::CausalMask, &[scaled]);
        let probs = c.op(Op::Softmax { axis: 2 }, &[masked]);
        let y = c.op(Op::MatMul, &[probs, latent]);
        c.check(y, "mla-decode-attention")?;
    }

    #[test]
    fn linear_head_merge(seed in any::<u64>()) {
        let mut c = Case::new(seed);
        let (h, s, n, d) = (c.rng.dim(), c.rng.dim(), c.rng.dim(), c.rng.dim());
        let (x, w) = (c.input(&[h, s, n]), c.input(&[d, h * n]));
        let by_token = c.op(Op::Permute { perm: vec![1, 0, 2] }, &[x]);
        let merged = c.op(Op::Reshape { shape: vec![s.into(), (h * n).into()] }, &[by_token]);
        let y = c.op(Op::Linear, &[merged, w]);
        c.check(y, "linear-head-merge")?;
    }
}
