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
