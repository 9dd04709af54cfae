//! Feed-forward blocks: the SiLU-gated MLP and DeepSeekMoE (router, routed experts, shared
//! experts), written with mid-level ops.

use saturn_ir::{BinaryOp, Dim, NodeId, Op, ReduceOp, UnaryOp};

use super::{Builder, TOKENS};
use crate::config::{DeepseekConfig, Routing};
use crate::error::Result;

/// `down(silu(gate(x)) * up(x))` with weights `{prefix}{gate,up,down}_proj.weight`.
pub(super) fn gated_mlp(
    b: &mut Builder,
    prefix: &str,
    name: &str,
    x: NodeId,
    inter: u64,
    d: u64,
) -> Result<NodeId> {
    let gate =
        b.linear(&format!("{name}.gate"), x, &format!("{prefix}gate_proj.weight"), [inter, d], None)?;
    let up = b.linear(&format!("{name}.up"), x, &format!("{prefix}up_proj.weight"), [inter, d], None)?;
    let act = b.op(&format!("{name}.act"), Op::Unary(UnaryOp::Silu), &[gate])?;
    let act = b.op(&format!("{name}.gated"), Op::Binary(BinaryOp::Mul), &[act, up])?;
    b.linear(&format!("{name}.down"), act, &format!("{prefix}down_proj.weight"), [d, inter], None)
}

/// DeepSeekMoE: `sum_k w_k expert_k(x) + shared(x)` for `x: [S, hidden]`.
pub(super) fn moe(b: &mut Builder, c: &DeepseekConfig, prefix: &str, x: NodeId) -> Result<NodeId> {
    let m = &c.moe;
    let (d, e, inter) = (c.hidden_size, m.n_routed_experts, m.moe_intermediate_size);
    let weights = router(b, c, prefix, x)?;

    // Every expert on every token: [E, S, I] activations, [E, S, D] outputs.
    let stacked = |b: &mut Builder, proj: &str, shape: [u64; 3]| -> Result<NodeId> {
        let w = b.param(&format!("{prefix}experts.{{e}}.{proj}_proj.weight"), &shape)?;
        b.op(&format!("experts.{proj}_t"), Op::Permute { perm: vec![0, 2, 1] }, &[w])
    };
    let gate_t = stacked(b, "gate", [e, inter, d])?;
    let up_t = stacked(b, "up", [e, inter, d])?;
    let down_t = stacked(b, "down", [e, d, inter])?;
    let gate = b.op("experts.gate", Op::MatMul, &[x, gate_t])?;
    let up = b.op("experts.up", Op::MatMul, &[x, up_t])?;
    let act = b.op("experts.act", Op::Unary(UnaryOp::Silu), &[gate])?;
    let act = b.op("experts.gated", Op::Binary(BinaryOp::Mul), &[act, up])?;
    let out = b.op("experts.down", Op::MatMul, &[act, down_t])?;
    let w = b.op("route_by_expert", Op::Permute { perm: vec![1, 0] }, &[weights])?;
    let w =
        b.op("route_column", Op::Reshape { shape: vec![e.into(), Dim::sym(TOKENS), 1u64.into()] }, &[w])?;
    let out = b.op("experts.weighted", Op::Binary(BinaryOp::Mul), &[out, w])?;
    let routed =
        b.op("experts.combined", Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }, &[out])?;
    if m.n_shared_experts == 0 {
        return Ok(routed);
    }
    let shared =
        gated_mlp(b, &format!("{prefix}shared_experts."), "shared", x, m.n_shared_experts * inter, d)?;
    b.op("moe_out", Op::Binary(BinaryOp::Add), &[routed, shared])
}

/// The routing matrix `[S, E]`: each token's expert weights, zero off its top-k (DESIGN.md §6).
fn router(b: &mut Builder, c: &DeepseekConfig, prefix: &str, x: NodeId) -> Result<NodeId> {
    let m = &c.moe;
    let e = m.n_routed_experts;
    let logits = b.linear("router.logits", x, &format!("{prefix}gate.weight"), [e, c.hidden_size], None)?;
    let weights = match m.routing {
        Routing::Greedy => {
            let scores = b.op("router.scores", Op::Softmax { axis: 1 }, &[logits])?;
            let chosen = b.op("router.topk", Op::TopKMask { k: m.num_experts_per_tok }, &[scores])?;
            let zero = b.scalar("router.zero", 0.0)?;
            b.op("router.weights", Op::Where, &[chosen, scores, zero])?
        }
        Routing::GroupLimitedGreedy { n_group, topk_group } => {
            let scores = b.op("router.scores", Op::Softmax { axis: 1 }, &[logits])?;
            let zero = b.scalar("router.zero", 0.0)?;
            // Hugging Face takes the weights from the group-masked scores.
            let candidates = group_limit(b, scores, e, n_group, topk_group, GroupScore::Max, zero)?;
            let chosen = b.op("router.topk", Op::TopKMask { k: m.num_experts_per_tok }, &[candidates])?;
            b.op("router.weights", Op::Where, &[chosen, candidates, zero])?
        }
        Routing::NoauxTc { n_group, topk_group } => {
            let scores = b.op("router.scores", Op::Unary(UnaryOp::Sigmoid), &[logits])?;
            let bias = b.param(&format!("{prefix}gate.e_score_correction_bias"), &[e])?;
            let biased = b.op("router.biased", Op::Binary(BinaryOp::Add), &[scores, bias])?;
            let neg_inf = b.scalar("router.neg_inf", f64::NEG_INFINITY)?;
            let candidates = group_limit(b, biased, e, n_group, topk_group, GroupScore::SumTop2, neg_inf)?;
            let chosen = b.op("router.topk", Op::TopKMask { k: m.num_experts_per_tok }, &[candidates])?;
            let zero = b.scalar("router.zero", 0.0)?;
            b.op("router.weights", Op::Where, &[chosen, scores, zero])?
        }
    };
    let weights = if m.norm_topk_prob {
        let sum = b.op("router.sum", Op::Reduce { op: ReduceOp::Sum, axis: 1, keepdim: true }, &[weights])?;
        let tiny = b.scalar("router.norm_eps", 1e-20)?;
        let sum = b.op("router.denominator", Op::Binary(BinaryOp::Add), &[sum, tiny])?;
        b.op("router.normalized", Op::Binary(BinaryOp::Div), &[weights, sum])?
    } else {
        weights
    };
    if m.routed_scaling_factor == 1.0 {
        return Ok(weights);
    }
    let scale = b.scalar("router.scaling", m.routed_scaling_factor)?;
    b.op("router.scaled", Op::Binary(BinaryOp::Mul), &[weights, scale])
}

/// How a group of experts is scored for group-limited routing.
#[derive(Clone, Copy)]
enum GroupScore {
    Max,
    SumTop2,
}

/// Keeps the experts of each token's best `topk_group` groups and replaces the others' scores
/// with `fill`. One group keeps everything, so it is left out.
fn group_limit(
    b: &mut Builder,
    scores: NodeId,
    e: u64,
    n_group: u64,
    topk_group: u64,
    how: GroupScore,
    fill: NodeId,
) -> Result<NodeId> {
    if n_group <= 1 {
        return Ok(scores);
    }
    let s = Dim::sym(TOKENS);
    let per_group = e / n_group;
    let grouped_shape = vec![s.clone(), n_group.into(), per_group.into()];
    let grouped = b.op("router.grouped", Op::Reshape { shape: grouped_shape.clone() }, &[scores])?;
    let group_scores = match how {
        GroupScore::Max => b.op(
            "router.group_scores",
            Op::Reduce { op: ReduceOp::Max, axis: 2, keepdim: false },
            &[grouped],
        )?,
        GroupScore::SumTop2 => {
            let top2 = b.op("router.group_top2", Op::TopKMask { k: 2 }, &[grouped])?;
            let zero = b.scalar("router.zero", 0.0)?;
            let top2 = b.op("router.group_top2_scores", Op::Where, &[top2, grouped, zero])?;
            b.op("router.group_scores", Op::Reduce { op: ReduceOp::Sum, axis: 2, keepdim: false }, &[top2])?
        }
    };
    let keep = b.op("router.groups_kept", Op::TopKMask { k: topk_group }, &[group_scores])?;
    let keep = b.op(
        "router.groups_kept_column",
        Op::Reshape { shape: vec![s.clone(), n_group.into(), 1u64.into()] },
        &[keep],
    )?;
    let keep = b.op("router.experts_kept_grouped", Op::Expand { shape: grouped_shape }, &[keep])?;
    let keep = b.op("router.experts_kept", Op::Reshape { shape: vec![s, e.into()] }, &[keep])?;
    b.op("router.candidates", Op::Where, &[keep, scores, fill])
}
