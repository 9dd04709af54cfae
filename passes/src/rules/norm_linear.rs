//! RMSNorm folded into the prologue of the linear that consumes it.

use egg::Id;
use saturn_ir::Op;

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    vec![Rule { name: "rms-norm-into-linear", family: Family::NormLinear, roots: &["linear"], find }]
}

/// `linear(rms_norm(x, g), w) = rms_norm_linear(x, g, w)`.
fn find(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    nodes_named(eg, node.children[0], "rms_norm")
        .filter_map(|norm| {
            let Op::RmsNorm { eps } = norm.op.op else { return None };
            let mut t = TermBuilder::default();
            let args = vec![
                Arg::Class(norm.children[0]),
                Arg::Class(norm.children[1]),
                Arg::Class(node.children[1]),
            ];
            t.add(Op::RmsNormLinear { eps }, args);
            Some(t.finish())
        })
        .collect()
}
