//! saturn's typed tensor IR.
//!
//! A [`Graph`] is a DAG of [`Node`]s on petgraph; each node is an [`Op`] over operand nodes and
//! carries a [`TensorType`]: a [`DType`] and a shape of [`Dim`]s, where a dim is a constant or a
//! linear expression over named symbols (`S` new tokens, `P` cached positions, ...). Nodes are
//! added in topological order and typed as they are added; [`verify`] re-checks a whole graph.
//!
//! - [`text`]: the text form (`print`, `parse`), deterministic and round-trip exact.
//! - [`interp`]: the reference interpreter, the semantic oracle for everything downstream.
//!
//! This crate knows nothing of checkpoints, e-graphs, CUDA or files.
//!
//! ```
//! use saturn_ir::{DType, Dim, Graph, Op, TensorType, text};
//! let mut g = Graph::new("example");
//! let x = g.add("x", Op::Input, &[], Some(TensorType::new(DType::F32, [Dim::sym("S"), 8u64.into()]))).unwrap();
//! let w = g.add("w", Op::Param { key: "w".into() }, &[], Some(TensorType::new(DType::F32, [4u64, 8]))).unwrap();
//! let y = g.add("y", Op::Linear, &[x, w], None).unwrap();
//! g.set_output("y", y).unwrap();
//! assert_eq!(g.ty(y).to_string(), "f32[S, 4]");
//! assert_eq!(text::parse(&text::print(&g)).unwrap(), g);
//! ```

mod dim;
mod dtype;
mod elementwise_expr;
mod error;
mod graph;
mod infer;
pub mod interp;
mod op;
pub mod text;
mod verify;

pub use dim::{Dim, Poly, Shape, SymBindings, eval_shape, fmt_shape, numel};
pub use dtype::DType;
pub use elementwise_expr::ElementwiseExpr;
pub use error::IrError;
pub use graph::{Graph, Node, NodeId, TensorType, is_valid_name};
pub use infer::{broadcast, infer_type};
pub use interp::{
    Bindings, InterpError, ParamSource, Tensor, TensorData, evaluate, load_param, load_param_views,
    rope_inv_freq, select_topk,
};
pub use op::{
    Attr, BinaryOp, GroupScore, Op, ReduceOp, Rope, RopeLayout, Router, RouterScoring, UnaryOp, Yarn,
};
pub use verify::verify;
