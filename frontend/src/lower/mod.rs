//! Lowering a [`DeepseekConfig`] to the forward graph, and the phases made from it.
//!
//! One lowering serves every phase: the forward graph takes `S` new tokens after `P` cached
//! positions. Inputs: `input_ids: i64[S]` and, per layer, the KV cache `cache.lN.latent: [P, d_c]`
//! (the normalised latent) and `cache.lN.k_pe: [P, d_r]` (the RoPE'd shared key). Outputs:
//! `logits: f32[S, vocab]` for every new position (`[1, vocab]` for the last one only with
//! [`Logits::Last`]) and the appended caches (same names, `P+S` rows). A phase binds symbols
//! ([`Phase`]): prefill `P = 0`, decode `S = 1`.
//!
//! The cache holds what MLA needs to rebuild keys and values (576 numbers per token per layer
//! for V3), up-projected by `kv_b_proj` at every step. Interleaved RoPE keeps pairs in place, so
//! the cached `k_pe` is a permutation of Hugging Face's (which de-interleaves); `q . k` is the same.
//! Weights are params keyed by their Hugging Face tensor names; routed experts are stacked
//! (`model.layers.L.mlp.experts.{e}.gate_proj.weight: [E, I, H]`) and the MoE is written as a
//! dense, masked computation (every expert on every token, weighted by a routing matrix that is
//! zero off the top-k), so the graph's size does not grow with the expert count.

mod attention;
mod attention_form;
mod ffn;

pub use attention_form::{AttentionForm, attention_form};

use saturn_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, TensorType};

use crate::config::DeepseekConfig;
use crate::error::Result;

/// The symbol for the number of new tokens.
pub const TOKENS: &str = "S";
/// The symbol for the number of cached positions.
pub const CACHED: &str = "P";

/// Which bindings of the symbols a graph is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A whole prompt, nothing cached: `P = 0`.
    Prefill,
    /// One token after a cache: `S = 1`.
    Decode,
    /// Any `S` after any `P` (chunked prefill): the unspecialised forward graph.
    Chunked,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
            Phase::Chunked => "forward",
        }
    }
}

/// Which positions' logits a graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Logits {
    /// Every new position: `logits: [S, vocab]` (evaluation, the fixtures).
    #[default]
    All,
    /// The last new position only: `logits: [1, vocab]`, all generation needs. The final norm
    /// and the vocabulary projection (the largest product of a short prompt) run on one row.
    Last,
}

/// The name of layer `layer`'s cache of `part` (`latent` or `k_pe`), as input and output.
pub fn cache_name(layer: u64, part: &str) -> String {
    format!("cache.l{layer}.{part}")
}

/// The graph of `config` for `phase`: the forward graph with the phase's symbols bound.
pub fn phase_graph(config: &DeepseekConfig, phase: Phase) -> Result<Graph> {
    phase_graph_with(config, phase, Logits::All)
}

/// [`phase_graph`] computing the logits `logits` names.
pub fn phase_graph_with(config: &DeepseekConfig, phase: Phase, logits: Logits) -> Result<Graph> {
    let forward = forward_graph_with(config, logits)?;
    let bind = |sym: &str, v: u64| saturn_ir::SymBindings::from([(sym.to_string(), v)]);
    let name = format!("{}.{}", config.model_type(), phase.name());
    Ok(match phase {
        Phase::Prefill => forward.bind_symbols(&bind(CACHED, 0), name)?,
        Phase::Decode => forward.bind_symbols(&bind(TOKENS, 1), name)?,
        Phase::Chunked => forward,
    })
}

/// Builds the forward graph of `config`: `S` new tokens after `P` cached positions.
pub fn forward_graph(config: &DeepseekConfig) -> Result<Graph> {
    forward_graph_with(config, Logits::All)
}

/// [`forward_graph`] computing the logits `logits` names.
pub fn forward_graph_with(config: &DeepseekConfig, logits: Logits) -> Result<Graph> {
    let mut b = Builder::new(Graph::new(format!("{}.forward", config.model_type())));
    let s = Dim::sym(TOKENS);
    let p = Dim::sym(CACHED);
    let d = config.hidden_size;
    let ids = b.input("input_ids", DType::I64, vec![s.clone()])?;
    let mut caches = Vec::new();
    for layer in 0..config.num_hidden_layers {
        let latent =
            b.input(&cache_name(layer, "latent"), DType::F32, vec![p.clone(), config.kv_lora_rank.into()])?;
        let k_pe =
            b.input(&cache_name(layer, "k_pe"), DType::F32, vec![p.clone(), config.qk_rope_head_dim.into()])?;
        caches.push(attention::Cache { latent, k_pe });
    }
    let embed = b.param("model.embed_tokens.weight", &[config.vocab_size, d])?;
    let mut h = b.op("embed", Op::Gather, &[embed, ids])?;
    let positions = b.op("positions", Op::Arange { start: p, len: s }, &[])?;
    for layer in 0..config.num_hidden_layers {
        b.scope = format!("l{layer}.");
        let prefix = format!("model.layers.{layer}.");
        let norm_w = b.param(&format!("{prefix}input_layernorm.weight"), &[d])?;
        let x = b.op("attn_norm", Op::RmsNorm { eps: config.rms_norm_eps }, &[h, norm_w])?;
        let (attn, cache) = attention::mla(&mut b, config, &prefix, x, positions, caches[layer as usize])?;
        b.graph.set_output(cache_name(layer, "latent"), cache.latent)?;
        b.graph.set_output(cache_name(layer, "k_pe"), cache.k_pe)?;
        h = b.op("attn_residual", Op::Binary(BinaryOp::Add), &[h, attn])?;
        let norm_w = b.param(&format!("{prefix}post_attention_layernorm.weight"), &[d])?;
        let x = b.op("ffn_norm", Op::RmsNorm { eps: config.rms_norm_eps }, &[h, norm_w])?;
        let ffn = if config.is_moe_layer(layer) {
            ffn::moe(&mut b, config, &format!("{prefix}mlp."), x)?
        } else {
            ffn::gated_mlp(&mut b, &format!("{prefix}mlp."), "mlp", x, config.intermediate_size, d)?
        };
        h = b.op("ffn_residual", Op::Binary(BinaryOp::Add), &[h, ffn])?;
    }
    b.scope.clear();
    if logits == Logits::Last {
        let end = Dim::sym(TOKENS);
        let start = end.sub(&Dim::constant(1));
        h = b.op("last_position", Op::Slice { axis: 0, start, end }, &[h])?;
    }
    let norm_w = b.param("model.norm.weight", &[d])?;
    let h = b.op("final_norm", Op::RmsNorm { eps: config.rms_norm_eps }, &[h, norm_w])?;
    let head =
        if config.tie_word_embeddings { embed } else { b.param("lm_head.weight", &[config.vocab_size, d])? };
    let logits = b.op("logits", Op::Linear, &[h, head])?;
    b.graph.set_output("logits", logits)?;
    Ok(b.graph)
}

/// Adds nodes with names under the current layer's scope (`l3.`), params named by their key.
pub(crate) struct Builder {
    pub graph: Graph,
    pub scope: String,
}

impl Builder {
    fn new(graph: Graph) -> Builder {
        Builder { graph, scope: String::new() }
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Vec<Dim>) -> Result<NodeId> {
        Ok(self.graph.add(name, Op::Input, &[], Some(TensorType { dtype, shape }))?)
    }

    /// An f32 param keyed by a checkpoint tensor name; a key with `{e}` is a stack of experts.
    /// The node is named after the key, shortened (`model.layers.3.mlp.experts.{e}.up_proj.weight`
    /// becomes `l3.mlp.experts.up_proj`). The same key twice gives the same node (tied weights).
    pub fn param(&mut self, key: &str, shape: &[u64]) -> Result<NodeId> {
        let op = Op::Param { key: key.into() };
        let short =
            key.strip_prefix("model.layers.").map_or_else(|| key.to_string(), |rest| format!("l{rest}"));
        let short = short.replace(".{e}", "");
        let short = short.strip_suffix(".weight").unwrap_or(&short);
        if let Some(id) = self.graph.find(short)
            && self.graph.node(id).op == op
        {
            return Ok(id);
        }
        let name = self.graph.fresh_name(short);
        let ty = TensorType::new(DType::F32, shape.iter().copied());
        Ok(self.graph.add(name, op, &[], Some(ty))?)
    }

    /// An f32 scalar constant; asking twice for the same name and value gives one node.
    pub fn scalar(&mut self, name: &str, value: f64) -> Result<NodeId> {
        let name = format!("{}{name}", self.scope);
        if let Some(id) = self.graph.find(&name)
            && self.graph.node(id).op == (Op::Scalar { value })
        {
            return Ok(id);
        }
        let name = self.graph.fresh_name(&name);
        let ty = TensorType { dtype: DType::F32, shape: vec![] };
        Ok(self.graph.add(name, Op::Scalar { value }, &[], Some(ty))?)
    }

    /// An op node named `scope + name`.
    pub fn op(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = self.graph.fresh_name(&format!("{}{name}", self.scope));
        Ok(self.graph.add(name, op, inputs, None)?)
    }

    /// `x w^T`, plus a bias param when `bias` is given.
    pub fn linear(
        &mut self,
        name: &str,
        x: NodeId,
        weight_key: &str,
        shape: [u64; 2],
        bias: Option<&str>,
    ) -> Result<NodeId> {
        let w = self.param(weight_key, &shape)?;
        let y = self.op(name, Op::Linear, &[x, w])?;
        match bias {
            None => Ok(y),
            Some(key) => {
                let b = self.param(key, &shape[..1])?;
                self.op(&format!("{name}.bias"), Op::Binary(BinaryOp::Add), &[y, b])
            }
        }
    }
}
