//! The text form round-trips: `parse(&print(g)) == g` for random valid graphs that use every op,
//! and `parse` never panics, whatever it is given.
//!
//! Graphs come from a small deterministic generator driven by a seed (its own xorshift RNG), so
//! proptest only has to pick seeds and sizes; `every_op_appears` checks that the generator
//! reaches every op and the awkward values (symbolic dims, odd floats, escaped strings).

use std::collections::BTreeSet;

use proptest::prelude::*;
use saturn_ir::text::{parse, print};
use saturn_ir::{
    BinaryOp, DType, Dim, ElementwiseExpr, Graph, GroupScore, NodeId, Op, ReduceOp, Rope, RopeLayout, Router,
    RouterScoring, TensorType, UnaryOp, Yarn,
};

/// xorshift64*: tiny, deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    /// Scrambles `seed` with splitmix64, so nearby seeds give unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

const GRAPH_NAMES: [&str; 5] =
    ["tiny", "with \"quotes\" and \\ backslash", "tab\tand\nnewline", "ünï {e}", ""];

const PARAM_KEYS: [&str; 6] = [
    "model.embed_tokens.weight",
    "model.layers.{e}.mlp.experts.{e}.down_proj.weight",
    "model.layers.3.mlp.experts.{e}.gate_proj.weight",
    "we\"ird\\key\n\t{e}",
    "{e}",
    "",
];

/// The kinds of op the generator appends; `Gen::step` builds one fitting operands it has.
const OP_KINDS: usize = 28;

/// Builds a random valid graph: a pool of typed nodes grown by ops whose operands fit, adding
/// leaves of the needed types where the pool has none.
struct Gen {
    rng: Rng,
    graph: Graph,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng::new(seed);
        let graph = Graph::new(rng.pick(&GRAPH_NAMES));
        Gen { rng, graph }
    }

    /// A graph of about `size` ops with one to three outputs.
    fn graph(seed: u64, size: usize) -> Graph {
        let mut g = Gen::new(seed);
        let ty = g.tensor_type();
        g.leaf(ty);
        for _ in 0..size {
            g.step();
        }
        for name in ["out", "logits.0", "_aux"].into_iter().take(1 + g.rng.below(3)) {
            let node = NodeId::new(g.rng.below(g.graph.len()));
            g.graph.set_output(name, node).unwrap();
        }
        g.graph
    }

    fn name(&mut self, base: &str) -> String {
        let styled = match self.rng.below(4) {
            0 => base.to_string(),
            1 => format!("layers.{}.{base}", self.rng.below(3)),
            2 => format!("_{base}"),
            _ => format!("{base}_{}", self.rng.below(100)),
        };
        self.graph.fresh_name(&styled)
    }

    fn dim(&mut self) -> Dim {
        let s = Dim::sym("S");
        let p = Dim::sym("P");
        match self.rng.below(8) {
            0..=3 => Dim::constant(self.rng.pick(&[1u64, 2, 3, 4, 6, 8])),
            4 => s,
            5 => p.add(&s),
            6 => p,
            _ => self.rng.pick(&[
                Dim::linear(-1, [("S".to_string(), 2)]),
                s.sub(&p),
                Dim::linear(2, [("P".to_string(), 3)]),
            ]),
        }
    }

    fn shape(&mut self, rank: usize) -> Vec<Dim> {
        (0..rank).map(|_| self.dim()).collect()
    }

    fn tensor_type(&mut self) -> TensorType {
        let dtype = self.rng.pick(&DType::ALL);
        let rank = self.rng.below(4);
        TensorType { dtype, shape: self.shape(rank) }
    }

    fn float_value(&mut self) -> f64 {
        let odd = [
            0.1 + 0.2,
            1e-6,
            -2.5e-8,
            1.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e20,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -1.5,
        ];
        match self.rng.below(odd.len() + 1) {
            i if i < odd.len() => odd[i],
            _ => Some(f64::from_bits(self.rng.next())).filter(|f| !f.is_nan()).unwrap_or(0.5),
        }
    }

    fn add(
        &mut self,
        base: &str,
        op: Op,
        operands: &[NodeId],
        declared: Option<TensorType>,
    ) -> Option<NodeId> {
        let name = self.name(base);
        self.graph.add(name, op, operands, declared).ok()
    }

    /// An input or a param of type `ty`.
    fn leaf(&mut self, ty: TensorType) -> NodeId {
        let op =
            if self.rng.coin() { Op::Input } else { Op::Param { key: self.rng.pick(&PARAM_KEYS).into() } };
        let base = if op == Op::Input { "x" } else { "w" };
        self.add(base, op, &[], Some(ty)).expect("leaves always type-check")
    }

    /// A node of the pool whose type satisfies `fits`, if there is one.
    fn existing(&mut self, fits: impl Fn(&TensorType) -> bool) -> Option<NodeId> {
        let ids: Vec<NodeId> = self.graph.node_ids().filter(|&id| fits(self.graph.ty(id))).collect();
        (!ids.is_empty()).then(|| self.rng.pick(&ids))
    }

    /// A node satisfying `fits`, or else a new leaf of type `fallback`.
    fn operand(&mut self, fits: impl Fn(&TensorType) -> bool, fallback: TensorType) -> NodeId {
        self.existing(fits).unwrap_or_else(|| self.leaf(fallback))
    }

    fn float_operand(&mut self, min_rank: usize) -> NodeId {
        let dtype = self.rng.pick(&FLOAT_DTYPES);
        let rank = min_rank + self.rng.below(2);
        let shape = self.shape(rank);
        self.operand(|t| t.dtype.is_float() && t.rank() >= min_rank, TensorType { dtype, shape })
    }

    /// A shape that broadcasts against `shape`: a suffix of it with some dims replaced by 1.
    fn broadcastable(&mut self, shape: &[Dim]) -> Vec<Dim> {
        let skip = self.rng.below(shape.len() + 1);
        shape[skip..].iter().map(|d| if self.rng.coin() { Dim::constant(1) } else { d.clone() }).collect()
    }

    /// A second operand for an elementwise op on `a`: `a` itself, a scalar or a broadcastable leaf.
    fn partner(&mut self, a: NodeId) -> NodeId {
        let ty = self.graph.ty(a).clone();
        match self.rng.below(3) {
            0 => a,
            1 => {
                let value = self.float_value();
                let declared = TensorType { dtype: ty.dtype, shape: vec![] };
                self.add("c", Op::Scalar { value }, &[], Some(declared)).unwrap()
            }
            _ => {
                let shape = self.broadcastable(&ty.shape);
                self.leaf(TensorType { dtype: ty.dtype, shape })
            }
        }
    }

    /// Appends one random op (it may also add the leaves it needs).
    fn step(&mut self) {
        let axis_of = |rng: &mut Rng, t: &TensorType| rng.below(t.rank().max(1));
        match self.rng.below(OP_KINDS) {
            0 => {
                let x = self.float_operand(0);
                let u = self.rng.pick(&UnaryOp::ALL);
                self.add(u.name(), Op::Unary(u), &[x], None);
            }
            1 => {
                let a =
                    self.operand(|t| t.dtype != DType::Bool, TensorType::new(DType::I64, [Dim::sym("S")]));
                let b = self.partner(a);
                let op = self.rng.pick(&BinaryOp::ALL);
                let operands = if self.rng.coin() { [a, b] } else { [b, a] };
                self.add(op.name(), Op::Binary(op), &operands, None);
            }
            2 => {
                let a = self.operand(|_| true, TensorType::new(DType::F32, [4u64]));
                let shape = self.graph.ty(a).shape.clone();
                let cond_shape = self.broadcastable(&shape);
                let cond = self.operand(
                    |t| t.dtype == DType::Bool && t.shape == shape,
                    TensorType { dtype: DType::Bool, shape: cond_shape },
                );
                let b = self.partner(a);
                self.add("sel", Op::Where, &[cond, a, b], None);
            }
            3 => {
                let x = self.operand(|_| true, TensorType::new(DType::Bool, [3u64]));
                let dtype = self.rng.pick(&DType::ALL);
                self.add("cast", Op::Cast { dtype }, &[x], None);
            }
            4 => {
                let x = self.float_operand(1);
                let axis = axis_of(&mut self.rng, self.graph.ty(x));
                let (op, keepdim) = (self.rng.pick(&ReduceOp::ALL), self.rng.coin());
                self.add(op.name(), Op::Reduce { op, axis, keepdim }, &[x], None);
            }
            5 => {
                let x = self.float_operand(1);
                let axis = axis_of(&mut self.rng, self.graph.ty(x));
                self.add("probs", Op::Softmax { axis }, &[x], None);
            }
            6 => {
                let x = self.operand(
                    |t| t.dtype.is_float() && t.shape.last().is_some_and(|d| d.is_const()),
                    TensorType::new(DType::F32, [Dim::sym("S"), 8u64.into()]),
                );
                let n = self.graph.ty(x).shape.last().and_then(Dim::as_const).unwrap_or(0);
                let k = self.rng.below(n as usize + 1) as u64;
                self.add("topk", Op::TopKMask { k }, &[x], None);
            }
            7 => {
                let x = self.float_operand(1);
                let ty = self.graph.ty(x).clone();
                let w = self.leaf(TensorType { dtype: ty.dtype, shape: ty.shape[ty.rank() - 1..].to_vec() });
                let eps = self.float_value();
                self.add("norm", Op::RmsNorm { eps }, &[x, w], None);
            }
            8 => {
                let a = self.float_operand(2);
                let ty = self.graph.ty(a).clone();
                let batch = ty.shape[..ty.rank() - 2].to_vec();
                let mut shape = self.broadcastable(&batch);
                shape.extend([ty.shape[ty.rank() - 1].clone(), self.dim()]);
                let b = self.leaf(TensorType { dtype: ty.dtype, shape });
                self.add("mm", Op::MatMul, &[a, b], None);
            }
            9 => {
                let x = self.float_operand(1);
                let ty = self.graph.ty(x).clone();
                let n = self.dim();
                let w = self.leaf(TensorType::new(ty.dtype, [n, ty.shape[ty.rank() - 1].clone()]));
                self.add("proj", Op::Linear, &[x, w], None);
            }
            10 => self.rope(),
            11 => {
                let x = self.float_operand(2);
                self.add("masked", Op::CausalMask, &[x], None);
            }
            12 => {
                let table = self.operand(|t| t.rank() >= 1, TensorType::new(DType::F32, [16u64, 4]));
                let rank = self.rng.below(3);
                let shape = self.shape(rank);
                let idx = self.operand(|t| t.dtype == DType::I64, TensorType { dtype: DType::I64, shape });
                self.add("rows", Op::Gather, &[table, idx], None);
            }
            13 => {
                let x = self.operand(|_| true, TensorType::new(DType::F32, [2u64, 3]));
                let shape = self.reshaped(&self.graph.ty(x).shape.clone());
                self.add("view", Op::Reshape { shape }, &[x], None);
            }
            14 => {
                let x = self.operand(|_| true, TensorType::new(DType::F32, [2u64, 3]));
                let mut perm: Vec<usize> = (0..self.graph.ty(x).rank()).collect();
                for i in (1..perm.len()).rev() {
                    perm.swap(i, self.rng.below(i + 1));
                }
                self.add("perm", Op::Permute { perm }, &[x], None);
            }
            15 => {
                let x = self.operand(|_| true, TensorType::new(DType::F32, [1u64, 3]));
                let lead = self.rng.below(3);
                let mut shape = self.shape(lead);
                for d in self.graph.ty(x).shape.clone() {
                    shape.push(if d.as_const() == Some(1) && self.rng.coin() { self.dim() } else { d });
                }
                self.add("bcast", Op::Expand { shape }, &[x], None);
            }
            16 => {
                let x = self.operand(|t| t.rank() >= 1, TensorType::new(DType::F32, [Dim::sym("S")]));
                let ty = self.graph.ty(x).clone();
                let axis = axis_of(&mut self.rng, &ty);
                let (start, end) = match ty.shape[axis].as_const() {
                    Some(n) => {
                        let start = self.rng.below(n as usize + 1) as u64;
                        (start, start + self.rng.below((n - start) as usize + 1) as u64)
                    }
                    None => (self.rng.below(2) as u64, u64::MAX),
                };
                let end = if end == u64::MAX { ty.shape[axis].clone() } else { Dim::constant(end) };
                self.add("part", Op::Slice { axis, start: Dim::constant(start), end }, &[x], None);
            }
            17 => {
                let x = self.operand(|t| t.rank() >= 1, TensorType::new(DType::I64, [Dim::sym("P")]));
                let ty = self.graph.ty(x).clone();
                let axis = axis_of(&mut self.rng, &ty);
                let mut operands = vec![x];
                for _ in 0..self.rng.below(3) {
                    let mut shape = ty.shape.clone();
                    shape[axis] = self.dim();
                    let next =
                        if self.rng.coin() { x } else { self.leaf(TensorType { dtype: ty.dtype, shape }) };
                    operands.push(next);
                }
                self.add("cat", Op::Concat { axis }, &operands, None);
            }
            18 => {
                let start =
                    self.rng.pick(&[Dim::constant(0), Dim::constant(3), Dim::sym("P"), Dim::sym("S")]);
                let len = self.dim();
                self.add("pos", Op::Arange { start, len }, &[], None);
            }
            19 => {
                let value = self.float_value();
                let dtype = self.rng.pick(&DType::ALL);
                self.add("c", Op::Scalar { value }, &[], Some(TensorType { dtype, shape: vec![] }));
            }
            20 => self.fused_elementwise(),
            21 => {
                let x = self.float_operand(1);
                let ty = self.graph.ty(x).clone();
                let k = ty.shape[ty.rank() - 1].clone();
                // The norm weight may be of another float dtype, as for `rms_norm`.
                let g_dtype = if self.rng.coin() { ty.dtype } else { self.rng.pick(&FLOAT_DTYPES) };
                let g = self.leaf(TensorType::new(g_dtype, [k.clone()]));
                let n = self.dim();
                let w = self.leaf(TensorType::new(ty.dtype, [n, k]));
                let eps = self.float_value();
                self.add("norm_proj", Op::RmsNormLinear { eps }, &[x, g, w], None);
            }
            22 => {
                let x = self.float_operand(1);
                let ty = self.graph.ty(x).clone();
                let w_ty = TensorType::new(ty.dtype, [self.dim(), ty.shape[ty.rank() - 1].clone()]);
                let gate = self.leaf(w_ty.clone());
                let up = if self.rng.below(4) == 0 { gate } else { self.leaf(w_ty) };
                self.add("mlp", Op::GatedLinear, &[x, gate, up], None);
            }
            23 => {
                let dtype = self.rng.pick(&FLOAT_DTYPES);
                let n_group = 1 + self.rng.below(3) as u64;
                let per_group = 2 + self.rng.below(3) as u64;
                let e = n_group * per_group;
                let topk_group = 1 + self.rng.below(n_group as usize) as u64;
                let t = self.dim();
                let logits = self.leaf(TensorType::new(dtype, [t, Dim::constant(e)]));
                let mut args = vec![logits];
                if self.rng.coin() {
                    args.push(self.leaf(TensorType::new(dtype, [e])));
                }
                let router = Router {
                    scoring: if self.rng.coin() { RouterScoring::Softmax } else { RouterScoring::Sigmoid },
                    k: 1 + self.rng.below((topk_group * per_group) as usize) as u64,
                    n_group,
                    topk_group,
                    group_score: if self.rng.coin() { GroupScore::Max } else { GroupScore::SumTop2 },
                    masked_fill: if self.rng.coin() { f64::NEG_INFINITY } else { 0.0 },
                    weights_from_candidates: self.rng.coin(),
                    normalize: self.rng.coin(),
                    scale: self.float_value(),
                };
                self.add("router", Op::RouterTopK(router), &args, None);
            }
            24 => {
                let dtype = self.rng.pick(&FLOAT_DTYPES);
                let (t, h, i, e) = (self.dim(), self.dim(), self.dim(), 1 + self.rng.below(4) as u64);
                let x = self.leaf(TensorType::new(dtype, [t.clone(), h.clone()]));
                let routing = self.leaf(TensorType::new(dtype, [t, Dim::constant(e)]));
                let stack = TensorType::new(dtype, [Dim::constant(e), i.clone(), h.clone()]);
                let (gate, up) = (self.leaf(stack.clone()), self.leaf(stack));
                let down = self.leaf(TensorType::new(dtype, [Dim::constant(e), h.clone(), i]));
                let mut args = vec![x, routing, gate, up, down];
                if self.rng.coin() {
                    let j = self.dim();
                    let shared = TensorType::new(dtype, [j.clone(), h.clone()]);
                    args.extend([self.leaf(shared.clone()), self.leaf(shared)]);
                    args.push(self.leaf(TensorType::new(dtype, [h, j])));
                }
                let k = 1 + self.rng.below(e as usize) as u64;
                self.add("experts", Op::GroupedExperts { k }, &args, None);
            }
            25 => {
                let dtype = self.rng.pick(&FLOAT_DTYPES);
                let (h, s, c, r, t) = (self.dim(), self.dim(), self.dim(), self.dim(), self.dim());
                let q = self.leaf(TensorType::new(dtype, [h.clone(), s.clone(), c.clone()]));
                let q_rope = self.leaf(TensorType::new(dtype, [h, s, r.clone()]));
                let latent = self.leaf(TensorType::new(dtype, [t.clone(), c]));
                let k_pe = self.leaf(TensorType::new(dtype, [t, r]));
                let scale = self.float_value();
                self.add("attention", Op::MlaDecodeAttention { scale }, &[q, q_rope, latent, k_pe], None);
            }
            _ => {
                let ty = self.tensor_type();
                self.leaf(ty);
            }
        }
    }

    /// A fused elementwise op over 1 to 4 float operands of one dtype that broadcast together.
    fn fused_elementwise(&mut self) {
        let a = self.float_operand(0);
        let mut operands = vec![a];
        for _ in 0..self.rng.below(4) {
            let b = self.partner(a);
            operands.push(b);
        }
        let expr = self.expr(operands.len(), 0);
        self.add("fused", Op::FusedElementwise { expr }, &operands, None);
    }

    /// A random expression over `$0 .. $(n-1)`, `depth` levels below the root.
    fn expr(&mut self, n: usize, depth: usize) -> ElementwiseExpr {
        let leaf = depth >= 4 || self.rng.below(3) == 0;
        match self.rng.below(if leaf { 2 } else { 4 }) {
            0 => ElementwiseExpr::Input(self.rng.below(n)),
            1 => ElementwiseExpr::Const(if self.rng.coin() {
                self.rng.pick(&[f64::NEG_INFINITY, 1e-6, 0.1 + 0.2, -0.0, 0.5, 1e20])
            } else {
                self.float_value()
            }),
            2 => ElementwiseExpr::Unary(self.rng.pick(&UnaryOp::ALL), Box::new(self.expr(n, depth + 1))),
            _ => {
                let op = self.rng.pick(&BinaryOp::ALL);
                let (x, y) = (self.expr(n, depth + 1), self.expr(n, depth + 1));
                ElementwiseExpr::Binary(op, Box::new(x), Box::new(y))
            }
        }
    }

    fn rope(&mut self) {
        let x = self.operand(
            |t| {
                t.dtype.is_float()
                    && t.rank() >= 2
                    && t.shape.last().and_then(Dim::as_const).is_some_and(|d| d > 0 && d % 2 == 0)
            },
            TensorType::new(DType::F32, [Dim::sym("S"), 2u64.into(), 8u64.into()]),
        );
        let rows = self.graph.ty(x).shape[0].clone();
        let pos = match self.existing(|t| t.dtype == DType::I64 && t.shape == [rows.clone()]) {
            Some(pos) => pos,
            None => {
                let start = self.rng.pick(&[Dim::constant(0), Dim::sym("P")]);
                self.add("pos", Op::Arange { start, len: rows }, &[], None).unwrap()
            }
        };
        let yarn = self.rng.coin().then(|| Yarn {
            factor: 40.0,
            original_max_position: 4096,
            beta_fast: 32.0,
            beta_slow: self.float_value(),
        });
        let rope = Rope {
            layout: self.rng.pick(&[RopeLayout::Interleaved, RopeLayout::HalfSplit]),
            theta: self.rng.pick(&[10000.0, 1e6, 0.1 + 0.2]),
            yarn,
            attention_factor: self.float_value(),
        };
        self.add("rot", Op::Rope(rope), &[x, pos], None);
    }

    /// A shape with the element count of `shape`: a 1 inserted or removed, two dims merged
    /// (when one is constant) or a constant dim split.
    fn reshaped(&mut self, shape: &[Dim]) -> Vec<Dim> {
        let mut out = shape.to_vec();
        let at = self.rng.below(out.len().max(1));
        match self.rng.below(4) {
            0 => out.insert(self.rng.below(out.len() + 1), Dim::constant(1)),
            1 if out.len() >= 2 && at + 1 < out.len() => {
                let (a, b) = (out[at].clone(), out.remove(at + 1));
                out[at] = match (a.as_const(), b.as_const()) {
                    (Some(c), _) => scaled(&b, c),
                    (_, Some(c)) => scaled(&a, c),
                    _ => return shape.to_vec(),
                };
            }
            2 if out.get(at).and_then(Dim::as_const).is_some_and(|n| n % 2 == 0 && n > 0) => {
                let half = out[at].as_const().unwrap_or(2) / 2;
                out.splice(at..=at, [Dim::constant(2), Dim::constant(half)]);
            }
            _ => {
                if let Some(i) = out.iter().position(|d| d.as_const() == Some(1)) {
                    out.remove(i);
                }
            }
        }
        out
    }
}

fn scaled(d: &Dim, c: u64) -> Dim {
    let c = c as i64;
    Dim::linear(d.constant_part() * c, d.terms().map(|(s, k)| (s.to_string(), k * c)))
}

fn assert_round_trips(g: &Graph) {
    let text = print(g);
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed, *g, "{text}");
    assert_eq!(print(&parsed), text);
}

/// Applies a few random deletions, insertions and duplications to `text`.
fn mutate(text: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut chars: Vec<char> = text.chars().collect();
    let alphabet: Vec<char> = "%=(){}[],:+-*\"#\\ \n019.eSP_fx".chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        let len = (1 + rng.below(8)).min(chars.len() - at);
        match rng.below(3) {
            0 => drop(chars.drain(at..at + len)),
            1 => chars.insert(at, rng.pick(&alphabet)),
            _ => {
                let copy: Vec<char> = chars[at..at + len].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn random_graphs_round_trip(seed in any::<u64>(), size in 1usize..40) {
        assert_round_trips(&Gen::graph(seed, size));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_token_soup(tokens in prop::collection::vec(prop::sample::select(vec![
        "graph", "\"g\"", "{", "}", "%a", "%b", "=", "input", "neg", "add", "(", ")", ",", ":", "f32",
        "i64", "[", "]", "S", "P", "+", "-", "*", "2", "1.5e-3", "output", "o", "{key=\"k\"}", "inf",
        "\n", "#c\n",
    ]), 0..60)) {
        let _ = parse(&tokens.join(" "));
    }

    /// A mutated graph either fails to parse or parses into a graph that round-trips.
    #[test]
    fn parse_never_panics_on_mutated_graphs(seed in any::<u64>(), size in 1usize..20) {
        let text = mutate(&print(&Gen::graph(seed, size)), seed.rotate_left(17));
        if let Ok(g) = parse(&text) {
            let reprinted = print(&g);
            prop_assert_eq!(print(&parse(&reprinted).unwrap()), reprinted);
        }
    }
}

#[test]
fn every_op_appears() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let g = Gen::graph(seed, 40);
        assert_round_trips(&g);
        for id in g.node_ids() {
            let node = g.node(id);
            seen.insert(node.op.name().to_string());
            let symbolic = node.ty.shape.iter().any(|d| !d.is_const());
            match &node.op {
                Op::Rope(r) => seen.insert(format!("rope/{}/yarn={}", r.layout.name(), r.yarn.is_some())),
                Op::Scalar { value } if *value == f64::NEG_INFINITY => seen.insert("scalar -inf".into()),
                Op::Scalar { value } if *value == 0.1 + 0.2 => seen.insert("scalar 0.1+0.2".into()),
                Op::Param { key } if key.contains("{e}") && key.contains(['"', '\\']) => {
                    seen.insert("param with an escaped stack key".into())
                }
                Op::Input if node.ty.shape.contains(&Dim::sym("P").add(&Dim::sym("S"))) => {
                    seen.insert("input P+S".into())
                }
                Op::Input if symbolic => seen.insert("input symbolic".into()),
                Op::FusedElementwise { expr } => {
                    let operands = g.inputs(id).len();
                    seen.insert(format!("fused_elementwise with {operands} operand(s)"));
                    expr_features(expr, &mut seen);
                    false
                }
                Op::RmsNormLinear { .. } if g.ty(g.inputs(id)[1]).dtype != node.ty.dtype => {
                    seen.insert("rms_norm_linear with a norm weight of another dtype".into())
                }
                Op::GatedLinear if g.inputs(id)[1] == g.inputs(id)[2] => {
                    seen.insert("gated_linear with one shared weight".into())
                }
                _ => false,
            };
        }
    }
    let mut want = every_op_name();
    for layout in ["interleaved", "half_split"] {
        for yarn in [false, true] {
            want.insert(format!("rope/{layout}/yarn={yarn}"));
        }
    }
    want.extend(
        ["scalar -inf", "scalar 0.1+0.2", "param with an escaped stack key", "input P+S", "input symbolic"]
            .map(String::from),
    );
    want.extend((1..=4).map(|n| format!("fused_elementwise with {n} operand(s)")));
    want.extend(
        [
            "expr const -inf",
            "expr const 1e-6",
            "expr const 0.1+0.2",
            "expr unary in binary in unary",
            "expr binary in binary",
            "rms_norm_linear with a norm weight of another dtype",
            "gated_linear with one shared weight",
        ]
        .map(String::from),
    );
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

/// Records the awkward parts of a fused expression that `every_op_appears` wants to see.
fn expr_features(e: &ElementwiseExpr, seen: &mut BTreeSet<String>) {
    use ElementwiseExpr as E;
    match e {
        E::Input(_) => {}
        E::Const(c) => {
            for (value, name) in [(f64::NEG_INFINITY, "-inf"), (1e-6, "1e-6"), (0.1 + 0.2, "0.1+0.2")] {
                if *c == value {
                    seen.insert(format!("expr const {name}"));
                }
            }
        }
        E::Unary(_, a) => {
            if let E::Binary(_, x, y) = &**a
                && [x, y].iter().any(|b| matches!(&***b, E::Unary(..)))
            {
                seen.insert("expr unary in binary in unary".into());
            }
            expr_features(a, seen);
        }
        E::Binary(_, x, y) => {
            if [x, y].iter().any(|b| matches!(&***b, E::Binary(..))) {
                seen.insert("expr binary in binary".into());
            }
            expr_features(x, seen);
            expr_features(y, seen);
        }
    }
}

/// One op of each `Op` variant, in declaration order (`samples_cover_every_variant_of_op` checks
/// this against `op.rs`).
fn op_samples() -> Vec<Op> {
    let rope = Rope { layout: RopeLayout::Interleaved, theta: 1e4, yarn: None, attention_factor: 1.0 };
    vec![
        Op::Input,
        Op::Param { key: "k".into() },
        Op::Scalar { value: 0.0 },
        Op::Arange { start: Dim::constant(0), len: Dim::constant(1) },
        Op::Unary(UnaryOp::Neg),
        Op::Binary(BinaryOp::Add),
        Op::Where,
        Op::Cast { dtype: DType::F32 },
        Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false },
        Op::Softmax { axis: 0 },
        Op::TopKMask { k: 1 },
        Op::RmsNorm { eps: 1e-6 },
        Op::MatMul,
        Op::Linear,
        Op::Rope(rope),
        Op::CausalMask,
        Op::Gather,
        Op::Reshape { shape: vec![] },
        Op::Permute { perm: vec![] },
        Op::Expand { shape: vec![] },
        Op::Slice { axis: 0, start: Dim::constant(0), end: Dim::constant(0) },
        Op::Concat { axis: 0 },
        Op::FusedElementwise { expr: ElementwiseExpr::Input(0) },
        Op::RmsNormLinear { eps: 1e-6 },
        Op::GatedLinear,
        Op::RouterTopK(Router {
            scoring: RouterScoring::Softmax,
            k: 1,
            n_group: 1,
            topk_group: 1,
            group_score: GroupScore::Max,
            masked_fill: 0.0,
            weights_from_candidates: false,
            normalize: false,
            scale: 1.0,
        }),
        Op::GroupedExperts { k: 1 },
        Op::MlaDecodeAttention { scale: 1.0 },
    ]
}

/// The text name of every op: the samples' names, with the sub-kinds of `Unary`, `Binary` and
/// `Reduce` expanded; `every_op_appears` requires the generator to produce each. The `match` has
/// no wildcard arm, so a new variant of `Op` stops this file compiling until it is handled here
/// (and given a sample and a generator case).
fn every_op_name() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for op in op_samples() {
        match op {
            Op::Unary(_) => names.extend(UnaryOp::ALL.map(|u| u.name().to_string())),
            Op::Binary(_) => names.extend(BinaryOp::ALL.map(|b| b.name().to_string())),
            Op::Reduce { .. } => names.extend(ReduceOp::ALL.map(|r| r.name().to_string())),
            Op::Input
            | Op::Param { .. }
            | Op::Scalar { .. }
            | Op::Arange { .. }
            | Op::Where
            | Op::Cast { .. }
            | Op::Softmax { .. }
            | Op::TopKMask { .. }
            | Op::RmsNorm { .. }
            | Op::MatMul
            | Op::Linear
            | Op::Rope(_)
            | Op::CausalMask
            | Op::Gather
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Expand { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::FusedElementwise { .. }
            | Op::RmsNormLinear { .. }
            | Op::GatedLinear
            | Op::RouterTopK(_)
            | Op::GroupedExperts { .. }
            | Op::MlaDecodeAttention { .. } => {
                names.insert(op.name().to_string());
            }
        }
    }
    names
}

/// The samples hold exactly one op of each variant declared in `pub enum Op` (read from the
/// source, so a variant added there without a sample fails here).
#[test]
fn samples_cover_every_variant_of_op() {
    let src = include_str!("../src/op.rs");
    let body = src.split_once("pub enum Op {").expect("`pub enum Op` in op.rs").1;
    let body = body.split_once("\n}").expect("the end of `pub enum Op`").0;
    let declared: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| l.chars().take_while(char::is_ascii_alphanumeric).collect())
        .collect();
    assert!(declared.len() >= 25, "read too few variants from op.rs: {declared:?}");
    let sampled: Vec<String> = op_samples()
        .iter()
        .map(|op| format!("{op:?}").chars().take_while(char::is_ascii_alphanumeric).collect())
        .collect();
    assert_eq!(sampled, declared, "one sample per variant of `Op`, in declaration order");
}

/// NaN is not equal to itself, so graphs holding it compare by their text instead.
#[test]
fn nan_prints_and_parses_back() {
    let mut g = Graph::new("nan");
    let c = g
        .add("c", Op::Scalar { value: f64::NAN }, &[], Some(TensorType { dtype: DType::F32, shape: vec![] }))
        .unwrap();
    g.set_output("c", c).unwrap();
    let text = print(&g);
    assert!(text.contains("value=NaN"), "{text}");
    assert_eq!(print(&parse(&text).unwrap()), text);
}
