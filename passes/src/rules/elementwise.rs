//! Elementwise chains fused into one `fused_elementwise`: an elementwise node whose operand is
//! computed by another elementwise node absorbs it, one operand at a time, so longer chains
//! fuse over iterations. f32 only (fusing skips the rounding that f16/bf16 nodes do between
//! ops), and expressions stay small.

use egg::Id;
use saturn_ir::{DType, ElementwiseExpr, Op};

use super::{Arg, Family, Rule, Term, TermBuilder, ty};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

/// The largest fused expression, in ops: bounds recomputation and e-graph growth.
const MAX_FUSED_OPS: usize = 16;

pub(super) fn rules() -> Vec<Rule> {
    const ELEMENTWISE: &[&str] = &[
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "neg",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "recip",
        "sigmoid",
        "silu",
        "tanh",
        "fused_elementwise",
    ];
    vec![Rule { name: "fuse-elementwise", family: Family::Elementwise, roots: ELEMENTWISE, find: fuse }]
}

/// Inlines, into `node`, the first elementwise producer (or f32 scalar) among its operands.
fn fuse(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    let Some(expr) = node.op.op.elementwise_expr() else { return vec![] };
    if ty(eg, class).dtype != DType::F32 {
        return vec![];
    }
    for (k, &child) in node.children.iter().enumerate() {
        let child = eg.find(child);
        if child == eg.find(class) {
            continue;
        }
        for inner in &eg[child].nodes {
            let inlined = match &inner.op.op {
                Op::Scalar { value } if ty(eg, child).dtype == DType::F32 => ElementwiseExpr::Const(*value),
                _ => match inner.op.op.elementwise_expr() {
                    Some(e) if !inner.children.iter().any(|&c| eg.find(c) == eg.find(class)) => e,
                    _ => continue,
                },
            };
            // Operands: the node's own (but `k`), then the producer's, each class once.
            let mut operands: Vec<Id> = Vec::new();
            let mut slot = |c: Id| {
                let c = eg.find(c);
                operands.iter().position(|&o| o == c).unwrap_or_else(|| {
                    operands.push(c);
                    operands.len() - 1
                })
            };
            let outer_slots: Vec<Option<usize>> =
                node.children.iter().enumerate().map(|(i, &c)| (i != k).then(|| slot(c))).collect();
            let inner_slots: Vec<usize> = inner.children.iter().map(|&c| slot(c)).collect();
            let inner_expr = inlined.map_inputs(&|i| ElementwiseExpr::Input(inner_slots[i]));
            let fused = expr.map_inputs(&|i| match outer_slots[i] {
                Some(s) => ElementwiseExpr::Input(s),
                None => inner_expr.clone(),
            });
            if fused.op_count() > MAX_FUSED_OPS {
                return vec![];
            }
            let mut t = TermBuilder::default();
            t.add(Op::FusedElementwise { expr: fused }, operands.into_iter().map(Arg::Class).collect());
            return vec![t.finish()];
        }
    }
    vec![]
}
