//! SiLU-times-mul folded into the epilogue of the gate and up linears (the SwiGLU MLP).

use egg::Id;
use saturn_ir::{ElementwiseExpr, Op, UnaryOp};

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule { name: "silu-mul-into-linears", family: Family::GatedLinear, roots: &["mul"], find: from_mul },
        Rule {
            name: "fused-silu-mul-into-linears",
            family: Family::GatedLinear,
            roots: &["fused_elementwise"],
            find: from_fused,
        },
    ]
}

/// `silu(linear(x, wg)) * linear(x, wu)` (either order) `= gated_linear(x, wg, wu)`.
fn from_mul(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for (gate_side, up_side) in [(0, 1), (1, 0)] {
        for silu in nodes_named(eg, node.children[gate_side], "silu") {
            terms.extend(gated(eg, silu.children[0], node.children[up_side]));
        }
    }
    terms
}

/// The same product after elementwise fusion: `mul(silu($0), $1)` or `mul($1, silu($0))`.
fn from_fused(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    use ElementwiseExpr::{Binary, Input, Unary};
    let Some(Binary(saturn_ir::BinaryOp::Mul, a, b)) = node.op.op.elementwise_expr() else { return vec![] };
    let (gate, up) = match (*a, *b) {
        (Unary(UnaryOp::Silu, g), u) | (u, Unary(UnaryOp::Silu, g)) => (*g, u),
        _ => return vec![],
    };
    match (gate, up) {
        (Input(g), Input(u)) if node.children.len() == 2 && g != u => {
            gated(eg, node.children[g], node.children[u])
        }
        _ => vec![],
    }
}

/// Terms for `silu(gate) * up` where both classes hold linears of one input.
fn gated(eg: &TensorGraph, gate: Id, up: Id) -> Vec<Term> {
    let mut terms = Vec::new();
    for g in nodes_named(eg, gate, "linear") {
        for u in nodes_named(eg, up, "linear") {
            if eg.find(g.children[0]) != eg.find(u.children[0]) {
                continue;
            }
            let mut t = TermBuilder::default();
            let args = vec![Arg::Class(g.children[0]), Arg::Class(g.children[1]), Arg::Class(u.children[1])];
            t.add(Op::GatedLinear, args);
            terms.push(t.finish());
        }
    }
    terms
}
