//! Every kernel kind of [`CpuProgram`] against the interpreter (`saturn_ir::evaluate`), the
//! semantic oracle.
//!
//! Each property test builds a small graph with random shapes and attributes (from proptest, so
//! failures shrink) and random values (inputs and params, from the case's seed), compiles and
//! runs it, evaluates it with the interpreter and compares every output: layout ops, masks,
//! gathers, casts and router weights exactly, arithmetic within `1e-4 * max(1, |want|)`. A NaN
//! is never expected. Operands come from inputs, params (so constant subgraphs are computed when
//! the program is built), computed values and aliases (reshapes, contiguous slices at an
//! offset). A graph with symbols runs several times on one workspace with other symbol values,
//! so plans that grow and shrink are checked too.

mod common;

use common::{Rng, dims, proptest_config as cfg};

use std::collections::{BTreeMap, HashMap};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use saturn_codegen::{Carried, CodegenError, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_ir::{
    BinaryOp, Bindings, DType, Dim, ElementwiseExpr, Graph, GroupScore, InterpError, NodeId, Op, ReduceOp,
    Rope, RopeLayout, Router, RouterScoring, SymBindings, Tensor, TensorData, TensorType, UnaryOp, Yarn,
    eval_shape, evaluate,
};

// ---------------------------------------------------------------------------------------------
// Helpers: values, graph building, running both executors.
// ---------------------------------------------------------------------------------------------

/// How an input or param is filled.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// Uniform in `[-1, 1)`.
    Uniform,
    /// Uniform in `[-s, s)` (weights scaled by `1 / sqrt(fan_in)`, as trained ones are).
    Scaled(f32),
    /// Multiples of 1/4 in `[-1, 1]`: many ties.
    Ties,
    /// Uniform in `[-8, 8)`, each element `-inf` with this probability.
    NegInf(f64),
    /// Multiples of 1/4, each element NaN with this probability (for ops that rank NaN).
    Nan(f64),
    /// Within `[-1000, 1000]` with fractions, with zeros and values in `(-1, 1)` (casts).
    Wide,
    /// i64 in `lo..hi`.
    Int(i64, i64),
}

impl Fill {
    fn dtype(self) -> DType {
        if matches!(self, Fill::Int(..)) { DType::I64 } else { DType::F32 }
    }

    fn tensor(self, rng: &mut Rng, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        if let Fill::Int(lo, hi) = self {
            let span = (hi - lo).max(1) as usize;
            return Tensor::i64(shape, (0..n).map(|_| lo + rng.below(span) as i64).collect());
        }
        let ties = |rng: &mut Rng| rng.below(9) as f32 * 0.25 - 1.0;
        let data = (0..n)
            .map(|_| match self {
                Fill::Uniform => rng.unit(),
                Fill::Scaled(scale) => rng.unit() * scale,
                Fill::Ties => ties(rng),
                Fill::NegInf(p) => {
                    if rng.chance(p) {
                        f32::NEG_INFINITY
                    } else {
                        rng.unit() * 8.0
                    }
                }
                Fill::Nan(p) => {
                    if rng.chance(p) {
                        f32::NAN
                    } else {
                        ties(rng)
                    }
                }
                Fill::Wide => match rng.below(6) {
                    0 => 0.0,
                    1 => rng.unit(),
                    _ => rng.unit() * 1000.0,
                },
                Fill::Int(..) => unreachable!("handled above"),
            })
            .collect();
        Tensor::f32(shape, data)
    }
}

/// Symbol values of one run.
type Syms = Vec<(&'static str, u64)>;

/// One run without symbols.
fn no_symbols() -> Vec<Syms> {
    vec![vec![]]
}

/// A graph under construction with its params, its inputs (filled anew for every run) and
/// which outputs must match exactly.
struct Case {
    g: Graph,
    params: HashMap<String, Tensor>,
    inputs: Vec<(String, Vec<Dim>, Fill)>,
    exact: HashMap<String, bool>,
    rng: Rng,
    names: usize,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("case"),
            params: HashMap::new(),
            inputs: Vec::new(),
            exact: HashMap::new(),
            rng: Rng::new(seed),
            names: 0,
        }
    }

    /// A name not used yet.
    fn fresh(&mut self, base: &str) -> String {
        self.names += 1;
        format!("{base}{}", self.names)
    }

    fn input(&mut self, name: &str, shape: &[Dim], fill: Fill) -> NodeId {
        self.inputs.push((name.to_string(), shape.to_vec(), fill));
        let ty = TensorType::new(fill.dtype(), shape.to_vec());
        self.g.add(name, Op::Input, &[], Some(ty)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A param whose key is its name.
    fn param(&mut self, name: &str, shape: &[usize], fill: Fill) -> NodeId {
        let t = fill.tensor(&mut self.rng, shape.to_vec());
        self.params.insert(name.to_string(), t);
        let ty = TensorType::new(fill.dtype(), dims(shape));
        self.g.add(name, Op::Param { key: name.into() }, &[], Some(ty)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn scalar(&mut self, value: f64) -> NodeId {
        let name = self.fresh("c");
        let ty = TensorType::new(DType::F32, Vec::<Dim>::new());
        self.g.add(name, Op::Scalar { value }, &[], Some(ty)).unwrap()
    }

    fn op(&mut self, name: &str, op: Op, args: &[NodeId]) -> NodeId {
        self.g.add(name, op, args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Marks `id` as an output named after its node, compared exactly or within tolerance.
    fn out(&mut self, id: NodeId, exact: bool) {
        let name = self.g.node(id).name.clone();
        self.g.set_output(&name, id).unwrap();
        self.exact.insert(name, exact);
    }

    /// A value of `shape` made by `src` (see [`Source`]).
    fn source(&mut self, name: &str, shape: &[usize], src: Source, fill: Fill) -> NodeId {
        match src {
            Source::Input => self.input(name, &dims(shape), fill),
            Source::Param => self.param(name, shape, fill),
            Source::Computed => {
                let x = self.input(&format!("{name}.in"), &dims(shape), fill);
                let zero = self.scalar(0.0);
                self.op(name, Op::Binary(BinaryOp::Add), &[x, zero])
            }
            Source::Folded => {
                let x = self.param(&format!("{name}.in"), shape, fill);
                let zero = self.scalar(0.0);
                self.op(name, Op::Binary(BinaryOp::Add), &[x, zero])
            }
            Source::SliceAlias if !shape.is_empty() => {
                let mut big = shape.to_vec();
                big[0] += 3;
                let x = self.input(&format!("{name}.in"), &dims(&big), fill);
                let (start, end) = (Dim::from(2usize), Dim::from(2 + shape[0]));
                self.op(name, Op::Slice { axis: 0, start, end }, &[x])
            }
            Source::SliceAlias => self.input(name, &[], fill),
            Source::ReshapeAlias => {
                let flat =
                    self.input(&format!("{name}.in"), &[Dim::from(shape.iter().product::<usize>())], fill);
                self.op(name, Op::Reshape { shape: dims(shape) }, &[flat])
            }
        }
    }

    /// Compiles the graph (with a fresh cache: params differ from case to case).
    fn compile(&self) -> Result<CpuProgram, TestCaseError> {
        let mut cache = ProgramCache::new().map_err(|e| fail(format!("cache: {e}")))?;
        CpuProgram::compile(&self.g, &self.params, &mut cache, "cache.")
            .map_err(|e| fail(format!("compile: {e}\n{}", saturn_ir::text::print(&self.g))))
    }

    /// Compiles the graph once and runs it for every symbol binding of `runs` on one workspace,
    /// each time with fresh input values, comparing every output with the interpreter's.
    fn check(&mut self, runs: &[Syms]) -> Result<(), TestCaseError> {
        let program = self.compile()?;
        let mut ws = Workspace::new();
        for syms in runs {
            self.run_and_compare(&program, &mut ws, syms)?;
        }
        Ok(())
    }

    /// Runs `program` (compiled from this case) on `ws` under `syms` with fresh input values
    /// and compares every output with the interpreter's.
    fn run_and_compare(
        &mut self,
        program: &CpuProgram,
        ws: &mut Workspace,
        syms: &Syms,
    ) -> Result<(), TestCaseError> {
        let bound: SymBindings = syms.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        let inputs: Vec<(String, Tensor)> = self
            .inputs
            .iter()
            .map(|(name, shape, fill)| {
                let shape = eval_shape(shape, &bound).unwrap();
                (name.clone(), fill.tensor(&mut self.rng, shape))
            })
            .collect();
        let context = || {
            let params: BTreeMap<_, _> = self.params.iter().collect();
            let text = saturn_ir::text::print(&self.g);
            format!("{text}symbols {syms:?}\ninputs {inputs:?}\nparams {params:?}")
        };
        let want = interpret(&self.g, &self.params, &bound, &inputs)
            .map_err(|e| fail(format!("interpreter: {e}\n{}", context())))?;
        let mut carried = Carried::new(program);
        program
            .run(ws, &mut carried, syms, &input_data(&inputs))
            .map_err(|e| fail(format!("run: {e}\n{}", context())))?;
        for (name, _) in self.g.outputs() {
            let w = &want[name];
            let (got, shape) = program
                .output(ws, name)
                .ok_or_else(|| fail(format!("no f32 output `{name}`\n{}", context())))?;
            if shape != w.shape {
                return Err(fail(format!("`{name}`: shape {shape:?}, want {:?}\n{}", w.shape, context())));
            }
            compare(got, w.as_f32().unwrap(), self.exact[name])
                .map_err(|m| fail(format!("`{name}`: {m}\n{}", context())))?;
        }
        Ok(())
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Where an operand comes from: each reaches kernels through a different storage.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A graph input (the arena).
    Input,
    /// A param (a constant: a kernel on params only runs when the program is built).
    Param,
    /// `add(input, 0)`: a value a step writes.
    Computed,
    /// `add(param, 0)`: a constant the program computes when it is built.
    Folded,
    /// A contiguous slice of an input at a non-zero offset (an alias, no step).
    SliceAlias,
    /// A reshape of a flat input (an alias).
    ReshapeAlias,
}

fn any_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Input),
        Just(Source::Param),
        Just(Source::Folded),
        Just(Source::Computed),
        Just(Source::SliceAlias),
        Just(Source::ReshapeAlias),
    ]
}

/// An output width N of a product: 1 to 24, or whole strips of 32 (a param weight of such a
/// width is loaded packed, see `cpu::packed`).
fn strips_or_not() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=24, 1 => Just(32usize), 1 => Just(64usize)]
}

/// Inner dims for products: 0, small, multiples and non-multiples of 16.
fn k_dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1usize..=40, Just(16usize), Just(48usize), 60usize..=70]
}

fn interpret(
    g: &Graph,
    params: &HashMap<String, Tensor>,
    symbols: &SymBindings,
    inputs: &[(String, Tensor)],
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    let bindings = Bindings { symbols: symbols.clone(), inputs: inputs.iter().cloned().collect(), params };
    evaluate(g, &bindings)
}

fn input_data(inputs: &[(String, Tensor)]) -> Vec<(&str, InputData<'_>)> {
    inputs
        .iter()
        .map(|(name, t)| {
            let data = match (t.as_f32(), t.as_i64()) {
                (Some(v), _) => InputData::F32(v),
                (_, Some(v)) => InputData::I64(v),
                _ => panic!("input `{name}` is neither f32 nor i64"),
            };
            (name.as_str(), data)
        })
        .collect()
}

/// Every element equal (`exact`) or within `1e-4 * max(1, |want|)`; infinities must be equal
/// and a NaN on either side is a failure.
fn compare(got: &[f32], want: &[f32], exact: bool) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} elements, want {}", got.len(), want.len()));
    }
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if b.is_nan() {
            return Err(format!("element {i}: the interpreter gives NaN, which no test expects"));
        }
        let ok = if exact || b.is_infinite() { a == b } else { (a - b).abs() <= 1e-4 * b.abs().max(1.0) };
        if !ok {
            return Err(format!("element {i}: got {a}, want {b}\n got {got:?}\nwant {want:?}"));
        }
    }
    Ok(())
}

/// Symbol runs `S = s` for each `s` of `values`.
fn s_runs(values: &[u64]) -> Vec<Syms> {
    values.iter().map(|&s| vec![("S", s)]).collect()
}

/// Symbol runs `(S, P)` for each pair of `values`.
fn sp_runs(values: &[(u64, u64)]) -> Vec<Syms> {
    values.iter().map(|&(s, p)| vec![("S", s), ("P", p)]).collect()
}

/// `P + S`.
fn p_plus_s() -> Dim {
    Dim::sym("P").add(&Dim::sym("S"))
}

/// `shape` broadcast-compatible with `to`: its last `to.len() - drop` dims, those marked in
/// `ones` set to 1.
fn broadcast_operand(to: &[usize], drop: usize, ones: &[bool]) -> Vec<usize> {
    to[drop.min(to.len())..]
        .iter()
        .zip(ones.iter().chain(std::iter::repeat(&false)))
        .map(|(&d, &one)| if one { 1 } else { d })
        .collect()
}

/// Where the positions of a RoPE test come from.
#[derive(Clone, Copy, Debug)]
enum Positions {
    /// An i64 input `[s]`.
    Input,
    /// An i64 input `[S]`.
    SymbolicInput,
    /// `arange(P, S)`, `P` mentioned only there.
    Arange,
    /// `arange(P, S)`, the result appended to a cache input `[P, .., d]` (a second output).
    ArangeAppended,
}

/// `rope` of `x [S, mid.., 2 * half]` at `positions`; with symbols, under three `(S, P)`.
fn rope_case(
    interleaved: bool,
    yarn: bool,
    (s, mid, half): (usize, &[usize], usize),
    (theta, attention_factor): (f64, f64),
    positions: Positions,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut c = Case::new(seed);
    let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
    let yarn =
        yarn.then_some(Yarn { factor: 40.0, original_max_position: 4096, beta_fast: 32.0, beta_slow: 1.0 });
    let rope = Op::Rope(Rope { layout, theta, yarn, attention_factor });
    let lead = if matches!(positions, Positions::Input) { Dim::from(s) } else { Dim::sym("S") };
    let row: Vec<Dim> = mid.iter().copied().chain([2 * half]).map(Dim::from).collect();
    let x = c.input("x", &[vec![lead.clone()], row.clone()].concat(), Fill::Uniform);
    let pos = match positions {
        Positions::Input | Positions::SymbolicInput => c.input("pos", &[lead], Fill::Int(0, 5000)),
        Positions::Arange | Positions::ArangeAppended => {
            c.op("pos", Op::Arange { start: Dim::sym("P"), len: Dim::sym("S") }, &[])
        }
    };
    let y = c.op("y", rope, &[x, pos]);
    c.out(y, false);
    if matches!(positions, Positions::ArangeAppended) {
        let old = c.input("old", &[vec![Dim::sym("P")], row].concat(), Fill::Uniform);
        let keys = c.op("keys", Op::Concat { axis: 0 }, &[old, y]);
        c.out(keys, false);
    }
    match positions {
        Positions::Input => c.check(&no_symbols()),
        _ => c.check(&sp_runs(&[(s as u64, 0), (s as u64 + 2, 7), (1, 4000)])),
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix products and norms.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(48))]

    /// `linear` of `x [lead.., K]` and `w [N, K]`: 1 to 49 rows (the dot-product path up to 12
    /// and the GEMM path above), K of 0 and non-multiples of 16, a symbolic leading dim (run at
    /// three sizes on one workspace), the weight a param or an input, and x a param (the
    /// product computed when the program is built). N of whole strips (32, 64) has a param
    /// weight loaded packed.
    #[test]
    fn linear_matches(
        lead in vec(1usize..=7, 0..=2),
        symbolic in any::<bool>(),
        k in k_dim(),
        n in strips_or_not(),
        w_input in any::<bool>(),
        x_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let symbolic = symbolic && !lead.is_empty();
        let mut shape = lead.clone();
        shape.push(k);
        let x = if symbolic {
            let mut d = dims(&shape);
            d[0] = Dim::sym("S");
            c.input("x", &d, Fill::Uniform)
        } else if x_param {
            c.param("x", &shape, Fill::Uniform)
        } else {
            c.input("x", &dims(&shape), Fill::Uniform)
        };
        let w = if w_input {
            c.input("w", &dims(&[n, k]), Fill::Uniform)
        } else {
            c.param("w", &[n, k], Fill::Uniform)
        };
        let y = c.op("y", Op::Linear, &[x, w]);
        c.out(y, false);
        let runs = if symbolic { s_runs(&[lead[0] as u64, lead[0] as u64 + 9, 1]) } else { no_symbols() };
        c.check(&runs)?;
    }

    /// `matmul` with batch dims broadcast both ways (`[1, M, K] @ [B, K, N]`, `[B, M, K] @ [K, N]`,
    /// `[M, K] @ [B, K, N]`, `[M, K] @ [K, N]`, ...): one row (the axpy loop) and several (GEMM),
    /// K of 0, operands from any source; a constant right operand of whole strips (N of 32 or
    /// 64) is stored packed.
    #[test]
    fn matmul_matches(
        batch in vec(1usize..=3, 0..=3),
        drops in (0usize..=3, 0usize..=3),
        ones in (vec(any::<bool>(), 3), vec(any::<bool>(), 3)),
        (m, k, n) in (1usize..=20, 0usize..=20, strips_or_not()),
        srcs in (any_source(), any_source()),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut a_shape = broadcast_operand(&batch, drops.0, &ones.0);
        a_shape.extend([m, k]);
        let mut b_shape = broadcast_operand(&batch, drops.1, &ones.1);
        b_shape.extend([k, n]);
        let a = c.source("a", &a_shape, srcs.0, Fill::Uniform);
        let b = c.source("b", &b_shape, srcs.1, Fill::Uniform);
        let y = c.op("y", Op::MatMul, &[a, b]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm` over the last axis of any-rank inputs from any source, with several epsilons.
    #[test]
    fn rms_norm_matches(
        lead in vec(1usize..=5, 0..=2),
        d in 1usize..=40,
        eps in prop_oneof![Just(1e-6), Just(1e-5), Just(0.5)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(d);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let w = c.param("w", &[d], Fill::Uniform);
        let y = c.op("y", Op::RmsNorm { eps }, &[x, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm_linear` (the norm fused into the product) on 1 to 49 rows, K including 0, the
    /// weight packed or not.
    #[test]
    fn rms_norm_linear_matches(
        lead in vec(1usize..=7, 0..=2),
        k in k_dim(),
        n in strips_or_not(),
        eps in prop_oneof![Just(1e-6), Just(0.5)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(k);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let g = c.param("g", &[k], Fill::Uniform);
        let w = c.param("w", &[n, k], Fill::Uniform);
        let y = c.op("y", Op::RmsNormLinear { eps }, &[x, g, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm_linear` steps in a row over the same rows and norm weight share the
    /// normalized rows (the first one's), across a kernel that uses scratch of its own
    /// (`gated_linear`); a different norm weight, eps or input normalizes anew.
    #[test]
    fn rms_norm_linear_steps_share_only_the_same_normed_rows(
        rows in 1usize..=40,
        k in k_dim(),
        (n1, n2) in (strips_or_not(), strips_or_not()),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let other = c.input("other", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let (g, g2) = (c.param("g", &[k], Fill::Uniform), c.param("g2", &[k], Fill::Uniform));
        let w1 = c.param("w1", &[n1, k], Fill::Uniform);
        let w2 = c.param("w2", &[n2, k], Fill::Uniform);
        let eps = 1e-6;
        let first = c.op("first", Op::RmsNormLinear { eps }, &[x, g, w1]);
        let between = c.op("between", Op::GatedLinear, &[other, w1, w1]);
        let shared = c.op("shared", Op::RmsNormLinear { eps }, &[x, g, w2]);
        let new_weight = c.op("new_weight", Op::RmsNormLinear { eps }, &[x, g2, w2]);
        let new_eps = c.op("new_eps", Op::RmsNormLinear { eps: 0.5 }, &[x, g2, w1]);
        let new_rows = c.op("new_rows", Op::RmsNormLinear { eps: 0.5 }, &[other, g2, w1]);
        for id in [first, between, shared, new_weight, new_eps, new_rows] {
            c.out(id, false);
        }
        c.check(&no_symbols())?;
    }

    /// Products whose weights are row slices of one param (MLA's latent and rope-key
    /// projections): each slice read only by products is stored packed, copied out of the
    /// param; a slice that something else also reads stays an alias of the param.
    #[test]
    fn products_over_slices_of_a_param_match(
        rows in 1usize..=20,
        k in k_dim(),
        (n1, n2) in (strips_or_not(), strips_or_not()),
        also_read in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let g = c.param("g", &[k], Fill::Uniform);
        let w = c.param("w", &[n1 + n2, k], Fill::Uniform);
        let w1 = c.op("w1", Op::Slice { axis: 0, start: 0usize.into(), end: n1.into() }, &[w]);
        let w2 = c.op("w2", Op::Slice { axis: 0, start: n1.into(), end: (n1 + n2).into() }, &[w]);
        let first = c.op("first", Op::RmsNormLinear { eps: 1e-6 }, &[x, g, w1]);
        let second = c.op("second", Op::Linear, &[x, w2]);
        for id in [first, second] {
            c.out(id, false);
        }
        if also_read {
            let doubled = c.op("doubled", Op::Binary(BinaryOp::Add), &[w2, w2]);
            c.out(doubled, true);
        }
        c.check(&no_symbols())?;
    }

    /// `gated_linear` (`silu(x w_gate^T) * (x w_up^T)`) on 1 to 49 rows, K including 0, the
    /// weights packed or not.
    #[test]
    fn gated_linear_matches(
        lead in vec(1usize..=7, 0..=2),
        k in k_dim(),
        n in strips_or_not(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(k);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let wg = c.param("wg", &[n, k], Fill::Uniform);
        let wu = c.param("wu", &[n, k], Fill::Uniform);
        let y = c.op("y", Op::GatedLinear, &[x, wg, wu]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Row kernels: softmax, reductions, RoPE, masks.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(48))]

    /// `softmax` along any axis of inputs where some, most or all elements are `-inf` (rows that
    /// are all `-inf` give zeros).
    #[test]
    fn softmax_matches(
        shape in vec(1usize..=5, 1..=4),
        axis in 0usize..4,
        neg_inf in prop_oneof![Just(0.0), Just(0.3), Just(0.8), Just(1.0)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::NegInf(neg_inf));
        let y = c.op("y", Op::Softmax { axis: axis % shape.len() }, &[x]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `softmax(causal_mask(x))` along any axis, with more queries than keys too, so whole rows
    /// are masked.
    #[test]
    fn softmax_of_a_causal_mask_matches(
        b in 1usize..=3,
        sq in 1usize..=6,
        sk in 1usize..=6,
        axis in 0usize..3,
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &dims(&[b, sq, sk]), Fill::NegInf(0.0));
        let m = c.op("m", Op::CausalMask, &[x]);
        let y = c.op("y", Op::Softmax { axis }, &[m]);
        c.out(m, true);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `reduce_sum`, `reduce_mean` and `reduce_max` along any axis, with and without keepdim,
    /// some inputs holding `-inf` (max is compared exactly).
    #[test]
    fn reductions_match(
        op in prop_oneof![Just(ReduceOp::Sum), Just(ReduceOp::Mean), Just(ReduceOp::Max)],
        shape in vec(1usize..=5, 1..=4),
        axis in 0usize..4,
        keepdim in any::<bool>(),
        neg_inf in prop_oneof![Just(0.0), Just(0.2)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::NegInf(neg_inf));
        let y = c.op("y", Op::Reduce { op, axis: axis % shape.len(), keepdim }, &[x]);
        c.out(y, op == ReduceOp::Max);
        c.check(&no_symbols())?;
    }

    /// `rope` in both layouts, with and without YaRN, on `x [S, .., d]`, positions up to 5000:
    /// an i64 input of constant or symbolic length, or `arange(P, S)` (`P` mentioned only there,
    /// or also in a cache `[P, .., d]` the rotated rows are appended to, as keys are).
    #[test]
    fn rope_matches(
        interleaved in any::<bool>(),
        yarn in any::<bool>(),
        (s, mid, half) in (1usize..=5, vec(1usize..=3, 0..=2), 1usize..=16),
        theta in prop_oneof![Just(10000.0), Just(500.0)],
        attention_factor in prop_oneof![Just(1.0), Just(0.75)],
        positions in prop_oneof![
            Just(Positions::Input),
            Just(Positions::SymbolicInput),
            Just(Positions::Arange),
            Just(Positions::ArangeAppended),
        ],
        seed in any::<u64>(),
    ) {
        rope_case(interleaved, yarn, (s, &mid, half), (theta, attention_factor), positions, seed)?;
    }

    /// `causal_mask` of `x [.., S, P + S]` (queries no more than keys), compared exactly, and the
    /// softmax over its keys, under several `(S, P)` on one workspace.
    #[test]
    fn causal_mask_matches(
        lead in vec(1usize..=3, 0..=2),
        runs in vec((1u64..=5, 0u64..=6), 1..=3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = dims(&lead);
        shape.extend([Dim::sym("S"), p_plus_s()]);
        let x = c.input("x", &shape, Fill::Uniform);
        let y = c.op("y", Op::CausalMask, &[x]);
        let p = c.op("p", Op::Softmax { axis: shape.len() - 1 }, &[y]);
        c.out(y, true);
        c.out(p, false);
        c.check(&sp_runs(&runs))?;
    }

    /// `softmax(causal_mask(x * c))` (the scale a `fused_elementwise` or a `mul` by a scalar,
    /// either side, or absent), with only the softmax an output: the three run as one
    /// `causal_softmax` kernel, equal to the interpreter exactly, with queries no more than
    /// keys under several `(S, P)`, or more (whole rows masked), scores with `-inf` or large.
    #[test]
    fn a_scaled_causal_softmax_runs_as_one_kernel(
        lead in vec(1usize..=3, 0..=2),
        shape in prop_oneof![
            (1u64..=9, 0u64..=9).prop_map(|sp| Err(vec![sp, (sp.0 + 2, sp.1 / 2), (1, sp.1 + 3)])),
            (1usize..=7, 1usize..=7).prop_map(Ok),
        ],
        scale in 0usize..5,
        fill in prop_oneof![Just(Fill::Uniform), Just(Fill::NegInf(0.3)), Just(Fill::Wide)],
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut dims_x = dims(&lead);
        let runs = match &shape {
            Err(runs) => {
                dims_x.extend([Dim::sym("S"), p_plus_s()]);
                sp_runs(runs)
            }
            Ok((sq, sk)) => {
                dims_x.extend([Dim::from(*sq), Dim::from(*sk)]);
                no_symbols()
            }
        };
        let x = c.input("x", &dims_x, fill);
        let c_value = 0.125 + seed as f64 % 7.0 / 16.0;
        let scaled = match scale {
            0 => x,
            1 | 2 => {
                let (input, constant) = (ElementwiseExpr::Input(0), ElementwiseExpr::Const(c_value));
                let (a, b) = if scale == 1 { (input, constant) } else { (constant, input) };
                let expr = ElementwiseExpr::Binary(BinaryOp::Mul, Box::new(a), Box::new(b));
                c.op("scaled", Op::FusedElementwise { expr }, &[x])
            }
            _ => {
                let k = c.scalar(c_value);
                let args = if scale == 3 { [x, k] } else { [k, x] };
                c.op("scaled", Op::Binary(BinaryOp::Mul), &args)
            }
        };
        let m = c.op("m", Op::CausalMask, &[scaled]);
        let y = c.op("y", Op::Softmax { axis: dims_x.len() - 1 }, &[m]);
        c.out(y, true);
        let program = c.compile()?;
        let mut ws = Workspace::new();
        ws.enable_profile();
        for syms in &runs {
            c.run_and_compare(&program, &mut ws, syms)?;
        }
        let kinds: Vec<&str> = ws.profile().iter().map(|k| k.0).collect();
        prop_assert!(kinds == ["causal_softmax"], "kernels {kinds:?}");
    }

    /// Attention, `softmax(causal_mask(q kt * c)) v`: the scores product, which only the causal
    /// softmax reads, computes just the lower triangle (the strips each query row reaches),
    /// over runs of several lengths sharing one workspace, so a skipped entry the softmax
    /// needed would read another run's leftovers; the product with `v` sums each tile of
    /// query rows only over the keys they see. Within matmul's tolerance of the interpreter.
    #[test]
    fn the_products_around_a_causal_softmax_skip_only_its_masked_part(
        heads in 1usize..=3,
        (d, dv) in (1usize..=12, 1usize..=40),
        runs in vec((1u64..=80, 0u64..=40), 1..=3),
        scaled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let q = c.input("q", &[Dim::from(heads), Dim::sym("S"), Dim::from(d)], Fill::Uniform);
        let kt = c.input("kt", &[Dim::from(heads), Dim::from(d), p_plus_s()], Fill::Uniform);
        let scores = c.op("scores", Op::MatMul, &[q, kt]);
        let x = if scaled {
            let (input, constant) = (ElementwiseExpr::Input(0), ElementwiseExpr::Const(0.3));
            let expr = ElementwiseExpr::Binary(BinaryOp::Mul, Box::new(input), Box::new(constant));
            c.op("scaled", Op::FusedElementwise { expr }, &[scores])
        } else {
            scores
        };
        let m = c.op("m", Op::CausalMask, &[x]);
        let y = c.op("y", Op::Softmax { axis: 2 }, &[m]);
        c.out(y, false);
        let v = c.input("v", &[Dim::from(heads), p_plus_s(), Dim::from(dv)], Fill::Uniform);
        let attn = c.op("attn", Op::MatMul, &[y, v]);
        c.out(attn, false);
        let program = c.compile()?;
        let mut ws = Workspace::new();
        ws.enable_profile();
        for syms in &sp_runs(&runs) {
            c.run_and_compare(&program, &mut ws, syms)?;
        }
        let kinds: Vec<&str> = ws.profile().iter().map(|k| k.0).collect();
        prop_assert!(kinds.len() == 2 && kinds.contains(&"matmul"), "kernels {kinds:?}");
    }

    /// `where(topk_mask(x, k), a, b)` with ties and NaN in `x`, `a` and `b` broadcast (a scalar,
    /// a row, or the full shape), the mask itself compared through a cast; all exact.
    #[test]
    fn where_of_a_topk_mask_matches(
        lead in vec(1usize..=3, 0..=2),
        n in 1usize..=8,
        k in 0usize..=8,
        nan in any::<bool>(),
        small_cond in any::<bool>(),
        other in 0u8..3,
        swap in any::<bool>(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(n);
        let cond_shape = if small_cond { vec![n] } else { shape.clone() };
        let x = c.input("x", &dims(&cond_shape), if nan { Fill::Nan(0.25) } else { Fill::Ties });
        let cond = c.op("cond", Op::TopKMask { k: (k % (n + 1)) as u64 }, &[x]);
        let a = c.source("a", &shape, src, Fill::Uniform);
        let b = match other {
            0 => c.scalar(-1.5),
            1 => c.param("b", &[n], Fill::Uniform),
            _ => c.input("b", &dims(&[1, n]), Fill::Uniform),
        };
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let y = c.op("y", Op::Where, &[cond, a, b]);
        let mask = c.op("mask", Op::Cast { dtype: DType::F32 }, &[cond]);
        c.out(y, true);
        c.out(mask, true);
        c.check(&no_symbols())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Data movement: gather, permute, expand, slice, concat, cast.
// ---------------------------------------------------------------------------------------------

/// A shape of rank 1 to 5 (a dim of 0 now and then) and a permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..=5).prop_flat_map(|r| {
        (
            vec(prop_oneof![1 => Just(0usize), 8 => 1usize..=4], r),
            Just((0..r).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

proptest! {
    #![proptest_config(cfg(48))]

    /// `gather` of rows of a table (param or input) at i64 indices of rank 0 to 2, or `[S]`
    /// under several S; exact.
    #[test]
    fn gather_matches(
        v in 1usize..=8,
        rest in vec(1usize..=4, 0..=2),
        idx_shape in vec(1usize..=4, 0..=2),
        symbolic in any::<bool>(),
        table_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut table_shape = vec![v];
        table_shape.extend(&rest);
        let table = if table_param {
            c.param("table", &table_shape, Fill::Uniform)
        } else {
            c.input("table", &dims(&table_shape), Fill::Uniform)
        };
        let idx_dims = if symbolic { vec![Dim::sym("S")] } else { dims(&idx_shape) };
        let idx = c.input("idx", &idx_dims, Fill::Int(0, v as i64));
        let y = c.op("y", Op::Gather, &[table, idx]);
        c.out(y, true);
        c.check(&if symbolic { s_runs(&[3, 9, 1]) } else { no_symbols() })?;
    }

    /// An index outside the table is an error from `run` naming the gather (and an interpreter
    /// error), never a panic.
    #[test]
    fn gather_out_of_range_is_an_error(
        v in 1usize..=8,
        row in 1usize..=4,
        n in 1usize..=5,
        at in any::<Index>(),
        over in 0i64..3,
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let table = c.input("table", &dims(&[v, row]), Fill::Uniform);
        let idx = c.input("idx", &dims(&[n]), Fill::Int(0, v as i64));
        let y = c.op("y", Op::Gather, &[table, idx]);
        c.out(y, true);
        let table = Fill::Uniform.tensor(&mut c.rng, vec![v, row]);
        let mut bad = Fill::Int(0, v as i64).tensor(&mut c.rng, vec![n]);
        let TensorData::I64(values) = &mut bad.data else { unreachable!() };
        values[at.index(n)] = if negative { -1 - over } else { v as i64 + over };
        let inputs = vec![("table".to_string(), table), ("idx".to_string(), bad)];
        prop_assert!(interpret(&c.g, &c.params, &SymBindings::new(), &inputs).is_err());
        let mut cache = ProgramCache::new().unwrap();
        let program = CpuProgram::compile(&c.g, &c.params, &mut cache, "cache.").unwrap();
        let mut ws = Workspace::new();
        let mut carried = Carried::new(&program);
        let err = program.run(&mut ws, &mut carried, &[], &input_data(&inputs)).unwrap_err();
        prop_assert!(matches!(&err, CodegenError::Run { node, .. } if node == "y"), "{err}");
    }

    /// `permute` by any permutation of rank 1 to 5 values from any source (empty ones too);
    /// exact.
    #[test]
    fn permute_matches(
        (shape, perm) in shape_and_perm(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let y = c.op("y", Op::Permute { perm }, &[x]);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// `expand` stretching dims of 1 and adding leading axes, from any source; exact.
    #[test]
    fn expand_matches(
        to in vec(1usize..=4, 1..=4),
        drop in 0usize..=4,
        ones in vec(any::<bool>(), 4),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let from = broadcast_operand(&to, drop, &ones);
        let x = c.source("x", &from, src, Fill::Uniform);
        let y = c.op("y", Op::Expand { shape: dims(&to) }, &[x]);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// One or two chained `slice`s along any axis, from any source; with the axes before the
    /// first slice's set to 1 it is contiguous (an alias at an offset), else a strided copy;
    /// empty slices too; exact.
    #[test]
    fn slices_match(
        shape in vec(1usize..=5, 1..=4),
        cuts in vec((0usize..4, 0usize..6, 0usize..6), 1..=2),
        ones_before in any::<bool>(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = shape;
        let first_axis = cuts[0].0 % shape.len();
        if ones_before {
            shape[..first_axis].fill(1);
        }
        let mut x = c.source("x", &shape, src, Fill::Uniform);
        for (i, &(axis, a, b)) in cuts.iter().enumerate() {
            let axis = axis % shape.len();
            let (a, b) = (a % (shape[axis] + 1), b % (shape[axis] + 1));
            let (start, end) = (a.min(b), a.max(b));
            x = c.op(&format!("s{i}"), Op::Slice { axis, start: start.into(), end: end.into() }, &[x]);
            shape[axis] = end - start;
        }
        c.out(x, true);
        c.check(&no_symbols())?;
    }

    /// Slices with symbolic bounds of `x [lead?, P + S, ..]`: the new rows `P..P+S` or the old
    /// ones `0..P`; without a leading axis or with a leading 1 they are aliases at a symbolic
    /// offset, else strided copies with a symbolic start; several `(S, P)` on one workspace.
    #[test]
    fn symbolic_slices_match(
        lead in 0usize..=3,
        rest in vec(1usize..=4, 0..=2),
        new_rows in any::<bool>(),
        runs in vec((1u64..=4, 0u64..=6), 1..=3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = if lead > 0 { vec![Dim::from(lead)] } else { vec![] };
        let axis = shape.len();
        shape.push(p_plus_s());
        shape.extend(dims(&rest));
        let x = c.input("x", &shape, Fill::Uniform);
        let (start, end) =
            if new_rows { (Dim::sym("P"), p_plus_s()) } else { (Dim::from(0usize), Dim::sym("P")) };
        let y = c.op("y", Op::Slice { axis, start, end }, &[x]);
        c.out(y, true);
        c.check(&sp_runs(&runs))?;
    }

    /// `concat` of 2 or 3 operands (each from any source, some empty along the axis) along any
    /// axis; exact.
    #[test]
    fn concat_matches(
        base in vec(1usize..=4, 1..=4),
        axis in 0usize..4,
        sizes in vec(0usize..=4, 2..=3),
        srcs in vec(any_source(), 3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let axis = axis % base.len();
        let parts: Vec<NodeId> = sizes
            .iter()
            .zip(&srcs)
            .enumerate()
            .map(|(i, (&size, &src))| {
                let mut shape = base.clone();
                shape[axis] = size;
                c.source(&format!("x{i}"), &shape, src, Fill::Uniform)
            })
            .collect();
        let y = c.op("y", Op::Concat { axis }, &parts);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// `cast` round trips through outputs: f32 -> i64 -> f32 (truncation), f32 -> bool -> f32,
    /// i64 -> bool, bool -> i64, f32 -> f32, i64 input -> f32; the source an input or a param
    /// (folded when the program is built); exact.
    #[test]
    fn casts_match(
        shape in vec(0usize..=4, 0..=3),
        param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, if param { Source::Param } else { Source::Input }, Fill::Wide);
        let cast = |c: &mut Case, name: &str, dtype: DType, x: NodeId| c.op(name, Op::Cast { dtype }, &[x]);
        let i = cast(&mut c, "i", DType::I64, x);
        let b = cast(&mut c, "b", DType::Bool, x);
        let ib = cast(&mut c, "ib", DType::Bool, i);
        let bi = cast(&mut c, "bi", DType::I64, b);
        let n = c.input("n", &dims(&shape), Fill::Int(-50, 50));
        for (name, v) in [("x_i", i), ("x_b", b), ("x_i_b", ib), ("x_b_i", bi), ("x_x", x), ("n_f", n)] {
            let y = cast(&mut c, name, DType::F32, v);
            c.out(y, true);
        }
        c.check(&no_symbols())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Mixture of experts and attention.
// ---------------------------------------------------------------------------------------------

prop_compose! {
    /// An expert count and a router that fits it: softmax or sigmoid scoring, 1 or more groups
    /// scored by max or top-2 sum, normalized or not, scaled or not, weights from scores or
    /// candidates, masked groups filled with 0 or `-inf`.
    fn router()(
        e in prop_oneof![1usize..=4, Just(6usize), Just(8usize), Just(12usize), Just(16usize)],
        (group, kept, k) in (any::<Index>(), any::<Index>(), any::<Index>()),
        (softmax, sum_top2, weights_from_candidates, normalize) in
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        masked_fill in prop_oneof![Just(0.0), Just(f64::NEG_INFINITY)],
        scale in prop_oneof![Just(1.0), Just(2.5)],
    ) -> (usize, Router) {
        let divisors: Vec<u64> = (1..=e as u64).filter(|&d| (e as u64).is_multiple_of(d)).collect();
        let n_group = *group.get(&divisors);
        let per = e as u64 / n_group;
        let group_score =
            if sum_top2 && (n_group == 1 || per >= 2) { GroupScore::SumTop2 } else { GroupScore::Max };
        let topk_group = 1 + kept.index(n_group as usize) as u64;
        let k = 1 + k.index((topk_group * per) as usize) as u64;
        let scoring = if softmax { RouterScoring::Softmax } else { RouterScoring::Sigmoid };
        let router = Router {
            scoring,
            k,
            n_group,
            topk_group,
            group_score,
            masked_fill,
            weights_from_candidates,
            normalize,
            scale,
        };
        (e, router)
    }
}

proptest! {
    #![proptest_config(cfg(64))]

    /// `router_topk` weights equal the interpreter's exactly, for every router kind, with or
    /// without a bias, logits plain, with ties or with `-inf`, T constant or symbolic,
    /// few tokens or enough to be routed on several threads.
    #[test]
    fn router_topk_matches(
        (e, router) in router(),
        t in prop_oneof![1usize..=5, 16usize..=40],
        bias in any::<bool>(),
        fill in 0usize..3,
        symbolic in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let rows = if symbolic { Dim::sym("S") } else { Dim::from(t) };
        let fill = [Fill::Uniform, Fill::Ties, Fill::NegInf(0.3)][fill];
        let logits = c.input("logits", &[rows, Dim::from(e)], fill);
        let mut args = vec![logits];
        if bias {
            args.push(c.param("bias", &[e], if matches!(fill, Fill::Ties) { Fill::Ties } else { Fill::Uniform }));
        }
        let y = c.op("y", Op::RouterTopK(router), &args);
        c.out(y, true);
        c.check(&if symbolic { s_runs(&[t as u64, 1, t as u64 + 3]) } else { no_symbols() })?;
    }
}

/// `grouped_experts` of `x [rows, h]` over `e` experts of width `i`, routed by a `router_topk`
/// choosing `k` (so at most `k` weights per token are non-zero; softmax scores, or normalized
/// sigmoid ones), with a shared expert of width `j` or none; weights scaled by `1 / sqrt(fan_in)`
/// so results stay of order 1, params (stored packed when the program is built) or, with
/// `weights_input`, graph inputs (packed at every run). Outputs: the routing (exact) and the
/// result.
fn experts_case(
    seed: u64,
    rows: Dim,
    (h, i, e, k): (usize, usize, usize, u64),
    shared: Option<usize>,
    sigmoid: bool,
    weights_input: bool,
) -> Case {
    let mut c = Case::new(seed);
    let x = c.input("x", &[rows.clone(), Dim::from(h)], Fill::Uniform);
    let logits = c.input("logits", &[rows, Dim::from(e)], Fill::Uniform);
    let router = Router {
        scoring: if sigmoid { RouterScoring::Sigmoid } else { RouterScoring::Softmax },
        k,
        n_group: 1,
        topk_group: 1,
        group_score: GroupScore::Max,
        masked_fill: 0.0,
        weights_from_candidates: false,
        normalize: sigmoid,
        scale: 1.0,
    };
    let routing = c.op("routing", Op::RouterTopK(router), &[logits]);
    let fan_in = |n: usize| Fill::Scaled(1.0 / (n as f32).sqrt());
    let weight = |c: &mut Case, name: &str, shape: &[usize], fan: usize| match weights_input {
        true => c.input(name, &dims(shape), fan_in(fan)),
        false => c.param(name, shape, fan_in(fan)),
    };
    let mut args = vec![
        x,
        routing,
        weight(&mut c, "w_gate", &[e, i, h], h),
        weight(&mut c, "w_up", &[e, i, h], h),
        weight(&mut c, "w_down", &[e, h, i], i),
    ];
    if let Some(j) = shared {
        args.push(weight(&mut c, "s_gate", &[j, h], h));
        args.push(weight(&mut c, "s_up", &[j, h], h));
        args.push(weight(&mut c, "s_down", &[h, j], j));
    }
    let y = c.op("y", Op::GroupedExperts { k }, &args);
    c.out(routing, true);
    c.out(y, false);
    c
}

/// `mla_decode_attention` of `h` heads over `T = P + S` latent rows of width `c_dim` (rope width
/// `r`), with leading `batch` dims: the rows an input, or the concat of cached `[.., P, ..]` and
/// new `[.., S, ..]` rows.
fn mla_case(
    seed: u64,
    batch: &[usize],
    (h, c_dim, r): (usize, usize, usize),
    scale: f64,
    from_cache: bool,
) -> Case {
    let mut c = Case::new(seed);
    let s = Dim::sym("S");
    let batched =
        |rest: &[Dim]| batch.iter().map(|&b| Dim::from(b)).chain(rest.iter().cloned()).collect::<Vec<_>>();
    let q = c.input("q_latent", &batched(&[Dim::from(h), s.clone(), Dim::from(c_dim)]), Fill::Uniform);
    let qr = c.input("q_rope", &batched(&[Dim::from(h), s.clone(), Dim::from(r)]), Fill::Uniform);
    let rows = |c: &mut Case, name: &str, width: usize| {
        if from_cache {
            let old = batched(&[Dim::sym("P"), Dim::from(width)]);
            let old = c.input(&format!("{name}.old"), &old, Fill::Uniform);
            let new =
                c.input(&format!("{name}.new"), &batched(&[s.clone(), Dim::from(width)]), Fill::Uniform);
            c.op(name, Op::Concat { axis: batch.len() }, &[old, new])
        } else {
            c.input(name, &batched(&[p_plus_s(), Dim::from(width)]), Fill::Uniform)
        }
    };
    let latent = rows(&mut c, "latent", c_dim);
    let k_pe = rows(&mut c, "k_pe", r);
    let y = c.op("y", Op::MlaDecodeAttention { scale }, &[q, qr, latent, k_pe]);
    c.out(y, false);
    c
}

proptest! {
    #![proptest_config(cfg(48))]

    /// `grouped_experts` routed by a `router_topk` (at most k experts per token), with and
    /// without the shared expert, T = 1 (the decode path) and T > 1 (up to tiles of 12 rows and
    /// beyond); with a symbolic T the same program runs both paths on one workspace. Weights
    /// that are params are packed when the program is built (zero-padded to whole strips of
    /// 32), weights that are inputs at every run.
    #[test]
    fn grouped_experts_match(
        t in prop_oneof![Just(1usize), 2usize..=6, 12usize..=14],
        (h, i, e) in (
            prop_oneof![1usize..=16, Just(32), Just(64)],
            prop_oneof![1usize..=12, Just(32), Just(64)],
            1usize..=8,
        ),
        k in any::<Index>(),
        shared in proptest::option::of(prop_oneof![1usize..=10, Just(32)]),
        sigmoid in any::<bool>(),
        symbolic in any::<bool>(),
        weights_input in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let k = 1 + k.index(e) as u64;
        let rows = if symbolic { Dim::sym("S") } else { Dim::from(t) };
        let mut c = experts_case(seed, rows, (h, i, e, k), shared, sigmoid, weights_input);
        c.check(&if symbolic { s_runs(&[t as u64, 1, t as u64 + 2]) } else { no_symbols() })?;
    }

    /// `mla_decode_attention` over `T = P + S` latent rows (an input, or the concat of cached
    /// and new rows), S = 1 and S > 1, several `(S, P)` on one workspace, with and without
    /// batch dims.
    #[test]
    fn mla_decode_attention_matches(
        batch in prop_oneof![Just(vec![]), vec(1usize..=3, 1..=2)],
        (h, c_dim, r) in (1usize..=4, 1usize..=40, 1usize..=8),
        scale in prop_oneof![Just(0.1), Just(0.35), Just(1.0)],
        runs in vec((1u64..=4, 0u64..=6), 1..=3),
        from_cache in any::<bool>(),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &batch, (h, c_dim, r), scale, from_cache).check(&sp_runs(&runs))?;
    }
}

proptest! {
    #![proptest_config(cfg(8))]

    /// `linear` above the size where products split across threads: one decode row (the
    /// dot-product path by weight rows), up to 12 rows, a block of rows, and more rows than the
    /// row blocks take (the weight packed for the call); the weight a param (stored packed) or
    /// an input; rows of 1024 (4 KiB apart: the shorter tiles of rows that alias in L1).
    #[test]
    fn large_linear_matches(
        m in prop_oneof![Just(1usize), 2usize..=12, 13usize..=40, 129usize..=140],
        (k, n) in (prop_oneof![250usize..=300, Just(1024)], prop_oneof![250usize..=300, Just(256), Just(288)]),
        w_input in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &dims(&[m, k]), Fill::Uniform);
        let fill = Fill::Scaled(1.0 / (k as f32).sqrt());
        let w = if w_input { c.input("w", &dims(&[n, k]), fill) } else { c.param("w", &[n, k], fill) };
        let y = c.op("y", Op::Linear, &[x, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `grouped_experts` large enough for its parallel passes (decode: gate/up rows, then
    /// output columns; prefill: items of an expert's rows from both ends of a queue, more
    /// than 96 rows split into several), T = 1 and T > 1 on one workspace; a hidden width of
    /// 1024 gathers the tokens into rows padded apart (`packed::pad_stride`).
    #[test]
    fn large_grouped_experts_match(
        t in prop_oneof![2u64..=8, 20u64..=30, 97u64..=200],
        h in prop_oneof![Just(256usize), Just(1024)],
        shared in proptest::option::of(Just(64usize)),
        sigmoid in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = experts_case(seed, Dim::sym("S"), (h, 96, 8, 2), shared, sigmoid, false);
        c.check(&s_runs(&[1, t]))?;
    }

    /// `permute` and `concat` large enough to split across threads (along the first axis of
    /// more than one index: a leading axis of 1 moves it); from any source; exact.
    #[test]
    fn large_layout_copies_match(
        (rows, heads, width) in (100usize..=140, 16usize..=20, 24usize..=40),
        lead in any::<bool>(),
        perm in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        axis in 0usize..4,
        srcs in vec(any_source(), 2),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let shape = [usize::from(!lead) + 1, rows, heads, width];
        let x = c.source("x", &shape, srcs[0], Fill::Uniform);
        let permuted = c.op("permuted", Op::Permute { perm }, &[x]);
        c.out(permuted, true);
        let mut other = shape;
        other[axis] = 1 + other[axis] / 3;
        let more = c.source("more", &other, srcs[1], Fill::Uniform);
        let joined = c.op("joined", Op::Concat { axis }, &[x, more]);
        c.out(joined, true);
        c.check(&no_symbols())?;
    }

    /// `mla_decode_attention` large enough that its (head, query) rows split across threads:
    /// 7 heads, so that with several queries a part starts in the middle of a head's queries
    /// (each row's query decides which keys it sees).
    #[test]
    fn large_mla_decode_attention_matches(
        batch in prop_oneof![Just(vec![]), Just(vec![2])],
        runs in vec((1u64..=3, 130u64..=160), 1..=2),
        from_cache in any::<bool>(),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &batch, (7, 64, 16), 0.125, from_cache).check(&sp_runs(&runs))?;
    }

    /// `mla_decode_attention` over a cache long enough that the rows' softmaxes split across
    /// threads (16 heads over more than 1024 positions).
    #[test]
    fn long_cache_mla_decode_attention_matches(
        runs in vec((1u64..=2, 1030u64..=1100), 1..=2),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &[], (16, 64, 16), 0.125, true).check(&sp_runs(&runs))?;
    }
}

proptest! {
    #![proptest_config(cfg(16))]

    /// Two programs alternate on one workspace (each keeps its own plan, resized as symbols
    /// change): every run's outputs match, and a program's outputs are gone once the other ran.
    #[test]
    fn programs_share_a_workspace(
        runs in vec((1u64..=4, 0u64..=6), 2..=4),
        from_cache in any::<bool>(),
        sigmoid in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut a = mla_case(seed, &[], (2, 8, 4), 0.3, from_cache);
        let mut b = experts_case(seed ^ 1, Dim::sym("S"), (8, 6, 4, 2), Some(3), sigmoid, true);
        let (pa, pb) = (a.compile()?, b.compile()?);
        let mut ws = Workspace::new();
        for (s, p) in runs {
            a.run_and_compare(&pa, &mut ws, &vec![("S", s), ("P", p)])?;
            b.run_and_compare(&pb, &mut ws, &vec![("S", s)])?;
            prop_assert!(pa.output(&ws, "y").is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise chains.
// ---------------------------------------------------------------------------------------------

/// A random expression over `inputs` operands that stays finite: logarithms, roots and
/// divisors only see positive values (`exp(tanh(e))` or `sigmoid(e) + 0.5`), `exp` only a
/// `tanh`.
fn safe_expr(rng: &mut Rng, inputs: usize, depth: usize) -> ElementwiseExpr {
    use ElementwiseExpr::{Binary, Const, Input, Unary};
    if depth == 0 || rng.below(4) == 0 {
        return if rng.below(5) == 0 {
            Const([0.5, -2.0, 1.5][rng.below(3)])
        } else {
            Input(rng.below(inputs))
        };
    }
    let sub = |rng: &mut Rng| Box::new(safe_expr(rng, inputs, depth - 1));
    let positive = |rng: &mut Rng, e: Box<ElementwiseExpr>| {
        Box::new(if rng.below(2) == 0 {
            Unary(UnaryOp::Exp, Box::new(Unary(UnaryOp::Tanh, e)))
        } else {
            Binary(BinaryOp::Add, Box::new(Unary(UnaryOp::Sigmoid, e)), Box::new(Const(0.5)))
        })
    };
    match rng.below(6) {
        0 => {
            let op = [UnaryOp::Neg, UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::Tanh][rng.below(4)];
            Unary(op, sub(rng))
        }
        1 | 2 => {
            let op =
                [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min][rng.below(5)];
            Binary(op, sub(rng), sub(rng))
        }
        3 => {
            let (a, b) = (sub(rng), sub(rng));
            Binary(BinaryOp::Div, a, positive(rng, b))
        }
        4 => {
            let op = [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Recip][rng.below(4)];
            let e = sub(rng);
            Unary(op, positive(rng, e))
        }
        _ => {
            let e = sub(rng);
            *positive(rng, e)
        }
    }
}

/// The inputs `e` reads, in increasing order.
fn inputs_of(e: &ElementwiseExpr, out: &mut Vec<usize>) {
    match e {
        ElementwiseExpr::Input(i) => {
            if let Err(at) = out.binary_search(i) {
                out.insert(at, *i);
            }
        }
        ElementwiseExpr::Const(_) => {}
        ElementwiseExpr::Unary(_, a) => inputs_of(a, out),
        ElementwiseExpr::Binary(_, a, b) => {
            inputs_of(a, out);
            inputs_of(b, out);
        }
    }
}

/// Adds `e` over the nodes `leaves` to the graph: each op its own node (constants as scalars),
/// except that a subtree now and then becomes one `fused_elementwise` node over the leaves it
/// reads.
fn emit(c: &mut Case, e: &ElementwiseExpr, leaves: &[NodeId]) -> NodeId {
    let mut used = Vec::new();
    inputs_of(e, &mut used);
    let compound = matches!(e, ElementwiseExpr::Unary(..) | ElementwiseExpr::Binary(..));
    if compound && !used.is_empty() && c.rng.below(3) == 0 {
        let expr = e.map_inputs(&|i| ElementwiseExpr::Input(used.binary_search(&i).unwrap()));
        let args: Vec<NodeId> = used.iter().map(|&i| leaves[i]).collect();
        let name = c.fresh("f");
        return c.op(&name, Op::FusedElementwise { expr }, &args);
    }
    match e {
        ElementwiseExpr::Input(i) => leaves[*i],
        ElementwiseExpr::Const(v) => c.scalar(*v),
        ElementwiseExpr::Unary(op, a) => {
            let a = emit(c, a, leaves);
            let name = c.fresh("u");
            c.op(&name, Op::Unary(*op), &[a])
        }
        ElementwiseExpr::Binary(op, a, b) => {
            let (a, b) = (emit(c, a, leaves), emit(c, b, leaves));
            let name = c.fresh("b");
            c.op(&name, Op::Binary(*op), &[a, b])
        }
    }
}

proptest! {
    #![proptest_config(cfg(64))]

    /// Random chains of unary and binary ops and `fused_elementwise` nodes over 1 to 3 operands
    /// (inputs or params) that broadcast together, with scalar constants (constant subchains are
    /// computed when the program is built); intermediate values are outputs now and then.
    #[test]
    fn elementwise_chains_match(
        out_shape in vec(1usize..=4, 0..=3),
        n_inputs in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let rank = out_shape.len();
        let leaves: Vec<NodeId> = (0..n_inputs)
            .map(|i| {
                let keep = c.rng.below(rank + 1);
                let ones: Vec<bool> = (0..rank).map(|_| c.rng.below(3) == 0).collect();
                let shape = broadcast_operand(&out_shape, rank - keep, &ones);
                let src = if c.rng.below(3) == 0 { Source::Param } else { Source::Input };
                c.source(&format!("x{i}"), &shape, src, Fill::Uniform)
            })
            .collect();
        let e = safe_expr(&mut c.rng, n_inputs, 4);
        let y = emit(&mut c, &e, &leaves);
        c.g.set_output("y", y).unwrap();
        c.exact.insert("y".into(), false);
        let computed: Vec<NodeId> = c.g.node_ids().filter(|&id| !c.g.node(id).op.is_leaf()).collect();
        for id in computed {
            if c.rng.below(4) == 0 {
                let name = format!("o.{}", c.g.node(id).name);
                c.g.set_output(&name, id).unwrap();
                c.exact.insert(name, false);
            }
        }
        c.check(&no_symbols())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Carried inputs (the KV cache).
// ---------------------------------------------------------------------------------------------

/// How a carried output is made from the carried input `cache.x [P, 4]` and `new [S, 4]`.
#[derive(Clone, Copy, Debug)]
enum Carry {
    /// `concat(cache.x, new)`: an in-place append.
    Append,
    /// `concat(cache.x, 2 * new)`: an in-place append of computed rows.
    AppendComputed,
    /// `concat(new, cache.x)`: computed in the arena and copied after the run.
    Prepend,
    /// `concat(cache.x, new, new)`: three operands, copied after the run.
    AppendTwice,
}

impl Carry {
    /// Rows added per new row.
    fn growth(self) -> u64 {
        if matches!(self, Carry::AppendTwice) { 2 } else { 1 }
    }

    fn in_place(self) -> bool {
        matches!(self, Carry::Append | Carry::AppendComputed)
    }
}

/// The graph of a carried `cache.x` updated as `kind` says, with `sum`, the column sums of the
/// updated rows (which read the carried output), as a second output.
fn carried_graph(kind: Carry) -> Graph {
    let mut c = Case::new(0);
    let old = c.input("cache.x", &[Dim::sym("P"), Dim::from(4usize)], Fill::Uniform);
    let new = c.input("new", &[Dim::sym("S"), Dim::from(4usize)], Fill::Uniform);
    let cat = |c: &mut Case, args: &[NodeId]| c.op("cat", Op::Concat { axis: 0 }, args);
    let updated = match kind {
        Carry::Append => cat(&mut c, &[old, new]),
        Carry::AppendComputed => {
            let two = c.scalar(2.0);
            let doubled = c.op("doubled", Op::Binary(BinaryOp::Mul), &[new, two]);
            cat(&mut c, &[old, doubled])
        }
        Carry::Prepend => cat(&mut c, &[new, old]),
        Carry::AppendTwice => cat(&mut c, &[old, new, new]),
    };
    c.g.set_output("cache.x", updated).unwrap();
    let sum = c.op("sum", Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }, &[updated]);
    c.g.set_output("sum", sum).unwrap();
    c.g
}

proptest! {
    #![proptest_config(cfg(32))]

    /// A carried input over 3-4 runs on one `Carried` (P growing from 0, S of 0 to 3): after
    /// each run the buffer holds exactly the interpreter's updated rows and other outputs match;
    /// only `concat(cache.x, new)` along axis 0 is appended in place, other forms are copied.
    #[test]
    fn carried_outputs_match(
        kind in prop_oneof![
            Just(Carry::Append),
            Just(Carry::AppendComputed),
            Just(Carry::Prepend),
            Just(Carry::AppendTwice),
        ],
        steps in vec(0u64..=3, 3..=4),
        seed in any::<u64>(),
    ) {
        let g = carried_graph(kind);
        let params = HashMap::new();
        let mut cache = ProgramCache::new().unwrap();
        let program = CpuProgram::compile(&g, &params, &mut cache, "cache.").unwrap();
        prop_assert_eq!(program.in_place_appends(), usize::from(kind.in_place()));
        prop_assert_eq!(program.carried_names().collect::<Vec<_>>(), vec!["cache.x"]);
        let mut ws = Workspace::new();
        let mut carried = Carried::new(&program);
        let mut rng = Rng::new(seed);
        let mut rows: Vec<f32> = Vec::new();
        for s in steps {
            let p = carried.rows() as u64;
            prop_assert_eq!(p as usize * 4, rows.len());
            let new = Fill::Uniform.tensor(&mut rng, vec![s as usize, 4]);
            let syms: Syms = vec![("S", s), ("P", p)];
            let bound: SymBindings = syms.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            let inputs = vec![
                ("cache.x".to_string(), Tensor::f32(vec![p as usize, 4], rows.clone())),
                ("new".to_string(), new),
            ];
            let want = interpret(&g, &params, &bound, &inputs).unwrap();
            program
                .run(&mut ws, &mut carried, &syms, &input_data(&inputs[1..]))
                .map_err(|e| fail(e.to_string()))?;
            prop_assert_eq!(carried.rows() as u64, p + kind.growth() * s);
            rows = want["cache.x"].as_f32().unwrap().to_vec();
            compare(carried.get("cache.x").unwrap(), &rows, true).map_err(fail)?;
            let (got, shape) = program.output(&ws, "sum").unwrap();
            prop_assert_eq!(shape, vec![4]);
            compare(got, want["sum"].as_f32().unwrap(), false).map_err(fail)?;
        }
    }
}

/// The plain KV-cache pattern: three runs (P = 0, 2, 3) append in place and `Carried` holds
/// every row in order; a run whose P disagrees with the rows held is an error.
#[test]
fn a_carried_cache_holds_every_appended_row() {
    let g = carried_graph(Carry::Append);
    let params = HashMap::new();
    let mut cache = ProgramCache::new().unwrap();
    let program = CpuProgram::compile(&g, &params, &mut cache, "cache.").unwrap();
    assert_eq!(program.in_place_appends(), 1);
    let mut ws = Workspace::new();
    let mut carried = Carried::new(&program);
    let mut all: Vec<f32> = Vec::new();
    let mut p = 0;
    for (step, s) in [2u64, 1, 3].into_iter().enumerate() {
        let new: Vec<f32> = (0..s * 4).map(|i| (step * 100) as f32 + i as f32).collect();
        program.run(&mut ws, &mut carried, &[("S", s), ("P", p)], &[("new", InputData::F32(&new))]).unwrap();
        all.extend(&new);
        p += s;
        assert_eq!(carried.rows() as u64, p);
        assert_eq!(carried.get("cache.x").unwrap(), &all[..]);
        let (sum, _) = program.output(&ws, "sum").unwrap();
        let want: Vec<f32> = (0..4).map(|col| all.iter().skip(col).step_by(4).sum()).collect();
        compare(sum, &want, false).unwrap();
    }
    let err =
        program.run(&mut ws, &mut carried, &[("S", 1), ("P", 2)], &[("new", InputData::F32(&[0.0; 4]))]);
    assert!(matches!(err, Err(CodegenError::Run { .. })), "{:?}", err.err());
}

// ---------------------------------------------------------------------------------------------
// Unsupported nodes.
// ---------------------------------------------------------------------------------------------

/// Compiling `g` fails with `Unsupported` naming `node`.
fn assert_unsupported(g: &Graph, params: &HashMap<String, Tensor>, node: &str) {
    let mut cache = ProgramCache::new().unwrap();
    match CpuProgram::compile(g, params, &mut cache, "cache.") {
        Err(CodegenError::Unsupported { node: n, msg }) => assert_eq!(n, node, "{msg}"),
        Err(other) => panic!("expected Unsupported naming `{node}`, got {other}"),
        Ok(_) => panic!("expected Unsupported naming `{node}`, the graph compiled"),
    }
}

/// Nodes the CPU kernels cannot run are `Unsupported` errors naming them (not panics): an f16
/// input, a bf16 param, an `add` on i64 operands, a rank-9 value.
#[test]
fn unsupported_nodes_are_errors_naming_them() {
    let mut c = Case::new(1);
    let h = c.g.add("h", Op::Input, &[], Some(TensorType::new(DType::F16, [2u64, 3]))).unwrap();
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[h]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "h");

    let mut c = Case::new(1);
    let w =
        c.g.add("w", Op::Param { key: "w".into() }, &[], Some(TensorType::new(DType::BF16, [2u64]))).unwrap();
    c.params.insert("w".into(), Tensor::f32(vec![2], vec![1.0, 2.0]));
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[w]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "w");

    let mut c = Case::new(1);
    let a = c.input("a", &dims(&[3]), Fill::Int(0, 5));
    let b = c.input("b", &dims(&[3]), Fill::Int(0, 5));
    let sum = c.op("sum", Op::Binary(BinaryOp::Add), &[a, b]);
    let y = c.op("y", Op::Cast { dtype: DType::F32 }, &[sum]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "sum");

    let mut c = Case::new(1);
    let x = c.input("x", &dims(&[1; 9]), Fill::Uniform);
    let y = c.op("y", Op::Unary(UnaryOp::Neg), &[x]);
    c.out(y, true);
    assert_unsupported(&c.g, &c.params, "x");
}
