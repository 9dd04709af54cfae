//! Soundness of every rewrite rule: random instances (random shapes and values) are rewritten
//! by the rule alone, and the rewritten graph must compute what the original computes, in the
//! interpreter. A rule without a test here fails `every_rule_has_a_soundness_test`.

use std::collections::HashMap;

use proptest::prelude::*;
use saturn_ir::{
    BinaryOp, Bindings, DType, ElementwiseExpr, Graph, NodeId, Op, SymBindings, Tensor, TensorType, UnaryOp,
    evaluate,
};

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
