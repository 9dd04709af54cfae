//! Factoring a common operand out of a sum: `a c + b c = (a + b) c` for elementwise products
//! and matrix products. Only the factoring direction is written: it never adds work.

use egg::Id;
use saturn_ir::{BinaryOp, Op};

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    let rule = |name, find| Rule { name, family: Family::Distributive, roots: &["add"], find };
    vec![rule("factor-mul", factor_mul), rule("factor-matmul", factor_matmul)]
}

/// `x*c + y*c = (x + y)*c`, with the common factor in either position of either product.
fn factor_mul(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for l in nodes_named(eg, node.children[0], "mul") {
        for r in nodes_named(eg, node.children[1], "mul") {
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                if eg.find(l.children[i]) != eg.find(r.children[j]) {
                    continue;
                }
                let mut t = TermBuilder::default();
                let sum = t.add(
                    Op::Binary(BinaryOp::Add),
                    vec![Arg::Class(l.children[1 - i]), Arg::Class(r.children[1 - j])],
                );
                t.add(Op::Binary(BinaryOp::Mul), vec![sum, Arg::Class(l.children[i])]);
                terms.push(t.finish());
            }
        }
    }
    terms
}

/// `a b + a c = a (b + c)` and `a c + b c = (a + b) c` for matrix products.
fn factor_matmul(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for l in nodes_named(eg, node.children[0], "matmul") {
        for r in nodes_named(eg, node.children[1], "matmul") {
            let add = |x: Id, y: Id, t: &mut TermBuilder| {
                t.add(Op::Binary(BinaryOp::Add), vec![Arg::Class(x), Arg::Class(y)])
            };
            if eg.find(l.children[0]) == eg.find(r.children[0]) {
                let mut t = TermBuilder::default();
                let sum = add(l.children[1], r.children[1], &mut t);
                t.add(Op::MatMul, vec![Arg::Class(l.children[0]), sum]);
                terms.push(t.finish());
            }
            if eg.find(l.children[1]) == eg.find(r.children[1]) {
                let mut t = TermBuilder::default();
                let sum = add(l.children[0], r.children[0], &mut t);
                t.add(Op::MatMul, vec![sum, Arg::Class(l.children[1])]);
                terms.push(t.finish());
            }
        }
    }
    terms
}
