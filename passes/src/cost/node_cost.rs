//! The roofline cost of one node; the rules are listed in the module doc of [`crate::cost`].

use std::ops::Add;

use saturn_ir::{Dim, Op, SymBindings, TensorType};
use serde::Serialize;

use super::target::Target;

/// Cost of one node under symbol bindings (a phase, e.g. `S = 1, P = 4096`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct NodeCost {
    pub flops: f64,
    /// Bytes read plus bytes written.
    pub bytes: f64,
    pub launches: u32,
    /// `max(compute time, memory time) + launches * launch overhead`.
    pub seconds: f64,
}

impl Add for NodeCost {
    type Output = NodeCost;

    /// Sums every field (launches saturate rather than overflow).
    fn add(self, other: NodeCost) -> NodeCost {
        NodeCost {
            flops: self.flops + other.flops,
            bytes: self.bytes + other.bytes,
            launches: self.launches.saturating_add(other.launches),
            seconds: self.seconds + other.seconds,
        }
    }
}

impl std::iter::Sum for NodeCost {
    fn sum<I: Iterator<Item = NodeCost>>(costs: I) -> NodeCost {
        costs.fold(NodeCost::default(), Add::add)
    }
}

/// The work of one kernel: floating-point operations and bytes moved.
struct KernelWork {
    flops: f64,
    bytes: f64,
}

/// The cost of `op` with operand types `inputs` and result type `output` on `target`, its dims
/// evaluated under `syms` (an unbound symbol counts as 1). Never panics, whatever the types.
pub fn node_cost(
    op: &Op,
    inputs: &[&TensorType],
    output: &TensorType,
    syms: &SymBindings,
    target: &Target,
) -> NodeCost {
    let Some(work) = kernel_work(op, inputs, output, syms) else {
        return NodeCost::default();
    };
    let compute_seconds = match target.peak_flops_for(output.dtype) {
        Some(peak) if work.flops > 0.0 => work.flops / peak,
        _ => 0.0,
    };
    let memory_seconds = work.bytes / target.memory_bandwidth;
    NodeCost {
        flops: work.flops,
        bytes: work.bytes,
        launches: 1,
        seconds: compute_seconds.max(memory_seconds) + target.launch_overhead,
    }
}

/// The work of the kernel that computes `op`, or `None` for ops that launch no kernel: leaves,
/// `arange` and the views.
fn kernel_work(
    op: &Op,
    inputs: &[&TensorType],
    output: &TensorType,
    syms: &SymBindings,
) -> Option<KernelWork> {
    let out_elements = elements(output, syms);
    let first_input_elements = inputs.first().map_or(0.0, |x| elements(x, syms));
    // The contraction dim K: the last axis of the first operand (`a [.., M, K]` of a matmul,
    // `x [.., K]` of the linear ops).
    let contraction = inputs.first().and_then(|x| x.shape.last()).map_or(0.0, |k| dim_value(k, syms));
    let matmul_flops = 2.0 * out_elements * contraction;
    let flops = match op {
        Op::Input
        | Op::Param { .. }
        | Op::Scalar { .. }
        | Op::Arange { .. }
        | Op::Reshape { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Permute { .. } => return None,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::CausalMask => out_elements,
        Op::FusedElementwise { expr } => expr.op_count() as f64 * out_elements,
        Op::Reduce { .. } => first_input_elements,
        Op::Softmax { .. } => 5.0 * out_elements,
        Op::TopKMask { k } => (*k as f64).log2().max(1.0) * out_elements,
        Op::RmsNorm { .. } => 4.0 * out_elements,
        Op::Rope(_) => 6.0 * out_elements,
        Op::MatMul | Op::Linear => matmul_flops,
        Op::Concat { .. } => 0.0,
        Op::Gather => {
            // Only the gathered rows of the table are read: as many bytes as the output.
            let out_bytes = tensor_bytes(output, syms);
            let indices = inputs.get(1).map_or(0.0, |i| tensor_bytes(i, syms));
            return Some(KernelWork { flops: 0.0, bytes: 2.0 * out_bytes + indices });
        }
        Op::RmsNormLinear { .. } => 4.0 * first_input_elements + matmul_flops,
        // Two products, then silu and mul on each output element.
        Op::GatedLinear => 2.0 * matmul_flops + 2.0 * out_elements,
        // Scoring, group scores and two top-k passes over the logits.
        Op::RouterTopK(r) => (8.0 + (r.k as f64).log2().max(1.0)) * out_elements,
        Op::GroupedExperts { k } => return Some(grouped_experts_work(*k, inputs, output, syms)),
        // Scores against latent and rope key, softmax, and the weighted sum of latents; the
        // scores stay on chip (`out_elements / C` rows of `T` keys each).
        Op::MlaDecodeAttention { .. } => {
            // latent is [B.., T, C].
            let keys = inputs
                .get(2)
                .and_then(|l| l.shape.len().checked_sub(2).map(|at| &l.shape[at]))
                .map_or(0.0, |t| dim_value(t, syms));
            let rope = inputs.get(1).and_then(|q| q.shape.last()).map_or(0.0, |r| dim_value(r, syms));
            let rows = out_elements / contraction.max(1.0);
            rows * keys * (2.0 * (contraction + rope) + 5.0 + 2.0 * contraction)
        }
    };
    let bytes = inputs.iter().map(|t| tensor_bytes(t, syms)).sum::<f64>() + tensor_bytes(output, syms);
    Some(KernelWork { flops, bytes })
}

/// Grouped experts read only the experts some token is routed to: with `T` tokens and `k`
/// experts each, `min(E, T*k)` experts' weights (the worst case, every routed expert distinct),
/// and compute `T*k` expert MLPs (3 products of `H x I` each) plus the shared expert.
fn grouped_experts_work(
    k: u64,
    inputs: &[&TensorType],
    output: &TensorType,
    syms: &SymBindings,
) -> KernelWork {
    let dims =
        |t: Option<&&TensorType>| t.map(|t| t.shape.iter().map(|d| dim_value(d, syms)).collect::<Vec<f64>>());
    let (Some(x), Some(w_gate)) = (dims(inputs.first()), dims(inputs.get(2))) else {
        return KernelWork { flops: 0.0, bytes: 0.0 };
    };
    let (tokens, h) = (x.first().copied().unwrap_or(0.0), x.get(1).copied().unwrap_or(0.0));
    let (experts, i) = (w_gate.first().copied().unwrap_or(0.0), w_gate.get(1).copied().unwrap_or(0.0));
    let element_bytes = output.dtype.size_bytes() as f64;
    let routed = (tokens * k as f64).min(experts);
    let mut flops = tokens * k as f64 * 3.0 * 2.0 * h * i;
    let mut bytes = routed * 3.0 * h * i * element_bytes;
    // The shared expert: dense over every token.
    if let Some(shared) = dims(inputs.get(5)) {
        let j = shared.first().copied().unwrap_or(0.0);
        flops += tokens * 3.0 * 2.0 * h * j;
        bytes += 3.0 * h * j * element_bytes;
    }
    bytes += inputs.iter().take(2).map(|t| tensor_bytes(t, syms)).sum::<f64>() + tensor_bytes(output, syms);
    KernelWork { flops, bytes }
}

/// A dim's value under `syms`, an unbound symbol counting as 1; the same value as
/// [`Dim::eval`] where that succeeds, computed in f64 (no overflow) and clamped at 0.
fn dim_value(dim: &Dim, syms: &SymBindings) -> f64 {
    let value = dim.terms().fold(dim.constant_part() as f64, |acc, (symbol, coefficient)| {
        acc + coefficient as f64 * syms.get(symbol).map_or(1.0, |&v| v as f64)
    });
    value.max(0.0)
}

fn elements(t: &TensorType, syms: &SymBindings) -> f64 {
    t.shape.iter().map(|d| dim_value(d, syms)).product()
}

fn tensor_bytes(t: &TensorType, syms: &SymBindings) -> f64 {
    elements(t, syms) * t.dtype.size_bytes() as f64
}
