//! Matching a checkpoint against the weights a graph needs.

use std::collections::BTreeMap;

use safetensors::tensor::Dtype;
use saturn_ir::Graph;

use crate::checkpoint::Checkpoint;
use crate::config::DeepseekConfig;
use crate::error::{FrontendError, Result};

/// Every checkpoint tensor `graph` reads, with its shape: stacked `{e}` params expand to one
/// tensor per expert. Graphs from the frontend have constant param shapes.
pub fn expected_weights(graph: &Graph) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for (_, key, ty) in graph.params() {
        let shape: Vec<usize> = ty.shape.iter().map(|d| d.as_const().unwrap_or(0) as usize).collect();
        if key.contains("{e}") {
            for e in 0..shape.first().copied().unwrap_or(0) {
                out.insert(key.replace("{e}", &e.to_string()), shape[1..].to_vec());
            }
        } else {
            out.insert(key.to_string(), shape);
        }
    }
    out
}

/// Checks that `checkpoint` holds every weight of `graph` with its shape and an f32, bf16 or f16
/// dtype, and nothing else (besides tensors transformers also skips: multi-token-prediction
/// layers after the last layer and stored rotary tables).
pub fn check_weights(graph: &Graph, config: &DeepseekConfig, checkpoint: &Checkpoint) -> Result<()> {
    let expected = expected_weights(graph);
    for (name, shape) in &expected {
        let entry =
            checkpoint.get(name).ok_or_else(|| FrontendError::MissingWeight { name: name.clone() })?;
        if !matches!(entry.dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(FrontendError::WeightDtype {
                name: name.clone(),
                dtype: format!("{:?}", entry.dtype),
            });
        }
        if entry.shape != *shape {
            return Err(FrontendError::WeightShape {
                name: name.clone(),
                expected: shape.clone(),
                got: entry.shape.clone(),
            });
        }
    }
    for (name, entry) in checkpoint.tensors() {
        if !expected.contains_key(name) && !ignored(name, config) {
            return Err(FrontendError::ExtraWeight {
                path: checkpoint.file_of(entry).into(),
                name: name.into(),
            });
        }
    }
    Ok(())
}

/// Tensors a checkpoint may hold that the model does not use.
fn ignored(name: &str, config: &DeepseekConfig) -> bool {
    if name.ends_with(".rotary_emb.inv_freq") {
        return true;
    }
    let layer =
        name.strip_prefix("model.layers.").and_then(|rest| rest.split('.').next()?.parse::<u64>().ok());
    matches!(layer, Some(l) if l >= config.num_hidden_layers
        && l < config.num_hidden_layers + config.num_nextn_predict_layers)
}
