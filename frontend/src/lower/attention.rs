//! Multi-head latent attention in the naive (non-absorbed) form, as Hugging Face computes it:
//! the cached and new latents are up-projected to per-head keys and values, and attention is
//! written out (scores, scale, causal mask, softmax, weighted sum) so later passes can find the
//! absorbed form by algebra.

use saturn_ir::{BinaryOp, Dim, NodeId, Op, Rope};

use super::{Builder, CACHED, TOKENS};
use crate::config::DeepseekConfig;
use crate::error::Result;

/// The eps of `q_a_layernorm` and `kv_a_layernorm`, which Hugging Face leaves at its default.
const LATENT_NORM_EPS: f64 = 1e-6;

/// One layer's KV cache: the normalised latent `[rows, d_c]` and the RoPE'd key `[rows, d_r]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cache {
    pub latent: NodeId,
    pub k_pe: NodeId,
}

/// Returns the attention output `[S, hidden]` for the normalised hidden states `x: [S, hidden]`
/// at `positions`, attending to `cache` (`P` rows) and the new tokens, and the appended cache
/// (`P+S` rows).
pub(super) fn mla(
    b: &mut Builder,
    c: &DeepseekConfig,
    prefix: &str,
    x: NodeId,
    positions: NodeId,
    cache: Cache,
) -> Result<(NodeId, Cache)> {
    let p = format!("{prefix}self_attn.");
    let s = Dim::sym(TOKENS);
    let kv_len = Dim::sym(CACHED).add(&s);
    let (d, h) = (c.hidden_size, c.num_attention_heads);
    let (dn, dr, dv, dc) = (c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank);
    let dqk = c.qk_head_dim();
    let bias = |name: &str| c.attention_bias.then(|| format!("{p}{name}.bias"));
    let rope = Op::Rope(Rope {
        layout: c.rope.layout,
        theta: c.rope.theta,
        yarn: c.rope.yarn,
        attention_factor: c.rope.attention_factor,
    });

    // Queries: [S, H, dqk], split into the non-rotary and the rotary part.
    let q = match c.q_lora_rank {
        Some(r) => {
            let qa =
                b.linear("q_a", x, &format!("{p}q_a_proj.weight"), [r, d], bias("q_a_proj").as_deref())?;
            let w = b.param(&format!("{p}q_a_layernorm.weight"), &[r])?;
            let qa = b.op("q_a_norm", Op::RmsNorm { eps: LATENT_NORM_EPS }, &[qa, w])?;
            b.linear("q", qa, &format!("{p}q_b_proj.weight"), [h * dqk, r], None)?
        }
        None => b.linear("q", x, &format!("{p}q_proj.weight"), [h * dqk, d], None)?,
    };
    let q = b.op("q_heads", Op::Reshape { shape: vec![s.clone(), h.into(), dqk.into()] }, &[q])?;
    let q_nope = b.op("q_nope", slice(2, 0, dn), &[q])?;
    let q_pe = b.op("q_pe", slice(2, dn, dqk), &[q])?;
    let q_pe = b.op("q_rope", rope.clone(), &[q_pe, positions])?;

    // The compressed latent and the shared rotary key.
    let kv_a = b.linear(
        "kv_a",
        x,
        &format!("{p}kv_a_proj_with_mqa.weight"),
        [dc + dr, d],
        bias("kv_a_proj_with_mqa").as_deref(),
    )?;
    let latent = b.op("latent", slice(1, 0, dc), &[kv_a])?;
    let w = b.param(&format!("{p}kv_a_layernorm.weight"), &[dc])?;
    let latent = b.op("latent_norm", Op::RmsNorm { eps: LATENT_NORM_EPS }, &[latent, w])?;
    let k_pe = b.op("k_pe", slice(1, dc, dc + dr), &[kv_a])?;
    let k_pe = b.op("k_pe_head", Op::Reshape { shape: vec![s.clone(), 1u64.into(), dr.into()] }, &[k_pe])?;
    let k_pe = b.op("k_rope", rope, &[k_pe, positions])?;
    let k_pe = b.op("k_rope_rows", Op::Reshape { shape: vec![s.clone(), dr.into()] }, &[k_pe])?;

    // The cache grows by the new rows; keys and values cover all `P+S` positions.
    let latent = b.op("cache_latent", Op::Concat { axis: 0 }, &[cache.latent, latent])?;
    let k_pe = b.op("cache_k_pe", Op::Concat { axis: 0 }, &[cache.k_pe, k_pe])?;
    let appended = Cache { latent, k_pe };

    // Up-projection to per-head keys and values.
    let kv = b.linear("kv", latent, &format!("{p}kv_b_proj.weight"), [h * (dn + dv), dc], None)?;
    let kv =
        b.op("kv_heads", Op::Reshape { shape: vec![kv_len.clone(), h.into(), (dn + dv).into()] }, &[kv])?;
    let k_nope = b.op("k_nope", slice(2, 0, dn), &[kv])?;
    let v = b.op("v", slice(2, dn, dn + dv), &[kv])?;
    let k_pe =
        b.op("k_rope_column", Op::Reshape { shape: vec![kv_len.clone(), 1u64.into(), dr.into()] }, &[k_pe])?;
    let k_pe = b.op("k_rope_heads", Op::Expand { shape: vec![kv_len, h.into(), dr.into()] }, &[k_pe])?;
    let k = b.op("k", Op::Concat { axis: 2 }, &[k_nope, k_pe])?;
    let q = b.op("q_full", Op::Concat { axis: 2 }, &[q_nope, q_pe])?;

    // Attention per head: [H, S, S] scores.
    let q = b.op("q_by_head", Op::Permute { perm: vec![1, 0, 2] }, &[q])?;
    let k = b.op("k_by_head_t", Op::Permute { perm: vec![1, 2, 0] }, &[k])?;
    let scores = b.op("scores", Op::MatMul, &[q, k])?;
    let scale = b.scalar("softmax_scale", c.softmax_scale)?;
    let scores = b.op("scores_scaled", Op::Binary(BinaryOp::Mul), &[scores, scale])?;
    let scores = b.op("scores_masked", Op::CausalMask, &[scores])?;
    let probs = b.op("probs", Op::Softmax { axis: 2 }, &[scores])?;
    let v = b.op("v_by_head", Op::Permute { perm: vec![1, 0, 2] }, &[v])?;
    let o = b.op("attn_heads", Op::MatMul, &[probs, v])?;
    let o = b.op("attn_by_token", Op::Permute { perm: vec![1, 0, 2] }, &[o])?;
    let o = b.op("attn_concat", Op::Reshape { shape: vec![s, (h * dv).into()] }, &[o])?;
    let out =
        b.linear("attn_out", o, &format!("{p}o_proj.weight"), [d, h * dv], bias("o_proj").as_deref())?;
    Ok((out, appended))
}

fn slice(axis: usize, start: u64, end: u64) -> Op {
    Op::Slice { axis, start: start.into(), end: end.into() }
}
