//! saturn's runtime: runs a lowered or optimised forward graph on concrete inputs.
//!
//! - [`Session`]: one sequence with its KV cache. `prefill` runs a prompt with an empty cache
//!   (`P = 0`), `extend` runs more tokens after the cache (chunked prefill, or decode with one
//!   token: `S = 1`); both return the logits the graph computes (every new position, or the
//!   last one) and keep the appended cache.
//! - [`Prepared`]: graphs whose weight-only subexpressions are computed once, up front.
//! - [`generate`]: prefill, then decode token by token, greedy or sampled ([`Sampler`]), until
//!   the end-of-sequence token or the token limit; several prompts of different lengths each
//!   get their own session.
//! - [`op_bench`]: one graph (an op at production shapes) timed on any backend or device.
//!
//! The graph contract (what `saturn_frontend::forward_graph` builds): input `input_ids: i64[S]`,
//! cache inputs named `cache.*` with `P` rows, output `logits: [S, vocab]` (or `[1, vocab]`,
//! the last position's, as generation builds it), and one output per cache input, of the same
//! name, with `P+S` rows.
//!
//! Two backends run a session ([`Backend`]): the reference interpreter of `saturn_ir`, and
//! [`CpuPrograms`], the graphs compiled by `saturn_codegen` into kernel steps over a planned
//! arena, with the KV cache preallocated and appended in place. The runtime knows nothing of
//! checkpoints or config files: weights arrive through [`ParamSource`].

mod cuda;
mod generate;
mod gpu;
mod hoist;
pub mod op_bench;
mod sampling;
mod session;

use saturn_ir::InterpError;
use thiserror::Error;

pub use cuda::{CudaPrograms, GpuDevice};
pub use generate::{GenerateOptions, generate};
pub use hoist::{DERIVED_PREFIX, Prepared};
pub use sampling::{Sampler, argmax};
pub use session::{Backend, CpuPrograms, Executor, Limits, PhaseGraphs, Session, check_ids};

/// The graph input that holds the new tokens' ids.
pub const INPUT_IDS: &str = "input_ids";
/// The graph output that holds the logits.
pub const LOGITS: &str = "logits";
/// The symbol bound to the number of new tokens.
pub const TOKENS: &str = "S";
/// The symbol bound to the number of cached positions.
pub const CACHED: &str = "P";
/// The prefix of KV-cache inputs and outputs.
pub const CACHE_PREFIX: &str = "cache.";

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("the prompt is empty: give at least one token id")]
    EmptyPrompt,
    #[error("token id {id} at position {position} is outside the vocabulary (0..{vocab_size})")]
    TokenOutOfRange { id: u64, position: usize, vocab_size: u64 },
    #[error("the context would reach {needed} positions, beyond the model's max_position_embeddings ({max})")]
    ContextTooLong { needed: u64, max: u64 },
    #[error("decode needs a cache: run a prefill first")]
    DecodeWithoutPrefill,
    #[error("graph `{graph}`: {msg}")]
    BadGraph { graph: String, msg: String },
    #[error("sampling: {0}")]
    Sampling(String),
    /// No usable GPU, or the device failed.
    #[error("cuda: {0}")]
    Device(String),
    #[error(transparent)]
    Interp(#[from] InterpError),
    #[error(transparent)]
    Codegen(#[from] saturn_codegen::CodegenError),
}

pub use saturn_ir::ParamSource;
