//! MoE routing: the router written out with mid-level ops (scoring, bias, group-limited
//! selection, top-k, normalisation, scaling) becomes one `router_topk`, in steps that each
//! match a few ops; the dense, masked expert computation weighted by a `router_topk` becomes one
//! `grouped_experts` (each expert only on its tokens), and a shared expert joins it.
//! Any expert count, group count, top-k and widths.

use egg::Id;
use saturn_ir::{BinaryOp, ElementwiseExpr, GroupScore, Op, ReduceOp, Router, RouterScoring, UnaryOp};

use super::{Arg, Family, Rule, Term, TermBuilder, nodes_named, perm_of, same, scalar_value, ty};
use crate::analysis::TensorGraph;
use crate::lang::TensorNode;

pub(super) fn rules() -> Vec<Rule> {
    let rule = |name, roots, find| Rule { name, family: Family::Moe, roots, find };
    vec![
        rule("router-topk", &["where"], router_topk),
        rule("router-normalize", &["div"], router_normalize),
        rule("router-scale", &["mul"], router_scale),
        rule("grouped-experts", &["reduce_sum"], grouped_experts),
        rule("shared-expert-into-grouped", &["add"], shared_expert),
    ]
}

/// `scores = softmax(logits, 1)` or `sigmoid(logits)` for logits `[T, E]`.
fn scoring_of(eg: &TensorGraph, scores: Id) -> Option<(RouterScoring, Id)> {
    eg[scores].nodes.iter().find_map(|n| match n.op.op {
        Op::Softmax { axis: 1 } if ty(eg, n.children[0]).rank() == 2 => {
            Some((RouterScoring::Softmax, n.children[0]))
        }
        Op::Unary(UnaryOp::Sigmoid) if ty(eg, n.children[0]).rank() == 2 => {
            Some((RouterScoring::Sigmoid, n.children[0]))
        }
        _ => None,
    })
}

/// The biased scores `b`: the scores themselves, or `scores + bias` with a bias `[E]`.
fn biased_of(eg: &TensorGraph, b: Id, scores: Id) -> Option<Option<Id>> {
    if same(eg, b, scores) {
        return Some(None);
    }
    nodes_named(eg, b, "add").find_map(|n| {
        let bias = if same(eg, n.children[0], scores) { n.children[1] } else { n.children[0] };
        let is_bias =
            (same(eg, n.children[0], scores) || same(eg, n.children[1], scores)) && ty(eg, bias).rank() == 1;
        is_bias.then_some(Some(bias))
    })
}

/// Group-limited candidates: `where(kept_experts, b, fill)` where `kept_experts` spreads the
/// top `topk_group` groups of `b` over their experts. Returns (b, groups, kept, score, fill).
fn group_limited(eg: &TensorGraph, candidates: Id) -> Option<(Id, u64, u64, GroupScore, f64)> {
    nodes_named(eg, candidates, "where").find_map(|w| {
        let (kept, b, fill) = (w.children[0], w.children[1], scalar_value(eg, w.children[2])?);
        let spread = nodes_named(eg, kept, "reshape").next()?.children[0];
        let column = nodes_named(eg, spread, "expand").next()?.children[0];
        let mask = nodes_named(eg, column, "reshape").next()?.children[0];
        let top = nodes_named(eg, mask, "topk_mask").next()?;
        let Op::TopKMask { k: topk_group } = top.op.op else { return None };
        let group_scores = top.children[0];
        let n_group = ty(eg, group_scores).shape.get(1)?.as_const()?;
        let score = eg[group_scores].nodes.iter().find_map(|g| match g.op.op {
            Op::Reduce { op: ReduceOp::Max, axis: 2, keepdim: false } if grouped_of(eg, g.children[0], b) => {
                Some(GroupScore::Max)
            }
            Op::Reduce { op: ReduceOp::Sum, axis: 2, keepdim: false } => {
                let top2 = nodes_named(eg, g.children[0], "where").next()?;
                let mask = nodes_named(eg, top2.children[0], "topk_mask").next()?;
                let two = matches!(mask.op.op, Op::TopKMask { k: 2 });
                let ok = two
                    && scalar_value(eg, top2.children[2]) == Some(0.0)
                    && same(eg, mask.children[0], top2.children[1])
                    && grouped_of(eg, top2.children[1], b);
                ok.then_some(GroupScore::SumTop2)
            }
            _ => None,
        })?;
        Some((b, n_group, topk_group, score, fill))
    })
}

/// Whether `grouped` is `reshape(b)` into `[T, groups, experts per group]`.
fn grouped_of(eg: &TensorGraph, grouped: Id, b: Id) -> bool {
    ty(eg, grouped).rank() == 3 && nodes_named(eg, grouped, "reshape").any(|r| same(eg, r.children[0], b))
}

/// `where(topk_mask(candidates, k), source, 0)` over router scores `= router_topk(...)`.
fn router_topk(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let (chosen, source) = (node.children[0], node.children[1]);
    if scalar_value(eg, node.children[2]) != Some(0.0) {
        return vec![];
    }
    let mut terms = Vec::new();
    for top in nodes_named(eg, chosen, "topk_mask") {
        let Op::TopKMask { k } = top.op.op else { continue };
        let candidates = top.children[0];
        let (b, n_group, topk_group, group_score, masked_fill) =
            group_limited(eg, candidates).unwrap_or((candidates, 1, 1, GroupScore::Max, 0.0));
        // The scores are the source, or b, or an operand of a biasing add in b.
        let mut score_classes = vec![source, b];
        score_classes.extend(nodes_named(eg, b, "add").flat_map(|a| a.children.clone()));
        let Some((scores, (scoring, logits), bias)) = score_classes.iter().find_map(|&s| {
            let scoring = scoring_of(eg, s)?;
            Some((s, scoring, biased_of(eg, b, s)?))
        }) else {
            continue;
        };
        let weights_from_candidates = if same(eg, source, scores) {
            false
        } else if same(eg, source, candidates) {
            true
        } else {
            continue;
        };
        let router = Router {
            scoring,
            k,
            n_group,
            topk_group,
            group_score,
            masked_fill,
            weights_from_candidates,
            normalize: false,
            scale: 1.0,
        };
        let mut args = vec![Arg::Class(logits)];
        args.extend(bias.map(Arg::Class));
        let mut t = TermBuilder::default();
        t.add(Op::RouterTopK(router), args);
        terms.push(t.finish());
    }
    terms
}

/// A plain router (not yet normalised or scaled) in `class`, with its operands.
fn plain_router(eg: &TensorGraph, class: Id, want_normalized: bool) -> Option<(Router, Vec<Id>)> {
    eg[class].nodes.iter().find_map(|n| match n.op.op {
        Op::RouterTopK(r) if r.normalize == want_normalized && r.scale == 1.0 => {
            Some((r, n.children.clone()))
        }
        _ => None,
    })
}

/// `w / (reduce_sum(w, 1, keepdim) + 1e-20)` of a router's weights `= router_topk{normalize}`.
fn router_normalize(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let (w, denominator) = (node.children[0], node.children[1]);
    let Some((router, args)) = plain_router(eg, w, false) else { return vec![] };
    let matches = nodes_named(eg, denominator, "add").any(|a| {
        let (sum, eps) = (a.children[0], a.children[1]);
        scalar_value(eg, eps) == Some(1e-20)
            && eg[sum].nodes.iter().any(|s| {
                s.op.op == (Op::Reduce { op: ReduceOp::Sum, axis: 1, keepdim: true })
                    && same(eg, s.children[0], w)
            })
    });
    if !matches {
        return vec![];
    }
    let mut t = TermBuilder::default();
    t.add(Op::RouterTopK(Router { normalize: true, ..router }), args.into_iter().map(Arg::Class).collect());
    vec![t.finish()]
}

/// `router_topk(...) * c` for a scalar `c` `= router_topk{scale: c}`.
fn router_scale(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for (w, c) in [(node.children[0], node.children[1]), (node.children[1], node.children[0])] {
        let Some(scale) = scalar_value(eg, c) else { continue };
        for normalized in [false, true] {
            if let Some((router, args)) = plain_router(eg, w, normalized) {
                let mut t = TermBuilder::default();
                t.add(Op::RouterTopK(Router { scale, ..router }), args.into_iter().map(Arg::Class).collect());
                terms.push(t.finish());
            }
        }
    }
    terms
}

/// The stacked weight `w` of `permute(w, [0, 2, 1])` in `class`.
fn transposed_stack(eg: &TensorGraph, class: Id) -> Option<Id> {
    nodes_named(eg, class, "permute").find_map(|p| (perm_of(p) == [0, 2, 1]).then_some(p.children[0]))
}

/// `matmul(x, permute(w, [0, 2, 1]))` in `class`: every expert on every token.
fn expert_product(eg: &TensorGraph, class: Id) -> Option<(Id, Id)> {
    nodes_named(eg, class, "matmul").find_map(|m| Some((m.children[0], transposed_stack(eg, m.children[1])?)))
}

/// The gate and up classes of `silu(gate) * up` in `class` (plain or fused).
fn silu_times(eg: &TensorGraph, class: Id) -> Option<(Id, Id)> {
    eg[class].nodes.iter().find_map(|n| match &n.op.op {
        Op::Binary(BinaryOp::Mul) => [(0, 1), (1, 0)].into_iter().find_map(|(g, u)| {
            let silu = nodes_named(eg, n.children[g], "silu").next()?;
            Some((silu.children[0], n.children[u]))
        }),
        Op::FusedElementwise { .. } => {
            use ElementwiseExpr::{Binary, Input, Unary};
            let Some(Binary(BinaryOp::Mul, a, b)) = n.op.op.elementwise_expr() else { return None };
            match (*a, *b) {
                (Unary(UnaryOp::Silu, g), Input(u)) | (Input(u), Unary(UnaryOp::Silu, g)) => match *g {
                    Input(g) if n.children.len() == 2 && g != u => Some((n.children[g], n.children[u])),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    })
}

/// `reduce_sum(down_e(silu(gate_e x) * up_e x) * routing^T[e, t, 1], axis 0)` with a
/// `router_topk` routing `= grouped_experts(x, routing, w_gate, w_up, w_down)`.
fn grouped_experts(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    if node.op.op != (Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }) {
        return vec![];
    }
    let mut terms = Vec::new();
    for weighted in nodes_named(eg, node.children[0], "mul") {
        for (out, column) in [(0, 1), (1, 0)] {
            let found = (|| {
                let routing_t = nodes_named(eg, weighted.children[column], "reshape").next()?.children[0];
                let routing =
                    nodes_named(eg, routing_t, "permute").find(|p| perm_of(p) == [1, 0])?.children[0];
                let k = eg[routing].nodes.iter().find_map(|n| match n.op.op {
                    Op::RouterTopK(r) => Some(r.k),
                    _ => None,
                })?;
                let down = nodes_named(eg, weighted.children[out], "matmul").next()?;
                let w_down = transposed_stack(eg, down.children[1])?;
                let (gate, up) = silu_times(eg, down.children[0])?;
                let (x, w_gate) = expert_product(eg, gate)?;
                let (x_up, w_up) = expert_product(eg, up)?;
                same(eg, x, x_up).then_some((x, routing, w_gate, w_up, w_down, k))
            })();
            if let Some((x, routing, w_gate, w_up, w_down, k)) = found {
                let mut t = TermBuilder::default();
                let args = [x, routing, w_gate, w_up, w_down].into_iter().map(Arg::Class).collect();
                t.add(Op::GroupedExperts { k }, args);
                terms.push(t.finish());
            }
        }
    }
    terms
}

/// `grouped_experts(x, ...) + down(gated_linear(x, w_gate_s, w_up_s))` `= grouped_experts` with
/// the shared expert alongside.
fn shared_expert(eg: &TensorGraph, _: Id, node: &TensorNode) -> Vec<Term> {
    let mut terms = Vec::new();
    for (g, s) in [(0, 1), (1, 0)] {
        for experts in nodes_named(eg, node.children[g], "grouped_experts") {
            if experts.children.len() != 5 {
                continue;
            }
            for down in nodes_named(eg, node.children[s], "linear") {
                for gated in nodes_named(eg, down.children[0], "gated_linear") {
                    if !same(eg, gated.children[0], experts.children[0]) {
                        continue;
                    }
                    let mut args: Vec<Arg> = experts.children.iter().map(|&c| Arg::Class(c)).collect();
                    args.extend([gated.children[1], gated.children[2], down.children[1]].map(Arg::Class));
                    let mut t = TermBuilder::default();
                    t.add(experts.op.op.clone(), args);
                    terms.push(t.finish());
                }
            }
        }
    }
    terms
}
