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

#[path = "../common/mod.rs"]
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

mod carried;
mod elementwise;
mod experts_attention;
mod movement;
mod products;
mod rows;
mod unsupported;

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
