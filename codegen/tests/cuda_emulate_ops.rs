//! The CUDA kernels of the index family (elementwise with broadcasting, where, cast, arange,
//! causal mask, expand, permute, slice, concat, gather, carried appends) and of the rows family
//! (reductions, softmax, RMSNorm, top-k mask, RoPE), matrix products, `grouped_experts` and
//! `mla_decode_attention` run on the CPU emulator against the interpreter; products and
//! experts with weights stored as f32 and as bf16 (f32 math, held to the same tolerance), and
//! on tensor cores (held to bf16's).
//!
//! Each property test builds a small graph with random shapes and attributes (proptest, so
//! failures shrink) and random values (from the case's seed), generates its CUDA program, runs
//! it in the emulator and compares every output with `saturn_ir::evaluate`: integers and bools
//! exactly, floats within `1e-5 * max(1, |want|)` (NaN where the interpreter gives NaN). Graphs
//! with symbols run several times on one emulator, so one compiled library serves several
//! sequence lengths and the arena plan is laid out anew each time.

mod common;

use common::{Rng, dims, proptest_config as cfg};

use std::collections::{BTreeMap, HashMap};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use saturn_codegen::cuda::emulate::Emulator;
use saturn_codegen::cuda::{CudaOptions, CudaProgram, StoredWeights, WeightStorage};
use saturn_ir::{
    BinaryOp, Bindings, DType, Dim, ElementwiseExpr, Graph, NodeId, Op, ReduceOp, Rope, RopeLayout,
    SymBindings, Tensor, TensorData, TensorType, UnaryOp, Yarn, eval_shape, evaluate,
};

/// How an input or param is filled.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// f32 uniform in `[-1, 1)`.
    Uniform,
    /// [`Fill::Uniform`] rounded to bf16 (exact in a tensor-core operand).
    UniformBf16,
    /// [`Fill::Uniform`], or with `bf16` [`Fill::UniformBf16`], divided by `2^shift` (still
    /// exact in bf16).
    Halved {
        bf16: bool,
        shift: i32,
    },
    /// f32 within `[-1000, 1000]`, with zeros (casts).
    Wide,
    /// f32 in `[-8, 8)`; each row of 8 elements all `-inf` with probability 1/4, each element
    /// `-inf` with probability 1/8 and NaN with 1/32.
    Extreme,
    /// i64 in `lo..hi`.
    Int(i64, i64),
    Bool,
}

impl Fill {
    fn dtype(self) -> DType {
        match self {
            Fill::Uniform | Fill::UniformBf16 | Fill::Halved { .. } | Fill::Wide | Fill::Extreme => {
                DType::F32
            }
            Fill::Int(..) => DType::I64,
            Fill::Bool => DType::Bool,
        }
    }

    fn tensor(self, rng: &mut Rng, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        match self {
            Fill::Uniform => Tensor::f32(shape, (0..n).map(|_| rng.unit()).collect()),
            Fill::UniformBf16 => {
                Tensor::f32(shape, (0..n).map(|_| half::bf16::from_f32(rng.unit()).to_f32()).collect())
            }
            Fill::Halved { bf16, shift } => {
                let fill = if bf16 { Fill::UniformBf16 } else { Fill::Uniform };
                let mut t = fill.tensor(rng, shape);
                if let TensorData::F32(v) = &mut t.data {
                    v.iter_mut().for_each(|x| *x *= 2f32.powi(-shift));
                }
                t
            }
            Fill::Wide => Tensor::f32(
                shape,
                (0..n).map(|_| if rng.below(5) == 0 { 0.0 } else { rng.unit() * 1000.0 }).collect(),
            ),
            Fill::Extreme => {
                let mut row_inf = false;
                let data = (0..n)
                    .map(|i| {
                        if i % 8 == 0 {
                            row_inf = rng.below(4) == 0;
                        }
                        match rng.below(32) {
                            _ if row_inf => f32::NEG_INFINITY,
                            0 => f32::NAN,
                            1..=4 => f32::NEG_INFINITY,
                            _ => rng.unit() * 8.0,
                        }
                    })
                    .collect();
                Tensor::f32(shape, data)
            }
            Fill::Int(lo, hi) => {
                Tensor::i64(shape, (0..n).map(|_| lo + rng.below((hi - lo) as usize) as i64).collect())
            }
            Fill::Bool => Tensor::bool(shape, (0..n).map(|_| rng.below(2) == 1).collect()),
        }
    }
}

/// How a case's program stores weights and computes ([`Case::precision`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Precision {
    F32,
    Bf16Weights,
    TensorCores,
}

fn precision() -> impl Strategy<Value = Precision> {
    prop_oneof![Just(Precision::F32), Just(Precision::Bf16Weights), Just(Precision::TensorCores)]
}

type Syms = Vec<(&'static str, u64)>;

/// A graph under construction, its params and its inputs (filled anew for every run).
struct Case {
    g: Graph,
    params: HashMap<String, Tensor>,
    inputs: Vec<(String, Vec<Dim>, Fill)>,
    rng: Rng,
    /// How the program stores params (the interpreter gets them rounded the same way) and
    /// computes.
    options: CudaOptions,
    /// How close floats must come to the interpreter's.
    tolerance: Tolerance,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("case"),
            params: HashMap::new(),
            inputs: Vec::new(),
            rng: Rng::new(seed),
            options: CudaOptions::default(),
            tolerance: Tolerance::Element(1e-5),
        }
    }

    /// Sets how the program stores params and computes: bf16 params alone change no
    /// arithmetic (the same tolerance holds); tensor cores round the other operands to bf16,
    /// so results are held to bf16's tolerance, torch.testing's 1.6e-2 of the result's scale.
    fn precision(&mut self, p: Precision) {
        let bf16 = !matches!(p, Precision::F32);
        self.options = CudaOptions {
            weights: if bf16 { WeightStorage::Bf16 } else { WeightStorage::F32 },
            tensor_cores: matches!(p, Precision::TensorCores),
            ..self.options
        };
        if self.options.tensor_cores {
            self.tolerance = Tolerance::Scale(1.6e-2);
        }
    }

    fn input(&mut self, name: &str, shape: &[Dim], fill: Fill) -> NodeId {
        self.inputs.push((name.to_string(), shape.to_vec(), fill));
        let ty = TensorType::new(fill.dtype(), shape.to_vec());
        self.g.add(name, Op::Input, &[], Some(ty)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A param (its key is its name): kernels on params only run in `init`.
    fn param(&mut self, name: &str, shape: &[usize], fill: Fill) -> NodeId {
        self.params.insert(name.to_string(), fill.tensor(&mut self.rng, shape.to_vec()));
        let ty = TensorType::new(fill.dtype(), dims(shape));
        self.g.add(name, Op::Param { key: name.into() }, &[], Some(ty)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An input or a param of a constant shape.
    fn value(&mut self, name: &str, shape: &[usize], fill: Fill, param: bool) -> NodeId {
        if param { self.param(name, shape, fill) } else { self.input(name, &dims(shape), fill) }
    }

    fn op(&mut self, name: &str, op: Op, args: &[NodeId]) -> NodeId {
        self.g.add(name, op, args, None).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn out(&mut self, id: NodeId) {
        let name = self.g.node(id).name.clone();
        self.g.set_output(&name, id).unwrap();
    }

    /// Generates, then runs once per binding of `runs` on one emulator, each time with fresh
    /// inputs, comparing every output with the interpreter's.
    fn check(&mut self, runs: &[Syms]) -> Result<(), TestCaseError> {
        let text = saturn_ir::text::print(&self.g);
        let options = self.options;
        let program = CudaProgram::generate_with(&self.g, "cache.", options)
            .map_err(|e| fail(format!("generate: {e}\n{text}")))?;
        let stored = StoredWeights { params: &self.params, storage: self.options.weights };
        let mut emu =
            Emulator::new(&program, &self.params).map_err(|e| fail(format!("load: {e}\n{text}")))?;
        for syms in runs {
            let bound: SymBindings = syms.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            let inputs: HashMap<String, Tensor> = self
                .inputs
                .iter()
                .map(|(name, shape, fill)| {
                    (name.clone(), fill.tensor(&mut self.rng, eval_shape(shape, &bound).unwrap()))
                })
                .collect();
            let bindings = Bindings { symbols: bound, inputs: inputs.clone(), params: &stored };
            let want = evaluate(&self.g, &bindings).map_err(|e| fail(format!("interpreter: {e}\n{text}")))?;
            let got = emu.run(syms, &inputs).map_err(|e| fail(format!("emulator: {e}\n{text}{syms:?}")))?;
            compare_all(&got, &want, self.tolerance)
                .map_err(|m| fail(format!("{m}\n{text}symbols {syms:?}\n{inputs:?}")))?;
        }
        Ok(())
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Every output of `want` in `got` with its shape and values.
fn compare_all(
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    tolerance: Tolerance,
) -> Result<(), String> {
    for (name, w) in want {
        let g = got.get(name).ok_or_else(|| format!("no output `{name}`"))?;
        if g.shape != w.shape {
            return Err(format!("`{name}`: shape {:?}, want {:?}", g.shape, w.shape));
        }
        compare(&g.data, &w.data, tolerance).map_err(|m| format!("`{name}`: {m}"))?;
    }
    Ok(())
}

/// How close a float must come to the interpreter's.
#[derive(Clone, Copy, Debug)]
enum Tolerance {
    /// Within this fraction of `max(1, |want|)`.
    Element(f32),
    /// Within this fraction of `max(1, the tensor's largest finite |want|)`: rounded operands
    /// (bf16) err in proportion to the magnitudes summed, not to the (perhaps cancelled) result.
    Scale(f32),
}

impl Tolerance {
    /// The bound for each element of `want`.
    fn bounds(self, want: &[f32]) -> impl Fn(f32) -> f32 {
        let scale = want.iter().filter(|v| v.is_finite()).fold(1f32, |m, v| m.max(v.abs()));
        move |w| match self {
            Tolerance::Element(t) => t * w.abs().max(1.0),
            Tolerance::Scale(t) => t * scale,
        }
    }
}

fn compare(got: &TensorData, want: &TensorData, tolerance: Tolerance) -> Result<(), String> {
    match (got, want) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            let bound = tolerance.bounds(w);
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                let ok = if b.is_nan() || b.is_infinite() {
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                } else {
                    (a - b).abs() <= bound(b)
                };
                if !ok {
                    return Err(format!("element {i}: got {a}, want {b}\n got {g:?}\nwant {w:?}"));
                }
            }
            Ok(())
        }
        _ if got == want => Ok(()),
        _ => Err(format!("got {got:?}\nwant {want:?}")),
    }
}

/// A shape of rank `0..=3`, mostly non-empty.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![8 => 1usize..=6, 1 => Just(0usize), 1 => Just(33usize)], 0..=3)
}

/// `shape` with its first `drop` dims removed and those marked in `ones` set to 1.
fn broadcast_operand(to: &[usize], drop: usize, ones: &[bool]) -> Vec<usize> {
    to[drop.min(to.len())..]
        .iter()
        .zip(ones.iter().chain(std::iter::repeat(&false)))
        .map(|(&d, &one)| if one { 1 } else { d })
        .collect()
}

proptest! {
    #![proptest_config(cfg(10))]

    /// Unary, binary and fused elementwise math with numpy broadcasting both ways, `where` with
    /// a broadcast condition, and casts between f32, i64 and bool; a leading `S` run at three
    /// sizes; operands from inputs and params.
    #[test]
    fn elementwise_where_and_casts_match(
        shape in shape(),
        symbolic in any::<bool>(),
        drop in 0usize..=3,
        ones in vec(any::<bool>(), 3),
        (u, b) in (0..UnaryOp::ALL.len(), 0..BinaryOp::ALL.len()),
        b_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let symbolic = symbolic && !shape.is_empty();
        let mut a_dims = dims(&shape);
        if symbolic {
            a_dims[0] = Dim::sym("S");
        }
        let a = c.input("a", &a_dims, Fill::Uniform);
        let b_shape = broadcast_operand(&shape, if symbolic { drop.max(1) } else { drop }, &ones);
        let bv = c.value("b", &b_shape, Fill::Uniform, b_param);
        let y = c.op("y", Op::Binary(BinaryOp::ALL[b]), &[bv, a]);
        let z = c.op("z", Op::Unary(UnaryOp::ALL[u]), &[y]);
        let expr = ElementwiseExpr::Binary(
            BinaryOp::Mul,
            Box::new(ElementwiseExpr::Unary(UnaryOp::ALL[u], Box::new(ElementwiseExpr::Input(0)))),
            Box::new(ElementwiseExpr::Binary(BinaryOp::ALL[b], Box::new(ElementwiseExpr::Input(1)), Box::new(ElementwiseExpr::Const(0.5)))),
        );
        let f = c.op("f", Op::FusedElementwise { expr }, &[a, bv]);
        let cond = c.value("cond", &b_shape, Fill::Bool, b_param);
        let w = c.op("w", Op::Where, &[cond, a, z]);
        let wide = c.input("wide", &a_dims, Fill::Wide);
        let to_i = c.op("to_i", Op::Cast { dtype: DType::I64 }, &[wide]);
        let back = c.op("back", Op::Cast { dtype: DType::F32 }, &[to_i]);
        let to_b = c.op("to_b", Op::Cast { dtype: DType::Bool }, &[to_i]);
        let b_to_f = c.op("b_to_f", Op::Cast { dtype: DType::F32 }, &[cond]);
        let f_to_b = c.op("f_to_b", Op::Cast { dtype: DType::Bool }, &[wide]);
        let ints = c.op("ints", Op::Where, &[to_b, to_i, to_i]);
        for id in [y, z, f, w, back, to_b, b_to_f, f_to_b, ints] {
            c.out(id);
        }
        let runs: Vec<Syms> = if symbolic {
            vec![vec![("S", shape[0] as u64)], vec![("S", shape[0] as u64 + 5)], vec![("S", 1)]]
        } else {
            vec![vec![]]
        };
        c.check(&runs)?;
    }

    /// Layout ops on one value of rank 1 to 4: permute, expand (new leading axes and stretched
    /// ones), a slice along any axis (an alias when contiguous, else a copy), concat along any
    /// axis, gather of rows (of a param or an input, by an index of rank 0 to 2), and a reshape
    /// of a computed value.
    #[test]
    fn layout_ops_match(
        shape in vec(1usize..=5, 1..=4),
        perm_keys in vec(any::<u32>(), 4),
        (lead, ones) in (0usize..=2, vec(any::<bool>(), 4)),
        (axis, cut) in (0usize..4, (0usize..=5, 0usize..=5)),
        extra in 0usize..=3,
        idx_shape in vec(1usize..=4, 0..=2),
        table_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let rank = shape.len();
        let axis = axis % rank;
        let x = c.input("x", &dims(&shape), Fill::Uniform);
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.sort_by_key(|&i| perm_keys[i]);
        let p = c.op("p", Op::Permute { perm }, &[x]);
        let small = broadcast_operand(&shape, 0, &ones);
        let s = c.input("s", &dims(&small), Fill::Uniform);
        let big: Vec<usize> = std::iter::repeat_n(2, lead).chain(shape.iter().copied()).collect();
        let e = c.op("e", Op::Expand { shape: dims(&big) }, &[s]);
        let (lo, hi) = (cut.0.min(shape[axis]), cut.1.min(shape[axis]));
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let sl = c.op("sl", Op::Slice { axis, start: Dim::from(lo), end: Dim::from(hi) }, &[x]);
        let mut other = shape.clone();
        other[axis] = extra;
        let x2 = c.input("x2", &dims(&other), Fill::Uniform);
        let cat = c.op("cat", Op::Concat { axis }, &[x, x2, sl]);
        let table = c.value("table", &shape, Fill::Uniform, table_param);
        let ix = c.input("ix", &dims(&idx_shape), Fill::Int(0, shape[0] as i64));
        let gat = c.op("gat", Op::Gather, &[table, ix]);
        let flat = c.op("flat", Op::Reshape { shape: vec![Dim::from(shape.iter().product::<usize>())] }, &[p]);
        let two = c.op("two", Op::Binary(BinaryOp::Add), &[flat, flat]);
        for id in [p, e, sl, cat, gat, two] {
            c.out(id);
        }
        c.check(&[vec![]])?;
    }

    /// The rows family on `x [lead.., d]` with `-inf` rows and NaNs, or plain values: a
    /// reduction and softmax along any axis, RMSNorm and the top-k mask along the last, and RoPE
    /// of either layout (with or without YaRN) on `[S, h, 2 * half]` at positions up to 5000; a
    /// leading `S` run at three sizes.
    #[test]
    fn row_ops_match(
        lead in vec(1usize..=4, 0..=2),
        d in prop_oneof![1usize..=9, Just(64usize), Just(300usize), Just(1100usize)],
        symbolic in any::<bool>(),
        (axis, reduce, keepdim) in (0usize..3, 0usize..3, any::<bool>()),
        k in 0u64..=4,
        extreme in any::<bool>(),
        (h, half, interleaved, yarn) in (1usize..=3, 1usize..=8, any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let symbolic = symbolic && !lead.is_empty();
        let mut shape = dims(&lead);
        shape.push(Dim::from(d));
        if symbolic {
            shape[0] = Dim::sym("S");
        }
        let rank = shape.len();
        let x = c.input("x", &shape, if extreme { Fill::Extreme } else { Fill::Uniform });
        let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean][reduce];
        let r = c.op("r", Op::Reduce { op, axis: axis % rank, keepdim }, &[x]);
        let sm = c.op("sm", Op::Softmax { axis: (axis + 1) % rank }, &[x]);
        let w = c.param("w", &[d], Fill::Uniform);
        let plain = c.input("plain", &shape, Fill::Uniform);
        let norm = c.op("norm", Op::RmsNorm { eps: 1e-6 }, &[plain, w]);
        let top = c.op("top", Op::TopKMask { k: k.min(d as u64) }, &[x]);
        let s = Dim::sym("S");
        let q = c.input("q", &[s.clone(), Dim::from(h), Dim::from(2 * half)], Fill::Uniform);
        let pos = c.input("pos", &[s], Fill::Int(0, 5000));
        let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
        let yarn = yarn.then_some(Yarn { factor: 40.0, original_max_position: 4096, beta_fast: 32.0, beta_slow: 1.0 });
        let rope = Op::Rope(Rope { layout, theta: 10000.0, yarn, attention_factor: 1.25 });
        let rot = c.op("rot", rope, &[q, pos]);
        for id in [r, sm, norm, top, rot] {
            c.out(id);
        }
        let first = if symbolic { lead[0] as u64 } else { 3 };
        c.check(&[vec![("S", first)], vec![("S", first + 4)], vec![("S", 1)]])?;
    }
}

/// `arange(P, S)`, the causal mask of scores `[h, S, P + S]`, and a KV cache carried from
/// step to step: `cache.k [P, d] ++ 2 * new [S, d]` appended in place, and `cache.v`, whose
/// output `-(cache.v ++ new)` is computed elsewhere and copied into its buffer after the run;
/// the interpreter is given the emulator's previous caches each time, over a prefill and
/// decode steps. A tensor-core program keeps the appended cache in bf16 (each new row rounded,
/// the rows before kept exactly) and the copied one in f32; bf16 weights alone change neither.
#[test]
fn aranges_masks_and_carried_appends_match() {
    for (seed, d, precision) in [
        (1u64, 3usize, Precision::F32),
        (2, 1, Precision::F32),
        (3, 40, Precision::F32),
        (4, 40, Precision::Bf16Weights),
        (5, 40, Precision::TensorCores),
    ] {
        let mut c = Case::new(seed);
        c.precision(precision);
        let s = Dim::sym("S");
        let total = Dim::sym("P").add(&s);
        let pos = c.op("pos", Op::Arange { start: Dim::sym("P"), len: s.clone() }, &[]);
        let scores = c.input("scores", &[Dim::from(2usize), s.clone(), total], Fill::Uniform);
        let masked = c.op("masked", Op::CausalMask, &[scores]);
        let cache = c.input("cache.k", &[Dim::sym("P"), Dim::from(d)], Fill::Uniform);
        let new = c.input("new", &[s, Dim::from(d)], Fill::Uniform);
        let twice = c.op("twice", Op::Binary(BinaryOp::Add), &[new, new]);
        let appended = c.op("appended", Op::Concat { axis: 0 }, &[cache, twice]);
        let cache_v = c.input("cache.v", &[Dim::sym("P"), Dim::from(d)], Fill::Uniform);
        let joined = c.op("joined", Op::Concat { axis: 0 }, &[cache_v, new]);
        let negated = c.op("negated", Op::Unary(UnaryOp::Neg), &[joined]);
        c.out(pos);
        c.out(masked);
        c.g.set_output("cache.k", appended).unwrap();
        c.g.set_output("cache.v", negated).unwrap();
        let program = CudaProgram::generate_with(&c.g, "cache.", c.options).unwrap();
        let mut emu = Emulator::new(&program, &c.params).unwrap();
        let mut past = Tensor::f32(vec![0, d], vec![]);
        let mut past_v = past.clone();
        for (s, p) in [(3u64, 0u64), (1, 3), (2, 4), (1, 6)] {
            let bound: SymBindings = [("S".to_string(), s), ("P".to_string(), p)].into();
            let mut inputs = HashMap::new();
            for name in ["scores", "new"] {
                let (_, shape, fill) = c.inputs.iter().find(|(n, ..)| n == name).unwrap().clone();
                inputs.insert(name.to_string(), fill.tensor(&mut c.rng, eval_shape(&shape, &bound).unwrap()));
            }
            let got = emu.run(&[("S", s), ("P", p)], &inputs).unwrap();
            inputs.insert("cache.k".into(), past.clone());
            inputs.insert("cache.v".into(), past_v.clone());
            let want = evaluate(&c.g, &Bindings { symbols: bound, inputs, params: &c.params }).unwrap();
            compare_all(&got, &want, c.tolerance).unwrap_or_else(|m| panic!("S={s} P={p}: {m}"));
            past = emu.carried("cache.k").unwrap();
            let mut stored = want["cache.k"].clone();
            if let (Precision::TensorCores, TensorData::F32(v)) = (precision, &mut stored.data) {
                v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
            }
            assert_eq!(past, stored, "the carried cache after S={s} P={p}");
            past_v = emu.carried("cache.v").unwrap();
            assert_eq!(past_v, want["cache.v"], "the copied cache after S={s} P={p}");
        }
        let err = emu.run(&[("S", 1), ("P", 3)], &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("input `"), "{err}");
    }
}

proptest! {
    #![proptest_config(cfg(10))]
    /// `linear`, `gated_linear`, `rms_norm_linear` (GEMV for a few constant rows, tiled
    /// otherwise, symbolic rows too) and batched `matmul` with broadcast batch dims; weights
    /// stored as f32 or bf16 (the interpreter then gets bf16-rounded params), and on tensor
    /// cores; with `cublas`, the tiled products with weights as library products (the host's
    /// BLAS reference here).
    #[test]
    fn matrix_products_match(
        rows in prop_oneof![1usize..=8, 9usize..=70],
        symbolic in any::<bool>(),
        k in prop_oneof![1usize..=20, Just(64usize), 65usize..=140],
        n in prop_oneof![1usize..=9, 60usize..=140],
        (batch, a_one, b_one) in (1usize..=3, any::<bool>(), any::<bool>()),
        weights_are_params in any::<bool>(),
        precision in precision(),
        cublas in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        c.precision(precision);
        c.options.cublas = cublas;
        // Tensor cores round their operands to bf16, an error in proportion to the magnitudes
        // summed, which cancellation can make larger than bf16's tolerance of the result
        // (k = 64 once gave 1.9%): operands that are bf16 values leave only the order of the
        // sums (and `rms_norm_linear`'s rounded normalised row) to differ.
        // `x` is scaled by about `1 / sqrt(k)` (a power of two, so bf16 values stay exact):
        // sums of `k` uniform products reach 10 and more, and `gated_linear` multiplies two of
        // them, so a difference of summation order in one (a few f32 ulps of 10) came out
        // above 1e-5 in about one case of 30 (k = 131: 0.0325851 against 0.0325728); with the
        // scaling, 400 cases passed.
        let bf16 = matches!(precision, Precision::TensorCores);
        let f = if bf16 { Fill::UniformBf16 } else { Fill::Uniform };
        let m = if symbolic { Dim::sym("S") } else { Dim::from(rows) };
        let shift = (k.max(1) as f64).log2().div_euclid(2.0) as i32;
        let x = c.input("x", &[m.clone(), Dim::from(k)], Fill::Halved { bf16, shift });
        let w = c.value("w", &[n, k], f, weights_are_params);
        let u = c.value("u", &[n, k], f, weights_are_params);
        let g = c.value("g", &[k], f, weights_are_params);
        let lin = c.op("lin", Op::Linear, &[x, w]);
        let gated = c.op("gated", Op::GatedLinear, &[x, w, u]);
        let normed = c.op("normed", Op::RmsNormLinear { eps: 1e-6 }, &[x, g, w]);
        let a_batch = if a_one { 1 } else { batch };
        let b_batch = if b_one { 1 } else { batch };
        let a = c.input("a", &[Dim::from(a_batch), m.clone(), Dim::from(k)], f);
        let b = c.input("b", &[Dim::from(b_batch), Dim::from(k), Dim::from(n)], f);
        let prod = c.op("prod", Op::MatMul, &[a, b]);
        for id in [lin, gated, normed, prod] {
            c.out(id);
        }
        c.check(&[vec![("S", rows as u64)], vec![("S", 1)]])?;
    }
}

proptest! {
    #![proptest_config(cfg(8))]
    /// `mla_decode_attention` with and without batch dims, over `T = P + S` cached latent rows:
    /// several queries, caches longer than one split (256 keys), queries that see no key.
    #[test]
    fn mla_decode_attention_matches(
        batch in prop_oneof![Just(vec![]), vec(1usize..=2, 1..=2)],
        (h, c_dim, r) in (1usize..=3, 1usize..=40, 1usize..=8),
        runs in vec((1u64..=3, prop_oneof![0u64..=4, 250u64..=300]), 1..=2),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let s = Dim::sym("S");
        let t = Dim::sym("P").add(&s);
        let batched = |rest: &[Dim]| dims(&batch).into_iter().chain(rest.iter().cloned()).collect::<Vec<_>>();
        let q = c.input("q_latent", &batched(&[Dim::from(h), s.clone(), Dim::from(c_dim)]), Fill::Uniform);
        let qr = c.input("q_rope", &batched(&[Dim::from(h), s, Dim::from(r)]), Fill::Uniform);
        let latent = c.input("latent", &batched(&[t.clone(), Dim::from(c_dim)]), Fill::Uniform);
        let k_pe = c.input("k_pe", &batched(&[t, Dim::from(r)]), Fill::Uniform);
        let y = c.op("y", Op::MlaDecodeAttention { scale: 0.4 }, &[q, qr, latent, k_pe]);
        c.out(y);
        let runs: Vec<Syms> = runs.iter().map(|&(s, p)| vec![("S", s), ("P", p)]).collect();
        c.check(&runs)?;
    }
}

proptest! {
    #![proptest_config(cfg(6))]
    /// `mla_decode_attention` in a tensor-core program (bf16 operands): one to four
    /// 16-row head tiles, several head groups, latent widths that leave partial 8-column output
    /// tiles, rope widths that pad the 16-wide k-steps, partial key tiles and splits. Inputs
    /// are bf16 values, so what is left to differ from the interpreter is the probabilities'
    /// rounding to bf16 (2^-9 relative) and the order of the sums.
    #[test]
    fn mla_decode_attention_on_tensor_cores_matches(
        batch in prop_oneof![Just(vec![]), vec(1usize..=2, 1..=1)],
        (h, c_dim, r) in (prop_oneof![1usize..=16, 17usize..=70], 1usize..=72, 0usize..=20),
        runs in vec((1u64..=2, prop_oneof![0u64..=40, 250u64..=270]), 1..=2),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        c.precision(Precision::TensorCores);
        c.tolerance = Tolerance::Scale(8e-3);
        let s = Dim::sym("S");
        let t = Dim::sym("P").add(&s);
        let batched = |rest: &[Dim]| dims(&batch).into_iter().chain(rest.iter().cloned()).collect::<Vec<_>>();
        let fill = Fill::UniformBf16;
        let q = c.input("q_latent", &batched(&[Dim::from(h), s.clone(), Dim::from(c_dim)]), fill);
        let qr = c.input("q_rope", &batched(&[Dim::from(h), s, Dim::from(r)]), fill);
        let latent = c.input("latent", &batched(&[t.clone(), Dim::from(c_dim)]), fill);
        let k_pe = c.input("k_pe", &batched(&[t, Dim::from(r)]), fill);
        let y = c.op("y", Op::MlaDecodeAttention { scale: 0.4 }, &[q, qr, latent, k_pe]);
        c.out(y);
        let text = saturn_ir::text::print(&c.g);
        let program = CudaProgram::generate_with(&c.g, "cache.", c.options).unwrap();
        prop_assert!(program.source().contains("mla_decode_split_mma"), "no tensor-core kernel for\n{text}");
        let runs: Vec<Syms> = runs.iter().map(|&(s, p)| vec![("S", s), ("P", p)]).collect();
        c.check(&runs)?;
    }
}

/// `mla_decode_attention` over a KV cache carried in bf16 (a tensor-core program), as the models use
/// it: rows appended in place (rounded on the way in) and read by the tensor-core kernel as
/// stored, by `cp.async` copies where the widths are multiples of 8, converted otherwise; over
/// a prefill and decode steps, then after a long cache set from outside (several key tiles
/// and splits of 256). New rows are bf16 values, so the interpreter, given the emulator's
/// cache, sees what the kernel sees.
#[test]
fn mla_decode_attention_over_a_bf16_cache_matches() {
    for (seed, h, width, rope) in [(1u64, 20usize, 64usize, 16usize), (2, 70, 48, 8), (3, 5, 40, 12)] {
        let mut c = Case::new(seed);
        c.precision(Precision::TensorCores);
        c.tolerance = Tolerance::Scale(8e-3);
        let (s, p) = (Dim::sym("S"), Dim::sym("P"));
        let f = Fill::UniformBf16;
        let q = c.input("q_latent", &[Dim::from(h), s.clone(), Dim::from(width)], f);
        let qr = c.input("q_rope", &[Dim::from(h), s.clone(), Dim::from(rope)], f);
        let mut caches = Vec::new();
        for (name, w) in [("latent", width), ("k_pe", rope)] {
            let cache = c.input(&format!("cache.{name}"), &[p.clone(), Dim::from(w)], f);
            let new = c.input(&format!("new_{name}"), &[s.clone(), Dim::from(w)], f);
            let joined = c.op(name, Op::Concat { axis: 0 }, &[cache, new]);
            c.g.set_output(format!("cache.{name}"), joined).unwrap();
            caches.push(joined);
        }
        let y = c.op("y", Op::MlaDecodeAttention { scale: 0.4 }, &[q, qr, caches[0], caches[1]]);
        c.out(y);
        let program = CudaProgram::generate_with(&c.g, "cache.", c.options).unwrap();
        let copied = width % 8 == 0 && rope % 8 == 0;
        assert_eq!(program.source().contains("sat_cp_async16(dst"), copied, "width {width}, rope {rope}");
        let mut emu = Emulator::new(&program, &c.params).unwrap();
        let mut past = vec![Tensor::f32(vec![0, width], vec![]), Tensor::f32(vec![0, rope], vec![])];
        for (s, p) in [(3u64, 0u64), (1, 3), (2, 290), (1, 292)] {
            if p == 290 {
                // A long cache set from outside (f32 rows, rounded into the bf16 buffer): two
                // splits of 256 keys, the second partial, and partial key tiles.
                for (i, (name, w)) in [("cache.latent", width), ("cache.k_pe", rope)].into_iter().enumerate()
                {
                    past[i] = Fill::Uniform.tensor(&mut c.rng, vec![290, w]);
                    emu.set_carried(name, &past[i]).unwrap();
                    past[i] = emu.carried(name).unwrap();
                }
            }
            let bound: SymBindings = [("S".to_string(), s), ("P".to_string(), p)].into();
            let mut inputs = HashMap::new();
            for (name, shape, fill) in c.inputs.clone() {
                if !name.starts_with("cache.") {
                    inputs.insert(name, fill.tensor(&mut c.rng, eval_shape(&shape, &bound).unwrap()));
                }
            }
            let got = emu.run(&[("S", s), ("P", p)], &inputs).unwrap();
            inputs.insert("cache.latent".into(), past[0].clone());
            inputs.insert("cache.k_pe".into(), past[1].clone());
            let want = evaluate(&c.g, &Bindings { symbols: bound, inputs, params: &c.params }).unwrap();
            compare_all(&got, &want, c.tolerance).unwrap_or_else(|m| panic!("S={s} P={p}: {m}"));
            past = vec![emu.carried("cache.latent").unwrap(), emu.carried("cache.k_pe").unwrap()];
            assert_eq!(past[0], want["cache.latent"], "bf16 rows are stored exactly");
        }
    }
}

/// `ProgramSet::rerun` replays a program's launches on what its last run left on the device:
/// the outputs come out the same, whether launched directly or through the recorded graph. A
/// program with a carried buffer (which would append again) and one never run are refused.
#[test]
fn reruns_repeat_the_last_run_and_refuse_carried_programs() {
    use saturn_codegen::cuda::emulate::HostDevice;
    use saturn_codegen::cuda::exec::ProgramSet;

    let mut c = Case::new(5);
    let x = c.input("x", &[Dim::sym("S"), Dim::from(6usize)], Fill::Uniform);
    let y = c.op("y", Op::Softmax { axis: 1 }, &[x]);
    c.out(y);
    let program = CudaProgram::generate(&c.g, "cache.").unwrap();
    for graphs in [false, true] {
        let mut set = ProgramSet::new(HostDevice::default());
        let index = set.add(program.clone(), &c.params).unwrap();
        set.use_graphs(index, graphs);
        let err = set.rerun(index).unwrap_err().to_string();
        assert!(err.contains("rerun before any run"), "{err}");
        let inputs = HashMap::from([("x".to_string(), Fill::Uniform.tensor(&mut c.rng, vec![3, 6]))]);
        set.run(index, &[("S", 3)], &inputs).unwrap();
        let first = set.output(index, "y").unwrap();
        set.rerun(index).unwrap();
        set.rerun(index).unwrap();
        assert_eq!(set.output(index, "y").unwrap(), first);
    }

    let mut c = Case::new(6);
    let cache = c.input("cache.k", &[Dim::sym("P"), Dim::from(2usize)], Fill::Uniform);
    let new = c.input("new", &[Dim::sym("S"), Dim::from(2usize)], Fill::Uniform);
    let joined = c.op("joined", Op::Concat { axis: 0 }, &[cache, new]);
    c.g.set_output("cache.k", joined).unwrap();
    let mut set = ProgramSet::new(HostDevice::default());
    let index = set.add(CudaProgram::generate(&c.g, "cache.").unwrap(), &c.params).unwrap();
    let inputs = HashMap::from([("new".to_string(), Fill::Uniform.tensor(&mut c.rng, vec![1, 2]))]);
    set.run(index, &[("S", 1), ("P", 0)], &inputs).unwrap();
    let err = set.rerun(index).unwrap_err().to_string();
    assert!(err.contains("carried buffers cannot be run again"), "{err}");
}

proptest! {
    #![proptest_config(cfg(8))]
    /// `grouped_experts` routed by a `router_topk`, with and without a shared expert, T = 1 (the
    /// matrix-vector path) and more tokens (tiled), weights stored as f32 or bf16, and on tensor
    /// cores; with `cublas`, the shared expert as library products.
    #[test]
    fn grouped_experts_match(
        tokens in prop_oneof![Just(1u64), 2u64..=70],
        (h, i, e) in (1usize..=40, 1usize..=24, 2usize..=8),
        k in 1u64..=2,
        shared in proptest::option::of(1usize..=16),
        precision in precision(),
        cublas in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        c.precision(precision);
        c.options.cublas = cublas;
        let t = Dim::sym("S");
        // Tokens that are bf16 values, as in `matrix_products_match`: what tensor cores still
        // round is the gated row before the down product.
        let f = if matches!(precision, Precision::TensorCores) { Fill::UniformBf16 } else { Fill::Uniform };
        let x = c.input("x", &[t.clone(), Dim::from(h)], f);
        let logits = c.input("logits", &[t, Dim::from(e)], Fill::Uniform);
        let router = saturn_ir::Router {
            scoring: saturn_ir::RouterScoring::Softmax,
            k,
            n_group: 1,
            topk_group: 1,
            group_score: saturn_ir::GroupScore::Max,
            masked_fill: f64::NEG_INFINITY,
            weights_from_candidates: false,
            normalize: true,
            scale: 1.0,
        };
        let routing = c.op("routing", Op::RouterTopK(router), &[logits]);
        let mut args = vec![
            x,
            routing,
            c.param("w_gate", &[e, i, h], Fill::Uniform),
            c.param("w_up", &[e, i, h], Fill::Uniform),
            c.param("w_down", &[e, h, i], Fill::Uniform),
        ];
        if let Some(j) = shared {
            args.push(c.param("s_gate", &[j, h], Fill::Uniform));
            args.push(c.param("s_up", &[j, h], Fill::Uniform));
            args.push(c.param("s_down", &[h, j], Fill::Uniform));
        }
        let y = c.op("y", Op::GroupedExperts { k }, &args);
        c.out(y);
        c.check(&[vec![("S", tokens)]])?;
    }
}
