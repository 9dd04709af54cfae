//! Errors of graph construction and verification. Each names the node at fault.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    #[error("node `%{node}` ({op}): {msg}")]
    Type { node: String, op: &'static str, msg: String },
    #[error("`{name}` is not a valid name (expected [A-Za-z_][A-Za-z0-9_.]*)")]
    BadName { name: String },
    #[error("node name `%{name}` is used twice")]
    DuplicateName { name: String },
    #[error("output name `{name}` is used twice")]
    DuplicateOutput { name: String },
    #[error("node `%{node}` refers to operand #{operand}, which does not exist before it")]
    UnknownOperand { node: String, operand: usize },
    #[error("node `%{node}`: stored type {stored} differs from inferred type {inferred}")]
    StaleType { node: String, stored: String, inferred: String },
    #[error("graph `{graph}` has no outputs")]
    NoOutputs { graph: String },
}
