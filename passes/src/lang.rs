//! The e-graph language: one e-node per IR op, identified by the op's name, attributes and (for
//! leaves) its declared type and name, so that equal ops on equal operands hash-cons together.

use std::fmt;
use std::sync::Arc;

use egg::{Id, Language};
use saturn_ir::{Op, TensorType};

/// An IR op with a canonical text key; equality, order and hashing use the key only.
#[derive(Clone, Debug)]
pub struct OpKey {
    key: Arc<str>,
    pub op: Op,
    /// The declared type of a leaf (`input`, `param`, `scalar`).
    pub leaf_type: Option<TensorType>,
    /// The name of an input (inputs are identified by name).
    pub input_name: Option<String>,
}

impl OpKey {
    /// The key of a non-leaf op, or of a leaf with its declared type (and name, for inputs).
    pub fn new(op: Op, leaf_type: Option<TensorType>, input_name: Option<String>) -> OpKey {
        let attrs: Vec<String> = op.attrs().iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let mut key = format!("{}{{{}}}", op.name(), attrs.join(","));
        if let Some(t) = &leaf_type {
            key.push_str(&format!(":{t}"));
        }
        if let Some(n) = &input_name {
            key.push_str(&format!("%{n}"));
        }
        OpKey { key: key.into(), op, leaf_type, input_name }
    }

    /// A non-leaf op.
    pub fn op(op: Op) -> OpKey {
        OpKey::new(op, None, None)
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &OpKey) -> bool {
        self.key == other.key
    }
}

impl Eq for OpKey {}

impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &OpKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpKey {
    fn cmp(&self, other: &OpKey) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl std::hash::Hash for OpKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// An e-node: an op and its operand classes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorNode {
    pub op: OpKey,
    pub children: Vec<Id>,
}

impl TensorNode {
    pub fn new(op: OpKey, children: Vec<Id>) -> TensorNode {
        TensorNode { op, children }
    }

    /// The IR op's name (`linear`, `mul`, ...).
    pub fn name(&self) -> &'static str {
        self.op.op.name()
    }
}

impl Language for TensorNode {
    type Discriminant = Arc<str>;

    fn discriminant(&self) -> Arc<str> {
        self.op.key.clone()
    }

    fn matches(&self, other: &TensorNode) -> bool {
        self.op == other.op && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for TensorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.op.key)
    }
}
