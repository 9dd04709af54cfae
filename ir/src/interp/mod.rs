//! The reference interpreter: the semantic oracle for everything downstream.
//!
//! [`evaluate`] runs a verified [`Graph`] on concrete [`Tensor`]s, implementing exactly the
//! semantics documented on each [`Op`] variant. Correctness comes first: float math is f32 (f64
//! accumulators for sums), f16/bf16 results are rounded to their precision, and every failure a
//! verified graph can meet at run time (unbound or negative symbols, bad inputs, missing params,
//! out-of-range gather indices, ...) is an [`InterpError`] naming the node or key, never a panic.
//!
//! Nodes run in index (topological) order, only those the outputs depend on; each value is
//! dropped after its last use.
//!
//! Layout of the module: this file holds the API and the evaluation loop; `tensor` the
//! tensor type and indexing helpers; `leaves` inputs, params, scalars and aranges;
//! `elementwise`, `reduce` (reductions, softmax, RMSNorm), `mask` (top-k and causal masks),
//! `linalg` (matmul, linear), `rope` and `shape_ops` the ops.

mod attention;
mod elementwise;
mod leaves;
mod linalg;
mod mask;
mod moe;
mod reduce;
pub(crate) mod rope;
mod shape_ops;
mod tensor;

use std::collections::{BTreeMap, HashMap};

use crate::{Dim, Graph, IrError, Node, Op, SymBindings};

pub use leaves::{param as load_param, param_views as load_param_views};
pub use mask::select_topk;
pub use rope::inv_freq as rope_inv_freq;
pub use tensor::{Tensor, TensorData};

/// Where params come from (a checkpoint, a map in tests). `shape` is the expected concrete
/// shape; an implementation returns an error message (naming the key) on a missing tensor or a
/// shape/dtype mismatch. Float params are returned as [`TensorData::F32`].
pub trait ParamSource {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String>;

    /// The f32 values of `key`, of shape `shape`, borrowed where the source holds them as f32
    /// in place (a memory-mapped checkpoint): a caller that transforms them anyway (packs them
    /// into strips) then copies them once instead of loading a copy first. `None` (the default)
    /// means call [`ParamSource::load`], which also says what is wrong with a bad key.
    fn f32_view(&self, key: &str, shape: &[usize]) -> Option<&[f32]> {
        let _ = (key, shape);
        None
    }
}

/// Looks the key up and checks the shape (the interpreter checks the dtype).
impl ParamSource for HashMap<String, Tensor> {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let t = self.get(key).ok_or_else(|| format!("no tensor named `{key}`"))?;
        if t.shape != shape {
            return Err(format!("tensor `{key}` has shape {:?}, expected {shape:?}", t.shape));
        }
        Ok(t.clone())
    }
}

/// What a graph is evaluated with.
pub struct Bindings<'a> {
    /// Values of the graph's symbols, e.g. `S = 3, P = 0`.
    pub symbols: SymBindings,
    /// Input tensors by input node name. Entries no reachable input uses are ignored.
    pub inputs: HashMap<String, Tensor>,
    pub params: &'a dyn ParamSource,
}

/// A failure of [`evaluate`]. Each variant names the node (`%name`) and/or the input or param
/// key at fault.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("invalid graph: {0}")]
    Verify(#[from] IrError),
    #[error("input `%{name}` is not bound")]
    MissingInput { name: String },
    #[error("input `%{name}`: expected {expected}, got {got}")]
    InputMismatch { name: String, expected: String, got: String },
    /// An unbound symbol, or a dim that evaluates negative or too large.
    #[error("node `%{node}`: {msg}")]
    Symbol { node: String, msg: String },
    #[error("node `%{node}`: param `{key}`: {msg}")]
    Param { node: String, key: String, msg: String },
    /// A value-dependent failure: a gather index out of range, an integer division by zero, a
    /// slice outside its axis, a result too large to allocate.
    #[error("node `%{node}`: {msg}")]
    Value { node: String, msg: String },
    /// A result that contradicts the node's type: a bug in the interpreter.
    #[error("node `%{node}`: interpreter bug: {msg}")]
    Internal { node: String, msg: String },
}

/// The failure of one op, before the node's name is attached.
pub(crate) enum OpError {
    Value(String),
    Internal(String),
}

impl OpError {
    fn at(self, node: &str) -> InterpError {
        let node = node.to_string();
        match self {
            OpError::Value(msg) => InterpError::Value { node, msg },
            OpError::Internal(msg) => InterpError::Internal { node, msg },
        }
    }
}

impl From<String> for OpError {
    /// Plain messages come from consistency checks, hence internal errors.
    fn from(msg: String) -> OpError {
        OpError::Internal(msg)
    }
}

pub(crate) type OpResult = Result<Tensor, OpError>;

/// The typed elements of an operand, or an internal error naming the expected kind.
pub(crate) fn elems<'t, T: tensor::Elem>(t: &'t Tensor, what: &str) -> Result<&'t [T], OpError> {
    T::slice(&t.data).ok_or_else(|| {
        OpError::Internal(format!("{what} holds {} data, expected {}", t.data.kind_name(), type_name::<T>()))
    })
}

fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Evaluates every output of a verified graph. Outputs by output name.
pub fn evaluate(graph: &Graph, bindings: &Bindings) -> Result<BTreeMap<String, Tensor>, InterpError> {
    crate::verify(graph)?;
    let n = graph.len();
    let operands: Vec<Vec<usize>> =
        graph.node_ids().map(|id| graph.inputs(id).iter().map(|o| o.index()).collect()).collect();

    // Nodes the outputs depend on, and the last node that uses each value.
    let needed = graph.needed_by_outputs();
    let mut last_use = vec![0usize; n];
    for i in (0..n).filter(|&i| needed[i]) {
        for &o in &operands[i] {
            last_use[o] = i;
        }
    }
    for (_, id) in graph.outputs() {
        last_use[id.index()] = usize::MAX;
    }

    let mut values: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
    for (i, id) in graph.node_ids().enumerate() {
        if !needed[i] {
            continue;
        }
        let node = graph.node(id);
        let shape = eval_dims(&node.ty.shape, &bindings.symbols)
            .map_err(|msg| InterpError::Symbol { node: node.name.clone(), msg })?;
        if checked_bytes(&shape).is_none() {
            return Err(InterpError::Value {
                node: node.name.clone(),
                msg: format!("result shape {shape:?} is too large to allocate"),
            });
        }
        let ops = &operands[i];
        let mut result = match (&node.op, ops.as_slice()) {
            // A reshape of a value that dies here moves its data instead of copying it.
            (Op::Reshape { .. }, &[src]) if last_use[src] == i => {
                let t = values[src].take().ok_or_else(|| missing(node))?;
                shape_ops::reshape_owned(t, &shape).map_err(|e| e.at(&node.name))?
            }
            _ => {
                let args = ops
                    .iter()
                    .map(|&o| values[o].as_ref().ok_or_else(|| missing(node)))
                    .collect::<Result<Vec<&Tensor>, _>>()?;
                compute(node, &shape, &args, bindings)?
            }
        };
        tensor::round_to_dtype(node.ty.dtype, &mut result.data);
        check_result(node, &shape, &result)?;
        values[i] = Some(result);
        for &o in ops {
            if last_use[o] == i {
                values[o] = None;
            }
        }
    }

    let mut out = BTreeMap::new();
    for (name, id) in graph.outputs() {
        let node = graph.node(*id);
        out.insert(name.clone(), values[id.index()].clone().ok_or_else(|| missing(node))?);
    }
    Ok(out)
}

fn missing(node: &Node) -> InterpError {
    InterpError::Internal { node: node.name.clone(), msg: "an operand value is missing".into() }
}

/// The bug guard: a result must have the node's dtype representation and concrete shape.
fn check_result(node: &Node, shape: &[usize], t: &Tensor) -> Result<(), InterpError> {
    let ok = t.shape == shape && t.data.holds(node.ty.dtype) && Some(t.data.len()) == checked_bytes(shape);
    if ok {
        return Ok(());
    }
    Err(InterpError::Internal {
        node: node.name.clone(),
        msg: format!("computed {} but the node's type {} gives {shape:?}", t.describe(), node.ty),
    })
}

/// The element count of `shape` when 8 bytes per element stay addressable.
fn checked_bytes(shape: &[usize]) -> Option<usize> {
    tensor::checked_numel(shape).filter(|&n| n <= isize::MAX as usize / 8)
}

/// Evaluates a dim under symbol bindings, like [`Dim::eval`] but in checked i128 arithmetic so
/// that no binding can overflow.
pub(crate) fn eval_dim(d: &Dim, syms: &SymBindings) -> Result<usize, String> {
    let mut v = i128::from(d.constant_part());
    for (s, c) in d.terms() {
        let x = syms.get(s).ok_or_else(|| format!("symbol `{s}` has no binding"))?;
        v = i128::from(c)
            .checked_mul(i128::from(*x))
            .and_then(|t| v.checked_add(t))
            .ok_or_else(|| format!("dim `{d}` overflows"))?;
    }
    if v < 0 {
        return Err(format!("dim `{d}` evaluates to {v}, which is negative"));
    }
    usize::try_from(v).map_err(|_| format!("dim `{d}` evaluates to {v}, which is too large"))
}

fn eval_dims(shape: &[Dim], syms: &SymBindings) -> Result<Vec<usize>, String> {
    shape.iter().map(|d| eval_dim(d, syms)).collect()
}

/// Computes one node from its operand values; `shape` is its concrete result shape.
fn compute(node: &Node, shape: &[usize], args: &[&Tensor], b: &Bindings) -> Result<Tensor, InterpError> {
    let name = &node.name;
    if node.op.arity().is_some_and(|n| n != args.len()) || (node.op.arity().is_none() && args.is_empty()) {
        let msg = format!("{} operand values for `{}`", args.len(), node.op.name());
        return Err(InterpError::Internal { node: name.clone(), msg });
    }
    let sym =
        |d: &Dim| eval_dim(d, &b.symbols).map_err(|msg| InterpError::Symbol { node: name.clone(), msg });
    let r = match &node.op {
        Op::Input => return leaves::input(node, shape, &b.inputs),
        Op::Param { key } => return leaves::param(node, key, shape, b.params),
        Op::Scalar { value } => Ok(leaves::scalar(node.ty.dtype, *value)),
        Op::Arange { start, .. } => leaves::arange(sym(start)?, shape),
        Op::Unary(u) => elementwise::unary(*u, args[0]),
        Op::Binary(op) => elementwise::binary(*op, args[0], args[1], shape),
        Op::Where => elementwise::select(args[0], args[1], args[2], shape),
        Op::Cast { dtype } => Ok(elementwise::cast(args[0], *dtype)),
        Op::Reduce { op, axis, .. } => reduce::reduce(*op, args[0], *axis, shape),
        Op::Softmax { axis } => reduce::softmax(args[0], *axis),
        Op::TopKMask { k } => mask::topk_mask(args[0], *k),
        Op::RmsNorm { eps } => reduce::rms_norm(args[0], args[1], *eps),
        Op::MatMul => linalg::matmul(args[0], args[1], shape),
        Op::Linear => linalg::linear(args[0], args[1], shape),
        Op::Rope(r) => rope::rope(r, args[0], args[1]),
        Op::CausalMask => mask::causal_mask(args[0]),
        Op::Gather => shape_ops::gather(args[0], args[1], shape),
        Op::Reshape { .. } => shape_ops::reshape_owned(args[0].clone(), shape),
        Op::Permute { perm } => shape_ops::permute(args[0], perm, shape),
        Op::Expand { .. } => shape_ops::expand(args[0], shape),
        Op::Slice { axis, start, end } => shape_ops::slice(args[0], *axis, sym(start)?, sym(end)?, shape),
        Op::Concat { axis } => shape_ops::concat(args, *axis, shape),
        Op::FusedElementwise { expr } => elementwise::fused(expr, args, shape),
        Op::RmsNormLinear { eps } => reduce::rms_norm(args[0], args[1], *eps)
            .and_then(|normed| linalg::linear(&normed, args[2], shape)),
        Op::GatedLinear => linalg::gated_linear(args[0], args[1], args[2], shape),
        Op::RouterTopK(r) => moe::router_topk(r, args[0], args.get(1).copied()),
        Op::GroupedExperts { .. } => moe::grouped_experts(args, shape),
        Op::MlaDecodeAttention { scale } => attention::mla_decode_attention(args, *scale),
    };
    r.map_err(|e| e.at(name))
}
