//! Memory of a model: weights and KV cache, by dtype.

use saturn_ir::Graph;
use serde::Serialize;

use crate::config::DeepseekConfig;
use crate::error::Result;
use crate::weights::expected_weights;
use crate::{Checkpoint, Model, WeightsSource};

/// Storage dtypes a report prices, with bytes per element.
pub const PRICED_DTYPES: [(&str, u64); 4] = [("f32", 4), ("bf16", 2), ("f16", 2), ("fp8", 1)];

/// Bytes of something at each priced dtype, in [`PRICED_DTYPES`] order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BytesByDtype(pub Vec<(String, u64)>);

impl BytesByDtype {
    fn of(elements: u64) -> BytesByDtype {
        BytesByDtype(PRICED_DTYPES.iter().map(|(d, size)| (d.to_string(), elements * size)).collect())
    }
}

/// What a model needs in memory: its weights, and its KV cache for a context and batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryReport {
    pub model_type: String,
    pub layers: u64,
    /// Parameters the graph reads (multi-token-prediction layers excluded).
    pub parameters: u64,
    pub weight_bytes: BytesByDtype,
    /// Bytes of those parameters as stored: in the checkpoint, or in the spec's `weights.dtype`.
    pub stored_weight_bytes: Option<u64>,
    /// What one token's cache holds in one layer, e.g. `latent 512 + k_pe 64`.
    pub cache_layout: String,
    pub cache_elements_per_token_per_layer: u64,
    /// What the expanded keys and values would hold per token per layer
    /// (`heads * (qk_nope + qk_rope + v_head)`), which the latent cache replaces.
    pub expanded_kv_elements_per_token_per_layer: u64,
    pub cache_elements_per_token: u64,
    pub context: u64,
    pub batch: u64,
    pub cache_elements_total: u64,
    pub cache_bytes_per_token_per_layer: BytesByDtype,
    pub cache_bytes_per_token: BytesByDtype,
    pub cache_bytes_total: BytesByDtype,
}

/// Sizes `model` (whose forward graph is `graph`) for `context` positions and `batch` sequences.
pub fn memory_report(model: &Model, graph: &Graph, context: u64, batch: u64) -> Result<MemoryReport> {
    let c: &DeepseekConfig = &model.config;
    let expected = expected_weights(graph);
    let parameters: u64 = expected.values().map(|s| s.iter().product::<usize>() as u64).sum();
    let stored_weight_bytes = match &model.weights {
        WeightsSource::Checkpoint(dir) => {
            let checkpoint = Checkpoint::open(dir)?;
            Some(
                expected
                    .keys()
                    .filter_map(|name| checkpoint.get(name))
                    .map(|e| (e.shape.iter().product::<usize>() * e.dtype.bitsize() / 8) as u64)
                    .sum(),
            )
        }
        WeightsSource::None | WeightsSource::Random { .. } => {
            model.storage_dtype.map(|d| parameters * d.size_bytes())
        }
    };
    let per_layer = c.kv_lora_rank + c.qk_rope_head_dim;
    let per_token = per_layer * c.num_hidden_layers;
    let total = per_token * context * batch;
    Ok(MemoryReport {
        model_type: c.model_type().into(),
        layers: c.num_hidden_layers,
        parameters,
        weight_bytes: BytesByDtype::of(parameters),
        stored_weight_bytes,
        cache_layout: format!("latent {} + k_pe {}", c.kv_lora_rank, c.qk_rope_head_dim),
        cache_elements_per_token_per_layer: per_layer,
        expanded_kv_elements_per_token_per_layer: c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim),
        cache_elements_per_token: per_token,
        context,
        batch,
        cache_elements_total: total,
        cache_bytes_per_token_per_layer: BytesByDtype::of(per_layer),
        cache_bytes_per_token: BytesByDtype::of(per_token),
        cache_bytes_total: BytesByDtype::of(total),
    })
}
