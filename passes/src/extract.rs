//! Extraction: choosing one e-node per needed class so that the cost of the resulting DAG
//! (each chosen class counted once, however many users share it) is low.
//!
//! - [`greedy_dag`]: every class keeps the set of classes its best choice needs, with their
//!   costs; a node's cost is the sum over the union of its children's sets plus its own, so
//!   shared subgraphs count once. Iterated to a fixed point; fast on large graphs.
//! - [`exact`]: tries every combination of alternatives below the roots (branch and bound on
//!   the greedy result); for small e-graphs only.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use egg::Id;

use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

/// A chosen node per class and the DAG cost of the choice.
#[derive(Clone, Debug)]
pub struct Extraction {
    pub choice: BTreeMap<Id, TensorNode>,
    pub cost: f64,
}

/// The cost of one e-node by itself (its children are costed separately).
pub type NodeCostFn<'a> = dyn Fn(&TensorGraph, &TensorNode) -> f64 + 'a;

/// A class's best choice so far: the node, and every class it needs with that class's cost.
struct Best {
    node: TensorNode,
    needs: Rc<BTreeMap<Id, f64>>,
    total: f64,
}

/// Greedy DAG extraction; every class gets a choice where one exists. The cost is the DAG
/// cost below `roots`.
pub fn greedy_dag(egraph: &TensorGraph, roots: &[Id], cost: &NodeCostFn) -> Extraction {
    let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    classes.sort();
    let mut best: BTreeMap<Id, Best> = BTreeMap::new();
    // Each pass can only lower totals; the bound guards against float noise.
    for _ in 0..classes.len().max(4) {
        let mut changed = false;
        for &class in &classes {
            for node in &egraph[class].nodes {
                let Some(candidate) = candidate(egraph, class, node, &best, cost) else { continue };
                let better =
                    best.get(&class).is_none_or(|b| candidate.total < b.total * (1.0 - 1e-12) - 1e-15);
                if better {
                    best.insert(class, candidate);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let choice: BTreeMap<Id, TensorNode> = best.into_iter().map(|(id, b)| (id, b.node)).collect();
    let cost = dag_cost(egraph, &choice, roots, cost).unwrap_or(f64::INFINITY);
    Extraction { cost, choice }
}

/// The best-so-far entry `class` would get by choosing `node`, unless a child has no choice yet
/// or the choice would make a cycle.
fn candidate(
    egraph: &TensorGraph,
    class: Id,
    node: &TensorNode,
    best: &BTreeMap<Id, Best>,
    cost: &NodeCostFn,
) -> Option<Best> {
    let mut child_sets: Vec<&Rc<BTreeMap<Id, f64>>> = Vec::with_capacity(node.children.len());
    for &c in &node.children {
        let c = egraph.find(c);
        if c == class {
            return None;
        }
        let b = best.get(&c)?;
        if b.needs.contains_key(&class) {
            return None;
        }
        child_sets.push(&b.needs);
    }
    // Start from the largest set and add the others' entries.
    child_sets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut needs: BTreeMap<Id, f64> = child_sets.first().map(|s| (***s).clone()).unwrap_or_default();
    for s in child_sets.iter().skip(1) {
        for (k, v) in s.iter() {
            needs.entry(*k).or_insert(*v);
        }
    }
    needs.insert(class, cost(egraph, node));
    let total = needs.values().sum();
    Some(Best { node: node.clone(), needs: Rc::new(needs), total })
}

/// The DAG cost of `choice` below `roots`: each reachable class once. `None` on a cycle or a
/// class without a choice.
pub fn dag_cost(
    egraph: &TensorGraph,
    choice: &BTreeMap<Id, TensorNode>,
    roots: &[Id],
    cost: &NodeCostFn,
) -> Option<f64> {
    let mut done: BTreeSet<Id> = BTreeSet::new();
    let mut on_path: BTreeSet<Id> = BTreeSet::new();
    let mut total = 0.0;
    fn visit(
        egraph: &TensorGraph,
        choice: &BTreeMap<Id, TensorNode>,
        class: Id,
        cost: &NodeCostFn,
        done: &mut BTreeSet<Id>,
        on_path: &mut BTreeSet<Id>,
        total: &mut f64,
    ) -> Option<()> {
        let class = egraph.find(class);
        if done.contains(&class) {
            return Some(());
        }
        if !on_path.insert(class) {
            return None;
        }
        let node = choice.get(&class)?;
        for &c in &node.children {
            visit(egraph, choice, c, cost, done, on_path, total)?;
        }
        on_path.remove(&class);
        done.insert(class);
        *total += cost(egraph, node);
        Some(())
    }
    for &r in roots {
        visit(egraph, choice, r, cost, &mut done, &mut on_path, &mut total)?;
    }
    Some(total)
}

/// Exact extraction by exhaustive search over the alternatives of the classes below `roots`,
/// starting from the greedy choice; `None` if there are more than `max_combinations`.
pub fn exact(
    egraph: &TensorGraph,
    roots: &[Id],
    cost: &NodeCostFn,
    max_combinations: u64,
) -> Option<Extraction> {
    let greedy = greedy_dag(egraph, roots, cost);
    let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    classes.sort();
    let combinations =
        classes.iter().try_fold(1u64, |acc, &c| acc.checked_mul(egraph[c].nodes.len() as u64))?;
    if combinations > max_combinations {
        return None;
    }
    let mut choice = greedy.choice.clone();
    let mut best = (greedy.cost, choice.clone());
    // Odometer over every class's alternatives.
    let mut digits = vec![0usize; classes.len()];
    loop {
        let mut i = 0;
        while i < classes.len() {
            digits[i] += 1;
            if digits[i] < egraph[classes[i]].nodes.len() {
                break;
            }
            digits[i] = 0;
            i += 1;
        }
        if i == classes.len() {
            break;
        }
        for (k, &c) in classes.iter().enumerate() {
            choice.insert(c, egraph[c].nodes[digits[k]].clone());
        }
        if let Some(c) = dag_cost(egraph, &choice, roots, cost)
            && c < best.0
        {
            best = (c, choice.clone());
        }
    }
    Some(Extraction { cost: best.0, choice: best.1 })
}
