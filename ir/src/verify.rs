//! The verifier.
//!
//! Checks, for every node in index order: its operands come before it; its op has the right
//! number of operands; its stored type equals the type inferred from its operands and attributes
//! (the op-specific checks of `crate::infer`: dtypes, broadcasting, contraction dims, reshape
//! element counts, axes, ...); names are unique. It also checks that the graph has outputs.
//! Not checked (they depend on values, so the interpreter reports them): gather indices in range,
//! symbol bindings that make a dim negative.

use crate::error::IrError;
use crate::graph::Graph;
use crate::infer::infer_type;

/// Verifies `graph`; the first error names the node at fault.
pub fn verify(graph: &Graph) -> Result<(), IrError> {
    for id in graph.node_ids() {
        let node = graph.node(id);
        let inputs = graph.inputs(id);
        if let Some(&bad) = inputs.iter().find(|i| i.index() >= id.index()) {
            return Err(IrError::UnknownOperand { node: node.name.clone(), operand: bad.index() });
        }
        let types: Vec<_> = inputs.iter().map(|&i| graph.ty(i)).collect();
        let declared = node.op.is_leaf().then_some(&node.ty);
        let inferred = infer_type(&node.op, &types, declared).map_err(|msg| IrError::Type {
            node: node.name.clone(),
            op: node.op.name(),
            msg,
        })?;
        if inferred != node.ty {
            return Err(IrError::StaleType {
                node: node.name.clone(),
                stored: node.ty.to_string(),
                inferred: inferred.to_string(),
            });
        }
    }
    if graph.outputs().is_empty() {
        return Err(IrError::NoOutputs { graph: graph.name.clone() });
    }
    Ok(())
}
