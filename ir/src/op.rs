//! The operations of the IR and their attributes.
//!
//! Ops are mid-level, at the grain of a reference implementation (see `ARCHITECTURE.md`). Each
//! op's exact semantics are given on its variant; the interpreter (`crate::interp`) implements
//! exactly that text, and type inference (`crate::infer`) checks the operand types it states.
//! Axes are non-negative indices.

use crate::dim::{Dim, Shape};
use crate::dtype::DType;
use crate::elementwise_expr::ElementwiseExpr;

/// Elementwise functions of one float operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Sigmoid,
    /// `x * sigmoid(x)`.
    Silu,
    Tanh,
}

/// Elementwise functions of two operands of one dtype, with numpy broadcasting.
///
/// On i64 operands `add`, `sub` and `mul` wrap on overflow, `div` truncates toward zero and a
/// division by zero is an error. On floats `max` and `min` propagate NaN, as torch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// Reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

/// How a RoPE op pairs the elements it rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// Pairs `(x[2j], x[2j+1])` (DeepSeek's complex form); results stay in place.
    Interleaved,
    /// Pairs `(x[j], x[j + d/2])` (the `rotate_half` form).
    HalfSplit,
}

/// YaRN frequency scaling (DESIGN.md §6), as Hugging Face's `_compute_yarn_parameters`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position: u64,
    pub beta_fast: f64,
    pub beta_slow: f64,
}

/// Rotary position embedding parameters.
///
/// For rotary dim `d` and `j < d/2`: `freq_j = theta^(-2j/d)`, adjusted by YaRN when present;
/// the angle of pair `j` at position `p` is `p * freq_j`; `cos` and `sin` are multiplied by
/// `attention_factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub layout: RopeLayout,
    pub theta: f64,
    pub yarn: Option<Yarn>,
    pub attention_factor: f64,
}

/// One IR operation. Operands are listed on each variant in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input, bound by the caller; its type is the node's declared type.
    Input,
    /// A weight, bound from a checkpoint by `key`. A key containing `{e}` names a stack: element
    /// `e` of axis 0 is the tensor whose name has `{e}` replaced by `e` (experts stored one by
    /// one in the checkpoint, one stacked value in the graph).
    Param { key: String },
    /// A rank-0 constant of the node's declared dtype.
    Scalar { value: f64 },
    /// `[len]` i64: `start, start+1, ..., start+len-1`.
    Arange { start: Dim, len: Dim },
    /// `(x)`: `f(x)` elementwise.
    Unary(UnaryOp),
    /// `(a, b)`: `f(a, b)` elementwise, numpy broadcasting (right-aligned; a dim of 1 stretches).
    Binary(BinaryOp),
    /// `(cond: bool, a, b)`: `cond ? a : b` elementwise, broadcasting all three.
    Where,
    /// `(x)`: converts to `dtype` (float to int truncates toward zero; bool is 0 or 1).
    Cast { dtype: DType },
    /// `(x)`: reduces `axis`; kept as size 1 when `keepdim`.
    Reduce { op: ReduceOp, axis: usize, keepdim: bool },
    /// `(x)`: `exp(x - max) / sum(exp(x - max))` along `axis`; a slice that is all `-inf` gives 0.
    Softmax { axis: usize },
    /// `(x)`: bool, true at the `k` largest elements along the last axis; ties go to the lower
    /// index (NaN counts as smallest).
    TopKMask { k: u64 },
    /// `(x [..., D], w [D])`: `x / sqrt(mean(x^2) + eps) * w` along the last axis.
    RmsNorm { eps: f64 },
    /// `(a [..., M, K], b [..., K, N])`: batched matrix product, batch dims broadcast.
    MatMul,
    /// `(x [..., K], w [N, K])`: `x w^T`, a dense layer without bias.
    Linear,
    /// `(x [S, ..., d], pos: i64 [S])`: rotates pairs of the last axis of row `s` by `pos[s]`.
    Rope(Rope),
    /// `(x [..., Sq, Sk])`: query `i` sits at position `i + Sk - Sq`; entries with key
    /// `j > i + Sk - Sq` become `-inf`.
    CausalMask,
    /// `(table [V, ...], idx: i64 [...])`: rows of `table` at `idx`; shape `idx ++ table[1..]`.
    /// An index outside `0..V` is an error.
    Gather,
    /// `(x)`: the same elements in row-major order with a new shape.
    Reshape { shape: Shape },
    /// `(x)`: axis `i` of the result is axis `perm[i]` of `x`.
    Permute { perm: Vec<usize> },
    /// `(x)`: broadcasts to `shape` (right-aligned; dims of 1 stretch, new leading axes repeat).
    Expand { shape: Shape },
    /// `(x)`: elements `start..end` of `axis`.
    Slice { axis: usize, start: Dim, end: Dim },
    /// `(x_0, x_1, ...)`: joined along `axis`.
    Concat { axis: usize },

    // Fused ops: produced only by optimisation passes. Each has its own reference semantics,
    // stated without reference to the ops it replaces, so every rewrite can be checked.
    /// `(x_0, x_1, ...)`: `expr` evaluated elementwise, `$i` standing for `x_i`; all operands
    /// are floats of one dtype and broadcast together (numpy rules); constants are f32.
    FusedElementwise { expr: ElementwiseExpr },
    /// `(x [..., K], g [K], w [N, K])`: `y = x / sqrt(mean(x^2) + eps) * g`, then `y w^T`.
    RmsNormLinear { eps: f64 },
    /// `(x [..., K], w_gate [N, K], w_up [N, K])`: `silu(x w_gate^T) * (x w_up^T)`.
    GatedLinear,
    /// `(logits [T, E])` or `(logits [T, E], bias [E])`: the routing matrix `[T, E]` of a
    /// mixture of experts, each token's expert weights, zero off its top `k`:
    /// 1. `s = scoring(logits)` along E; `b = s + bias` (or `s`);
    /// 2. with `n_group > 1`: view `b` as `[T, n_group, E / n_group]`, score each group (its max,
    ///    or the sum of its top 2), keep the `topk_group` best groups, and set the experts of the
    ///    others to `masked_fill` to get the candidates `c` (else `c = b`);
    /// 3. the `k` largest candidates are chosen (ties to the lower index); a chosen expert weighs
    ///    `s` (or `c` with `weights_from_candidates`), the others 0;
    /// 4. with `normalize`, weights are divided by their sum plus 1e-20; then times `scale`.
    RouterTopK(Router),
    /// `(x [T, H], routing [T, E], w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I])`, then
    /// optionally a shared expert `(w_gate_s [J, H], w_up_s [J, H], w_down_s [H, J])`:
    /// `y[t] = sum_e routing[t, e] * down_e(silu(gate_e x[t]) * up_e x[t])` over the experts with
    /// a non-zero weight (at most `k` per token), plus the shared expert's output. Grouped-GEMM
    /// semantics: each expert runs once on the tokens routed to it.
    GroupedExperts { k: u64 },
    /// `(q_latent [B.., H, S, C], q_rope [B.., H, S, R], latent [B.., T, C], k_pe [B.., T, R])`:
    /// multi-head latent attention over a latent cache, `[B.., H, S, C]`. For head `h` and query
    /// `s` (at position `s + T - S`): `score[t] = (q_latent[h, s] . latent[t] + q_rope[h, s] .
    /// k_pe[t]) * scale` for `t <= s + T - S` (the rest masked), `p = softmax(score)`, result
    /// `sum_t p[t] latent[t]`. Optional leading batch dims `B..`, the same on all four operands:
    /// each batch element attends over its own cache (a batch of sequences decoding together).
    MlaDecodeAttention { scale: f64 },
}

/// How a router turns logits into scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouterScoring {
    Softmax,
    Sigmoid,
}

/// How a router scores a group of experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupScore {
    Max,
    SumTop2,
}

/// The parameters of [`Op::RouterTopK`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Router {
    pub scoring: RouterScoring,
    pub k: u64,
    pub n_group: u64,
    pub topk_group: u64,
    pub group_score: GroupScore,
    pub masked_fill: f64,
    pub weights_from_candidates: bool,
    pub normalize: bool,
    pub scale: f64,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 9] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Tanh,
    ];

    /// The function on one f32, with torch's f32 CPU formulas (`sigmoid(x) = 1 / (1 + exp(-x))`,
    /// `silu(x) = x / (1 + exp(-x))`, `rsqrt(x) = 1 / sqrt(x)`).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Silu => x / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::Tanh => "tanh",
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 6] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];

    /// The function on two f32; `max` and `min` propagate NaN (as `torch.maximum`).
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => {
                if a.is_nan() || a > b {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Min => {
                if a.is_nan() || a < b {
                    a
                } else {
                    b
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
        }
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Mean => "reduce_mean",
        }
    }
}

impl RopeLayout {
    pub fn name(self) -> &'static str {
        match self {
            RopeLayout::Interleaved => "interleaved",
            RopeLayout::HalfSplit => "half_split",
        }
    }
}

/// An attribute value in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ident(String),
    Dim(Dim),
    Dims(Vec<Dim>),
    Ints(Vec<i64>),
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Param { .. } => "param",
            Op::Scalar { .. } => "scalar",
            Op::Arange { .. } => "arange",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::Softmax { .. } => "softmax",
            Op::TopKMask { .. } => "topk_mask",
            Op::RmsNorm { .. } => "rms_norm",
            Op::MatMul => "matmul",
            Op::Linear => "linear",
            Op::Rope(_) => "rope",
            Op::CausalMask => "causal_mask",
            Op::Gather => "gather",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Expand { .. } => "expand",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::FusedElementwise { .. } => "fused_elementwise",
            Op::RmsNormLinear { .. } => "rms_norm_linear",
            Op::GatedLinear => "gated_linear",
            Op::RouterTopK(_) => "router_topk",
            Op::GroupedExperts { .. } => "grouped_experts",
            Op::MlaDecodeAttention { .. } => "mla_decode_attention",
        }
    }

    /// Leaves take their type from the node's declaration rather than from operands.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input | Op::Param { .. } | Op::Scalar { .. })
    }

    /// Views move no data: a compiled kernel reads through them with other indices.
    pub fn is_view(&self) -> bool {
        matches!(self, Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Expand { .. })
    }

    /// An elementwise op as an expression over its operands `$0, $1, ...`: unary and binary ops
    /// as one-op expressions, a fused op as its own; `None` for any other op.
    pub fn elementwise_expr(&self) -> Option<ElementwiseExpr> {
        use ElementwiseExpr::{Binary, Input, Unary};
        Some(match self {
            Op::Unary(u) => Unary(*u, Box::new(Input(0))),
            Op::Binary(b) => Binary(*b, Box::new(Input(0)), Box::new(Input(1))),
            Op::FusedElementwise { expr } => expr.clone(),
            _ => return None,
        })
    }

    /// The number of operands, or `None` for variadic ops (at least one operand).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input | Op::Param { .. } | Op::Scalar { .. } | Op::Arange { .. } => 0,
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::TopKMask { .. }
            | Op::CausalMask
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Expand { .. }
            | Op::Slice { .. } => 1,
            Op::Binary(_) | Op::RmsNorm { .. } | Op::MatMul | Op::Linear | Op::Rope(_) | Op::Gather => 2,
            Op::Where | Op::RmsNormLinear { .. } | Op::GatedLinear => 3,
            Op::MlaDecodeAttention { .. } => 4,
            Op::Concat { .. }
            | Op::FusedElementwise { .. }
            | Op::RouterTopK(_)
            | Op::GroupedExperts { .. } => {
                return None;
            }
        })
    }

    /// The op with `f` applied to every dim in its attributes.
    pub fn map_dims(&self, f: impl Fn(&Dim) -> Dim) -> Op {
        let all = |ds: &[Dim]| ds.iter().map(&f).collect();
        match self {
            Op::Arange { start, len } => Op::Arange { start: f(start), len: f(len) },
            Op::Reshape { shape } => Op::Reshape { shape: all(shape) },
            Op::Expand { shape } => Op::Expand { shape: all(shape) },
            Op::Slice { axis, start, end } => Op::Slice { axis: *axis, start: f(start), end: f(end) },
            other => other.clone(),
        }
    }

    /// The attributes in their printed order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Op::Input
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::MatMul
            | Op::Linear
            | Op::CausalMask
            | Op::Gather => vec![],
            Op::Param { key } => vec![("key", Attr::Str(key.clone()))],
            Op::Scalar { value } => vec![("value", Attr::Float(*value))],
            Op::Arange { start, len } => {
                vec![("start", Attr::Dim(start.clone())), ("len", Attr::Dim(len.clone()))]
            }
            Op::Cast { dtype } => vec![("dtype", Attr::Ident(dtype.name().to_string()))],
            Op::Reduce { axis, keepdim, .. } => {
                vec![("axis", Attr::Int(*axis as i64)), ("keepdim", Attr::Bool(*keepdim))]
            }
            Op::Softmax { axis } => vec![("axis", Attr::Int(*axis as i64))],
            Op::TopKMask { k } => vec![("k", Attr::Int(*k as i64))],
            Op::RmsNorm { eps } => vec![("eps", Attr::Float(*eps))],
            Op::Rope(r) => {
                let mut v = vec![
                    ("layout", Attr::Ident(r.layout.name().to_string())),
                    ("theta", Attr::Float(r.theta)),
                    ("attention_factor", Attr::Float(r.attention_factor)),
                ];
                if let Some(y) = r.yarn {
                    v.extend([
                        ("yarn_factor", Attr::Float(y.factor)),
                        ("yarn_original_max_position", Attr::Int(y.original_max_position as i64)),
                        ("yarn_beta_fast", Attr::Float(y.beta_fast)),
                        ("yarn_beta_slow", Attr::Float(y.beta_slow)),
                    ]);
                }
                v
            }
            Op::Reshape { shape } => vec![("shape", Attr::Dims(shape.clone()))],
            Op::Permute { perm } => {
                vec![("perm", Attr::Ints(perm.iter().map(|&p| p as i64).collect()))]
            }
            Op::Expand { shape } => vec![("shape", Attr::Dims(shape.clone()))],
            Op::Slice { axis, start, end } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("start", Attr::Dim(start.clone())),
                ("end", Attr::Dim(end.clone())),
            ],
            Op::Concat { axis } => vec![("axis", Attr::Int(*axis as i64))],
            Op::FusedElementwise { expr } => vec![("expr", Attr::Str(expr.to_string()))],
            Op::RmsNormLinear { eps } => vec![("eps", Attr::Float(*eps))],
            Op::GatedLinear => vec![],
            Op::RouterTopK(r) => vec![
                (
                    "scoring",
                    Attr::Ident(
                        match r.scoring {
                            RouterScoring::Softmax => "softmax",
                            RouterScoring::Sigmoid => "sigmoid",
                        }
                        .into(),
                    ),
                ),
                ("k", Attr::Int(r.k as i64)),
                ("n_group", Attr::Int(r.n_group as i64)),
                ("topk_group", Attr::Int(r.topk_group as i64)),
                (
                    "group_score",
                    Attr::Ident(
                        match r.group_score {
                            GroupScore::Max => "max",
                            GroupScore::SumTop2 => "sum_top2",
                        }
                        .into(),
                    ),
                ),
                ("masked_fill", Attr::Float(r.masked_fill)),
                ("weights_from_candidates", Attr::Bool(r.weights_from_candidates)),
                ("normalize", Attr::Bool(r.normalize)),
                ("scale", Attr::Float(r.scale)),
            ],
            Op::GroupedExperts { k } => vec![("k", Attr::Int(*k as i64))],
            Op::MlaDecodeAttention { scale } => vec![("scale", Attr::Float(*scale))],
        }
    }

    /// Rebuilds an op from its name and attributes (the inverse of [`Op::name`] and
    /// [`Op::attrs`]). Errors name the op and the attribute at fault.
    pub fn from_parts(name: &str, attrs: Vec<(String, Attr)>) -> Result<Op, String> {
        let mut a = Attrs { op: name, attrs };
        let op = match name {
            "input" => Op::Input,
            "param" => Op::Param { key: a.string("key")? },
            "scalar" => Op::Scalar { value: a.float("value")? },
            "arange" => Op::Arange { start: a.dim("start")?, len: a.dim("len")? },
            "where" => Op::Where,
            "cast" => {
                let d = a.ident("dtype")?;
                Op::Cast { dtype: d.parse().map_err(|e| format!("`cast`: {e}"))? }
            }
            "softmax" => Op::Softmax { axis: a.usize("axis")? },
            "topk_mask" => Op::TopKMask { k: a.usize("k")? as u64 },
            "rms_norm" => Op::RmsNorm { eps: a.float("eps")? },
            "matmul" => Op::MatMul,
            "linear" => Op::Linear,
            "rope" => {
                let layout = match a.ident("layout")?.as_str() {
                    "interleaved" => RopeLayout::Interleaved,
                    "half_split" => RopeLayout::HalfSplit,
                    other => {
                        return Err(format!(
                            "`rope`: unknown layout `{other}` (expected interleaved or half_split)"
                        ));
                    }
                };
                let theta = a.float("theta")?;
                let attention_factor = a.float("attention_factor")?;
                let yarn = if a.has("yarn_factor") {
                    Some(Yarn {
                        factor: a.float("yarn_factor")?,
                        original_max_position: a.usize("yarn_original_max_position")? as u64,
                        beta_fast: a.float("yarn_beta_fast")?,
                        beta_slow: a.float("yarn_beta_slow")?,
                    })
                } else {
                    None
                };
                Op::Rope(Rope { layout, theta, yarn, attention_factor })
            }
            "causal_mask" => Op::CausalMask,
            "gather" => Op::Gather,
            "reshape" => Op::Reshape { shape: a.dims("shape")? },
            "permute" => Op::Permute {
                perm: a
                    .ints("perm")?
                    .into_iter()
                    .map(|p| to_usize(name, "perm", p))
                    .collect::<Result<_, _>>()?,
            },
            "expand" => Op::Expand { shape: a.dims("shape")? },
            "slice" => Op::Slice { axis: a.usize("axis")?, start: a.dim("start")?, end: a.dim("end")? },
            "concat" => Op::Concat { axis: a.usize("axis")? },
            "fused_elementwise" => {
                let text = a.string("expr")?;
                Op::FusedElementwise {
                    expr: text.parse().map_err(|e| format!("`fused_elementwise`: attribute `expr`: {e}"))?,
                }
            }
            "rms_norm_linear" => Op::RmsNormLinear { eps: a.float("eps")? },
            "gated_linear" => Op::GatedLinear,
            "router_topk" => {
                let scoring = match a.ident("scoring")?.as_str() {
                    "softmax" => RouterScoring::Softmax,
                    "sigmoid" => RouterScoring::Sigmoid,
                    other => {
                        return Err(format!("`router_topk`: unknown scoring `{other}` (softmax or sigmoid)"));
                    }
                };
                let k = a.usize("k")? as u64;
                let n_group = a.usize("n_group")? as u64;
                let topk_group = a.usize("topk_group")? as u64;
                let group_score = match a.ident("group_score")?.as_str() {
                    "max" => GroupScore::Max,
                    "sum_top2" => GroupScore::SumTop2,
                    other => {
                        return Err(format!(
                            "`router_topk`: unknown group_score `{other}` (max or sum_top2)"
                        ));
                    }
                };
                Op::RouterTopK(Router {
                    scoring,
                    k,
                    n_group,
                    topk_group,
                    group_score,
                    masked_fill: a.float("masked_fill")?,
                    weights_from_candidates: a.bool("weights_from_candidates")?,
                    normalize: a.bool("normalize")?,
                    scale: a.float("scale")?,
                })
            }
            "grouped_experts" => Op::GroupedExperts { k: a.usize("k")? as u64 },
            "mla_decode_attention" => Op::MlaDecodeAttention { scale: a.float("scale")? },
            other => {
                if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == other) {
                    Op::Unary(u)
                } else if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == other) {
                    Op::Binary(b)
                } else if let Some(r) = ReduceOp::ALL.into_iter().find(|r| r.name() == other) {
                    Op::Reduce { op: r, axis: a.usize("axis")?, keepdim: a.bool("keepdim")? }
                } else {
                    return Err(format!("unknown op `{other}`"));
                }
            }
        };
        a.finish()?;
        Ok(op)
    }
}

fn to_usize(op: &str, key: &str, v: i64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("`{op}`: attribute `{key}` must be non-negative, got {v}"))
}

/// Attribute lookup for [`Op::from_parts`]: each accessor removes what it reads, so leftovers
/// are reported as unknown.
struct Attrs<'a> {
    op: &'a str,
    attrs: Vec<(String, Attr)>,
}

impl Attrs<'_> {
    fn has(&self, key: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == key)
    }

    fn take(&mut self, key: &str) -> Result<Attr, String> {
        let i = self
            .attrs
            .iter()
            .position(|(k, _)| k == key)
            .ok_or_else(|| format!("`{}`: missing attribute `{key}`", self.op))?;
        Ok(self.attrs.remove(i).1)
    }

    fn wrong(&self, key: &str, want: &str, got: &Attr) -> String {
        format!("`{}`: attribute `{key}` must be {want}, got {got:?}", self.op)
    }

    fn float(&mut self, key: &str) -> Result<f64, String> {
        match self.take(key)? {
            Attr::Float(f) => Ok(f),
            Attr::Int(i) => Ok(i as f64),
            other => Err(self.wrong(key, "a number", &other)),
        }
    }

    fn usize(&mut self, key: &str) -> Result<usize, String> {
        match self.take(key)? {
            Attr::Int(i) => to_usize(self.op, key, i),
            other => Err(self.wrong(key, "an integer", &other)),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            Attr::Bool(b) => Ok(b),
            other => Err(self.wrong(key, "true or false", &other)),
        }
    }

    fn string(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            Attr::Str(s) => Ok(s),
            other => Err(self.wrong(key, "a string", &other)),
        }
    }

    fn ident(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            Attr::Ident(s) => Ok(s),
            other => Err(self.wrong(key, "a name", &other)),
        }
    }

    fn dim(&mut self, key: &str) -> Result<Dim, String> {
        match self.take(key)? {
            Attr::Dim(d) => Ok(d),
            Attr::Int(i) => Ok(Dim::linear(i, [])),
            Attr::Ident(s) => Ok(Dim::sym(&s)),
            other => Err(self.wrong(key, "a dim", &other)),
        }
    }

    fn dims(&mut self, key: &str) -> Result<Vec<Dim>, String> {
        match self.take(key)? {
            Attr::Dims(d) => Ok(d),
            Attr::Ints(v) if v.iter().all(|&i| i >= 0) => {
                Ok(v.into_iter().map(|i| Dim::constant(i as u64)).collect())
            }
            other => Err(self.wrong(key, "a list of dims", &other)),
        }
    }

    fn ints(&mut self, key: &str) -> Result<Vec<i64>, String> {
        match self.take(key)? {
            Attr::Ints(v) => Ok(v),
            Attr::Dims(d) if d.iter().all(Dim::is_const) => Ok(d.iter().map(|x| x.constant_part()).collect()),
            other => Err(self.wrong(key, "a list of integers", &other)),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.attrs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("`{}`: unknown attribute `{k}`", self.op)),
        }
    }
}
