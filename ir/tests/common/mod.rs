//! Helpers shared by the interpreter tests: building graphs and evaluating them.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap};

use saturn_ir::{Bindings, DType, Dim, Graph, InterpError, NodeId, Op, Tensor, TensorType, evaluate};

pub fn input(g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>) -> NodeId {
    g.add(name, Op::Input, &[], Some(TensorType { dtype, shape })).unwrap()
}

pub fn op(g: &mut Graph, name: &str, op: Op, args: &[NodeId]) -> NodeId {
    g.add(name, op, args, None).unwrap_or_else(|e| panic!("{e}"))
}

pub fn t32(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), data.to_vec())
}

pub fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 data")
}

/// Runs `g` with inputs, params (by key) and symbol values.
pub fn run(
    g: &Graph,
    inputs: Vec<(&str, Tensor)>,
    params: Vec<(&str, Tensor)>,
    syms: &[(&str, u64)],
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    let params: HashMap<String, Tensor> = params.into_iter().map(|(k, t)| (k.to_string(), t)).collect();
    let bindings = Bindings {
        symbols: syms.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        inputs: inputs.into_iter().map(|(k, t)| (k.to_string(), t)).collect(),
        params: &params,
    };
    evaluate(g, &bindings)
}

/// Equal within `tol * max(1, |want|)`; infinities must be equal and NaN must meet NaN.
pub fn close_tol(got: &[f32], want: &[f32], tol: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("lengths differ: got {got:?}, want {want:?}"));
    }
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let ok = if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tol * b.abs().max(1.0)
        };
        if !ok {
            return Err(format!("element {i}: got {a}, want {b}\n got {got:?}\nwant {want:?}"));
        }
    }
    Ok(())
}
