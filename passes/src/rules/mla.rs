//! The algebra that turns naive multi-head latent attention into the absorbed form (DESIGN.md
//! §6), one general identity per rule, so the e-graph finds absorption on its own and the cost
//! model decides where it pays:
//!
//! - a head-reshape of `c W^T` is `c` times the reshaped weight (`linear-head-split`), and a slice
//!   of a product is the product with the sliced operand (`slice-of-matmul`);
//! - `concat(a, b) concat(c, d)^T = a c^T + b d^T` over a split contraction
//!   (`matmul-split-contraction`), with permutes moved through concats, slices and expands;
//! - a broadcast operand of a matmul need not be materialised (`matmul-unexpand`).
//!
//! With associativity (`algebra.rs`) this gives `q_nope (c W_UK^T)^T = (q_nope W_UK) c^T` and
//! `P (c W_UV^T) = (P c) W_UV^T`: attention over the cached latent.

use egg::Id;
use saturn_ir::{BinaryOp, Dim, Op};

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named, perm_of, scalar_value, ty};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    let rule = |name, roots, find| Rule { name, family: Family::Mla, roots, find };
    vec![
        rule("permute-concat", &["permute"], permute_concat),
        rule("slice-of-permute", &["slice"], slice_of_permute),
        rule("permute-expand", &["permute"], permute_expand),
        rule("linear-head-split", &["reshape"], linear_head_split),
        rule("linear-head-merge", &["linear"], linear_head_merge),
        rule("slice-of-matmul", &["slice"], slice_of_matmul),
        rule("matmul-split-contraction", &["matmul"], matmul_split_contraction),
        rule("matmul-unexpand", &["matmul"], matmul_unexpand),
        rule("mla-decode-attention", &["matmul"], mla_decode_attention),
    ]
}

/// `permute(concat(x_0, x_1, ..; axis), p) = concat(permute(x_i, p); i with p[i] == axis)`.
fn permute_concat(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let p = perm_of(node);
    nodes_named(eg, node.children[0], "concat")
        .filter_map(|c| {
            let Op::Concat { axis } = c.op.op else { return None };
            let new_axis = p.iter().position(|&a| a == axis)?;
            let mut t = TermBuilder::default();
            let parts: Vec<Arg> = c
                .children
                .iter()
                .map(|&x| t.add(Op::Permute { perm: p.to_vec() }, vec![Arg::Class(x)]))
                .collect();
            t.add(Op::Concat { axis: new_axis }, parts);
            Some(t.finish())
        })
        .collect()
}

/// `slice(permute(x, p), axis, s, e) = permute(slice(x, p[axis], s, e), p)`.
fn slice_of_permute(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let Op::Slice { axis, start, end } = &node.op.op else { return vec![] };
    nodes_named(eg, node.children[0], "permute")
        .filter_map(|permute| {
            let p = perm_of(permute);
            let inner_axis = *p.get(*axis)?;
            let mut t = TermBuilder::default();
            let sliced = t.add(
                Op::Slice { axis: inner_axis, start: start.clone(), end: end.clone() },
                vec![Arg::Class(permute.children[0])],
            );
            t.add(Op::Permute { perm: p.to_vec() }, vec![sliced]);
            Some(t.finish())
        })
        .collect()
}

/// `permute(expand(x, shape), p) = expand(permute(x, p), p(shape))` for `x` of the same rank.
fn permute_expand(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let p = perm_of(node);
    nodes_named(eg, node.children[0], "expand")
        .filter_map(|expand| {
            let Op::Expand { shape } = &expand.op.op else { return None };
            if ty(eg, expand.children[0]).rank() != shape.len() {
                return None;
            }
            let permuted: Vec<Dim> = p.iter().map(|&a| shape.get(a).cloned()).collect::<Option<_>>()?;
            let mut t = TermBuilder::default();
            let inner = t.add(Op::Permute { perm: p.to_vec() }, vec![Arg::Class(expand.children[0])]);
            t.add(Op::Expand { shape: permuted }, vec![inner]);
            Some(t.finish())
        })
        .collect()
}

/// `reshape(linear(x [T, K], w [H*N, K]), [T, H, N]) =
/// permute(matmul(x, permute(reshape(w, [H, N, K]), [0, 2, 1])), [1, 0, 2])`: a head-reshape
/// of `x w^T` is `x` times the per-head weight.
fn linear_head_split(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    let out = ty(eg, class);
    let [tokens, heads, per_head] = out.shape.as_slice() else { return vec![] };
    nodes_named(eg, node.children[0], "linear")
        .filter_map(|lin| {
            let (x, w) = (lin.children[0], lin.children[1]);
            let (xt, wt) = (ty(eg, x), ty(eg, w));
            if xt.rank() != 2 || &xt.shape[0] != tokens {
                return None;
            }
            let k = wt.shape.get(1)?.clone();
            let mut t = TermBuilder::default();
            let w3 =
                t.add(Op::Reshape { shape: vec![heads.clone(), per_head.clone(), k] }, vec![Arg::Class(w)]);
            let w3t = t.add(Op::Permute { perm: vec![0, 2, 1] }, vec![w3]);
            let product = t.add(Op::MatMul, vec![Arg::Class(x), w3t]);
            t.add(Op::Permute { perm: vec![1, 0, 2] }, vec![product]);
            Some(t.finish())
        })
        .collect()
}

/// `linear(reshape(permute(x [H, S, N], [1, 0, 2]), [S, H*N]), w [D, H*N]) =
/// reduce_sum(matmul(x, permute(reshape(w, [D, H, N]), [1, 2, 0])), 0)`: a product with
/// concatenated heads is the sum of per-head products (how `W_UV` can meet `o_proj`).
fn linear_head_merge(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let (merged, w) = (node.children[0], node.children[1]);
    let d = match ty(eg, w).shape.first() {
        Some(d) => d.clone(),
        None => return vec![],
    };
    let mut terms = Vec::new();
    for reshape in nodes_named(eg, merged, "reshape") {
        for permute in nodes_named(eg, reshape.children[0], "permute") {
            if perm_of(permute) != [1, 0, 2] {
                continue;
            }
            let x = permute.children[0];
            let [heads, _, per_head] = ty(eg, x).shape.as_slice() else { continue };
            if ty(eg, merged).rank() != 2 {
                continue;
            }
            let mut t = TermBuilder::default();
            let w3 = t.add(
                Op::Reshape { shape: vec![d.clone(), heads.clone(), per_head.clone()] },
                vec![Arg::Class(w)],
            );
            let w3t = t.add(Op::Permute { perm: vec![1, 2, 0] }, vec![w3]);
            let per_head_out = t.add(Op::MatMul, vec![Arg::Class(x), w3t]);
            t.add(Op::Reduce { op: saturn_ir::ReduceOp::Sum, axis: 0, keepdim: false }, vec![per_head_out]);
            terms.push(t.finish());
        }
    }
    terms
}

/// A slice of a product along its last axis slices the right operand's last axis; along its
/// row axis, the left operand's row axis.
fn slice_of_matmul(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    let Op::Slice { axis, start, end } = &node.op.op else { return vec![] };
    let rank = ty(eg, class).rank();
    nodes_named(eg, node.children[0], "matmul")
        .filter_map(|m| {
            let (a, b) = (m.children[0], m.children[1]);
            let mut t = TermBuilder::default();
            let slice = |axis: usize| Op::Slice { axis, start: start.clone(), end: end.clone() };
            if *axis + 1 == rank {
                let sliced = t.add(slice(ty(eg, b).rank() - 1), vec![Arg::Class(b)]);
                t.add(Op::MatMul, vec![Arg::Class(a), sliced]);
            } else if *axis + 2 == rank {
                let sliced = t.add(slice(ty(eg, a).rank() - 2), vec![Arg::Class(a)]);
                t.add(Op::MatMul, vec![sliced, Arg::Class(b)]);
            } else {
                return None;
            }
            Some(t.finish())
        })
        .collect()
}

/// `matmul(concat(a_i; last axis), concat(b_i; row axis)) = sum_i matmul(a_i, b_i)` when the
/// parts split the contraction alike.
fn matmul_split_contraction(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let (a, b) = (node.children[0], node.children[1]);
    let (ra, rb) = (ty(eg, a).rank(), ty(eg, b).rank());
    let mut terms = Vec::new();
    for left in nodes_named(eg, a, "concat") {
        for right in nodes_named(eg, b, "concat") {
            let aligned = left.op.op == (Op::Concat { axis: ra - 1 })
                && right.op.op == (Op::Concat { axis: rb - 2 })
                && left.children.len() == right.children.len()
                && left.children.iter().zip(&right.children).all(|(&l, &r)| {
                    ty(eg, l).shape.last() == ty(eg, r).shape.get(ty(eg, r).rank().wrapping_sub(2))
                });
            if !aligned {
                continue;
            }
            let mut t = TermBuilder::default();
            let mut sum: Option<Arg> = None;
            for (&l, &r) in left.children.iter().zip(&right.children) {
                let product = t.add(Op::MatMul, vec![Arg::Class(l), Arg::Class(r)]);
                sum = Some(match sum {
                    None => product,
                    Some(s) => t.add(Op::Binary(BinaryOp::Add), vec![s, product]),
                });
            }
            terms.push(t.finish());
        }
    }
    terms
}

/// `matmul(a, expand(b)) = matmul(a, b)` (and on the left) when broadcasting gives the same
/// result: the matched class's type is checked when the term is added.
fn matmul_unexpand(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for side in [0, 1] {
        for expand in nodes_named(eg, node.children[side], "expand") {
            let inner = expand.children[0];
            let (it, et) = (ty(eg, inner), ty(eg, node.children[side]));
            // Only batch axes may be broadcast: the matrix axes stay as they are.
            if it.rank() < 2 || it.shape[it.rank() - 2..] != et.shape[et.rank() - 2..] {
                continue;
            }
            let mut args = vec![Arg::Class(node.children[0]), Arg::Class(node.children[1])];
            args[side] = Arg::Class(inner);
            let mut t = TermBuilder::default();
            t.add(Op::MatMul, args);
            terms.push(t.finish());
        }
    }
    terms
}

/// The most new tokens (`S`, a constant) the fused decode attention is formed for.
const MAX_DECODE_QUERIES: u64 = 16;

/// `matmul(softmax(causal_mask((linear(q_latent, latent) + matmul(q_rope, k_pe^T)) * scale)),
/// latent) = mla_decode_attention(q_latent, q_rope, latent, k_pe)`: absorbed attention over the
/// latent cache for a few new tokens (`S` a constant, decode or speculative decode).
fn mla_decode_attention(eg: &TensorGraph, class: Id, node: &TensorNode) -> Vec<Term> {
    let (probs, latent) = (node.children[0], node.children[1]);
    let out = ty(eg, class);
    let queries = out.shape.get(1).and_then(Dim::as_const);
    if out.rank() != 3 || queries.is_none_or(|s| s > MAX_DECODE_QUERIES) || ty(eg, latent).rank() != 2 {
        return vec![];
    }
    let mut terms = Vec::new();
    for softmax in nodes_named(eg, probs, "softmax").filter(|n| n.op.op == (Op::Softmax { axis: 2 })) {
        for mask in nodes_named(eg, softmax.children[0], "causal_mask") {
            for scaled in nodes_named(eg, mask.children[0], "mul") {
                for (sum_side, scale_side) in [(0, 1), (1, 0)] {
                    let Some(scale) = scalar_value(eg, scaled.children[scale_side]) else { continue };
                    for sum in nodes_named(eg, scaled.children[sum_side], "add") {
                        for (l, r) in [(0, 1), (1, 0)] {
                            let found = (|| {
                                let nope = nodes_named(eg, sum.children[l], "linear")
                                    .find(|n| eg.find(n.children[1]) == eg.find(latent))?;
                                let rope = nodes_named(eg, sum.children[r], "matmul")
                                    .find_map(|m| Some((m.children[0], rope_key(eg, m.children[1])?)))?;
                                Some((nope.children[0], rope.0, rope.1))
                            })();
                            if let Some((q_latent, q_rope, k_pe)) = found {
                                let mut t = TermBuilder::default();
                                let args = [q_latent, q_rope, latent, k_pe].map(Arg::Class).to_vec();
                                t.add(Op::MlaDecodeAttention { scale }, args);
                                terms.push(t.finish());
                            }
                        }
                    }
                }
            }
        }
    }
    terms
}

/// The `[T, R]` key of `permute(reshape(k_pe, [T, 1, R]), [1, 2, 0])` (the shared rope key as a
/// `[1, R, T]` operand).
fn rope_key(eg: &TensorGraph, class: Id) -> Option<Id> {
    nodes_named(eg, class, "permute").find_map(|p| {
        if perm_of(p) != [1, 2, 0] {
            return None;
        }
        let column = nodes_named(eg, p.children[0], "reshape").next()?;
        let key = column.children[0];
        (ty(eg, key).rank() == 2).then_some(key)
    })
}
