//! IR graph to e-graph and back.
//!
//! Going in, every node becomes an e-node (hash-consing merges structurally equal nodes, which
//! is CSE for free) and the class of each node remembers the node's name. Coming out, the chosen
//! e-node of each needed class becomes one IR node, in operand-first order from the outputs, named
//! after an original node of its class when it has one.

use std::collections::{BTreeMap, HashMap};

use egg::Id;
use saturn_ir::{Graph, IrError, NodeId, Op};

use crate::analysis::{TensorGraph, TypeAnalysis};
use crate::lang::{OpKey, TensorNode};

/// An e-graph built from an IR graph, with what is needed to build one back.
pub struct Loaded {
    pub egraph: TensorGraph,
    /// `(output name, class)`, in the graph's output order.
    pub outputs: Vec<(String, Id)>,
    /// Original node names per class, in graph order.
    pub names: HashMap<Id, Vec<String>>,
    pub graph_name: String,
}

/// Adds every node of `graph` to a new e-graph.
pub fn load(graph: &Graph) -> Loaded {
    let mut egraph = TensorGraph::new(TypeAnalysis);
    let mut class_of: Vec<Id> = Vec::with_capacity(graph.len());
    let mut names: HashMap<Id, Vec<String>> = HashMap::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let key = match node.op {
            Op::Input => OpKey::new(node.op.clone(), Some(node.ty.clone()), Some(node.name.clone())),
            _ if node.op.is_leaf() => OpKey::new(node.op.clone(), Some(node.ty.clone()), None),
            _ => OpKey::op(node.op.clone()),
        };
        let children = graph.inputs(id).iter().map(|c| class_of[c.index()]).collect();
        let class = egraph.add(TensorNode::new(key, children));
        names.entry(class).or_default().push(node.name.clone());
        class_of.push(class);
    }
    egraph.rebuild();
    let outputs =
        graph.outputs().iter().map(|(n, id)| (n.clone(), egraph.find(class_of[id.index()]))).collect();
    let names = canonical_names(&egraph, names);
    Loaded { egraph, outputs, names, graph_name: graph.name.clone() }
}

impl Loaded {
    /// Re-keys names and outputs by canonical class ids, after saturation merged classes.
    pub fn canonicalize(&mut self) {
        self.names = canonical_names(&self.egraph, std::mem::take(&mut self.names));
        self.outputs = self.outputs.iter().map(|(n, c)| (n.clone(), self.egraph.find(*c))).collect();
    }

    /// The classes of the outputs.
    pub fn roots(&self) -> Vec<Id> {
        self.outputs.iter().map(|(_, c)| self.egraph.find(*c)).collect()
    }
}

/// Re-keys a name map by canonical class ids (after unions), keeping name order.
fn canonical_names(egraph: &TensorGraph, names: HashMap<Id, Vec<String>>) -> HashMap<Id, Vec<String>> {
    let mut sorted: Vec<(Id, Vec<String>)> = names.into_iter().collect();
    sorted.sort();
    let mut out: HashMap<Id, Vec<String>> = HashMap::new();
    for (id, ns) in sorted {
        out.entry(egraph.find(id)).or_default().extend(ns);
    }
    out
}

/// Builds an IR graph from the chosen node of each class (`choice`, by canonical class id).
pub fn build(loaded: &Loaded, choice: &BTreeMap<Id, TensorNode>) -> Result<Graph, IrError> {
    let egraph = &loaded.egraph;
    let mut graph = Graph::new(loaded.graph_name.clone());
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    for (_, root) in &loaded.outputs {
        // Iterative post-order DFS: operands before users, in operand order.
        let mut stack = vec![(egraph.find(*root), false)];
        while let Some((class, expanded)) = stack.pop() {
            if built.contains_key(&class) {
                continue;
            }
            let node = &choice[&class];
            if !expanded {
                stack.push((class, true));
                for &c in node.children.iter().rev() {
                    stack.push((egraph.find(c), false));
                }
                continue;
            }
            let inputs: Vec<NodeId> = node.children.iter().map(|c| built[&egraph.find(*c)]).collect();
            let name = class_name(loaded, &graph, class, node);
            let id = graph.add(name, node.op.op.clone(), &inputs, node.op.leaf_type.clone())?;
            built.insert(class, id);
        }
    }
    for (name, root) in &loaded.outputs {
        graph.set_output(name.clone(), built[&egraph.find(*root)])?;
    }
    Ok(graph)
}

/// An original name of the class not used yet; otherwise a fresh one in the scope of the
/// nearest operand (breadth first) that has an original name (`l3.mlp.gate` gives
/// `l3.mlp.fused_elementwise`).
fn class_name(loaded: &Loaded, graph: &Graph, class: Id, node: &TensorNode) -> String {
    if let Some(n) = node.op.input_name.as_ref() {
        return n.clone();
    }
    if let Some(names) = loaded.names.get(&class)
        && let Some(n) = names.iter().find(|n| graph.find(n).is_none())
    {
        return n.clone();
    }
    let scope = nearest_scope(loaded, node).unwrap_or_default();
    graph.fresh_name(&format!("{scope}{}", node.name()))
}

/// The scope (`l3.mlp.`) of the nearest named class below `node`, looking a few levels deep.
fn nearest_scope(loaded: &Loaded, node: &TensorNode) -> Option<String> {
    let eg = &loaded.egraph;
    let mut frontier: Vec<Id> = node.children.iter().map(|&c| eg.find(c)).collect();
    for _ in 0..4 {
        for c in &frontier {
            if let Some(scope) =
                loaded.names.get(c).and_then(|ns| ns.first()).and_then(|n| n.rsplit_once('.'))
            {
                return Some(format!("{}.", scope.0));
            }
        }
        frontier = frontier
            .iter()
            .flat_map(|&c| eg[c].nodes.iter().flat_map(|n| n.children.iter().map(|&x| eg.find(x))))
            .collect();
        frontier.sort();
        frontier.dedup();
    }
    None
}
