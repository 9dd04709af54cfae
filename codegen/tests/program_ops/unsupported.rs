//! Unsupported nodes.

use super::*;

/// Compiling `g` fails with `Unsupported` naming `node`.
fn assert_unsupported(g: &Graph, params: &HashMap<String, Tensor>, node: &str) {
    let mut cache = ProgramCache::new().unwrap();
    match CpuProgram::compile(g, params, &mut cache, "cache.") {
        Err(CodegenError::Unsupported { node: n, msg }) => assert_eq!(n, node, "{msg}"),
        Err(other) => panic!("expected Unsupported naming `{node}`, got {other}"),
        Ok(_) => panic!("expected Unsupported naming `{node}`, the graph compiled"),
    }
}

/// Nodes the CPU kernels cannot run are `Unsupported` errors naming them (not panics): an f16
/// input, a bf16 param, an `add` on i64 operands, a rank-9 value.
#[test]
fn unsupported_nodes_are_errors_naming_them() {
    let mut c = Case::new(1);
    let h = c.g.add("h", Op::Input, &[], Some(TensorType::new(DType::F16, [2u64, 3]))).unwrap();
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[h]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "h");

    let mut c = Case::new(1);
    let w =
        c.g.add("w", Op::Param { key: "w".into() }, &[], Some(TensorType::new(DType::BF16, [2u64]))).unwrap();
    c.params.insert("w".into(), Tensor::f32(vec![2], vec![1.0, 2.0]));
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[w]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "w");

    let mut c = Case::new(1);
    let a = c.input("a", &dims(&[3]), Fill::Int(0, 5));
    let b = c.input("b", &dims(&[3]), Fill::Int(0, 5));
    let sum = c.op("sum", Op::Binary(BinaryOp::Add), &[a, b]);
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[sum]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "sum");

    let mut c = Case::new(1);
    let x = c.input("x", &dims(&[1; 9]), Fill::Uniform);
    let y = c.op("y", Op::Unary(UnaryOp::Neg), &[x]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "x");
}
