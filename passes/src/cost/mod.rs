//! TEMPORARY stand-in until the cost model lands (replaced wholesale).
use std::collections::BTreeMap;
use saturn_ir::{DType, Op, SymBindings, TensorType};
use serde::Serialize;
#[derive(Clone, Debug)]
pub struct Target { pub name: String, pub peak_flops: BTreeMap<DType, f64>, pub memory_bandwidth: f64, pub launch_overhead: f64, pub on_chip_bytes: f64 }
pub struct Targets(BTreeMap<String, Target>);
#[derive(Debug, thiserror::Error)]
pub enum CostError { #[error("unknown target `{0}`")] Unknown(String) }
impl Targets {
    pub fn builtin() -> Targets {
        let t = Target { name: "h100".into(), peak_flops: BTreeMap::from([(DType::F32, 6.7e13)]), memory_bandwidth: 3.0e12, launch_overhead: 3e-6, on_chip_bytes: 5e7 };
        Targets(BTreeMap::from([("h100".to_string(), t)]))
    }
    pub fn get(&self, name: &str) -> Result<&Target, CostError> { self.0.get(name).ok_or_else(|| CostError::Unknown(name.into())) }
}
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct NodeCost { pub flops: f64, pub bytes: f64, pub launches: u32, pub seconds: f64 }
impl std::ops::Add for NodeCost { type Output = NodeCost; fn add(self, o: NodeCost) -> NodeCost { NodeCost { flops: self.flops + o.flops, bytes: self.bytes + o.bytes, launches: self.launches + o.launches, seconds: self.seconds + o.seconds } } }
fn numel(t: &TensorType, s: &SymBindings) -> f64 { t.shape.iter().map(|d| d.eval(s).unwrap_or(1) as f64).product() }
pub fn node_cost(op: &Op, inputs: &[&TensorType], output: &TensorType, syms: &SymBindings, target: &Target) -> NodeCost {
    if op.is_leaf() || matches!(op, Op::Arange { .. } | Op::Reshape { .. } | Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. }) { return NodeCost::default(); }
    let bytes: f64 = inputs.iter().map(|t| numel(t, syms) * 4.0).sum::<f64>() + numel(output, syms) * 4.0;
    let flops = numel(output, syms) * 2.0;
    NodeCost { flops, bytes, launches: 1, seconds: (bytes / target.memory_bandwidth).max(flops / 6.7e13) + target.launch_overhead }
}
