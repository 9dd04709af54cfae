//! The e-class analysis: every class has one tensor type (checked when classes merge) and a
//! constness flag (computable from params and constants alone, without graph inputs).

use egg::{Analysis, DidMerge, EGraph, Id};
use saturn_ir::{Op, TensorType, infer_type};

use crate::lang::TensorNode;

/// What is known of every e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassData {
    pub ty: TensorType,
    /// True if the value depends on no graph input.
    pub constant: bool,
}

/// The analysis; rules only add nodes whose types they checked, so `make` cannot fail on a
/// node a rule built. A node that does not type is a bug and is reported as such.
#[derive(Clone, Debug, Default)]
pub struct TypeAnalysis;

pub type TensorGraph = EGraph<TensorNode, TypeAnalysis>;

/// The type of `node` given the types of its children's classes.
pub fn node_type(egraph: &TensorGraph, node: &TensorNode) -> Result<TensorType, String> {
    let types: Vec<&TensorType> = node.children.iter().map(|&c| &egraph[c].data.ty).collect();
    infer_type(&node.op.op, &types, node.op.leaf_type.as_ref())
}

impl Analysis<TensorNode> for TypeAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut TensorGraph, node: &TensorNode, _id: Id) -> ClassData {
        let ty = node_type(egraph, node)
            .unwrap_or_else(|e| panic!("saturn bug: an ill-typed e-node `{node}` was added: {e}"));
        let constant = match &node.op.op {
            Op::Input => false,
            Op::Param { .. } | Op::Scalar { .. } => true,
            // Positions that start at the cache length change with every step.
            Op::Arange { start, len } => start.is_const() && len.is_const(),
            _ => node.children.iter().all(|&c| egraph[c].data.constant),
        };
        ClassData { ty, constant }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        assert_eq!(a.ty, b.ty, "saturn bug: a rewrite merged values of different types");
        let constant = a.constant || b.constant;
        let changed = constant != a.constant;
        a.constant = constant;
        DidMerge(changed, constant != b.constant)
    }
}
