//! The target cost model: a roofline per node, from per-target data (DESIGN.md §4).
//!
//! A [`Target`] (from `passes/targets.toml`, or a user file merged over it, see [`Targets`])
//! gives peak FLOP/s per dtype, memory bandwidth, launch overhead and on-chip memory, each with
//! its source. [`node_cost`] prices one node under symbol bindings, so the same graph costs
//! differently per phase (prefill `P = 0`, decode `S = 1`):
//!
//! `seconds = max(flops / peak(output dtype, else f32), bytes / bandwidth) + launches * overhead`
//!
//! Dims are evaluated under the bindings; an unbound symbol counts as 1 (a cost is then a
//! per-unit estimate rather than an error, since the optimiser prices graphs before every
//! symbol is bound). All arithmetic is f64, and no type makes it panic.
//!
//! # Rules
//!
//! - Leaves (`input`, `param`, `scalar`) and `arange`: free. Their bytes are counted where
//!   consumers read them, and `arange` is index arithmetic in its consumer.
//! - Views (`reshape`, `expand`, `slice`, `permute`): free, no launch. This assumes that code
//!   generation folds them into the index arithmetic of their consumers, which then read the
//!   view's shape (an overestimate for `expand`, whose repeated elements come from cache).
//! - Every other op is one kernel: one launch, and `bytes` = all operand bytes + output bytes
//!   (element counts times [`DType::size_bytes`](saturn_ir::DType::size_bytes)); every
//!   intermediate between two kernels goes through memory once each way.
//! - FLOPs per op, the counts a straightforward kernel does:
//!   - `linear`, `matmul`: `2*M*N*K`, i.e. 2 × output elements × K, so broadcast batch dims
//!     count once per output batch;
//!   - elementwise `unary`, `binary`, `where`, `cast`, `causal_mask`: 1 per output element;
//!     `fused_elementwise`: its expression's op count per output element;
//!   - `reduce_*`: 1 per input element; `softmax`: 5 per element (max, subtract, exp, sum,
//!     divide); `rms_norm`: 4 per element (square, sum, scale, weight); `rope`: 6 per element
//!     (two products and a sum per rotated value, sin and cos);
//!   - `topk_mask`: `log2(k)` comparisons per element (a heap of k), at least 1;
//!   - `gather`: 0 FLOPs; bytes are the gathered rows read (as many as the output), the
//!     indices, and the output written, not the whole table;
//!   - `concat`: 0 FLOPs, a copy.
//! - Fused ops are one launch with no intermediate in memory, which is what makes them cheaper
//!   than the ops they replace:
//!   - `rms_norm_linear`: `rms_norm` + `linear` FLOPs, bytes = x + g + w + out;
//!   - `gated_linear`: two `linear`s + `silu` and `mul` per output element, bytes = x + w_gate +
//!     w_up + out.

mod node_cost;
mod target;

pub use node_cost::{NodeCost, node_cost};
pub use target::{CostError, Target, TargetSources, Targets};
