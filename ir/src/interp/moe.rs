//! Mixture-of-experts fused ops: `router_topk` and `grouped_experts`.
//!
//! The router is evaluated with the same kernels as the ops it stands for (softmax, sigmoid,
//! top-k masks, `where`, reductions), so a fused router chooses exactly the experts the
//! written-out one chooses. Experts run with grouped-GEMM semantics: each expert once, on the
//! tokens routed to it, and the weighted outputs added per token in expert order.

use super::tensor::{Tensor, TensorData};
use super::{OpError, OpResult, elementwise, elems, linalg, mask, reduce, shape_ops};
use crate::{BinaryOp, GroupScore, ReduceOp, Router, RouterScoring, UnaryOp};

fn scalar(v: f32) -> Tensor {
    Tensor::f32(vec![], vec![v])
}

/// `router_topk(logits [, bias])`, see `Op::RouterTopK`.
pub(super) fn router_topk(r: &Router, logits: &Tensor, bias: Option<&Tensor>) -> OpResult {
    let shape = logits.shape.clone();
    let [t, e] = shape[..] else { return Err(OpError::Internal(format!("logits of shape {shape:?}"))) };
    let scores = match r.scoring {
        RouterScoring::Softmax => reduce::softmax(logits, 1)?,
        RouterScoring::Sigmoid => elementwise::unary(UnaryOp::Sigmoid, logits)?,
    };
    let biased = match bias {
        Some(b) => elementwise::binary(BinaryOp::Add, &scores, b, &shape)?,
        None => scores.clone(),
    };
    let candidates = if r.n_group > 1 {
        let (g, per) = (r.n_group as usize, e / r.n_group as usize);
        let grouped = shape_ops::reshape_owned(biased.clone(), &[t, g, per])?;
        let group_scores = match r.group_score {
            GroupScore::Max => reduce::reduce(ReduceOp::Max, &grouped, 2, &[t, g])?,
            GroupScore::SumTop2 => {
                let top2 = mask::topk_mask(&grouped, 2)?;
                let kept = elementwise::select(&top2, &grouped, &scalar(0.0), &[t, g, per])?;
                reduce::reduce(ReduceOp::Sum, &kept, 2, &[t, g])?
            }
        };
        let kept_groups = mask::topk_mask(&group_scores, r.topk_group)?;
        let kept_groups = shape_ops::reshape_owned(kept_groups, &[t, g, 1])?;
        let kept = shape_ops::expand(&kept_groups, &[t, g, per])?;
        let kept = shape_ops::reshape_owned(kept, &[t, e])?;
        elementwise::select(&kept, &biased, &scalar(r.masked_fill as f32), &shape)?
    } else {
        biased
    };
    let chosen = mask::topk_mask(&candidates, r.k)?;
    let source = if r.weights_from_candidates { &candidates } else { &scores };
    let mut weights = elementwise::select(&chosen, source, &scalar(0.0), &shape)?;
    if r.normalize {
        let sum = reduce::reduce(ReduceOp::Sum, &weights, 1, &[t, 1])?;
        let denominator = elementwise::binary(BinaryOp::Add, &sum, &scalar(1e-20), &[t, 1])?;
        weights = elementwise::binary(BinaryOp::Div, &weights, &denominator, &shape)?;
    }
    if r.scale != 1.0 {
        weights = elementwise::binary(BinaryOp::Mul, &weights, &scalar(r.scale as f32), &shape)?;
    }
    Ok(weights)
}

/// `grouped_experts(x, routing, w_gate, w_up, w_down [, shared gate, up, down])`.
pub(super) fn grouped_experts(args: &[&Tensor], shape: &[usize]) -> OpResult {
    let (x, routing) = (args[0], args[1]);
    let [t, h] = x.shape[..] else { return Err(OpError::Internal(format!("x of shape {:?}", x.shape))) };
    let [e, i, _] = args[2].shape[..] else { return Err(OpError::Internal("w_gate rank".into())) };
    let xv = elems::<f32>(x, "x")?;
    let rv = elems::<f32>(routing, "routing")?;
    let (wg, wu, wd) =
        (elems::<f32>(args[2], "w_gate")?, elems::<f32>(args[3], "w_up")?, elems::<f32>(args[4], "w_down")?);
    let mut out = vec![0f32; t * h];
    for expert in 0..e {
        // The tokens routed to this expert, gathered into one block (the grouped GEMM's group).
        let tokens: Vec<usize> = (0..t).filter(|&tok| rv[tok * e + expert] != 0.0).collect();
        if tokens.is_empty() {
            continue;
        }
        let block: Vec<f32> =
            tokens.iter().flat_map(|&tok| xv[tok * h..(tok + 1) * h].iter().copied()).collect();
        let block = Tensor::f32(vec![tokens.len(), h], block);
        let weight = |w: &[f32], rows: usize, cols: usize| {
            Tensor::f32(vec![rows, cols], w[expert * rows * cols..(expert + 1) * rows * cols].to_vec())
        };
        let act = linalg::gated_linear(&block, &weight(wg, i, h), &weight(wu, i, h), &[tokens.len(), i])?;
        let y = linalg::linear(&act, &weight(wd, h, i), &[tokens.len(), h])?;
        let yv = elems::<f32>(&y, "expert output")?;
        for (row, &tok) in tokens.iter().enumerate() {
            let w = rv[tok * e + expert];
            for c in 0..h {
                out[tok * h + c] += w * yv[row * h + c];
            }
        }
    }
    if args.len() == 8 {
        let j = args[5].shape[0];
        let act = linalg::gated_linear(x, args[5], args[6], &[t, j])?;
        let shared = linalg::linear(&act, args[7], &[t, h])?;
        for (o, s) in out.iter_mut().zip(elems::<f32>(&shared, "shared expert")?) {
            *o += s;
        }
    }
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(out) })
}
