//! Matmul associativity, transposes of products, linear as matmul, and permute/reshape algebra.
//! Conditions on shapes are left to type checking of the proposed terms: a term that does not
//! type is dropped.

use egg::Id;
use saturn_ir::Op;

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named, perm_of, ty};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    let rule = |name, root, find| Rule { name, family: Family::Algebra, roots: root, find };
    vec![
        rule("permute-permute", &["permute"], permute_permute),
        rule("permute-identity", &["permute"], permute_identity),
        rule("reshape-reshape", &["reshape"], reshape_reshape),
        rule("reshape-identity", &["reshape"], reshape_identity),
        rule("matmul-assoc-right", &["matmul"], matmul_assoc_right),
        rule("matmul-assoc-left", &["matmul"], matmul_assoc_left),
        rule("transpose-of-matmul", &["permute"], transpose_of_matmul),
        rule("linear-as-matmul", &["linear"], linear_as_matmul),
        rule("matmul-as-linear", &["matmul"], matmul_as_linear),
    ]
}

/// The permutation swapping the last two of `rank` axes.
fn swap_last_two(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(rank - 2, rank - 1);
    p
}

/// `permute(permute(x, p), q) = permute(x, p∘q)`: axis `i` of the result is axis `p[q[i]]` of x.
fn permute_permute(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let q = perm_of(node);
    nodes_named(eg, node.children[0], "permute")
        .map(|inner| {
            let p = perm_of(inner);
            let composed: Vec<usize> = q.iter().map(|&i| p[i]).collect();
            let mut t = TermBuilder::default();
            t.add(Op::Permute { perm: composed }, vec![Arg::Class(inner.children[0])]);
            t.finish()
        })
        .collect()
}

/// `permute(x, identity) = x`.
fn permute_identity(_: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let p = perm_of(node);
    if p.iter().enumerate().all(|(i, &a)| i == a) { vec![Term::Class(node.children[0])] } else { vec![] }
}

/// `reshape(reshape(x, s1), s2) = reshape(x, s2)`.
fn reshape_reshape(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    nodes_named(eg, node.children[0], "reshape")
        .map(|inner| {
            let mut t = TermBuilder::default();
            t.add(node.op.op.clone(), vec![Arg::Class(inner.children[0])]);
            t.finish()
        })
        .collect()
}

/// `reshape(x, shape of x) = x`.
fn reshape_identity(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    if ty(eg, node.children[0]) == ty(eg, class) { vec![Term::Class(node.children[0])] } else { vec![] }
}

/// `(a b) c = a (b c)`.
fn matmul_assoc_right(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let c = node.children[1];
    nodes_named(eg, node.children[0], "matmul")
        .map(|ab| {
            let mut t = TermBuilder::default();
            let bc = t.add(Op::MatMul, vec![Arg::Class(ab.children[1]), Arg::Class(c)]);
            t.add(Op::MatMul, vec![Arg::Class(ab.children[0]), bc]);
            t.finish()
        })
        .collect()
}

/// `a (b c) = (a b) c`.
fn matmul_assoc_left(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let a = node.children[0];
    nodes_named(eg, node.children[1], "matmul")
        .map(|bc| {
            let mut t = TermBuilder::default();
            let ab = t.add(Op::MatMul, vec![Arg::Class(a), Arg::Class(bc.children[0])]);
            t.add(Op::MatMul, vec![ab, Arg::Class(bc.children[1])]);
            t.finish()
        })
        .collect()
}

/// `(a b)^T = b^T a^T` over the last two axes of each operand (batch axes broadcast as before).
fn transpose_of_matmul(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    let rank = ty(eg, class).rank();
    if rank < 2 || perm_of(node) != swap_last_two(rank) {
        return vec![];
    }
    nodes_named(eg, node.children[0], "matmul")
        .map(|ab| {
            let mut t = TermBuilder::default();
            let swap = |c: Id| Op::Permute { perm: swap_last_two(ty(eg, c).rank()) };
            let bt = t.add(swap(ab.children[1]), vec![Arg::Class(ab.children[1])]);
            let at = t.add(swap(ab.children[0]), vec![Arg::Class(ab.children[0])]);
            t.add(Op::MatMul, vec![bt, at]);
            t.finish()
        })
        .collect()
}

/// `linear(x, w) = x w^T` as a matmul, for `x` of rank 2 or more.
fn linear_as_matmul(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    if ty(eg, node.children[0]).rank() < 2 {
        return vec![];
    }
    let mut t = TermBuilder::default();
    let wt = t.add(Op::Permute { perm: vec![1, 0] }, vec![Arg::Class(node.children[1])]);
    t.add(Op::MatMul, vec![Arg::Class(node.children[0]), wt]);
    vec![t.finish()]
}

/// `x permute(w, [1, 0]) = linear(x, w)` for a rank-2 `w`.
fn matmul_as_linear(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    nodes_named(eg, node.children[1], "permute")
        .filter(|p| perm_of(p) == [1, 0])
        .map(|p| {
            let mut t = TermBuilder::default();
            t.add(Op::Linear, vec![Arg::Class(node.children[0]), Arg::Class(p.children[0])]);
            t.finish()
        })
        .collect()
}
