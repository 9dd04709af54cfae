//! Weight-only subexpressions, computed once.
//!
//! Rewrites can leave computations on weights alone in a graph (a product of two weight
//! matrices, say, after absorbing one projection into another). They do not change from step to
//! step, so [`Prepared`] computes them once, when a graph is prepared, and the graphs read them
//! as params with derived keys (`derived:GRAPH:NODE`). Views of weights (reshape, permute,
//! slice, expand) stay in the graphs: they cost nothing in compiled code, and materialising them
//! would copy weights. The cost model counts such subexpressions as free for the same reason.

use std::collections::HashMap;

use saturn_ir::{Bindings, Graph, NodeId, Op, ParamSource, SymBindings, Tensor, evaluate};

use crate::RuntimeError;

/// The prefix of the keys of precomputed values.
pub const DERIVED_PREFIX: &str = "derived:";

/// Graphs with their weight-only subexpressions replaced by precomputed params, and the
/// [`ParamSource`] that serves those (and everything else from the base source).
pub struct Prepared<'a> {
    pub graphs: Vec<Graph>,
    base: &'a dyn ParamSource,
    derived: HashMap<String, Tensor>,
}

impl<'a> Prepared<'a> {
    /// Prepares `graphs` (their names must differ) with weights from `base`.
    pub fn new(graphs: &[&Graph], base: &'a dyn ParamSource) -> Result<Prepared<'a>, RuntimeError> {
        let mut derived = HashMap::new();
        let mut prepared = Vec::with_capacity(graphs.len());
        for graph in graphs {
            let (main, constants) = split(graph)?;
            if !constants.outputs().is_empty() {
                let bindings = Bindings { symbols: SymBindings::new(), inputs: HashMap::new(), params: base };
                for (name, value) in evaluate(&constants, &bindings)? {
                    derived.insert(derived_key(&graph.name, &name), value);
                }
            }
            prepared.push(main);
        }
        Ok(Prepared { graphs: prepared, base, derived })
    }
}

impl ParamSource for Prepared<'_> {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        if !key.starts_with(DERIVED_PREFIX) {
            return self.base.load(key, shape);
        }
        let value = self.derived.get(key).ok_or_else(|| format!("no precomputed value `{key}`"))?;
        if value.shape != shape {
            return Err(format!("precomputed `{key}` has shape {:?}, expected {shape:?}", value.shape));
        }
        Ok(value.clone())
    }

    fn f32_view(&self, key: &str, shape: &[usize]) -> Option<&[f32]> {
        if key.starts_with(DERIVED_PREFIX) { None } else { self.base.f32_view(key, shape) }
    }
}

fn derived_key(graph: &str, node: &str) -> String {
    format!("{DERIVED_PREFIX}{graph}:{node}")
}

/// Splits `graph` into the graph to run, where each hoisted node is a param, and the graph that
/// computes the hoisted nodes (its outputs, named after them).
fn split(graph: &Graph) -> Result<(Graph, Graph), RuntimeError> {
    let constant = graph.constant_nodes();
    let computed =
        |id: NodeId| constant[id.index()] && !graph.node(id).op.is_leaf() && !graph.node(id).op.is_view();
    // A constant computation is hoisted where something outside the constant computations reads
    // it: a non-constant node, a view, or the graph's outputs.
    let mut hoisted = vec![false; graph.len()];
    for id in graph.node_ids() {
        for input in graph.inputs(id) {
            if computed(input) && !computed(id) {
                hoisted[input.index()] = true;
            }
        }
    }
    for (_, id) in graph.outputs() {
        hoisted[id.index()] |= computed(*id);
    }
    let bad =
        |e: saturn_ir::IrError| RuntimeError::BadGraph { graph: graph.name.clone(), msg: e.to_string() };

    let mut main = Graph::new(graph.name.clone());
    let mut constants = Graph::new(format!("{}.constants", graph.name));
    let (mut in_main, mut in_constants): (HashMap<NodeId, NodeId>, HashMap<NodeId, NodeId>) =
        (HashMap::new(), HashMap::new());
    let needed_main = reachable(graph, graph.outputs().iter().map(|(_, id)| *id).collect(), &hoisted);
    let needed_constants = reachable(graph, graph.node_ids().filter(|id| hoisted[id.index()]).collect(), &[]);
    for id in graph.node_ids() {
        let node = graph.node(id);
        let declared = node.op.is_leaf().then(|| node.ty.clone());
        if needed_constants[id.index()] && constant[id.index()] {
            let inputs: Vec<NodeId> = graph.inputs(id).iter().map(|i| in_constants[i]).collect();
            let new =
                constants.add(node.name.clone(), node.op.clone(), &inputs, declared.clone()).map_err(bad)?;
            in_constants.insert(id, new);
            if hoisted[id.index()] {
                constants.set_output(node.name.clone(), new).map_err(bad)?;
            }
        }
        if !needed_main[id.index()] {
            continue;
        }
        let new = if hoisted[id.index()] {
            let key = derived_key(&graph.name, &node.name);
            main.add(node.name.clone(), Op::Param { key }, &[], Some(node.ty.clone())).map_err(bad)?
        } else {
            let inputs: Vec<NodeId> = graph.inputs(id).iter().map(|i| in_main[i]).collect();
            main.add(node.name.clone(), node.op.clone(), &inputs, declared).map_err(bad)?
        };
        in_main.insert(id, new);
    }
    for (name, id) in graph.outputs() {
        main.set_output(name.clone(), in_main[id]).map_err(bad)?;
    }
    Ok((main, constants))
}

/// The nodes `roots` depend on, not looking below nodes marked in `stop` (other than roots).
fn reachable(graph: &Graph, roots: Vec<NodeId>, stop: &[bool]) -> Vec<bool> {
    let mut seen = vec![false; graph.len()];
    let mut stack = roots;
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        if stop.get(id.index()).copied().unwrap_or(false) {
            continue;
        }
        stack.extend(graph.inputs(id));
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use saturn_ir::{DType, TensorType};

    use super::*;

    /// `y = x (a b)` with weights `a`, `b`: `a b` is computed once and read as a derived param;
    /// the results are the same.
    #[test]
    fn weight_products_are_computed_once_and_give_the_same_result() {
        let mut g = Graph::new("g");
        let t = |shape: [u64; 2]| Some(TensorType::new(DType::F32, shape));
        let x = g.add("x", Op::Input, &[], t([1, 2])).unwrap();
        let a = g.add("a", Op::Param { key: "a".into() }, &[], t([2, 3])).unwrap();
        let b = g.add("b", Op::Param { key: "b".into() }, &[], t([3, 2])).unwrap();
        let ab = g.add("ab", Op::MatMul, &[a, b], None).unwrap();
        let y = g.add("y", Op::MatMul, &[x, ab], None).unwrap();
        g.set_output("y", y).unwrap();
        let weights: HashMap<String, Tensor> = HashMap::from([
            ("a".to_string(), Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("b".to_string(), Tensor::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0])),
        ]);
        let prepared = Prepared::new(&[&g], &weights).unwrap();
        let main = &prepared.graphs[0];
        assert_eq!(main.node(main.find("ab").unwrap()).op, Op::Param { key: "derived:g:ab".into() });
        assert!(main.find("a").is_none(), "the weights only the product used are gone");
        let run = |graph: &Graph, params: &dyn ParamSource| {
            let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![1, 2], vec![1.0, -1.0]))]);
            let b = Bindings { symbols: SymBindings::new(), inputs, params };
            evaluate(graph, &b).unwrap().remove("y").unwrap()
        };
        assert_eq!(run(main, &prepared), run(&g, &weights));
    }
}
