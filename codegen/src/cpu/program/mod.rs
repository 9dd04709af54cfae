//! [`CpuProgram`]: a graph compiled into a list of kernel steps over one planned arena.
//!
//! Building a program classifies every node the outputs need:
//! - params and constant subexpressions are loaded or computed once, when the program is built
//!   ([`ProgramCache`] shares weights and compiled kernels between the programs of a model);
//! - reshapes and contiguous slices are aliases: the same memory, no step;
//! - carried inputs (the KV cache) live in a [`Carried`] buffer that outlives runs; an output
//!   `concat(carried, new)` along axis 0 becomes an in-place append of the new rows;
//! - every other node is one step running one kernel (Cranelift-compiled loops for elementwise,
//!   norm, softmax, reduction and RoPE; threaded matrix products; real `grouped_experts` and
//!   `mla_decode_attention` kernels).
//!
//! A node the CPU kernels cannot run is an error naming it; nothing falls back silently.

mod build;
mod exec;
mod plan;
mod pool;
mod run;
mod traffic;

use std::collections::HashMap;
use std::sync::Arc;

use saturn_ir::TensorData;

use super::router::RouterKernel;
use super::rows::RowKernels;
use super::weight_memory::{WeightMemory, Weights};
use super::{CodegenError, ElementwiseKernel};
use exec::Kernel;
use plan::{LinDim, Storage};

pub use run::{Carried, InputData, Workspace};

/// What the programs of one model share: weights loaded once, kernels compiled once.
pub struct ProgramCache {
    params: HashMap<String, Arc<TensorData>>,
    /// Weights stored in strips (`packed`), by param key and what they were packed from.
    packed: HashMap<(String, build::StripSource), Arc<Weights>>,
    /// Where packed weights live (huge pages, shared blocks).
    weights: WeightMemory,
    elementwise: HashMap<(String, usize), Arc<ElementwiseKernel>>,
    /// Router kernels, by their configuration and whether they read a bias.
    routers: HashMap<String, Arc<RouterKernel>>,
    rows: Arc<RowKernels>,
}

impl ProgramCache {
    pub fn new() -> Result<ProgramCache, CodegenError> {
        Ok(ProgramCache {
            params: HashMap::new(),
            packed: HashMap::new(),
            weights: WeightMemory::default(),
            elementwise: HashMap::new(),
            routers: HashMap::new(),
            rows: Arc::new(RowKernels::compile()?),
        })
    }

    /// Bytes of weights loaded so far.
    pub fn weight_bytes(&self) -> usize {
        let packed = self.packed.values().map(|w| w.as_slice().len() * Elem::F32.size());
        self.params.values().map(|d| d.len() * elem_of(d).size()).chain(packed).sum()
    }

    /// How many distinct elementwise kernels were compiled.
    pub fn elementwise_kernels(&self) -> usize {
        self.elementwise.len()
    }
}

/// The element kinds of program values (bool is one byte, 0 or 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    I64,
    U8,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::U8 => 1,
        }
    }
}

fn elem_of(d: &TensorData) -> Elem {
    match d {
        TensorData::F32(_) => Elem::F32,
        TensorData::I64(_) => Elem::I64,
        TensorData::Bool(_) => Elem::U8,
    }
}

/// A constant's elements: loaded or computed when the program is built, or weights packed in
/// strips.
#[derive(Clone)]
enum Const {
    Tensor(Arc<TensorData>),
    Packed(Arc<Weights>),
}

impl Const {
    /// The address of its elements. Constants are only read through it.
    fn ptr(&self) -> *mut u8 {
        match self {
            Const::Tensor(d) => match d.as_ref() {
                TensorData::F32(v) => v.as_ptr() as *mut u8,
                TensorData::I64(v) => v.as_ptr() as *mut u8,
                TensorData::Bool(v) => v.as_ptr() as *mut u8,
            },
            Const::Packed(w) => w.as_slice().as_ptr() as *mut u8,
        }
    }

    fn len(&self) -> usize {
        match self {
            Const::Tensor(d) => d.len(),
            Const::Packed(w) => w.as_slice().len(),
        }
    }

    fn elem(&self) -> Elem {
        match self {
            Const::Tensor(d) => elem_of(d),
            Const::Packed(_) => Elem::F32,
        }
    }
}

/// One value of the program (one graph node the outputs need).
struct Value {
    name: String,
    elem: Elem,
    shape: Vec<LinDim>,
    storage: Storage,
}

/// One kernel call: `out = kernel(args)`.
struct Step {
    kernel: Kernel,
    args: Vec<usize>,
    out: usize,
}

/// A carried input and its output: the same rows, `new` appended (see the module docs).
struct CarriedSpec {
    name: String,
    input: usize,
    output: usize,
    /// Elements per row (the product of the dims after the first).
    row: usize,
    /// Whether the output is computed in place (an append); else it is copied in after a run.
    in_place: bool,
}

/// A graph compiled for the CPU. See the module docs; [`CpuProgram::run`] executes it.
pub struct CpuProgram {
    name: String,
    id: u64,
    symbols: Vec<String>,
    values: Vec<Value>,
    /// Where each value's dims start in the flat list of dims of a run.
    dim_starts: Vec<usize>,
    steps: Vec<Step>,
    consts: Vec<Const>,
    inputs: Vec<(String, usize)>,
    carried: Vec<CarriedSpec>,
    outputs: Vec<(String, usize)>,
    /// Per value, the steps it must stay alive over (inclusive; inputs from step 0).
    live: Vec<(usize, usize)>,
    rows: Arc<RowKernels>,
    /// Whether the weights are large enough for the kernels to split work across threads.
    large: bool,
}

/// Weights from which a program's kernels have parallel work (see `CpuProgram::run`).
const LARGE_WEIGHT_BYTES: usize = 4 << 20;

impl CpuProgram {
    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the carried inputs, in graph order.
    pub fn carried_names(&self) -> impl Iterator<Item = &str> {
        self.carried.iter().map(|c| c.name.as_str())
    }

    /// How many kernel steps a run executes.
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// How many carried outputs are appended in place (the rest are copied after a run).
    pub fn in_place_appends(&self) -> usize {
        self.carried.iter().filter(|c| c.in_place).count()
    }
}
