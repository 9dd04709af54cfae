//! Which form of MLA a (possibly optimised) graph computes: naive attention multiplies the
//! cached latent by weights (up-projecting keys and values for every cached position), absorbed
//! attention only ever multiplies it by activations (queries moved into the latent space,
//! attention probabilities).

use saturn_ir::{Graph, Op};
use serde::Serialize;

use super::cache_name;

/// How a graph's attention uses the cached latent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionForm {
    /// Every layer up-projects the cached latent with its weights.
    Naive,
    /// No layer multiplies the cached latent by a weight.
    Absorbed,
    /// Some products with the latent are absorbed, some are not (e.g. keys but not values).
    Mixed,
}

/// The form of `graph`, from the users of each layer's appended latent (the concat of the
/// cache input `cache.lN.latent` with the new rows). `None` if the graph has no such cache.
pub fn attention_form(graph: &Graph) -> Option<AttentionForm> {
    let weight_derived = graph.constant_nodes();
    let (mut naive, mut absorbed) = (0, 0);
    for layer in 0.. {
        let Some(input) = graph.find(&cache_name(layer, "latent")) else { break };
        for latent in graph.users(input) {
            for user in graph.users(latent) {
                if matches!(graph.node(user).op, Op::Concat { .. } | Op::Reshape { .. }) {
                    continue;
                }
                let by_weight = graph.inputs(user).iter().any(|&o| o != latent && weight_derived[o.index()]);
                if by_weight { naive += 1 } else { absorbed += 1 }
            }
        }
    }
    match (naive, absorbed) {
        (0, 0) => None,
        (_, 0) => Some(AttentionForm::Naive),
        (0, _) => Some(AttentionForm::Absorbed),
        _ => Some(AttentionForm::Mixed),
    }
}
