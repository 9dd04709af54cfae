//! The fused ops (`fused_elementwise`, `rms_norm_linear`, `gated_linear`) in the reference
//! interpreter: hand-computed values, proptests that each equals the composition of the unfused
//! ops it stands for, and the type errors `Graph::add` gives for bad operands.

mod common;

use common::{close_tol, f32s, input, op, run, t32};

use proptest::prelude::*;
use saturn_ir::{
    BinaryOp, DType, Dim, ElementwiseExpr, Graph, IrError, NodeId, Op, Tensor, TensorType, UnaryOp,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::constant(d as u64)).collect()
}

fn param(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
    g.add(name, Op::Param { key: name.into() }, &[], Some(TensorType { dtype, shape: dims(shape) })).unwrap()
}

fn fused(text: &str) -> Op {
    Op::FusedElementwise { expr: text.parse().unwrap() }
}

/// Marks `y` as the output `y` and evaluates it.
fn eval_y(g: &mut Graph, y: NodeId, inputs: Vec<(&str, Tensor)>, params: Vec<(&str, Tensor)>) -> Tensor {
    g.set_output("y", y).unwrap();
    run(g, inputs, params, &[]).unwrap_or_else(|e| panic!("{e}")).remove("y").unwrap()
}

fn approx_eq(got: &[f32], want: &[f32]) {
    close_tol(got, want, 1e-6).unwrap_or_else(|e| panic!("{e}"));
}

/// The message of a failed `Graph::add`, which must be a type error of node `node`.
fn type_error(r: Result<NodeId, IrError>, node: &str) -> String {
    let e = r.expect_err("the node should not type-check");
    let text = e.to_string();
    assert!(matches!(&e, IrError::Type { node: n, .. } if n == node), "{e:?}");
    assert!(text.contains(&format!("%{node}")), "message `{text}` does not name `%{node}`");
    text
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------------------------------------
// fused_elementwise by hand

#[test]
fn fused_elementwise_broadcasts_operands_of_different_ranks() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[2, 1, 3]));
    let b = input(&mut g, "b", DType::F32, dims(&[2, 1]));
    let c = input(&mut g, "c", DType::F32, vec![]);
    let y = op(&mut g, "y", fused("add(mul($0, $1), $2)"), &[a, b, c]);
    assert_eq!(g.ty(y).to_string(), "f32[2, 2, 3]");
    let out = eval_y(
        &mut g,
        y,
        vec![
            ("a", t32(&[2, 1, 3], &[1., 2., 3., 4., 5., 6.])),
            ("b", t32(&[2, 1], &[10., -1.])),
            ("c", t32(&[], &[0.5])),
        ],
        vec![],
    );
    #[rustfmt::skip]
    let want = [
        10.5, 20.5, 30.5,   -0.5, -1.5, -2.5,
        40.5, 50.5, 60.5,   -3.5, -4.5, -5.5,
    ];
    assert_eq!(out, t32(&[2, 2, 3], &want));
}

#[test]
fn fused_elementwise_with_silu_gate_and_operand_reuse() {
    // The SwiGLU tail `silu($0) * $1` and an operand used twice: `$0 * $0 - $1`.
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[3]));
    let b = input(&mut g, "b", DType::F32, dims(&[3]));
    let y = op(&mut g, "y", fused("mul(silu($0), $1)"), &[a, b]);
    let z = op(&mut g, "z", fused("sub(mul($0, $0), $1)"), &[a, b]);
    g.set_output("y", y).unwrap();
    g.set_output("z", z).unwrap();
    let out = run(&g, vec![("a", t32(&[3], &[1., -1., 0.])), ("b", t32(&[3], &[3., 2., 5.]))], vec![], &[])
        .unwrap();
    approx_eq(f32s(&out["y"]), &[0.7310586 * 3., -0.26894142 * 2., 0.]);
    assert_eq!(out["z"], t32(&[3], &[-2., -1., -5.]));
}

#[test]
fn fused_elementwise_constants_are_f32() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[2]));
    let e = ElementwiseExpr::Binary(
        BinaryOp::Add,
        Box::new(ElementwiseExpr::Input(0)),
        Box::new(ElementwiseExpr::Const(0.1 + 0.2)),
    );
    let y = op(&mut g, "y", Op::FusedElementwise { expr: e }, &[a]);
    let z = op(&mut g, "z", fused("div($0, 1e-6)"), &[a]);
    let k = op(&mut g, "k", fused("-1.5"), &[a]);
    for (name, id) in [("y", y), ("z", z), ("k", k)] {
        g.set_output(name, id).unwrap();
    }
    let out = run(&g, vec![("a", t32(&[2], &[0., 1.]))], vec![], &[]).unwrap();
    // 0.1 + 0.2 is 0.30000000000000004 in f64 and rounds to 0.3f32.
    assert_eq!(out["y"], t32(&[2], &[0.3f32, 1.0 + 0.3f32]));
    assert_eq!(out["z"], t32(&[2], &[0., 1.0 / 1e-6f32]));
    // A constant-only expression still takes the operands' shape.
    assert_eq!(out["k"], t32(&[2], &[-1.5, -1.5]));
}

#[test]
fn fused_elementwise_unused_operands_still_broadcast() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[3]));
    let b = input(&mut g, "b", DType::F32, dims(&[2, 1]));
    let y = op(&mut g, "y", fused("neg($0)"), &[a, b]);
    assert_eq!(g.ty(y).to_string(), "f32[2, 3]");
    let out =
        eval_y(&mut g, y, vec![("a", t32(&[3], &[1., 2., 3.])), ("b", t32(&[2, 1], &[9., 9.]))], vec![]);
    assert_eq!(out, t32(&[2, 3], &[-1., -2., -3., -1., -2., -3.]));
}

#[test]
fn fused_elementwise_max_min_nan_and_infinities() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[5]));
    let b = input(&mut g, "b", DType::F32, dims(&[5]));
    let names = ["mx", "mxr", "mn", "mninf", "clamp", "log0"];
    let exprs = ["max($0, $1)", "max($1, $0)", "min($0, $1)", "max($0, -inf)", "max($0, 1e-6)", "log($0)"];
    for (name, text) in names.iter().zip(exprs) {
        let id = op(&mut g, name, fused(text), &[a, b]);
        g.set_output(*name, id).unwrap();
    }
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let av = t32(&[5], &[nan, 1., -inf, 0., 2.]);
    let bv = t32(&[5], &[1., nan, 3., -0., inf]);
    let out = run(&g, vec![("a", av), ("b", bv)], vec![], &[]).unwrap();
    // NaN propagates from either side, as torch.maximum / torch.minimum.
    approx_eq(f32s(&out["mx"]), &[nan, nan, 3., 0., inf]);
    approx_eq(f32s(&out["mxr"]), &[nan, nan, 3., 0., inf]);
    approx_eq(f32s(&out["mn"]), &[nan, nan, -inf, 0., 2.]);
    // max with -inf is the identity (NaN included); max with 1e-6 clamps from below.
    approx_eq(f32s(&out["mninf"]), &[nan, 1., -inf, 0., 2.]);
    approx_eq(f32s(&out["clamp"]), &[nan, 1., 1e-6, 1e-6, 2.]);
    approx_eq(f32s(&out["log0"]), &[nan, 0., nan, -inf, std::f32::consts::LN_2]);
}

#[test]
fn fused_elementwise_with_symbolic_dims_and_bf16_rounding() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::BF16, vec![Dim::sym("S"), Dim::constant(2)]);
    let b = input(&mut g, "b", DType::BF16, dims(&[2]));
    let y = op(&mut g, "y", fused("add($0, $1)"), &[a, b]);
    assert_eq!(g.ty(y).to_string(), "bf16[S, 2]");
    g.set_output("y", y).unwrap();
    let inputs = vec![("a", t32(&[1, 2], &[1., 256.])), ("b", t32(&[2], &[0.0078125, 1.]))];
    let out = run(&g, inputs, vec![], &[("S", 1)]).unwrap();
    // 1 + 2^-7 is exact in bf16; 256 + 1 rounds to even (256).
    assert_eq!(out["y"], t32(&[1, 2], &[1.0078125, 256.]));
    let out = run(&g, vec![("a", t32(&[0, 2], &[])), ("b", t32(&[2], &[0., 0.]))], vec![], &[("S", 0)]);
    assert_eq!(out.unwrap()["y"], t32(&[0, 2], &[]));
}

// ---------------------------------------------------------------------------------------------
// rms_norm_linear and gated_linear by hand

#[test]
fn rms_norm_linear_by_hand() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 2]));
    let gw = param(&mut g, "g", DType::F32, &[2]);
    let w = param(&mut g, "w", DType::F32, &[3, 2]);
    let y = op(&mut g, "y", Op::RmsNormLinear { eps: 0.0 }, &[x, gw, w]);
    assert_eq!(g.ty(y).to_string(), "f32[2, 3]");
    // Row [3, 4]: 1/sqrt(12.5) = 0.28284271 -> [0.8485281, 1.1313709] * g [1, 2]
    // = [0.8485281, 2.2627417]; times w^T with rows [1, 0], [1, 1], [0, -1].
    // Row [1, 1]: normalised [1, 1] * g = [1, 2] -> [1, 3, -2].
    let out = eval_y(
        &mut g,
        y,
        vec![("x", t32(&[2, 2], &[3., 4., 1., 1.]))],
        vec![("g", t32(&[2], &[1., 2.])), ("w", t32(&[3, 2], &[1., 0., 1., 1., 0., -1.]))],
    );
    approx_eq(f32s(&out), &[0.84852814, 3.11127, -2.2627417, 1., 3., -2.]);

    // eps matters: [1, -1] with eps 3 normalises by 1/sqrt(1 + 3) = 0.5.
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[1, 2]));
    let gw = param(&mut g, "g", DType::F32, &[2]);
    let w = param(&mut g, "w", DType::F32, &[1, 2]);
    let y = op(&mut g, "y", Op::RmsNormLinear { eps: 3.0 }, &[x, gw, w]);
    let out = eval_y(
        &mut g,
        y,
        vec![("x", t32(&[1, 2], &[1., -1.]))],
        vec![("g", t32(&[2], &[1., 2.])), ("w", t32(&[1, 2], &[1., 1.]))],
    );
    assert_eq!(out, t32(&[1, 1], &[0.5 - 1.0]));
}

#[test]
fn gated_linear_by_hand() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 1, 2]));
    let wg = param(&mut g, "wg", DType::F32, &[3, 2]);
    let wu = param(&mut g, "wu", DType::F32, &[3, 2]);
    let y = op(&mut g, "y", Op::GatedLinear, &[x, wg, wu]);
    assert_eq!(g.ty(y).to_string(), "f32[2, 1, 3]");
    // x rows [1, 2] and [0, -1]; gate rows [1, 0], [0, 0], [-1, 0]; up rows [1, 1], [2, -1], [1, 0].
    // Row [1, 2]: gate [1, 0, -1], up [3, 0, 1] -> [silu(1) * 3, 0, silu(-1)].
    // Row [0, -1]: gate [0, 0, 0], up [-1, 1, 0] -> [0, 0, 0].
    let out = eval_y(
        &mut g,
        y,
        vec![("x", t32(&[2, 1, 2], &[1., 2., 0., -1.]))],
        vec![
            ("wg", t32(&[3, 2], &[1., 0., 0., 0., -1., 0.])),
            ("wu", t32(&[3, 2], &[1., 1., 2., -1., 1., 0.])),
        ],
    );
    approx_eq(f32s(&out), &[0.7310586 * 3., 0., -0.26894142, 0., 0., 0.]);
}

#[test]
fn gated_linear_shares_one_weight_and_handles_empty_rows() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![Dim::sym("S"), Dim::constant(2)]);
    let w = param(&mut g, "w", DType::F32, &[1, 2]);
    let y = op(&mut g, "y", Op::GatedLinear, &[x, w, w]);
    g.set_output("y", y).unwrap();
    let params = || vec![("w", t32(&[1, 2], &[1., 1.]))];
    // gate = up = 2 -> silu(2) * 2.
    let out = run(&g, vec![("x", t32(&[1, 2], &[1., 1.]))], params(), &[("S", 1)]).unwrap();
    approx_eq(f32s(&out["y"]), &[silu(2.) * 2.]);
    let out = run(&g, vec![("x", t32(&[0, 2], &[]))], params(), &[("S", 0)]).unwrap();
    assert_eq!(out["y"], t32(&[0, 1], &[]));
}

// ---------------------------------------------------------------------------------------------
// Type errors from `Graph::add`

#[test]
fn fused_elementwise_type_errors_name_the_node() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[2]));
    let b = input(&mut g, "b", DType::F32, dims(&[2]));
    let i = input(&mut g, "i", DType::I64, dims(&[2]));
    let h = input(&mut g, "h", DType::BF16, dims(&[2]));
    let q = input(&mut g, "q", DType::Bool, dims(&[2]));
    let w = input(&mut g, "w", DType::F32, dims(&[3]));

    let text = type_error(g.add("f3", fused("add($3, $0)"), &[a, b], None), "f3");
    assert!(text.contains("$3") && text.contains("2 operands"), "{text}");
    let text = type_error(g.add("none", fused("1.0"), &[], None), "none");
    assert!(text.contains("at least one operand"), "{text}");
    for (name, bad) in [("int", i), ("boolean", q)] {
        let text = type_error(g.add(name, fused("add($0, $1)"), &[a, bad], None), name);
        assert!(text.contains("must be a float tensor") || text.contains("dtypes differ"), "{text}");
        let text = type_error(g.add(name, fused("neg($0)"), &[bad], None), name);
        assert!(text.contains("must be a float tensor"), "{text}");
    }
    let text = type_error(g.add("mixed", fused("add($0, $1)"), &[a, h], None), "mixed");
    assert!(text.contains("dtypes differ"), "{text}");
    let text = type_error(g.add("shapes", fused("add($0, $1)"), &[a, w], None), "shapes");
    assert!(text.contains("do not broadcast"), "{text}");
    let declared = Some(TensorType::new(DType::F32, [3u64]));
    let text = type_error(g.add("decl", fused("$0"), &[a], declared), "decl");
    assert!(text.contains("declared type f32[3]"), "{text}");
    // Nothing was added by the failures.
    assert_eq!(g.len(), 6);
}

#[test]
fn rms_norm_linear_type_errors_name_the_node() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 4]));
    let xi = input(&mut g, "xi", DType::I64, dims(&[2, 4]));
    let x0 = input(&mut g, "x0", DType::F32, vec![]);
    let gw = param(&mut g, "g", DType::F32, &[4]);
    let gi = param(&mut g, "gi", DType::I64, &[4]);
    let g5 = param(&mut g, "g5", DType::F32, &[5]);
    let w = param(&mut g, "w", DType::F32, &[3, 4]);
    let wt = param(&mut g, "wt", DType::F32, &[4, 3]);
    let wh = param(&mut g, "wh", DType::BF16, &[3, 4]);
    let rnl = || Op::RmsNormLinear { eps: 1e-6 };

    let text = type_error(g.add("int_x", rnl(), &[xi, gi, w], None), "int_x");
    assert!(text.contains("input must be a float tensor"), "{text}");
    let text = type_error(g.add("int_g", rnl(), &[x, gi, w], None), "int_g");
    assert!(text.contains("norm weight must be a float tensor"), "{text}");
    let text = type_error(g.add("short_g", rnl(), &[x, g5, w], None), "short_g");
    assert!(text.contains("norm weight") && text.contains("`4`"), "{text}");
    let text = type_error(g.add("transposed", rnl(), &[x, gw, wt], None), "transposed");
    assert!(text.contains("must be [N, 4]"), "{text}");
    let text = type_error(g.add("bf16_w", rnl(), &[x, gw, wh], None), "bf16_w");
    assert!(text.contains("dtypes differ"), "{text}");
    let text = type_error(g.add("rank0", rnl(), &[x0, gw, w], None), "rank0");
    assert!(text.contains("rank >= 1"), "{text}");
    let text = type_error(g.add("two", rnl(), &[x, gw], None), "two");
    assert!(text.contains("expects 3 operand(s)"), "{text}");
}

#[test]
fn gated_linear_type_errors_name_the_node() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 4]));
    let xi = input(&mut g, "xi", DType::I64, dims(&[2, 4]));
    let wg = param(&mut g, "wg", DType::F32, &[3, 4]);
    let wu2 = param(&mut g, "wu2", DType::F32, &[2, 4]);
    let wuh = param(&mut g, "wuh", DType::BF16, &[3, 4]);
    let wi = param(&mut g, "wi", DType::I64, &[3, 4]);
    let w5 = param(&mut g, "w5", DType::F32, &[3, 5]);

    let text = type_error(g.add("rows", Op::GatedLinear, &[x, wg, wu2], None), "rows");
    assert!(text.contains("up weight f32[2, 4] differs from gate weight f32[3, 4]"), "{text}");
    let text = type_error(g.add("dtype", Op::GatedLinear, &[x, wg, wuh], None), "dtype");
    assert!(text.contains("up weight bf16[3, 4] differs"), "{text}");
    let text = type_error(g.add("int_x", Op::GatedLinear, &[xi, wi, wi], None), "int_x");
    assert!(text.contains("input must be a float tensor"), "{text}");
    let text = type_error(g.add("int_w", Op::GatedLinear, &[x, wi, wi], None), "int_w");
    assert!(text.contains("dtypes differ"), "{text}");
    let text = type_error(g.add("k", Op::GatedLinear, &[x, w5, w5], None), "k");
    assert!(text.contains("must be [N, 4]"), "{text}");
}

/// A norm weight of the wrong dtype used to pass type inference and then fail in the
/// interpreter as an "interpreter bug"; a float one of another float dtype is accepted, as
/// `rms_norm` accepts it.
#[test]
fn rms_norm_linear_norm_weight_may_be_another_float_dtype() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[1, 2]));
    let gw = param(&mut g, "g", DType::BF16, &[2]);
    let w = param(&mut g, "w", DType::F32, &[1, 2]);
    let y = op(&mut g, "y", Op::RmsNormLinear { eps: 0.0 }, &[x, gw, w]);
    let out = eval_y(
        &mut g,
        y,
        vec![("x", t32(&[1, 2], &[1., -1.]))],
        vec![("g", t32(&[2], &[2., 1.])), ("w", t32(&[1, 2], &[1., 1.]))],
    );
    assert_eq!(out, t32(&[1, 1], &[1.]));
}

// ---------------------------------------------------------------------------------------------
// Proptests: each fused op equals the composition of the unfused ops it stands for.

/// Relative tolerance of the fused-vs-unfused comparisons. Both sides run the same f32 formulas
/// in the same order, so they agree exactly in practice; the tolerance only allows for it.
const TOL: f32 = 1e-5;

/// A shape of rank 0 to 3 with dims 1 to 3.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, 0..=3)
}

/// A shape that broadcasts to `out`: a suffix of it with some dims replaced by 1.
fn broadcastable(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let n = out.len();
    (0..=n, prop::collection::vec(any::<bool>(), n)).prop_map(move |(skip, ones)| {
        out[skip..].iter().zip(&ones[skip..]).map(|(&d, &one)| if one { 1 } else { d }).collect()
    })
}

/// Mostly ordinary values, sometimes zero, infinities or NaN.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -3.0f32..3.0,
        1 => prop::sample::select(vec![0.0f32, -0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]),
    ]
}

fn tensor(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    prop::collection::vec(value(), n).prop_map(move |v| Tensor::f32(shape.clone(), v))
}

fn constant() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![f64::NEG_INFINITY, f64::INFINITY, 1e-6, 0.1 + 0.2, 0.0, -0.0, 2.0, -1.5]),
        -4.0f64..4.0,
    ]
}

/// A random expression tree over operands `$0 .. $(n-1)`.
fn expr(n: usize) -> impl Strategy<Value = ElementwiseExpr> {
    let leaf = prop_oneof![
        3 => (0..n).prop_map(ElementwiseExpr::Input),
        1 => constant().prop_map(ElementwiseExpr::Const),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (prop::sample::select(UnaryOp::ALL.to_vec()), inner.clone())
                .prop_map(|(u, a)| ElementwiseExpr::Unary(u, Box::new(a))),
            (prop::sample::select(BinaryOp::ALL.to_vec()), inner.clone(), inner)
                .prop_map(|(b, x, y)| ElementwiseExpr::Binary(b, Box::new(x), Box::new(y))),
        ]
    })
}

/// An expression over 1 to 3 operands whose shapes broadcast together, and their values.
fn fused_case() -> impl Strategy<Value = (ElementwiseExpr, Vec<Tensor>)> {
    (1usize..=3, shape()).prop_flat_map(|(n, out)| {
        let operands = prop::collection::vec(broadcastable(out).prop_flat_map(tensor), n);
        (expr(n), operands)
    })
}

/// Adds the unfused chain for `e` to `g`: operand nodes are `args`, constants become f32
/// scalars, each unary or binary operation a node of its own.
fn unfuse(g: &mut Graph, e: &ElementwiseExpr, args: &[NodeId]) -> NodeId {
    match e {
        ElementwiseExpr::Input(i) => args[*i],
        ElementwiseExpr::Const(c) => {
            let name = g.fresh_name("c");
            let ty = TensorType { dtype: DType::F32, shape: vec![] };
            g.add(name, Op::Scalar { value: *c }, &[], Some(ty)).unwrap()
        }
        ElementwiseExpr::Unary(u, a) => {
            let a = unfuse(g, a, args);
            let name = g.fresh_name(u.name());
            op(g, &name, Op::Unary(*u), &[a])
        }
        ElementwiseExpr::Binary(b, x, y) => {
            let x = unfuse(g, x, args);
            let y = unfuse(g, y, args);
            let name = g.fresh_name(b.name());
            op(g, &name, Op::Binary(*b), &[x, y])
        }
    }
}

/// `(x, g, w)` or `(x, w_gate, w_up)`: `x [lead..., K]` and two weights.
fn linear_case(first_weight_is_vector: bool) -> impl Strategy<Value = (Tensor, Tensor, Tensor)> {
    (prop::collection::vec(0usize..=3, 0..=2), 1usize..=6, 1usize..=5).prop_flat_map(move |(lead, k, n)| {
        let mut xs = lead;
        xs.push(k);
        let w1 = if first_weight_is_vector { vec![k] } else { vec![n, k] };
        let finite = |shape: Vec<usize>| {
            let len: usize = shape.iter().product();
            prop::collection::vec(-2.0f32..2.0, len).prop_map(move |v| Tensor::f32(shape.clone(), v))
        };
        (finite(xs), finite(w1), finite(vec![n, k]))
    })
}

fn eps() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![0.0, 1e-6, 1e-5, 0.1, 1.0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fused_elementwise_equals_the_unfused_chain((e, values) in fused_case()) {
        let mut g = Graph::new("t");
        let names: Vec<String> = (0..values.len()).map(|i| format!("x{i}")).collect();
        let args: Vec<NodeId> =
            names.iter().zip(&values).map(|(n, t)| input(&mut g, n, DType::F32, dims(&t.shape))).collect();
        let f = op(&mut g, "fused", Op::FusedElementwise { expr: e.clone() }, &args);
        let shape = g.ty(f).shape.clone();
        // The fused op broadcasts every operand, used or not: expand the chain to its shape.
        let chain = unfuse(&mut g, &e, &args);
        let chain = op(&mut g, "chain", Op::Expand { shape }, &[chain]);
        g.set_output("fused", f).unwrap();
        g.set_output("chain", chain).unwrap();
        let inputs = names.iter().map(String::as_str).zip(values).collect();
        let out = run(&g, inputs, vec![], &[]).unwrap();
        prop_assert_eq!(&out["fused"].shape, &out["chain"].shape);
        let r = close_tol(f32s(&out["fused"]), f32s(&out["chain"]), TOL);
        prop_assert!(r.is_ok(), "{}: {}", e, r.unwrap_err());
    }

    #[test]
    fn rms_norm_linear_equals_rms_norm_then_linear((x, gw, w) in linear_case(true), eps in eps()) {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&x.shape));
        let gi = param(&mut g, "g", DType::F32, &gw.shape);
        let wi = param(&mut g, "w", DType::F32, &w.shape);
        let f = op(&mut g, "fused", Op::RmsNormLinear { eps }, &[xi, gi, wi]);
        let normed = op(&mut g, "normed", Op::RmsNorm { eps }, &[xi, gi]);
        let chain = op(&mut g, "chain", Op::Linear, &[normed, wi]);
        g.set_output("fused", f).unwrap();
        g.set_output("chain", chain).unwrap();
        let out = run(&g, vec![("x", x)], vec![("g", gw), ("w", w)], &[]).unwrap();
        prop_assert_eq!(&out["fused"].shape, &out["chain"].shape);
        let r = close_tol(f32s(&out["fused"]), f32s(&out["chain"]), TOL);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn gated_linear_equals_silu_gate_times_up((x, wg, wu) in linear_case(false)) {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&x.shape));
        let gi = param(&mut g, "wg", DType::F32, &wg.shape);
        let ui = param(&mut g, "wu", DType::F32, &wu.shape);
        let f = op(&mut g, "fused", Op::GatedLinear, &[xi, gi, ui]);
        let gate = op(&mut g, "gate", Op::Linear, &[xi, gi]);
        let up = op(&mut g, "up", Op::Linear, &[xi, ui]);
        let act = op(&mut g, "act", Op::Unary(UnaryOp::Silu), &[gate]);
        let chain = op(&mut g, "chain", Op::Binary(BinaryOp::Mul), &[act, up]);
        g.set_output("fused", f).unwrap();
        g.set_output("chain", chain).unwrap();
        let out = run(&g, vec![("x", x)], vec![("wg", wg), ("wu", wu)], &[]).unwrap();
        prop_assert_eq!(&out["fused"].shape, &out["chain"].shape);
        let r = close_tol(f32s(&out["fused"]), f32s(&out["chain"]), TOL);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Two keys, one query at the last position: scores 1*0.5=0.5 and 3*0.5=1.5 (latent dots
/// 1 and 2, rope dots 0 and 1), so p = softmax([0.5, 1.5]) and the result mixes the latents.
#[test]
fn mla_decode_attention_by_hand() {
    use saturn_ir::{Bindings, DType, Graph, Op, SymBindings, Tensor, TensorType, evaluate};
    use std::collections::HashMap;
    let mut g = Graph::new("g");
    let leaf = |g: &mut Graph, name: &str, shape: &[u64]| {
        g.add(name, Op::Input, &[], Some(TensorType::new(DType::F32, shape.iter().copied()))).unwrap()
    };
    let q = leaf(&mut g, "q", &[1, 1, 2]);
    let qr = leaf(&mut g, "qr", &[1, 1, 2]);
    let lat = leaf(&mut g, "lat", &[2, 2]);
    let kpe = leaf(&mut g, "kpe", &[2, 2]);
    let y = g.add("y", Op::MlaDecodeAttention { scale: 0.5 }, &[q, qr, lat, kpe], None).unwrap();
    g.set_output("y", y).unwrap();
    let inputs = HashMap::from([
        ("q".to_string(), Tensor::f32(vec![1, 1, 2], vec![1.0, 0.0])),
        ("qr".to_string(), Tensor::f32(vec![1, 1, 2], vec![0.0, 1.0])),
        ("lat".to_string(), Tensor::f32(vec![2, 2], vec![1.0, 0.0, 2.0, 4.0])),
        ("kpe".to_string(), Tensor::f32(vec![2, 2], vec![5.0, 0.0, 0.0, 1.0])),
    ]);
    let params: HashMap<String, Tensor> = HashMap::new();
    let b = Bindings { symbols: SymBindings::new(), inputs, params: &params };
    let out = evaluate(&g, &b).unwrap().remove("y").unwrap();
    let (p0, p1) = (1.0 / (1.0 + 1f32.exp()), 1f32.exp() / (1.0 + 1f32.exp()));
    let want = [p0 * 1.0 + p1 * 2.0, p1 * 4.0];
    for (a, b) in out.as_f32().unwrap().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

/// With leading batch dims, each batch element attends over its own cache: the batched op
/// gives exactly what the unbatched op gives on each element's slices. Mismatched batch dims
/// are a type error.
#[test]
fn mla_decode_attention_batches_are_independent_sequences() {
    use saturn_ir::{Bindings, DType, Graph, Op, SymBindings, Tensor, TensorType, evaluate};
    use std::collections::HashMap;
    let (h, s, c, r, t) = (3usize, 2usize, 5usize, 2usize, 4usize);
    let batch = [2usize, 3];
    let shapes = |b: &[usize]| {
        let with = |rest: &[usize]| b.iter().chain(rest).copied().collect::<Vec<usize>>();
        [with(&[h, s, c]), with(&[h, s, r]), with(&[t, c]), with(&[t, r])]
    };
    let graph = |b: &[usize]| {
        let mut g = Graph::new("g");
        let ids: Vec<_> = ["q", "qr", "lat", "kpe"]
            .iter()
            .zip(shapes(b))
            .map(|(name, shape)| {
                let ty = TensorType::new(DType::F32, shape.iter().map(|&d| d as u64));
                g.add(*name, Op::Input, &[], Some(ty)).unwrap()
            })
            .collect();
        let y = g.add("y", Op::MlaDecodeAttention { scale: 0.3 }, &ids, None).unwrap();
        g.set_output("y", y).unwrap();
        g
    };
    let run = |g: &Graph, data: [Vec<f32>; 4], b: &[usize]| {
        let inputs = ["q", "qr", "lat", "kpe"]
            .iter()
            .zip(shapes(b))
            .zip(data)
            .map(|((name, shape), v)| (name.to_string(), Tensor::f32(shape, v)))
            .collect();
        let params: HashMap<String, Tensor> = HashMap::new();
        let bindings = Bindings { symbols: SymBindings::new(), inputs, params: &params };
        evaluate(g, &bindings).unwrap().remove("y").unwrap().as_f32().unwrap().to_vec()
    };
    let per = [h * s * c, h * s * r, t * c, t * r];
    let n: usize = batch.iter().product();
    let mut seed = 7u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let data: [Vec<f32>; 4] = std::array::from_fn(|i| (0..n * per[i]).map(|_| next()).collect());
    let batched = run(&graph(&batch), data.clone(), &batch);
    let single = graph(&[]);
    for e in 0..n {
        let slice: [Vec<f32>; 4] = std::array::from_fn(|i| data[i][e * per[i]..(e + 1) * per[i]].to_vec());
        assert_eq!(run(&single, slice, &[]), batched[e * per[0]..(e + 1) * per[0]], "batch element {e}");
    }

    // A cache whose batch dims differ from the query's does not type-check.
    let mut g = Graph::new("g");
    let leaf = |g: &mut Graph, name: &str, shape: &[u64]| {
        g.add(name, Op::Input, &[], Some(TensorType::new(DType::F32, shape.iter().copied()))).unwrap()
    };
    let q = leaf(&mut g, "q", &[2, 3, 1, 4]);
    let qr = leaf(&mut g, "qr", &[2, 3, 1, 2]);
    let lat = leaf(&mut g, "lat", &[3, 5, 4]);
    let kpe = leaf(&mut g, "kpe", &[3, 5, 2]);
    let err = g.add("y", Op::MlaDecodeAttention { scale: 1.0 }, &[q, qr, lat, kpe], None).unwrap_err();
    assert!(err.to_string().contains("the same batch dims"), "{err}");
}
