//! Rewrite rules, one file per family. See `README.md` beside this file for how to write one.
//!
//! A [`Rule`] looks at one e-node (of an op named in `roots`) in its class and proposes
//! [`Term`]s equal to that class. The saturation loop type-checks and adds each term and
//! unions it with the class; a term that does not type is dropped, so a rule whose shape
//! condition does not hold leaves the graph unchanged.

mod algebra;
mod distributive;
mod elementwise;
mod gated_linear;
mod mla;
mod moe;
mod norm_linear;

use egg::Id;
use saturn_ir::{Op, TensorType};
use serde::Serialize;

use crate::analysis::TensorGraph;
use crate::lang::{OpKey, TensorNode};

/// The families rules come in; `explain` reports time and firings per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Matmul associativity, transpose and reshape algebra.
    Algebra,
    /// Factoring common operands out of sums.
    Distributive,
    /// Elementwise chains fused into one `fused_elementwise`.
    Elementwise,
    /// RMSNorm folded into the next linear's prologue.
    NormLinear,
    /// SiLU-times-mul folded into the gate/up linears' epilogue.
    GatedLinear,
    /// The router fused into `router_topk`, experts into `grouped_experts`.
    Moe,
    /// The algebra of MLA absorption.
    Mla,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Algebra => "algebra",
            Family::Distributive => "distributive",
            Family::Elementwise => "elementwise",
            Family::NormLinear => "norm_linear",
            Family::GatedLinear => "gated_linear",
            Family::Moe => "moe",
            Family::Mla => "mla",
        }
    }
}

/// A named rewrite: for an e-node whose op is one of `roots`, the terms equal to its class.
pub struct Rule {
    pub name: &'static str,
    pub family: Family,
    pub roots: &'static [&'static str],
    pub find: fn(&TensorGraph, Id, &TensorNode) -> Vec<Term>,
}

/// An operand of a term node: an existing class, or an earlier node of the same term.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Class(Id),
    Node(usize),
}

/// What a rule proposes: an existing class, or new nodes (the last one is the root).
#[derive(Clone, Debug)]
pub enum Term {
    Class(Id),
    Nodes(Vec<(OpKey, Vec<Arg>)>),
}

/// Builds a [`Term::Nodes`].
#[derive(Default)]
pub struct TermBuilder {
    nodes: Vec<(OpKey, Vec<Arg>)>,
}

impl TermBuilder {
    pub fn add(&mut self, op: Op, args: Vec<Arg>) -> Arg {
        self.nodes.push((OpKey::op(op), args));
        Arg::Node(self.nodes.len() - 1)
    }

    pub fn finish(self) -> Term {
        Term::Nodes(self.nodes)
    }
}

/// Every rule, in a fixed order.
pub fn all_rules() -> Vec<Rule> {
    let mut rules = algebra::rules();
    rules.extend(distributive::rules());
    rules.extend(elementwise::rules());
    rules.extend(norm_linear::rules());
    rules.extend(gated_linear::rules());
    rules.extend(moe::rules());
    rules.extend(mla::rules());
    rules
}

/// The names of every rule, sorted, each once.
pub fn all_rule_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = all_rules().iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    names
}

/// The nodes of `class` whose op is named `name`, in e-graph order.
pub(crate) fn nodes_named<'a>(
    eg: &'a TensorGraph,
    class: Id,
    name: &'a str,
) -> impl Iterator<Item = &'a TensorNode> {
    eg[class].nodes.iter().filter(move |n| n.name() == name)
}

pub(crate) fn ty(eg: &TensorGraph, class: Id) -> &TensorType {
    &eg[class].data.ty
}

/// The permutation of a `permute` node (empty for any other op).
pub(crate) fn perm_of(node: &TensorNode) -> &[usize] {
    match &node.op.op {
        Op::Permute { perm } => perm,
        _ => &[],
    }
}

/// The value of a scalar in `class`, if it holds one.
pub(crate) fn scalar_value(eg: &TensorGraph, class: Id) -> Option<f64> {
    eg[class].nodes.iter().find_map(|n| match n.op.op {
        Op::Scalar { value } => Some(value),
        _ => None,
    })
}

/// Whether two class ids name the same class.
pub(crate) fn same(eg: &TensorGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}
