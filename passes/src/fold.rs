//! Constant folding, before saturation (it is cheaper outside egg): elementwise ops whose
//! operands are all f32 scalars become one scalar, computed with the interpreter's f32
//! functions so the value is exactly what evaluation would give.

use std::collections::HashMap;

use saturn_ir::{DType, Graph, IrError, NodeId, Op};

/// `graph` with scalar-only elementwise subexpressions replaced by their value.
pub fn fold_constants(graph: &Graph) -> Result<Graph, IrError> {
    let mut out = Graph::new(graph.name.clone());
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let inputs: Vec<NodeId> = graph.inputs(id).iter().map(|i| map[i]).collect();
        let scalars: Option<Vec<f32>> = inputs
            .iter()
            .map(|&i| match out.node(i).op {
                Op::Scalar { value } if out.ty(i).dtype == DType::F32 => Some(value as f32),
                _ => None,
            })
            .collect();
        let folded = match (&node.op, scalars) {
            (op, Some(values)) if !values.is_empty() && node.ty.dtype == DType::F32 => {
                op.elementwise_expr().map(|e| e.eval(&values))
            }
            _ => None,
        };
        let new = match folded {
            Some(value) => {
                out.add(node.name.clone(), Op::Scalar { value: value as f64 }, &[], Some(node.ty.clone()))?
            }
            None => {
                let declared = node.op.is_leaf().then(|| node.ty.clone());
                out.add(node.name.clone(), node.op.clone(), &inputs, declared)?
            }
        };
        map.insert(id, new);
    }
    for (name, id) in graph.outputs() {
        out.set_output(name.clone(), map[id])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use saturn_ir::{BinaryOp, TensorType, UnaryOp};

    use super::*;

    #[test]
    fn scalar_chains_fold_and_the_rest_stays() {
        let mut g = Graph::new("g");
        let f32_scalar = || Some(TensorType { dtype: DType::F32, shape: vec![] });
        let a = g.add("a", Op::Scalar { value: 2.0 }, &[], f32_scalar()).unwrap();
        let b = g.add("b", Op::Scalar { value: 3.0 }, &[], f32_scalar()).unwrap();
        let ab = g.add("ab", Op::Binary(BinaryOp::Mul), &[a, b], None).unwrap();
        let e = g.add("e", Op::Unary(UnaryOp::Neg), &[ab], None).unwrap();
        let x = g.add("x", Op::Input, &[], Some(TensorType::new(DType::F32, [4u64]))).unwrap();
        let y = g.add("y", Op::Binary(BinaryOp::Add), &[x, e], None).unwrap();
        g.set_output("y", y).unwrap();
        let f = fold_constants(&g).unwrap();
        assert_eq!(f.node(f.find("e").unwrap()).op, Op::Scalar { value: -6.0 });
        assert_eq!(f.node(f.find("y").unwrap()).op, Op::Binary(BinaryOp::Add));
        saturn_ir::verify(&f).unwrap();
    }
}
