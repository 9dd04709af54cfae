//! Per-op tests of the reference interpreter against hand-computed values, error paths, and
//! proptests of matmul/linear against a naive triple loop.

mod common;

use common::{close_tol, f32s, input, op, run, t32};

use std::collections::BTreeMap;

use proptest::prelude::*;
use saturn_ir::{
    BinaryOp, DType, Dim, Graph, InterpError, NodeId, Op, ReduceOp, Rope, RopeLayout, Tensor, TensorData,
    TensorType, UnaryOp, Yarn,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn c(n: u64) -> Dim {
    Dim::constant(n)
}

fn s(name: &str) -> Dim {
    Dim::sym(name)
}

fn dims(shape: &[u64]) -> Vec<Dim> {
    shape.iter().map(|&d| c(d)).collect()
}

fn leaf(g: &mut Graph, name: &str, op: Op, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add(name, op, &[], Some(TensorType { dtype, shape })).unwrap()
}

fn param(g: &mut Graph, name: &str, key: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    leaf(g, name, Op::Param { key: key.into() }, dtype, shape)
}

fn ti64(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::i64(shape.to_vec(), data.to_vec())
}

fn tbool(shape: &[usize], data: &[bool]) -> Tensor {
    Tensor::bool(shape.to_vec(), data.to_vec())
}

/// Marks `y` as the single output `y` and evaluates it with the inputs.
fn eval_y(g: &mut Graph, y: NodeId, inputs: Vec<(&str, Tensor)>) -> Tensor {
    g.set_output("y", y).unwrap();
    run(g, inputs, vec![], &[]).unwrap().remove("y").unwrap()
}

/// Equal within `tol * max(1, |expected|)`; infinities and NaNs must match exactly.
fn approx_eq_tol(got: &[f32], want: &[f32], tol: f32) {
    if let Err(msg) = close_tol(got, want, tol) {
        panic!("{msg}");
    }
}

fn approx_eq(got: &[f32], want: &[f32]) {
    approx_eq_tol(got, want, 1e-6);
}

fn err_text(r: Result<BTreeMap<String, Tensor>, InterpError>) -> (InterpError, String) {
    let e = r.expect_err("expected an error");
    let text = e.to_string();
    (e, text)
}

// ---------------------------------------------------------------------------------------------
// Tensor API

#[test]
fn tensor_constructors_and_accessors() {
    let t = t32(&[2, 2], &[1., 2., 3., 4.]);
    assert_eq!(t.numel(), 4);
    assert_eq!(t.as_f32(), Some(&[1f32, 2., 3., 4.][..]));
    assert_eq!(t.as_i64(), None);
    let r = ti64(&[], &[7]);
    assert_eq!(r.numel(), 1);
    assert_eq!(r.as_i64(), Some(&[7i64][..]));
    assert_eq!(tbool(&[0, 3], &[]).numel(), 0);
}

#[test]
#[should_panic(expected = "elements")]
fn tensor_constructor_panics_on_length_mismatch() {
    let _ = t32(&[2, 2], &[1., 2., 3.]);
}

// ---------------------------------------------------------------------------------------------
// Leaves

#[test]
fn scalar_of_each_dtype() {
    let mut g = Graph::new("t");
    let a = leaf(&mut g, "a", Op::Scalar { value: 0.5 }, DType::F32, vec![]);
    let b = leaf(&mut g, "b", Op::Scalar { value: -3.7 }, DType::I64, vec![]);
    let t = leaf(&mut g, "t", Op::Scalar { value: 2.0 }, DType::Bool, vec![]);
    let f = leaf(&mut g, "f", Op::Scalar { value: 0.0 }, DType::Bool, vec![]);
    let h = leaf(&mut g, "h", Op::Scalar { value: 1.01 }, DType::BF16, vec![]);
    for (name, id) in [("a", a), ("b", b), ("t", t), ("f", f), ("h", h)] {
        g.set_output(name, id).unwrap();
    }
    let out = run(&g, vec![], vec![], &[]).unwrap();
    assert_eq!(out["a"], t32(&[], &[0.5]));
    assert_eq!(out["b"], ti64(&[], &[-3]));
    assert_eq!(out["t"], tbool(&[], &[true]));
    assert_eq!(out["f"], tbool(&[], &[false]));
    assert_eq!(out["h"], t32(&[], &[1.0078125]));
}

#[test]
fn arange_with_symbolic_start_and_len() {
    let mut g = Graph::new("t");
    let a = op(&mut g, "a", Op::Arange { start: s("P"), len: s("S") }, &[]);
    g.set_output("y", a).unwrap();
    let out = run(&g, vec![], vec![], &[("P", 2), ("S", 3)]).unwrap();
    assert_eq!(out["y"], ti64(&[3], &[2, 3, 4]));
    let out = run(&g, vec![], vec![], &[("P", 0), ("S", 0)]).unwrap();
    assert_eq!(out["y"], ti64(&[0], &[]));
}

#[test]
fn params_plain_and_stacked() {
    let mut g = Graph::new("t");
    let w = param(&mut g, "w", "layer.w", DType::F32, dims(&[2]));
    let e = param(&mut g, "e", "experts.{e}.w", DType::F32, dims(&[3, 2]));
    let y = op(&mut g, "y", Op::Binary(BinaryOp::Add), &[e, w]);
    g.set_output("y", y).unwrap();
    let params = vec![
        ("layer.w", t32(&[2], &[100., 200.])),
        ("experts.0.w", t32(&[2], &[1., 2.])),
        ("experts.1.w", t32(&[2], &[3., 4.])),
        ("experts.2.w", t32(&[2], &[5., 6.])),
    ];
    let out = run(&g, vec![], params.clone(), &[]).unwrap();
    assert_eq!(out["y"], t32(&[3, 2], &[101., 202., 103., 204., 105., 206.]));

    // A missing expert is named by its concrete key and the node.
    let mut missing = params.clone();
    missing.retain(|(k, _)| *k != "experts.1.w");
    let (e, text) = err_text(run(&g, vec![], missing, &[]));
    assert!(matches!(e, InterpError::Param { ref key, .. } if key == "experts.1.w"), "{e:?}");
    assert!(text.contains("%e") && text.contains("experts.1.w"), "{text}");

    // A wrongly shaped expert.
    let mut bad = params;
    bad[2].1 = t32(&[3], &[3., 4., 5.]);
    let (_, text) = err_text(run(&g, vec![], bad, &[]));
    assert!(text.contains("experts.1.w") && text.contains("[3]"), "{text}");
}

#[test]
fn stacked_param_with_symbolic_count_and_bf16_rounding() {
    let mut g = Graph::new("t");
    let e = param(&mut g, "e", "x.{e}", DType::BF16, vec![s("E"), c(1)]);
    g.set_output("y", e).unwrap();
    let params = vec![("x.0", t32(&[1], &[1.01])), ("x.1", t32(&[1], &[300.7]))];
    let out = run(&g, vec![], params, &[("E", 2)]).unwrap();
    assert_eq!(out["y"], t32(&[2, 1], &[1.0078125, 300.0]));
    let out = run(&g, vec![], vec![], &[("E", 0)]).unwrap();
    assert_eq!(out["y"], t32(&[0, 1], &[]));
}

#[test]
fn param_errors_name_node_and_key() {
    let mut g = Graph::new("t");
    let w = param(&mut g, "weight", "model.w", DType::F32, dims(&[2]));
    g.set_output("y", w).unwrap();
    let (e, text) = err_text(run(&g, vec![], vec![], &[]));
    assert!(matches!(e, InterpError::Param { .. }), "{e:?}");
    assert!(text.contains("%weight") && text.contains("model.w"), "{text}");
    // Wrong dtype: i64 data for an f32 param.
    let (_, text) = err_text(run(&g, vec![], vec![("model.w", ti64(&[2], &[1, 2]))], &[]));
    assert!(text.contains("model.w") && text.contains("i64"), "{text}");
    // Wrong shape.
    let (_, text) = err_text(run(&g, vec![], vec![("model.w", t32(&[3], &[1., 2., 3.]))], &[]));
    assert!(text.contains("model.w") && text.contains("[3]"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Elementwise

#[test]
fn unary_ops() {
    let x = [0f32, 1., -1., 2.];
    let cases: [(UnaryOp, [f32; 4]); 6] = [
        (UnaryOp::Neg, [-0., -1., 1., -2.]),
        (UnaryOp::Exp, [1., 2.7182817, 0.36787945, 7.389056]),
        (UnaryOp::Sigmoid, [0.5, 0.7310586, 0.26894143, 0.8807971]),
        (UnaryOp::Silu, [0., 0.7310586, -0.26894143, 1.7615942]),
        (UnaryOp::Tanh, [0., 0.7615942, -0.7615942, 0.9640276]),
        (UnaryOp::Recip, [f32::INFINITY, 1., -1., 0.5]),
    ];
    for (u, want) in cases {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&[4]));
        let y = op(&mut g, "y", Op::Unary(u), &[xi]);
        let out = eval_y(&mut g, y, vec![("x", t32(&[4], &x))]);
        approx_eq(f32s(&out), &want);
    }
    let x = [0.25f32, 1., 4., 0.];
    let cases: [(UnaryOp, [f32; 4]); 3] = [
        (UnaryOp::Log, [-1.3862944, 0., 1.3862944, f32::NEG_INFINITY]),
        (UnaryOp::Sqrt, [0.5, 1., 2., 0.]),
        (UnaryOp::Rsqrt, [2., 1., 0.5, f32::INFINITY]),
    ];
    for (u, want) in cases {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&[2, 2]));
        let y = op(&mut g, "y", Op::Unary(u), &[xi]);
        let out = eval_y(&mut g, y, vec![("x", t32(&[2, 2], &x))]);
        assert_eq!(out.shape, vec![2, 2]);
        approx_eq(f32s(&out), &want);
    }
}

#[test]
fn binary_ops_broadcast() {
    let a = t32(&[2, 1], &[1., 2.]);
    let b = t32(&[3], &[10., 20., 30.]);
    let cases: [(BinaryOp, [f32; 6]); 6] = [
        (BinaryOp::Add, [11., 21., 31., 12., 22., 32.]),
        (BinaryOp::Sub, [-9., -19., -29., -8., -18., -28.]),
        (BinaryOp::Mul, [10., 20., 30., 20., 40., 60.]),
        (BinaryOp::Div, [0.1, 0.05, 1. / 30., 0.2, 0.1, 1. / 15.]),
        (BinaryOp::Max, [10., 20., 30., 10., 20., 30.]),
        (BinaryOp::Min, [1., 1., 1., 2., 2., 2.]),
    ];
    for (bop, want) in cases {
        let mut g = Graph::new("t");
        let ai = input(&mut g, "a", DType::F32, dims(&[2, 1]));
        let bi = input(&mut g, "b", DType::F32, dims(&[3]));
        let y = op(&mut g, "y", Op::Binary(bop), &[ai, bi]);
        let out = eval_y(&mut g, y, vec![("a", a.clone()), ("b", b.clone())]);
        assert_eq!(out.shape, vec![2, 3]);
        approx_eq(f32s(&out), &want);
    }
}

#[test]
fn binary_with_rank0_and_symbolic_broadcast() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S"), c(1)]);
    let k = leaf(&mut g, "k", Op::Scalar { value: 2.0 }, DType::F32, vec![]);
    let z = input(&mut g, "z", DType::F32, vec![c(1), c(2)]);
    let m = op(&mut g, "m", Op::Binary(BinaryOp::Mul), &[k, x]);
    let y = op(&mut g, "y", Op::Binary(BinaryOp::Add), &[m, z]);
    g.set_output("y", y).unwrap();
    let inputs = vec![("x", t32(&[3, 1], &[1., 2., 3.])), ("z", t32(&[1, 2], &[0., 10.]))];
    let out = run(&g, inputs, vec![], &[("S", 3)]).unwrap();
    assert_eq!(out["y"], t32(&[3, 2], &[2., 12., 4., 14., 6., 16.]));
}

#[test]
fn float_max_min_propagate_nan() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[3]));
    let b = input(&mut g, "b", DType::F32, dims(&[3]));
    let mx = op(&mut g, "mx", Op::Binary(BinaryOp::Max), &[a, b]);
    let mn = op(&mut g, "mn", Op::Binary(BinaryOp::Min), &[a, b]);
    g.set_output("mx", mx).unwrap();
    g.set_output("mn", mn).unwrap();
    let inputs = vec![("a", t32(&[3], &[f32::NAN, 1., 5.])), ("b", t32(&[3], &[0., f32::NAN, 2.]))];
    let out = run(&g, inputs, vec![], &[]).unwrap();
    approx_eq(f32s(&out["mx"]), &[f32::NAN, f32::NAN, 5.]);
    approx_eq(f32s(&out["mn"]), &[f32::NAN, f32::NAN, 2.]);
}

#[test]
fn integer_binary_ops_and_division_by_zero() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::I64, dims(&[4]));
    let b = input(&mut g, "b", DType::I64, dims(&[1]));
    let d = op(&mut g, "d", Op::Binary(BinaryOp::Div), &[a, b]);
    let m = op(&mut g, "m", Op::Binary(BinaryOp::Max), &[a, b]);
    let ad = op(&mut g, "ad", Op::Binary(BinaryOp::Add), &[a, b]);
    g.set_output("d", d).unwrap();
    g.set_output("m", m).unwrap();
    g.set_output("ad", ad).unwrap();
    let a_val = ti64(&[4], &[-7, 7, 1, i64::MAX]);
    let out = run(&g, vec![("a", a_val.clone()), ("b", ti64(&[1], &[2]))], vec![], &[]).unwrap();
    assert_eq!(out["d"], ti64(&[4], &[-3, 3, 0, i64::MAX / 2]));
    assert_eq!(out["m"], ti64(&[4], &[2, 7, 2, i64::MAX]));
    assert_eq!(out["ad"], ti64(&[4], &[-5, 9, 3, i64::MIN + 1])); // wraps
    let (e, text) = err_text(run(&g, vec![("a", a_val), ("b", ti64(&[1], &[0]))], vec![], &[]));
    assert!(matches!(e, InterpError::Value { .. }), "{e:?}");
    assert!(text.contains("%d") && text.contains("division by zero"), "{text}");
}

#[test]
fn where_broadcasts_all_three() {
    let mut g = Graph::new("t");
    let cnd = input(&mut g, "c", DType::Bool, dims(&[2, 1]));
    let a = input(&mut g, "a", DType::I64, dims(&[3]));
    let b = leaf(&mut g, "b", Op::Scalar { value: -1.0 }, DType::I64, vec![]);
    let y = op(&mut g, "y", Op::Where, &[cnd, a, b]);
    let out = eval_y(&mut g, y, vec![("c", tbool(&[2, 1], &[true, false])), ("a", ti64(&[3], &[1, 2, 3]))]);
    assert_eq!(out, ti64(&[2, 3], &[1, 2, 3, -1, -1, -1]));

    let mut g = Graph::new("t");
    let cnd = input(&mut g, "c", DType::Bool, dims(&[3]));
    let a = input(&mut g, "a", DType::F32, dims(&[3]));
    let b = input(&mut g, "b", DType::F32, dims(&[2, 1]));
    let y = op(&mut g, "y", Op::Where, &[cnd, a, b]);
    let inputs = vec![
        ("c", tbool(&[3], &[true, false, true])),
        ("a", t32(&[3], &[1., 2., 3.])),
        ("b", t32(&[2, 1], &[7., 8.])),
    ];
    let out = eval_y(&mut g, y, inputs);
    assert_eq!(out, t32(&[2, 3], &[1., 7., 3., 1., 8., 3.]));
}

#[test]
fn casts() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[5]));
    let i = op(&mut g, "i", Op::Cast { dtype: DType::I64 }, &[x]);
    let b = op(&mut g, "b", Op::Cast { dtype: DType::Bool }, &[x]);
    let bf = op(&mut g, "bf", Op::Cast { dtype: DType::BF16 }, &[x]);
    let h = op(&mut g, "h", Op::Cast { dtype: DType::F16 }, &[x]);
    let bi = op(&mut g, "bi", Op::Cast { dtype: DType::I64 }, &[b]);
    let bff = op(&mut g, "bff", Op::Cast { dtype: DType::F32 }, &[b]);
    let i_f = op(&mut g, "if", Op::Cast { dtype: DType::F32 }, &[i]);
    let ib = op(&mut g, "ib", Op::Cast { dtype: DType::Bool }, &[i]);
    for (n, id) in
        [("i", i), ("b", b), ("bf", bf), ("h", h), ("bi", bi), ("bff", bff), ("if", i_f), ("ib", ib)]
    {
        g.set_output(n, id).unwrap();
    }
    let xs = t32(&[5], &[-1.7, 1.7, 2.5, 0.0, 1.01]);
    let out = run(&g, vec![("x", xs)], vec![], &[]).unwrap();
    assert_eq!(out["i"], ti64(&[5], &[-1, 1, 2, 0, 1]));
    assert_eq!(out["b"], tbool(&[5], &[true, true, true, false, true]));
    // bf16 keeps 8 significant bits, f16 11.
    assert_eq!(out["bf"], t32(&[5], &[-1.703125, 1.703125, 2.5, 0.0, 1.0078125]));
    assert_eq!(out["h"], t32(&[5], &[-1.7001953, 1.7001953, 2.5, 0.0, 1.0097656]));
    assert_eq!(out["bi"], ti64(&[5], &[1, 1, 1, 0, 1]));
    assert_eq!(out["bff"], t32(&[5], &[1., 1., 1., 0., 1.]));
    assert_eq!(out["if"], t32(&[5], &[-1., 1., 2., 0., 1.]));
    assert_eq!(out["ib"], tbool(&[5], &[true, true, true, false, true]));
}

#[test]
fn cast_nan_and_negative_zero() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2]));
    let b = op(&mut g, "b", Op::Cast { dtype: DType::Bool }, &[x]);
    let out = eval_y(&mut g, b, vec![("x", t32(&[2], &[f32::NAN, -0.0]))]);
    assert_eq!(out, tbool(&[2], &[true, false]));
}

#[test]
fn bf16_results_are_rounded() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::BF16, dims(&[2]));
    let b = input(&mut g, "b", DType::BF16, dims(&[2]));
    let y = op(&mut g, "y", Op::Binary(BinaryOp::Add), &[a, b]);
    // 1 + 2^-8 is a tie between bf16 neighbours 1 and 1 + 2^-7: rounds to even (1).
    // 1 + 3*2^-8 rounds up to 1 + 2^-6.
    let inputs = vec![("a", t32(&[2], &[1.0, 1.0])), ("b", t32(&[2], &[0.00390625, 0.01171875]))];
    let out = eval_y(&mut g, y, inputs);
    assert_eq!(out, t32(&[2], &[1.0, 1.015625]));

    // Inputs of a bf16 node are rounded when read.
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::BF16, dims(&[1]));
    let out = eval_y(&mut g, a, vec![("a", t32(&[1], &[300.7]))]);
    assert_eq!(out, t32(&[1], &[300.0]));
}

// ---------------------------------------------------------------------------------------------
// Reductions, softmax, normalisation

#[test]
fn reduce_ops_with_and_without_keepdim() {
    let x = t32(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    type Case = (ReduceOp, usize, bool, Vec<usize>, Vec<f32>);
    let cases: Vec<Case> = vec![
        (ReduceOp::Sum, 1, true, vec![2, 1], vec![6., 15.]),
        (ReduceOp::Sum, 0, false, vec![3], vec![5., 7., 9.]),
        (ReduceOp::Mean, 0, false, vec![3], vec![2.5, 3.5, 4.5]),
        (ReduceOp::Mean, 1, true, vec![2, 1], vec![2., 5.]),
        (ReduceOp::Max, 1, false, vec![2], vec![3., 6.]),
        (ReduceOp::Max, 0, true, vec![1, 3], vec![4., 5., 6.]),
    ];
    for (rop, axis, keepdim, shape, want) in cases {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&[2, 3]));
        let y = op(&mut g, "y", Op::Reduce { op: rop, axis, keepdim }, &[xi]);
        let out = eval_y(&mut g, y, vec![("x", x.clone())]);
        assert_eq!(out.shape, shape, "{rop:?} axis {axis}");
        approx_eq(f32s(&out), &want);
    }
}

#[test]
fn reduce_edge_cases() {
    // Max propagates NaN; -inf is kept.
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", DType::F32, dims(&[2, 2]));
    let y = op(&mut g, "y", Op::Reduce { op: ReduceOp::Max, axis: 1, keepdim: false }, &[xi]);
    let out =
        eval_y(&mut g, y, vec![("x", t32(&[2, 2], &[f32::NAN, 1., f32::NEG_INFINITY, f32::NEG_INFINITY]))]);
    approx_eq(f32s(&out), &[f32::NAN, f32::NEG_INFINITY]);
    // Empty axis: sum 0, mean NaN, max -inf.
    for (rop, want) in [(ReduceOp::Sum, 0.0), (ReduceOp::Mean, f32::NAN), (ReduceOp::Max, f32::NEG_INFINITY)]
    {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, vec![c(2), s("S")]);
        let y = op(&mut g, "y", Op::Reduce { op: rop, axis: 1, keepdim: false }, &[xi]);
        g.set_output("y", y).unwrap();
        let out = run(&g, vec![("x", t32(&[2, 0], &[]))], vec![], &[("S", 0)]).unwrap();
        approx_eq(f32s(&out["y"]), &[want, want]);
    }
}

#[test]
fn softmax_values_and_minus_infinity() {
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", DType::F32, dims(&[3, 3]));
    let y = op(&mut g, "y", Op::Softmax { axis: 1 }, &[xi]);
    let inf = f32::INFINITY;
    let x = t32(&[3, 3], &[1., 2., 3., 0., -inf, 0., -inf, -inf, -inf]);
    let out = eval_y(&mut g, y, vec![("x", x)]);
    approx_eq(f32s(&out), &[0.09003057, 0.24472847, 0.66524096, 0.5, 0., 0.5, 0., 0., 0.]);

    // Along axis 0, with large values (max subtraction keeps it finite).
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", DType::F32, dims(&[2, 2]));
    let y = op(&mut g, "y", Op::Softmax { axis: 0 }, &[xi]);
    let out = eval_y(&mut g, y, vec![("x", t32(&[2, 2], &[1000., 5., 1000., 5.]))]);
    approx_eq(f32s(&out), &[0.5, 0.5, 0.5, 0.5]);
}

#[test]
fn topk_mask_ties_nan_and_k_extremes() {
    let x = t32(&[4, 4], &[1., 3., 3., 2., 5., 5., 5., 1., f32::NAN, 1., 0., f32::NAN, -0.0, 0.0, -1., 7.]);
    let cases: Vec<(u64, Vec<bool>)> = vec![
        (
            2,
            vec![
                false, true, true, false, //
                true, true, false, false, // ties -> lower index
                false, true, true, false, // NaN smallest
                true, false, false, true, // -0 == 0: lower index wins
            ],
        ),
        (0, vec![false; 16]),
        (4, vec![true; 16]),
        (
            1,
            vec![
                false, true, false, false, //
                true, false, false, false, //
                false, true, false, false, //
                false, false, false, true,
            ],
        ),
    ];
    for (k, want) in cases {
        let mut g = Graph::new("t");
        let xi = input(&mut g, "x", DType::F32, dims(&[4, 4]));
        let y = op(&mut g, "y", Op::TopKMask { k }, &[xi]);
        let out = eval_y(&mut g, y, vec![("x", x.clone())]);
        assert_eq!(out, tbool(&[4, 4], &want), "k = {k}");
    }
}

#[test]
fn rms_norm_by_hand() {
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", DType::F32, dims(&[2, 2]));
    let w = param(&mut g, "w", "norm.w", DType::F32, dims(&[2]));
    let y = op(&mut g, "y", Op::RmsNorm { eps: 0.0 }, &[xi, w]);
    g.set_output("y", y).unwrap();
    // Row [3, 4]: mean(x^2) = 12.5, 1/sqrt = 0.28284271 -> [0.8485281, 1.1313709] * [1, 2].
    // Row [1, 1]: mean 1 -> [1, 1] * [1, 2].
    let out =
        run(&g, vec![("x", t32(&[2, 2], &[3., 4., 1., 1.]))], vec![("norm.w", t32(&[2], &[1., 2.]))], &[])
            .unwrap();
    approx_eq(f32s(&out["y"]), &[0.84852814, 2.2627417, 1., 2.]);

    // eps matters: [0, 0] with eps 0.25 stays 0; [1, -1] with eps 3 -> 1/sqrt(4) = 0.5.
    let mut g = Graph::new("t");
    let xi = input(&mut g, "x", DType::F32, dims(&[2, 2]));
    let w = param(&mut g, "w", "norm.w", DType::F32, dims(&[2]));
    let y = op(&mut g, "y", Op::RmsNorm { eps: 3.0 }, &[xi, w]);
    g.set_output("y", y).unwrap();
    let out =
        run(&g, vec![("x", t32(&[2, 2], &[0., 0., 1., -1.]))], vec![("norm.w", t32(&[2], &[1., 2.]))], &[])
            .unwrap();
    approx_eq(f32s(&out["y"]), &[0., 0., 0.5, -1.]);
}

// ---------------------------------------------------------------------------------------------
// Linear algebra

#[test]
fn matmul_broadcasting_batch() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[2, 1, 2, 3]));
    let b = input(&mut g, "b", DType::F32, dims(&[2, 3, 1]));
    let y = op(&mut g, "y", Op::MatMul, &[a, b]);
    let av = t32(&[2, 1, 2, 3], &[1., 2., 3., 4., 5., 6., -1., 0., 1., 2., 0., -2.]);
    let bv = t32(&[2, 3, 1], &[1., 1., 1., 1., 0., 2.]);
    let out = eval_y(&mut g, y, vec![("a", av), ("b", bv)]);
    // batch (0,0): [[1,2,3],[4,5,6]] @ [1,1,1] = [6, 15]; (0,1): @ [1,0,2] = [7, 16]
    // batch (1,0): [[-1,0,1],[2,0,-2]] @ [1,1,1] = [0, 0]; (1,1): @ [1,0,2] = [1, -2]
    assert_eq!(out, t32(&[2, 2, 2, 1], &[6., 15., 7., 16., 0., 0., 1., -2.]));
}

#[test]
fn matmul_with_symbolic_and_empty_dims() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, vec![s("S"), c(2)]);
    let b = input(&mut g, "b", DType::F32, vec![c(2), s("S")]);
    let y = op(&mut g, "y", Op::MatMul, &[a, b]);
    g.set_output("y", y).unwrap();
    let out =
        run(&g, vec![("a", t32(&[1, 2], &[1., 2.])), ("b", t32(&[2, 1], &[3., 4.]))], vec![], &[("S", 1)])
            .unwrap();
    assert_eq!(out["y"], t32(&[1, 1], &[11.]));
    let out = run(&g, vec![("a", t32(&[0, 2], &[])), ("b", t32(&[2, 0], &[]))], vec![], &[("S", 0)]).unwrap();
    assert_eq!(out["y"], t32(&[0, 0], &[]));
    // K = 0 gives zeros.
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, vec![c(2), s("K")]);
    let b = input(&mut g, "b", DType::F32, vec![s("K"), c(2)]);
    let y = op(&mut g, "y", Op::MatMul, &[a, b]);
    g.set_output("y", y).unwrap();
    let out = run(&g, vec![("a", t32(&[2, 0], &[])), ("b", t32(&[0, 2], &[]))], vec![], &[("K", 0)]).unwrap();
    assert_eq!(out["y"], t32(&[2, 2], &[0.; 4]));
}

#[test]
fn linear_by_hand() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 1, 3]));
    let w = param(&mut g, "w", "fc.w", DType::F32, dims(&[2, 3]));
    let y = op(&mut g, "y", Op::Linear, &[x, w]);
    g.set_output("y", y).unwrap();
    let xv = t32(&[2, 1, 3], &[1., 2., 3., -1., 0., 1.]);
    let wv = t32(&[2, 3], &[1., 0., 0., 1., 1., 1.]);
    let out = run(&g, vec![("x", xv)], vec![("fc.w", wv)], &[]).unwrap();
    assert_eq!(out["y"], t32(&[2, 1, 2], &[1., 6., -1., 0.]));
}

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] =
                (0..k).map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j])).sum::<f64>() as f32;
        }
    }
    c
}

fn approx_eq_sum(got: &[f32], want: &[f32], k: usize) {
    // Accumulation order differs from the naive loop: tolerance scales with K.
    approx_eq_tol(got, want, 1e-6 * (k.max(1) as f32) * 4.0);
}

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-2.0f32..2.0, len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matmul_matches_naive(
        (m, k, n, (ba, bb), av, bv) in (1usize..6, 0usize..7, 1usize..6, 0usize..4)
            .prop_flat_map(|(m, k, n, pair)| {
                // Batch sizes: equal, or one of them 1 (broadcast).
                let (ba, bb) = [(1, 1), (1, 3), (3, 1), (2, 2)][pair];
                (Just(m), Just(k), Just(n), Just((ba, bb)), values(ba * 2 * m * k), values(bb * 2 * k * n))
            })
    ) {
        let mut g = Graph::new("t");
        let a = input(&mut g, "a", DType::F32, dims(&[ba as u64, 2, m as u64, k as u64]));
        let b = input(&mut g, "b", DType::F32, dims(&[bb as u64, 2, k as u64, n as u64]));
        let y = op(&mut g, "y", Op::MatMul, &[a, b]);
        let out = eval_y(&mut g, y, vec![
            ("a", t32(&[ba, 2, m, k], &av)),
            ("b", t32(&[bb, 2, k, n], &bv)),
        ]);
        let batch = ba.max(bb);
        prop_assert_eq!(&out.shape, &vec![batch, 2, m, n]);
        let got = f32s(&out);
        for i in 0..batch {
            for j in 0..2 {
                let ai = (if ba == 1 { 0 } else { i }) * 2 + j;
                let bi = (if bb == 1 { 0 } else { i }) * 2 + j;
                let want = naive_matmul(&av[ai * m * k..(ai + 1) * m * k], &bv[bi * k * n..(bi + 1) * k * n], m, k, n);
                let o = (i * 2 + j) * m * n;
                approx_eq_sum(&got[o..o + m * n], &want, k);
            }
        }
    }

    #[test]
    fn matmul_rank2_rhs_broadcasts(
        (b0, m, k, n, av, bv) in (1usize..4, 1usize..5, 1usize..6, 1usize..5)
            .prop_flat_map(|(b0, m, k, n)| (Just(b0), Just(m), Just(k), Just(n), values(b0 * m * k), values(k * n)))
    ) {
        let mut g = Graph::new("t");
        let a = input(&mut g, "a", DType::F32, dims(&[b0 as u64, m as u64, k as u64]));
        let b = input(&mut g, "b", DType::F32, dims(&[k as u64, n as u64]));
        let y = op(&mut g, "y", Op::MatMul, &[a, b]);
        let out = eval_y(&mut g, y, vec![("a", t32(&[b0, m, k], &av)), ("b", t32(&[k, n], &bv))]);
        prop_assert_eq!(&out.shape, &vec![b0, m, n]);
        let want = naive_matmul(&av, &bv, b0 * m, k, n);
        approx_eq_sum(f32s(&out), &want, k);
    }

    #[test]
    fn linear_matches_naive(
        (m1, m2, k, n, xv, wv) in (0usize..4, 1usize..4, 1usize..9, 1usize..7)
            .prop_flat_map(|(m1, m2, k, n)| (Just(m1), Just(m2), Just(k), Just(n), values(m1 * m2 * k), values(n * k)))
    ) {
        let mut g = Graph::new("t");
        let x = input(&mut g, "x", DType::F32, dims(&[m1 as u64, m2 as u64, k as u64]));
        let w = input(&mut g, "w", DType::F32, dims(&[n as u64, k as u64]));
        let y = op(&mut g, "y", Op::Linear, &[x, w]);
        let out = eval_y(&mut g, y, vec![("x", t32(&[m1, m2, k], &xv)), ("w", t32(&[n, k], &wv))]);
        prop_assert_eq!(&out.shape, &vec![m1, m2, n]);
        // w^T, row-major [k, n].
        let wt: Vec<f32> = (0..k * n).map(|i| wv[(i % n) * k + i / n]).collect();
        let want = naive_matmul(&xv, &wt, m1 * m2, k, n);
        approx_eq_sum(f32s(&out), &want, k);
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE

fn rope_graph(rope: Rope, shape: &[u64]) -> Graph {
    let mut g = Graph::new("t");
    let mut full = vec![s("S")];
    full.extend(dims(shape));
    let x = input(&mut g, "x", DType::F32, full);
    let p = input(&mut g, "pos", DType::I64, vec![s("S")]);
    let y = op(&mut g, "y", Op::Rope(rope), &[x, p]);
    g.set_output("y", y).unwrap();
    g
}

fn rope_run(g: &Graph, x: Tensor, pos: &[i64]) -> Vec<f32> {
    let s_len = pos.len() as u64;
    let out = run(g, vec![("x", x), ("pos", ti64(&[pos.len()], pos))], vec![], &[("S", s_len)]).unwrap();
    f32s(&out["y"]).to_vec()
}

fn plain(layout: RopeLayout) -> Rope {
    Rope { layout, theta: 10000.0, yarn: None, attention_factor: 1.0 }
}

#[test]
fn rope_position_zero_is_identity() {
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        let g = rope_graph(plain(layout), &[2, 4]);
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let got = rope_run(&g, t32(&[1, 2, 4], &x), &[0]);
        approx_eq(&got, &x);
    }
}

#[test]
fn rope_layouts_by_hand() {
    // d = 4, theta = 10000: inv_freq = [1, 0.01]; at pos 1 the angles are 1 and 0.01.
    let (c1, s1) = (1f64.cos(), 1f64.sin());
    let (c2, s2) = (0.01f64.cos(), 0.01f64.sin());
    let x = [1., 2., 3., 4.];
    let inter = [1. * c1 - 2. * s1, 2. * c1 + 1. * s1, 3. * c2 - 4. * s2, 4. * c2 + 3. * s2];
    let half = [1. * c1 - 3. * s1, 2. * c2 - 4. * s2, 3. * c1 + 1. * s1, 4. * c2 + 2. * s2];
    for (layout, want) in [(RopeLayout::Interleaved, inter), (RopeLayout::HalfSplit, half)] {
        let g = rope_graph(plain(layout), &[4]);
        let got = rope_run(&g, t32(&[2, 4], &[x, x].concat()), &[0, 1]);
        let want: Vec<f32> = x.iter().copied().chain(want.iter().map(|&v| v as f32)).collect();
        approx_eq(&got, &want);
    }
}

#[test]
fn rope_middle_axes_share_the_row_angle_and_attention_factor_scales() {
    let rope = Rope { attention_factor: 2.0, ..plain(RopeLayout::Interleaved) };
    let g = rope_graph(rope, &[2, 2]);
    // d = 2: inv_freq = [1]; row 0 at pos 0 (scale only), row 1 at pos -1.
    let x = [1., 0., 0., 1., 1., 0., 0., 1.];
    let got = rope_run(&g, t32(&[2, 2, 2], &x), &[0, -1]);
    let (c, s) = ((-1f64).cos() as f32, (-1f64).sin() as f32);
    let want = [2., 0., 0., 2., 2. * c, 2. * s, -2. * s, 2. * c];
    approx_eq(&got, &want);
}

#[test]
fn rope_yarn_ramp_by_hand() {
    // d = 8, theta = 1e4, L = 4096: corr(32) = 1.309 -> low 1; corr(1) = 2.814 -> high 3.
    // ramp = [0, 0, 0.5, 1]; base inv_freq = [1, 0.1, 0.01, 0.001]; factor 4 gives
    // inv_freq = [1, 0.1, 0.01/4*0.5 + 0.01*0.5, 0.001/4] = [1, 0.1, 0.00625, 0.00025].
    let yarn = Yarn { factor: 4.0, original_max_position: 4096, beta_fast: 32.0, beta_slow: 1.0 };
    check_yarn(yarn, [1.0, 0.1, 0.00625, 0.00025]);
    // Swapped betas: floor(2.814) = 2 = ceil(1.309): high becomes 2.001, ramp = [0, 0, 0, 1].
    let yarn = Yarn { factor: 4.0, original_max_position: 4096, beta_fast: 1.0, beta_slow: 32.0 };
    check_yarn(yarn, [1.0, 0.1, 0.01, 0.00025]);
}

fn check_yarn(yarn: Yarn, inv_freq: [f64; 4]) {
    let rope =
        Rope { layout: RopeLayout::Interleaved, theta: 10000.0, yarn: Some(yarn), attention_factor: 1.0 };
    let g = rope_graph(rope, &[8]);
    // x = (1, 0) pairs: out = (cos a_j, sin a_j) at a_j = 1000 * inv_freq_j.
    let x = [1., 0., 1., 0., 1., 0., 1., 0.];
    let got = rope_run(&g, t32(&[1, 8], &x), &[1000]);
    let want: Vec<f32> =
        inv_freq.iter().flat_map(|f| [(1000.0 * f).cos() as f32, (1000.0 * f).sin() as f32]).collect();
    approx_eq_tol(&got, &want, 2e-6);
}

// ---------------------------------------------------------------------------------------------
// Masks

#[test]
fn causal_mask_with_more_keys_than_queries() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![c(2), s("S"), s("S").add(&s("P"))]);
    let y = op(&mut g, "y", Op::CausalMask, &[x]);
    g.set_output("y", y).unwrap();
    let n = f32::NEG_INFINITY;
    let out = run(&g, vec![("x", t32(&[2, 2, 4], &[1.; 16]))], vec![], &[("S", 2), ("P", 2)]).unwrap();
    // Queries sit at positions 2 and 3.
    #[rustfmt::skip]
    let want = [1., 1., 1., n, 1., 1., 1., 1., 1., 1., 1., n, 1., 1., 1., 1.];
    approx_eq(f32s(&out["y"]), &want);
}

#[test]
fn causal_mask_with_fewer_keys_than_queries() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[3, 2]));
    let y = op(&mut g, "y", Op::CausalMask, &[x]);
    let n = f32::NEG_INFINITY;
    let out = eval_y(&mut g, y, vec![("x", t32(&[3, 2], &[0.; 6]))]);
    // Offset -1: query 0 sees nothing, query 1 key 0, query 2 keys 0 and 1.
    approx_eq(f32s(&out), &[n, n, 0., n, 0., 0.]);
}

// ---------------------------------------------------------------------------------------------
// Data movement

#[test]
fn gather_rows_and_out_of_range() {
    let mut g = Graph::new("t");
    let table = param(&mut g, "emb", "embed", DType::F32, dims(&[3, 2]));
    let idx = input(&mut g, "ids", DType::I64, dims(&[2, 2]));
    let y = op(&mut g, "tok", Op::Gather, &[table, idx]);
    g.set_output("y", y).unwrap();
    let tv = t32(&[3, 2], &[0., 1., 10., 11., 20., 21.]);
    let out = run(&g, vec![("ids", ti64(&[2, 2], &[2, 0, 1, 1]))], vec![("embed", tv.clone())], &[]).unwrap();
    assert_eq!(out["y"], t32(&[2, 2, 2], &[20., 21., 0., 1., 10., 11., 10., 11.]));
    for bad in [3i64, -1] {
        let r = run(&g, vec![("ids", ti64(&[2, 2], &[0, 1, bad, 2]))], vec![("embed", tv.clone())], &[]);
        let (e, text) = err_text(r);
        assert!(matches!(e, InterpError::Value { .. }), "{e:?}");
        assert!(
            text.contains("%tok") && text.contains(&format!("index {bad}")) && text.contains("3 rows"),
            "{text}"
        );
    }
}

#[test]
fn gather_i64_table() {
    let mut g = Graph::new("t");
    let table = input(&mut g, "t", DType::I64, dims(&[3]));
    let idx = input(&mut g, "i", DType::I64, dims(&[4]));
    let y = op(&mut g, "y", Op::Gather, &[table, idx]);
    let out = eval_y(&mut g, y, vec![("t", ti64(&[3], &[5, 6, 7])), ("i", ti64(&[4], &[2, 2, 0, 1]))]);
    assert_eq!(out, ti64(&[4], &[7, 7, 5, 6]));
}

#[test]
fn reshape_keeps_order() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S"), c(4)]);
    let r = op(&mut g, "r", Op::Reshape { shape: vec![s("S"), c(2), c(2)] }, &[x]);
    // `x` is also an output, so the reshape must copy rather than move.
    g.set_output("x", x).unwrap();
    g.set_output("y", r).unwrap();
    let xv = t32(&[2, 4], &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let out = run(&g, vec![("x", xv.clone())], vec![], &[("S", 2)]).unwrap();
    assert_eq!(out["y"], t32(&[2, 2, 2], &[0., 1., 2., 3., 4., 5., 6., 7.]));
    assert_eq!(out["x"], xv);
}

#[test]
fn permute_three_axes() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::I64, dims(&[2, 3, 2]));
    let y = op(&mut g, "y", Op::Permute { perm: vec![2, 0, 1] }, &[x]);
    let xv = ti64(&[2, 3, 2], &(0..12).collect::<Vec<_>>());
    let out = eval_y(&mut g, y, vec![("x", xv)]);
    // out[c][a][b] = x[a][b][c] = 6a + 2b + c
    assert_eq!(out, ti64(&[2, 2, 3], &[0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]));
}

#[test]
fn expand_stretches_and_prepends() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2, 1]));
    let y = op(&mut g, "y", Op::Expand { shape: vec![s("B"), c(2), c(3)] }, &[x]);
    g.set_output("y", y).unwrap();
    let out = run(&g, vec![("x", t32(&[2, 1], &[1., 2.]))], vec![], &[("B", 2)]).unwrap();
    assert_eq!(out["y"], t32(&[2, 2, 3], &[1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.]));

    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::Bool, dims(&[3]));
    let y = op(&mut g, "y", Op::Expand { shape: dims(&[2, 3]) }, &[x]);
    let out = eval_y(&mut g, y, vec![("x", tbool(&[3], &[true, false, true]))]);
    assert_eq!(out, tbool(&[2, 3], &[true, false, true, true, false, true]));
}

#[test]
fn slice_with_symbolic_bounds() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S").add(&c(2)), c(2)]);
    let y = op(&mut g, "y", Op::Slice { axis: 0, start: c(1), end: s("S").add(&c(1)) }, &[x]);
    g.set_output("y", y).unwrap();
    let xv = t32(&[4, 2], &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let out = run(&g, vec![("x", xv)], vec![], &[("S", 2)]).unwrap();
    assert_eq!(out["y"], t32(&[2, 2], &[2., 3., 4., 5.]));

    // Inner axis.
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::I64, dims(&[2, 3]));
    let y = op(&mut g, "y", Op::Slice { axis: 1, start: s("P"), end: c(3) }, &[x]);
    g.set_output("y", y).unwrap();
    let out = run(&g, vec![("x", ti64(&[2, 3], &[0, 1, 2, 3, 4, 5]))], vec![], &[("P", 1)]).unwrap();
    assert_eq!(out["y"], ti64(&[2, 2], &[1, 2, 4, 5]));
    // start > end: the length 3 - P is negative.
    let (e, text) = err_text(run(&g, vec![("x", ti64(&[2, 3], &[0; 6]))], vec![], &[("P", 4)]));
    assert!(matches!(e, InterpError::Symbol { .. }), "{e:?}");
    assert!(text.contains("%y") && text.contains("negative"), "{text}");
}

#[test]
fn slice_past_the_end_is_an_error() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S")]);
    let y = op(&mut g, "cut", Op::Slice { axis: 0, start: c(0), end: c(4) }, &[x]);
    g.set_output("y", y).unwrap();
    let (e, text) = err_text(run(&g, vec![("x", t32(&[2], &[1., 2.]))], vec![], &[("S", 2)]));
    assert!(matches!(e, InterpError::Value { .. }), "{e:?}");
    assert!(text.contains("%cut") && text.contains("0..4"), "{text}");
}

#[test]
fn concat_along_inner_and_outer_axes() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::F32, dims(&[2, 1]));
    let b = input(&mut g, "b", DType::F32, dims(&[2, 2]));
    let y = op(&mut g, "y", Op::Concat { axis: 1 }, &[a, b, a]);
    let out = eval_y(&mut g, y, vec![("a", t32(&[2, 1], &[1., 2.])), ("b", t32(&[2, 2], &[3., 4., 5., 6.]))]);
    assert_eq!(out, t32(&[2, 4], &[1., 3., 4., 1., 2., 5., 6., 2.]));

    let mut g = Graph::new("t");
    let a = input(&mut g, "a", DType::I64, vec![s("P"), c(2)]);
    let b = input(&mut g, "b", DType::I64, vec![s("S"), c(2)]);
    let y = op(&mut g, "y", Op::Concat { axis: 0 }, &[a, b]);
    g.set_output("y", y).unwrap();
    let inputs = vec![("a", ti64(&[1, 2], &[1, 2])), ("b", ti64(&[2, 2], &[3, 4, 5, 6]))];
    let out = run(&g, inputs, vec![], &[("P", 1), ("S", 2)]).unwrap();
    assert_eq!(out["y"], ti64(&[3, 2], &[1, 2, 3, 4, 5, 6]));
}

// ---------------------------------------------------------------------------------------------
// Evaluation and errors

#[test]
fn only_reachable_nodes_run_and_outputs_can_repeat() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, dims(&[2]));
    let unused = input(&mut g, "unused", DType::F32, dims(&[2]));
    let _dead = op(&mut g, "dead", Op::Unary(UnaryOp::Neg), &[unused]);
    let e = op(&mut g, "e", Op::Unary(UnaryOp::Neg), &[x]);
    let y = op(&mut g, "y", Op::Binary(BinaryOp::Add), &[e, e]);
    g.set_output("y", y).unwrap();
    g.set_output("e", e).unwrap();
    g.set_output("again", e).unwrap();
    // `unused` is not bound, and nothing needs it.
    let out = run(&g, vec![("x", t32(&[2], &[1., 2.]))], vec![], &[]).unwrap();
    assert_eq!(out.keys().cloned().collect::<Vec<_>>(), ["again", "e", "y"]);
    assert_eq!(out["y"], t32(&[2], &[-2., -4.]));
    assert_eq!(out["e"], out["again"]);
}

#[test]
fn missing_input_names_it() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "tokens", DType::I64, dims(&[2]));
    g.set_output("y", x).unwrap();
    let (e, text) = err_text(run(&g, vec![], vec![], &[]));
    assert!(matches!(e, InterpError::MissingInput { ref name } if name == "tokens"), "{e:?}");
    assert!(text.contains("tokens"), "{text}");
}

#[test]
fn input_mismatch_names_input_and_types() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S"), c(2)]);
    g.set_output("y", x).unwrap();
    // Wrong shape.
    let (e, text) = err_text(run(&g, vec![("x", t32(&[2, 3], &[0.; 6]))], vec![], &[("S", 2)]));
    assert!(matches!(e, InterpError::InputMismatch { ref name, .. } if name == "x"), "{e:?}");
    assert!(text.contains("%x") && text.contains("[2, 2]") && text.contains("[2, 3]"), "{text}");
    // Wrong dtype.
    let (_, text) = err_text(run(&g, vec![("x", ti64(&[2, 2], &[0; 4]))], vec![], &[("S", 2)]));
    assert!(text.contains("%x") && text.contains("i64"), "{text}");
    // Data length not matching its own shape (fields are public).
    let bad = Tensor { shape: vec![2, 2], data: TensorData::F32(vec![0.; 3]) };
    let (_, text) = err_text(run(&g, vec![("x", bad)], vec![], &[("S", 2)]));
    assert!(text.contains("3 elements"), "{text}");
}

#[test]
fn unbound_and_negative_symbols_name_the_node() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S")]);
    let y = op(&mut g, "sum", Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }, &[x]);
    g.set_output("y", y).unwrap();
    let (e, text) = err_text(run(&g, vec![("x", t32(&[1], &[1.]))], vec![], &[]));
    assert!(matches!(e, InterpError::Symbol { ref node, .. } if node == "x"), "{e:?}");
    assert!(text.contains("%x") && text.contains("`S`"), "{text}");

    let mut g = Graph::new("t");
    let a = op(&mut g, "a", Op::Arange { start: s("P").sub(&c(5)), len: c(2) }, &[]);
    g.set_output("y", a).unwrap();
    let (e, text) = err_text(run(&g, vec![], vec![], &[("P", 1)]));
    assert!(matches!(e, InterpError::Symbol { .. }), "{e:?}");
    assert!(text.contains("%a") && text.contains("negative"), "{text}");
}

#[test]
fn huge_symbol_values_are_errors_not_panics() {
    let mut g = Graph::new("t");
    let a = op(&mut g, "a", Op::Arange { start: c(0), len: s("S").add(&s("S")) }, &[]);
    g.set_output("y", a).unwrap();
    let (e, _) = err_text(run(&g, vec![], vec![], &[("S", u64::MAX)]));
    assert!(matches!(e, InterpError::Symbol { .. } | InterpError::Value { .. }), "{e:?}");
    let (e, _) = err_text(run(&g, vec![], vec![], &[("S", 1 << 62)]));
    assert!(matches!(e, InterpError::Symbol { .. } | InterpError::Value { .. }), "{e:?}");
}

#[test]
fn unverified_graph_is_rejected() {
    let mut g = Graph::new("t");
    let _ = input(&mut g, "x", DType::F32, dims(&[1]));
    let (e, _) = err_text(run(&g, vec![], vec![], &[]));
    assert!(matches!(e, InterpError::Verify(_)), "{e:?}");
}

#[test]
fn empty_tensors_do_not_panic() {
    // With S = 0 every value below is empty; with H = 0 the middle axis of the rope input is.
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", DType::F32, vec![s("S"), s("H"), c(4)]);
    let pos = input(&mut g, "pos", DType::I64, vec![s("S")]);
    let w = param(&mut g, "w", "w", DType::F32, dims(&[4]));
    let fc = param(&mut g, "fc", "fc", DType::F32, dims(&[3, 4]));
    let r = op(&mut g, "r", Op::Rope(plain(RopeLayout::HalfSplit)), &[x, pos]);
    let n = op(&mut g, "n", Op::RmsNorm { eps: 1e-6 }, &[r, w]);
    let sm = op(&mut g, "sm", Op::Softmax { axis: 1 }, &[n]);
    let tk = op(&mut g, "tk", Op::TopKMask { k: 2 }, &[sm]);
    let cm = op(&mut g, "cm", Op::CausalMask, &[sm]);
    let l = op(&mut g, "l", Op::Linear, &[cm, fc]);
    let e = param(&mut g, "emb", "emb", DType::F32, dims(&[5, 2]));
    let gt = op(&mut g, "gt", Op::Gather, &[e, pos]);
    let p = op(&mut g, "p", Op::Permute { perm: vec![2, 0, 1] }, &[l]);
    for (name, id) in [("tk", tk), ("gt", gt), ("p", p)] {
        g.set_output(name, id).unwrap();
    }
    let params =
        vec![("w", t32(&[4], &[1.; 4])), ("fc", t32(&[3, 4], &[1.; 12])), ("emb", t32(&[5, 2], &[0.; 10]))];
    for (sv, hv) in [(0usize, 2usize), (2, 0)] {
        let inputs =
            vec![("x", t32(&[sv, hv, 4], &vec![0.5; sv * hv * 4])), ("pos", ti64(&[sv], &vec![1; sv]))];
        let out = run(&g, inputs, params.clone(), &[("S", sv as u64), ("H", hv as u64)]).unwrap();
        assert_eq!(out["tk"].shape, vec![sv, hv, 4]);
        assert_eq!(out["gt"].shape, vec![sv, 2]);
        assert_eq!(out["p"].shape, vec![3, sv, hv]);
    }
}
