//! The graph: nodes in topological order on a petgraph `DiGraph`.
//!
//! A node is added only after its operands, so node index order is a topological order; the
//! printer, the verifier and the interpreter all walk it. Edges go from operand to user and carry
//! the operand's slot. Every node has a unique name (its `%name` in the text form) and a type that
//! was inferred when it was added (declared, for leaves).

use std::collections::HashMap;
use std::fmt;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::dim::{Dim, Shape, SymBindings, fmt_shape};
use crate::dtype::DType;
use crate::error::IrError;
use crate::infer::infer_type;
use crate::op::Op;

/// A node handle. Indices are dense and in topological order.
pub type NodeId = NodeIndex<u32>;

/// The dtype and shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl IntoIterator<Item = impl Into<crate::Dim>>) -> Self {
        TensorType { dtype, shape: shape.into_iter().map(Into::into).collect() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, fmt_shape(&self.shape))
    }
}

/// One operation in a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub ty: TensorType,
}

/// A typed tensor graph with named outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: DiGraph<Node, u32>,
    by_name: HashMap<String, NodeId>,
    outputs: Vec<(String, NodeId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds a node after inferring its type (leaves use `declared`, which they require; for
    /// other ops a `declared` type must equal the inferred one).
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
        declared: Option<TensorType>,
    ) -> Result<NodeId, IrError> {
        let name = name.into();
        if !is_valid_name(&name) {
            return Err(IrError::BadName { name });
        }
        if self.by_name.contains_key(&name) {
            return Err(IrError::DuplicateName { name });
        }
        for &i in inputs {
            if i.index() >= self.g.node_count() {
                return Err(IrError::UnknownOperand { node: name, operand: i.index() });
            }
        }
        let operand_types: Vec<&TensorType> = inputs.iter().map(|&i| &self.g[i].ty).collect();
        let ty = infer_type(&op, &operand_types, declared.as_ref()).map_err(|msg| IrError::Type {
            node: name.clone(),
            op: op.name(),
            msg,
        })?;
        let id = self.g.add_node(Node { name: name.clone(), op, ty });
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, id, slot as u32);
        }
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// Marks `node` as the output `name`.
    pub fn set_output(&mut self, name: impl Into<String>, node: NodeId) -> Result<(), IrError> {
        let name = name.into();
        if !is_valid_name(&name) {
            return Err(IrError::BadName { name });
        }
        if self.outputs.iter().any(|(n, _)| *n == name) {
            return Err(IrError::DuplicateOutput { name });
        }
        if node.index() >= self.g.node_count() {
            return Err(IrError::UnknownOperand { node: name, operand: node.index() });
        }
        self.outputs.push((name, node));
        Ok(())
    }

    /// A name not yet used in the graph: `base`, or `base.1`, `base.2`, ...
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        (1..).map(|i| format!("{base}.{i}")).find(|n| !self.by_name.contains_key(n)).unwrap()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.g[id].ty
    }

    /// The operands of `id`, in slot order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u32, NodeId)> =
            self.g.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        e.sort_unstable();
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use `id` (each once, in index order).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self.g.neighbors_directed(id, Direction::Outgoing).collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// All node ids in topological (index) order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// The underlying petgraph graph, for analyses.
    pub fn petgraph(&self) -> &DiGraph<Node, u32> {
        &self.g
    }

    /// All symbols mentioned by any node type or attribute, sorted. (Reshape and expand shapes
    /// are their nodes' types; a slice's bounds and a range's start need not be.)
    pub fn symbols(&self) -> Vec<String> {
        let mut syms: Vec<String> = Vec::new();
        for n in self.g.node_weights() {
            let attrs: &[&Dim] = match &n.op {
                Op::Slice { start, end, .. } => &[start, end],
                Op::Arange { start, len } => &[start, len],
                _ => &[],
            };
            for d in n.ty.shape.iter().chain(attrs.iter().copied()) {
                syms.extend(d.symbols().map(str::to_string));
            }
        }
        syms.sort();
        syms.dedup();
        syms
    }

    /// `(name, key, type)` of every param, in node order.
    pub fn params(&self) -> impl Iterator<Item = (NodeId, &str, &TensorType)> + '_ {
        self.g.node_indices().filter_map(|id| match &self.g[id].op {
            Op::Param { key } => Some((id, key.as_str(), &self.g[id].ty)),
            _ => None,
        })
    }

    /// A copy with the bound symbols replaced by their values everywhere (types and
    /// attributes), re-typed node by node. This is how a phase is made from the one lowered
    /// graph: prefill binds `P = 0`, decode `S = 1`.
    pub fn bind_symbols(&self, syms: &SymBindings, name: impl Into<String>) -> Result<Graph, IrError> {
        let mut out = Graph::new(name);
        for id in self.node_ids() {
            let node = &self.g[id];
            let op = node.op.map_dims(|d| d.substitute(syms));
            let declared = node.op.is_leaf().then(|| TensorType {
                dtype: node.ty.dtype,
                shape: node.ty.shape.iter().map(|d| d.substitute(syms)).collect(),
            });
            // Ids carry over: nodes are re-added in the same order.
            out.add(node.name.clone(), op, &self.inputs(id), declared)?;
        }
        for (name, id) in &self.outputs {
            out.set_output(name.clone(), *id)?;
        }
        Ok(out)
    }

    /// For each node (by index): whether its value depends on params and constants only, not
    /// on inputs or symbol values (an `arange` with symbolic bounds is not constant).
    pub fn constant_nodes(&self) -> Vec<bool> {
        let mut constant = vec![false; self.len()];
        for id in self.node_ids() {
            constant[id.index()] = match &self.g[id].op {
                Op::Param { .. } | Op::Scalar { .. } => true,
                Op::Input => false,
                Op::Arange { start, len } => start.is_const() && len.is_const(),
                _ => self.inputs(id).iter().all(|i| constant[i.index()]),
            };
        }
        constant
    }

    /// For each node (by index): whether an output depends on it (outputs included).
    pub fn needed_by_outputs(&self) -> Vec<bool> {
        let mut needed = vec![false; self.len()];
        for (_, id) in &self.outputs {
            needed[id.index()] = true;
        }
        for id in self.g.node_indices().rev() {
            if needed[id.index()] {
                for i in self.inputs(id) {
                    needed[i.index()] = true;
                }
            }
        }
        needed
    }

    /// `(id, type)` of every input, in node order.
    pub fn graph_inputs(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.g.node_indices().filter(|&id| self.g[id].op == Op::Input).map(|id| (id, &self.g[id]))
    }
}

/// Structural equality: same name, same nodes (name, op, type, operands) in the same order, same
/// outputs. This is what the text round trip preserves.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        self.name == other.name
            && self.outputs == other.outputs
            && self.len() == other.len()
            && self.node_ids().all(|id| self.g[id] == other.g[id] && self.inputs(id) == other.inputs(id))
    }
}

/// Names are `[A-Za-z_][A-Za-z0-9_.]*`, so they print without quoting.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}
