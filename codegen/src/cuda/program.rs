//! [`CudaProgram`]: a graph turned into CUDA C kernels, their launches, and the buffers they use.
//!
//! Building mirrors the CPU program: params, inputs and scalars are buffers the runtime fills;
//! reshapes and contiguous slices alias their operand; carried inputs (the KV cache) live in
//! buffers that outlive runs, and `concat(cache, new)` along axis 0 appends in place; constant
//! subexpressions run once (`init`); every other node is a group of launches over arena buffers
//! with lifetimes. Kernels with the same source are generated once.

use std::collections::HashMap;

use saturn_ir::{DType, Dim, Graph, Node, NodeId, Op, ParamSource, Tensor, TensorData};
use serde::Serialize;

use super::emit::{self, Bind, Group, KernelDef, NodeCtx, Param, Step};
use super::extent::Extent;
use super::gemm::Gemm;
use crate::CodegenError;

/// How the weights (params) of a program are stored on the device; kernels read them as f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightStorage {
    /// f32: every kernel computes in f32, as the interpreter does (up to summation order).
    #[default]
    F32,
    /// bf16, rounded to nearest even on upload: half the bytes a decode step reads. Kernels
    /// compute what the interpreter computes with bf16-rounded weights (up to summation
    /// order), unless [`CudaOptions::tensor_cores`] says otherwise.
    Bf16,
}

/// The weights of `params` as a program with `storage` holds them (each f32 rounded to the
/// nearest bf16 for [`WeightStorage::Bf16`]): the interpreter or the CPU backend run on these
/// computes what the device computes, up to summation order.
pub struct StoredWeights<'a> {
    pub params: &'a dyn ParamSource,
    pub storage: WeightStorage,
}

impl ParamSource for StoredWeights<'_> {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let mut t = self.params.load(key, shape)?;
        if let (WeightStorage::Bf16, TensorData::F32(v)) = (self.storage, &mut t.data) {
            v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
        }
        Ok(t)
    }
}

/// Options of [`CudaProgram::generate_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaOptions {
    pub weights: WeightStorage,
    /// With bf16 weights: tiled products with weights and decode attention round their other
    /// operands to bf16 to run on tensor cores (f32 accumulation), and the KV cache (carried
    /// buffers appended in place) is stored as bf16, each appended row rounded. Results then
    /// agree with the interpreter's (on the rounded weights) at bf16's tolerance only.
    pub tensor_cores: bool,
    /// Tiled products (beyond a few rows: prefill) run in the device's BLAS library (cuBLAS on
    /// a GPU) where it multiplies the operands together: `linear`, `rms_norm_linear`,
    /// `gated_linear` and `grouped_experts`' shared expert with f32 weights or bf16 weights on
    /// tensor cores, and batched `matmul`s (in f32, or in bf16 in tensor-core programs).
    /// Decode-sized products keep their kernels.
    pub cublas: bool,
}

impl CudaOptions {
    /// Whether the program computes in bf16 (tensor cores need bf16 weights).
    fn bf16_math(&self) -> bool {
        self.tensor_cores && self.weights == WeightStorage::Bf16
    }
}

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Storage {
    /// A checkpoint weight, uploaded once.
    Param { key: String },
    /// A rank-0 constant, uploaded once.
    Scalar { value: f64 },
    /// A graph input, uploaded by each run.
    Input,
    /// A carried buffer (the KV cache): it outlives runs, rows `0..shape[0]`.
    Carried,
    /// Computed once by the `init` launches (a constant subexpression).
    Persistent,
    /// Planned in the arena, alive from launch `first` to `last` (inclusive) of a run.
    Arena { first: usize, last: usize },
    /// The elements of buffer `of` from element `offset` on.
    Alias {
        of: usize,
        #[serde(serialize_with = "serialize_dim")]
        offset: Dim,
    },
}

fn serialize_dim<S: serde::Serializer>(d: &Dim, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

fn serialize_dims<S: serde::Serializer>(dims: &[Dim], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(dims.iter().map(Dim::to_string))
}

/// One buffer: a value of the graph, or a group's scratch memory.
#[derive(Clone, Debug, Serialize)]
pub struct Buffer {
    pub name: String,
    pub dtype: String,
    /// The value's dims (none for scratch memory).
    #[serde(serialize_with = "serialize_dims")]
    pub shape: Vec<Dim>,
    /// Its size: the product of its dims times the element size.
    pub bytes: Extent,
    pub storage: Storage,
}

/// One generated kernel.
#[derive(Clone, Debug, Serialize)]
pub struct CudaKernel {
    pub name: String,
    /// The node whose group first produced it.
    pub node: String,
    #[serde(skip)]
    pub source: String,
}

/// One step of a run: a generated kernel or a library product, over buffers `args`.
#[derive(Clone, Debug, Serialize)]
pub struct Launch {
    pub node: String,
    #[serde(flatten)]
    pub work: Work,
    /// The buffers: a kernel's params after `sym`; a product's `[a, b, c]`.
    pub args: Vec<usize>,
}

/// What a [`Launch`] runs.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    Kernel(KernelLaunch),
    /// A product by the device's BLAS library (cuBLAS on a GPU).
    Gemm(Gemm),
}

/// A generated kernel's launch: grid, block and dynamic shared memory.
#[derive(Clone, Debug, Serialize)]
pub struct KernelLaunch {
    pub kernel: String,
    pub grid: [Extent; 3],
    pub block: u32,
    pub shared_bytes: u32,
}

impl Launch {
    /// The kernel launched, if this step is a kernel.
    pub fn kernel(&self) -> Option<&KernelLaunch> {
        match &self.work {
            Work::Kernel(k) => Some(k),
            Work::Gemm(_) => None,
        }
    }

    /// What the step runs, for messages: the kernel's name, or `gemm`.
    pub fn what(&self) -> &str {
        match &self.work {
            Work::Kernel(k) => &k.kernel,
            Work::Gemm(_) => "gemm",
        }
    }
}

/// A graph compiled to CUDA C. See the module docs.
#[derive(Clone, Debug, Serialize)]
pub struct CudaProgram {
    pub name: String,
    /// The symbols, in the order of the `sym` array every kernel reads.
    pub symbols: Vec<String>,
    pub buffers: Vec<Buffer>,
    #[serde(skip)]
    pub kernels: Vec<CudaKernel>,
    /// Launches run once, after the params are uploaded (constant subexpressions).
    pub init: Vec<Launch>,
    /// Launches of every run, in order.
    pub launches: Vec<Launch>,
    pub inputs: Vec<(String, usize)>,
    pub outputs: Vec<(String, usize)>,
}

/// Where the arena buffers sit for given symbol values (see [`CudaProgram::arena`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArenaPlan {
    pub offsets: Vec<Option<usize>>,
    pub bytes: usize,
}

/// The shared device helpers every kernel is compiled with.
pub const PRELUDE: &str = include_str!("prelude.cu");

impl CudaProgram {
    /// Generates the CUDA program of `graph` with f32 weights. Inputs named `carried_prefix*`
    /// with an output of the same name are carried (the KV cache).
    pub fn generate(graph: &Graph, carried_prefix: &str) -> Result<CudaProgram, CodegenError> {
        CudaProgram::generate_with(graph, carried_prefix, CudaOptions::default())
    }

    /// [`CudaProgram::generate`] with `options` (how weights are stored, tensor cores).
    pub fn generate_with(
        graph: &Graph,
        carried_prefix: &str,
        options: CudaOptions,
    ) -> Result<CudaProgram, CodegenError> {
        saturn_ir::verify(graph)
            .map_err(|e| CodegenError::Unsupported { node: graph.name.clone(), msg: e.to_string() })?;
        let symbols = graph.symbols();
        let mut b = Builder {
            graph,
            buffers: Vec::new(),
            buffer_of: HashMap::new(),
            kernels: Vec::new(),
            kernel_by_source: HashMap::new(),
            init: Vec::new(),
            launches: Vec::new(),
        };
        let needed = graph.needed_by_outputs();
        let constant = graph.constant_nodes();
        let outputs: HashMap<&str, NodeId> =
            graph.outputs().iter().map(|(n, id)| (n.as_str(), *id)).collect();
        // Router logits stay f32 whatever the weights' storage, as DeepSeek's reference and
        // transformers compute the gate: bf16 rounding there would flip expert choices.
        let router_logits: std::collections::HashSet<NodeId> = graph
            .node_ids()
            .filter(|&id| matches!(graph.node(id).op, Op::RouterTopK(_)))
            .filter_map(|id| graph.inputs(id).first().copied())
            .collect();
        // Carried inputs whose output appends rows to them in place: only these may be stored
        // narrower (an output copied into its carried buffer is copied byte for byte).
        let appended: std::collections::HashSet<NodeId> = graph
            .outputs()
            .iter()
            .filter(|(name, _)| name.starts_with(carried_prefix))
            .filter_map(|(name, out)| {
                let args = graph.inputs(*out);
                let append = matches!(graph.node(*out).op, Op::Concat { axis: 0 })
                    && args.len() == 2
                    && graph.node(args[0]).name == *name;
                append.then_some(args[0])
            })
            .collect();
        // Carried outputs: node -> the carried input's buffer.
        let mut carried_outputs: HashMap<NodeId, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for id in graph.node_ids().filter(|id| needed[id.index()]) {
            let node = graph.node(id);
            check_dtype(node)?;
            let args: Vec<usize> = graph.inputs(id).iter().map(|i| b.buffer_of[i]).collect();
            let storage = match &node.op {
                Op::Input => match outputs.get(node.name.as_str()) {
                    Some(&out) if node.name.starts_with(carried_prefix) => {
                        carried_outputs.insert(out, b.buffers.len());
                        Storage::Carried
                    }
                    _ => {
                        inputs.push((node.name.clone(), b.buffers.len()));
                        Storage::Input
                    }
                },
                Op::Param { key } => Storage::Param { key: key.clone() },
                Op::Scalar { value } => Storage::Scalar { value: *value },
                _ => match b.alias(node, id, &args) {
                    Some(alias) => alias,
                    None => {
                        let append = carried_outputs.get(&id).copied().filter(|&c| {
                            matches!(node.op, Op::Concat { axis: 0 }) && args.len() == 2 && args[0] == c
                        });
                        let init = constant[id.index()] && node.ty.shape.iter().all(Dim::is_const);
                        let ctx = NodeCtx {
                            node,
                            operands: graph.inputs(id).iter().map(|&i| graph.ty(i)).collect(),
                            stored: args.iter().map(|&a| b.stored(a)).collect(),
                            symbols: &symbols,
                            tensor_cores: options.bf16_math() && !router_logits.contains(&id),
                            cublas: options.cublas,
                        };
                        match append {
                            Some(cache) => {
                                let group =
                                    Group::kernels(vec![append_rows(&ctx, b.stored(cache))], Vec::new());
                                b.add_group(&ctx, group, &args, init)?;
                                Storage::Alias { of: cache, offset: Dim::constant(0) }
                            }
                            None => {
                                let group = emit::emit(&ctx)?;
                                b.add_group(&ctx, group, &args, init)?;
                                if init { Storage::Persistent } else { Storage::Arena { first: 0, last: 0 } }
                            }
                        }
                    }
                },
            };
            // Weights and the KV cache may be stored narrower; views of them read the same
            // storage.
            let f32 = node.ty.dtype == DType::F32;
            let stored = match &storage {
                Storage::Param { .. } if f32 && options.weights == WeightStorage::Bf16 => DType::BF16,
                Storage::Carried if f32 && options.bf16_math() && appended.contains(&id) => DType::BF16,
                Storage::Alias { of, .. } => b.stored(*of),
                _ => node.ty.dtype,
            };
            b.buffer_of.insert(id, b.buffers.len());
            b.buffers.push(Buffer {
                name: node.name.clone(),
                dtype: stored.name().into(),
                shape: node.ty.shape.clone(),
                bytes: Extent::of(node.ty.shape.iter().cloned()).times(stored.size_bytes() as u64),
                storage,
            });
        }
        let outputs: Vec<(String, usize)> =
            graph.outputs().iter().map(|(n, id)| (n.clone(), b.buffer_of[id])).collect();
        lifetimes(&mut b.buffers, &b.launches, &outputs);
        Ok(CudaProgram {
            name: graph.name.clone(),
            symbols,
            buffers: b.buffers,
            kernels: b.kernels,
            init: b.init,
            launches: b.launches,
            inputs,
            outputs,
        })
    }

    /// `kernels.cu`: the prelude, then every kernel once.
    pub fn source(&self) -> String {
        let mut s = format!("// saturn: CUDA kernels of `{}`, generated; do not edit.\n", self.name);
        s.push_str(PRELUDE);
        for k in &self.kernels {
            s.push_str(&format!("\n// {} (first for node %{})\n", k.name, k.node));
            s.push_str(&k.source);
        }
        s
    }

    /// Arena offsets for the symbols' values (in [`CudaProgram::symbols`] order): a byte offset
    /// per arena buffer (`None` for the others) such that buffers alive at the same launch never
    /// overlap, and the arena's size. `None` when a size does not evaluate (a negative dim).
    pub fn arena(&self, values: &[u64]) -> Option<ArenaPlan> {
        let mut sizes = Vec::with_capacity(self.buffers.len());
        let mut live = Vec::with_capacity(self.buffers.len());
        for b in &self.buffers {
            match b.storage {
                Storage::Arena { first, last } => {
                    sizes.push(Some(usize::try_from(b.bytes.eval(&self.symbols, values)?).ok()?));
                    live.push((first, last));
                }
                _ => {
                    sizes.push(None);
                    live.push((0, 0));
                }
            }
        }
        let (offsets, bytes) = crate::arena::assign_offsets(&sizes, &live);
        let offsets = offsets.into_iter().zip(&sizes).map(|(o, s)| s.map(|_| o)).collect();
        Some(ArenaPlan { offsets, bytes })
    }

    /// One kernel's compilable source: the prelude and the kernel.
    pub fn kernel_source(kernel: &CudaKernel) -> String {
        format!("{PRELUDE}\n{}", kernel.source)
    }
}

fn check_dtype(node: &Node) -> Result<(), CodegenError> {
    match node.ty.dtype {
        DType::F32 | DType::I64 | DType::Bool => Ok(()),
        other => Err(CodegenError::Unsupported {
            node: node.name.clone(),
            msg: format!("{other} values are not generated for CUDA yet"),
        }),
    }
}

/// `concat(cache, new)` along axis 0 into the carried buffer, whose elements are `stored`: the
/// new rows go after the cached (rounded to bf16 for a bf16 cache).
fn append_rows(ctx: &NodeCtx, stored: DType) -> KernelDef {
    let (cache, new) = (&ctx.operands[0].shape, &ctx.operands[1].shape);
    let rows = ctx.dim(&cache[0]);
    let row = ctx.product(&cache[1..]);
    let body = format!(
        "  const long long n = {n};\n  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) out[{rows} * {row} + i] = x[i];\n",
        n = ctx.product(new),
    );
    KernelDef {
        stem: "append_rows".into(),
        params: vec![
            Param {
                cty: emit::cty(ctx.node.ty.dtype),
                name: "x".into(),
                bind: Bind::Operand(1),
                written: false,
            },
            Param { cty: emit::cty(stored), ..ctx.out() },
        ],
        body,
        block: emit::ELEMENT_BLOCK,
        grid: emit::element_grid(new),
        shared_bytes: 0,
        globals: String::new(),
    }
}

/// Sets each arena buffer's lifetime: from the launch that first writes it to the last that
/// reads it (through aliases); outputs live to the end.
fn lifetimes(buffers: &mut [Buffer], launches: &[Launch], outputs: &[(String, usize)]) {
    let root = |buffers: &[Buffer], mut v: usize| {
        while let Storage::Alias { of, .. } = buffers[v].storage {
            v = of;
        }
        v
    };
    let mut live: Vec<Option<(usize, usize)>> = vec![None; buffers.len()];
    for (j, launch) in launches.iter().enumerate() {
        for &a in &launch.args {
            let r = root(buffers, a);
            let l = live[r].get_or_insert((j, j));
            l.0 = l.0.min(j);
            l.1 = l.1.max(j);
        }
    }
    for &(_, v) in outputs {
        let r = root(buffers, v);
        if let Some(l) = live[r].as_mut() {
            l.1 = launches.len();
        }
    }
    for (b, l) in buffers.iter_mut().zip(live) {
        if let (Storage::Arena { first, last }, Some((f, e))) = (&mut b.storage, l) {
            (*first, *last) = (f, e);
        }
    }
}

struct Builder<'g> {
    graph: &'g Graph,
    buffers: Vec<Buffer>,
    buffer_of: HashMap<NodeId, usize>,
    kernels: Vec<CudaKernel>,
    /// Kernel source (under a placeholder name) -> index in `kernels`.
    kernel_by_source: HashMap<String, usize>,
    init: Vec<Launch>,
    launches: Vec<Launch>,
}

impl Builder<'_> {
    /// How value buffer `i`'s elements are stored: its value's dtype, or bf16 for bf16 weights,
    /// the KV cache of a tensor-core program and views of them (scratch buffers, never
    /// operands, have no dtype).
    fn stored(&self, i: usize) -> DType {
        let name = &self.buffers[i].dtype;
        DType::ALL.into_iter().find(|d| d.name() == name).unwrap_or_else(|| panic!("buffer {i} has no dtype"))
    }

    /// Reshapes and contiguous slices read their operand's memory.
    fn alias(&self, node: &Node, id: NodeId, args: &[usize]) -> Option<Storage> {
        let (of, offset) = match &node.op {
            Op::Reshape { .. } => (args[0], Dim::constant(0)),
            Op::Slice { axis, start, .. } => {
                let x = &self.graph.ty(self.graph.inputs(id)[0]).shape;
                if !x[..*axis].iter().all(|d| d.as_const() == Some(1)) {
                    return None;
                }
                let inner = x[axis + 1..].iter().try_fold(1i64, |acc, d| Some(acc * d.as_const()? as i64))?;
                let scaled = Dim::linear(
                    start.constant_part() * inner,
                    start.terms().map(|(s, c)| (s.to_string(), c * inner)),
                );
                (args[0], scaled)
            }
            _ => return None,
        };
        Some(match &self.buffers[of].storage {
            Storage::Alias { of: root, offset: base } => {
                Storage::Alias { of: *root, offset: base.add(&offset) }
            }
            _ => Storage::Alias { of, offset },
        })
    }

    /// Adds a group's scratch buffers, kernels (once per source) and launches. The node's own
    /// buffer is the next one pushed after the scratch buffers.
    fn add_group(
        &mut self,
        ctx: &NodeCtx,
        group: Group,
        args: &[usize],
        init: bool,
    ) -> Result<(), CodegenError> {
        let first_scratch = self.buffers.len();
        for (i, bytes) in group.scratch.iter().enumerate() {
            self.buffers.push(Buffer {
                name: format!("{}.scratch{i}", ctx.node.name),
                dtype: "u8".into(),
                shape: Vec::new(),
                bytes: bytes.clone(),
                storage: if init { Storage::Persistent } else { Storage::Arena { first: 0, last: 0 } },
            });
        }
        let out = self.buffers.len();
        let bind = |p: &Param| match p.bind {
            Bind::Operand(i) => args[i],
            Bind::Out => out,
            Bind::Scratch(i) => first_scratch + i,
        };
        for step in group.steps {
            let (work, args) = match step {
                Step::Kernel(k) => {
                    let kernel = self.kernel(&k, &ctx.node.name);
                    let launch = KernelLaunch {
                        kernel,
                        grid: k.grid.clone(),
                        block: k.block,
                        shared_bytes: k.shared_bytes,
                    };
                    (Work::Kernel(launch), k.params.iter().map(bind).collect())
                }
                Step::Gemm(g) => (Work::Gemm(g.gemm.clone()), vec![bind(&g.a), bind(&g.b), bind(&g.c)]),
            };
            let launch = Launch { node: ctx.node.name.clone(), work, args };
            if init { self.init.push(launch) } else { self.launches.push(launch) }
        }
        Ok(())
    }

    /// The name of `k`'s kernel, generating it the first time its source is seen.
    fn kernel(&mut self, k: &KernelDef, node: &str) -> String {
        let key = k.source("KERNEL");
        if let Some(&i) = self.kernel_by_source.get(&key) {
            return self.kernels[i].name.clone();
        }
        let taken = |n: &str| self.kernels.iter().any(|k| k.name == n);
        let mut name = k.stem.clone();
        let mut n = 2;
        while taken(&name) {
            name = format!("{}_{n}", k.stem);
            n += 1;
        }
        self.kernel_by_source.insert(key, self.kernels.len());
        self.kernels.push(CudaKernel { name: name.clone(), node: node.into(), source: k.source(&name) });
        name
    }
}
