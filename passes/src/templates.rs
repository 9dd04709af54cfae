//! Repeated structure: a model's layers are near-identical, so the graph is cut into segments
//! (contiguous runs of nodes of one layer, named `lN.`, and runs of other nodes), segments equal
//! up to their layer index share one template, each template is optimised once, and the result
//! is instantiated per segment with its own names and weight keys. 61 layers of two shapes cost
//! two optimisations, not 61.
//!
//! A segment only reads earlier segments (node order is topological), so rebuilding segment by
//! segment keeps every operand defined before its use.

use std::collections::{BTreeMap, HashMap};

use saturn_ir::{Graph, IrError, NodeId, Op};

/// A contiguous run of nodes of one layer (or of no layer).
#[derive(Clone, Debug)]
pub struct Segment {
    /// The layer index, for nodes named `lN.*`.
    pub layer: Option<u64>,
    pub nodes: Vec<NodeId>,
    /// Nodes of earlier segments read here, in order of first use.
    pub external: Vec<NodeId>,
    /// Nodes of this segment read later or returned by the graph, in node order.
    pub exported: Vec<NodeId>,
}

/// The layer of a node named `lN.rest`.
fn layer_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('l')?;
    let (digits, _) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Cuts `graph` into segments.
pub fn segments(graph: &Graph) -> Vec<Segment> {
    let mut segs: Vec<Segment> = Vec::new();
    let mut segment_of: Vec<usize> = Vec::with_capacity(graph.len());
    for id in graph.node_ids() {
        let layer = layer_of(&graph.node(id).name);
        match segs.last_mut() {
            Some(s) if s.layer == layer => s.nodes.push(id),
            _ => segs.push(Segment { layer, nodes: vec![id], external: vec![], exported: vec![] }),
        }
        segment_of.push(segs.len() - 1);
    }
    let mut exported: Vec<bool> = vec![false; graph.len()];
    for (_, id) in graph.outputs() {
        exported[id.index()] = true;
    }
    for (k, seg) in segs.iter_mut().enumerate() {
        for &id in &seg.nodes {
            for input in graph.inputs(id) {
                if segment_of[input.index()] != k {
                    exported[input.index()] = true;
                    if !seg.external.contains(&input) {
                        seg.external.push(input);
                    }
                }
            }
        }
    }
    for seg in &mut segs {
        seg.exported = seg.nodes.iter().copied().filter(|id| exported[id.index()]).collect();
    }
    segs
}

/// A key that is equal for two segments exactly when they are the same computation up to
/// their layer index: ops, attributes, types, weight keys with the layer number masked, and
/// operand structure.
pub fn signature(graph: &Graph, seg: &Segment) -> String {
    let local: HashMap<NodeId, usize> = seg.nodes.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let ext: HashMap<NodeId, usize> = seg.external.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut sig = format!("layer={}\n", seg.layer.is_some());
    for e in &seg.external {
        sig.push_str(&format!("ext {}\n", graph.ty(*e)));
    }
    for &id in &seg.nodes {
        let node = graph.node(id);
        let op = match (&node.op, seg.layer) {
            (Op::Param { key }, Some(l)) => {
                Op::Param { key: key.replace(&format!("layers.{l}."), "layers.#.") }
            }
            (op, _) => op.clone(),
        };
        let operands: Vec<String> = graph
            .inputs(id)
            .iter()
            .map(|i| local.get(i).map_or_else(|| format!("e{}", ext[i]), |l| format!("n{l}")))
            .collect();
        let leaf = if node.op.is_leaf() { node.ty.to_string() } else { String::new() };
        sig.push_str(&format!("{}{:?}({}){leaf}\n", op.name(), op.attrs(), operands.join(",")));
    }
    let exported: Vec<String> = seg.exported.iter().map(|e| local[e].to_string()).collect();
    sig.push_str(&format!("exports {}\n", exported.join(",")));
    sig
}

/// The segment as a graph of its own: external operands become inputs `ext0, ext1, ...`, and
/// exported nodes outputs `out0, out1, ...`.
pub fn standalone(graph: &Graph, seg: &Segment) -> Result<Graph, IrError> {
    let mut g = Graph::new(format!("{}.segment", graph.name));
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for (i, &e) in seg.external.iter().enumerate() {
        map.insert(e, g.add(format!("ext{i}"), Op::Input, &[], Some(graph.ty(e).clone()))?);
    }
    for &id in &seg.nodes {
        let node = graph.node(id);
        let inputs: Vec<NodeId> = graph.inputs(id).iter().map(|i| map[i]).collect();
        let declared = node.op.is_leaf().then(|| node.ty.clone());
        map.insert(id, g.add(node.name.clone(), node.op.clone(), &inputs, declared)?);
    }
    for (j, e) in seg.exported.iter().enumerate() {
        g.set_output(format!("out{j}"), map[e])?;
    }
    Ok(g)
}

/// Adds an optimised template (from [`standalone`] of segment `from`) to `out` as segment `to`:
/// `ext{i}` inputs are wired to `external[i]`, names and weight keys are moved from layer
/// `from.layer` to `to.layer`. Returns the new node of each exported node of `to`.
pub fn instantiate(
    out: &mut Graph,
    template: &Graph,
    from: &Segment,
    to: &Segment,
    external: &[NodeId],
) -> Result<Vec<NodeId>, IrError> {
    let rename = |s: &str, prefix: &str, replacement: &str| -> String {
        match (from.layer, to.layer) {
            (Some(a), Some(b)) if a != b => {
                s.replacen(&format!("{prefix}{a}."), &format!("{replacement}{b}."), 1)
            }
            _ => s.to_string(),
        }
    };
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut ext_index: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..external.len() {
        ext_index.insert(format!("ext{i}"), i);
    }
    for id in template.node_ids() {
        let node = template.node(id);
        if node.op == Op::Input
            && let Some(&i) = ext_index.get(&node.name)
        {
            map.insert(id, external[i]);
            continue;
        }
        let op = match &node.op {
            Op::Param { key } => Op::Param { key: rename(key, "model.layers.", "model.layers.") },
            op => op.clone(),
        };
        let inputs: Vec<NodeId> = template.inputs(id).iter().map(|i| map[i]).collect();
        let declared = node.op.is_leaf().then(|| node.ty.clone());
        let name = out.fresh_name(&rename(&node.name, "l", "l"));
        map.insert(id, out.add(name, op, &inputs, declared)?);
    }
    Ok(template.outputs().iter().map(|(_, id)| map[id]).collect())
}
