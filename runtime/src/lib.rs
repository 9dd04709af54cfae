//! saturn's runtime: runs a lowered or optimised graph on concrete inputs.
//!
//! Today it has one executor, the reference interpreter of `saturn_ir`, and one entry point,
//! [`prefill`]: the logits of every position of one prompt. Compiled kernels, the KV cache and
//! generation loops land here as later stages arrive.
//!
//! The runtime knows nothing of checkpoints or config files: weights arrive through
//! [`ParamSource`].

use std::collections::HashMap;

use saturn_ir::{Bindings, Graph, InterpError, ParamSource, SymBindings, Tensor, evaluate};
use thiserror::Error;

/// The graph input that holds the prompt's token ids.
pub const INPUT_IDS: &str = "input_ids";
/// The graph output that holds the logits.
pub const LOGITS: &str = "logits";
/// The symbol bound to the number of prompt tokens.
pub const TOKENS: &str = "S";

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("the prompt is empty: give at least one token id")]
    EmptyPrompt,
    #[error("token id {id} at position {position} is outside the vocabulary (0..{vocab_size})")]
    TokenOutOfRange { id: u64, position: usize, vocab_size: u64 },
    #[error("graph `{graph}` has no output `{output}`")]
    MissingOutput { graph: String, output: &'static str },
    #[error(transparent)]
    Interp(#[from] InterpError),
}

/// Checks a prompt against the vocabulary size before anything runs.
pub fn check_prompt(ids: &[u64], vocab_size: u64) -> Result<(), RuntimeError> {
    if ids.is_empty() {
        return Err(RuntimeError::EmptyPrompt);
    }
    match ids.iter().position(|&id| id >= vocab_size) {
        Some(position) => Err(RuntimeError::TokenOutOfRange { id: ids[position], position, vocab_size }),
        None => Ok(()),
    }
}

/// One prefill over `ids` with the prefill graph `graph` (input `input_ids: i64[S]`, output
/// `logits: [S, vocab]`): the logits of every position, `[S, vocab]` f32.
pub fn prefill(graph: &Graph, params: &dyn ParamSource, ids: &[u64]) -> Result<Tensor, RuntimeError> {
    if ids.is_empty() {
        return Err(RuntimeError::EmptyPrompt);
    }
    let ids_tensor = Tensor::i64(vec![ids.len()], ids.iter().map(|&i| i as i64).collect());
    let bindings = Bindings {
        symbols: SymBindings::from([(TOKENS.to_string(), ids.len() as u64)]),
        inputs: HashMap::from([(INPUT_IDS.to_string(), ids_tensor)]),
        params,
    };
    let mut outputs = evaluate(graph, &bindings)?;
    outputs.remove(LOGITS).ok_or(RuntimeError::MissingOutput { graph: graph.name.clone(), output: LOGITS })
}
