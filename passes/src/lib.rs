//! saturn's optimiser: equality saturation over the IR with `egg`, guided by a roofline cost
//! model of a target, with DAG extraction.
//!
//! [`optimize`] takes a verified graph and returns an equivalent graph that the cost model
//! rates no worse, with a [`OptimizeReport`] of what happened:
//!
//! 1. constant folding of scalar-only elementwise subexpressions (`fold`);
//! 2. repeated structure: layers whose node text is the same up to their index are optimised
//!    once, as one template, and the result is instantiated for each (`templates`);
//! 3. each template (and the rest of the graph) goes into an e-graph (`convert`), hash-consing
//!    shares equal subgraphs;
//! 4. rule families (`rules`) run to saturation or a limit (`saturate`);
//! 5. extraction picks the cheapest DAG under the target's cost for the phase's symbol
//!    bindings (`extract`, `cost`), and the result is verified.
//!
//! ```
//! use saturn_passes::{OptimizeOptions, optimize};
//! # use saturn_ir::{DType, Dim, Graph, Op, TensorType, UnaryOp, BinaryOp};
//! # let mut g = Graph::new("g");
//! # let x = g.add("x", Op::Input, &[], Some(TensorType::new(DType::F32, [Dim::sym("S"), 8u64.into()]))).unwrap();
//! # let a = g.add("a", Op::Unary(UnaryOp::Silu), &[x], None).unwrap();
//! # let b = g.add("b", Op::Binary(BinaryOp::Mul), &[a, x], None).unwrap();
//! # g.set_output("y", b).unwrap();
//! let optimized = optimize(&g, &OptimizeOptions::for_target("h100").unwrap()).unwrap();
//! assert!(optimized.report.cost_after.seconds <= optimized.report.cost_before.seconds);
//! ```
//!
//! This crate never calls the runtime and knows nothing of files except the target file.

pub mod cost;

mod analysis;
mod convert;
mod extract;
mod fold;
mod lang;
mod pipeline;
mod rules;
mod saturate;
mod templates;

pub use cost::{CostError, NodeCost, Target, Targets, node_cost};
pub use pipeline::{
    Extraction, OptimizeOptions, OptimizeReport, Optimized, PassError, TemplateReport, graph_cost, optimize,
};
pub use rules::{Family, all_rule_names};
pub use saturate::{Limits, RuleStats, SaturationReport, StopReason};

/// Hooks for the soundness tests of each rule: run one rule on a graph and extract the form
/// that uses what the rule added. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::pipeline::apply_rule_for_test;
}
