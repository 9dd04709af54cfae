//! Building a [`CpuProgram`] from a graph: storage and kernel per node, lifetimes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use saturn_ir::{DType, Graph, Node, NodeId, Op, ParamSource, TensorData};

use super::super::compile_elementwise;
use super::super::layout::MAX_RANK;
use super::super::linalg::Triangle;
use super::super::packed::{pack_matrices, pack_matrices_from, packed_len};
use super::super::router::RouterKernel;
use super::super::weight_memory::{WeightMemory, Weights};
use super::exec::{Env, Kernel, Scratch, View, exec};
use super::plan::{LinDim, Storage};
use super::{CarriedSpec, Const, CpuProgram, Elem, ProgramCache, Step, Value};
use crate::CodegenError;

/// Gives each program an identity, so a workspace keeps one plan per program.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn unsupported(node: &Node, msg: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported { node: node.name.clone(), msg: msg.into() }
}

fn elem(node: &Node) -> Result<Elem, CodegenError> {
    match node.ty.dtype {
        DType::F32 => Ok(Elem::F32),
        DType::I64 => Ok(Elem::I64),
        DType::Bool => Ok(Elem::U8),
        other => Err(unsupported(
            node,
            format!("{other} values are not supported by the cpu backend (use --backend interp)"),
        )),
    }
}

impl CpuProgram {
    /// Compiles `graph`. Params come from `params` (through `cache`, which loads each key
    /// once); inputs named `carried_prefix*` that have an output of the same name are carried
    /// (see [`super::Carried`]).
    pub fn compile(
        graph: &Graph,
        params: &dyn ParamSource,
        cache: &mut ProgramCache,
        carried_prefix: &str,
    ) -> Result<CpuProgram, CodegenError> {
        saturn_ir::verify(graph)
            .map_err(|e| CodegenError::Unsupported { node: graph.name.clone(), msg: e.to_string() })?;
        let mut b = Builder {
            graph,
            symbols: graph.symbols(),
            values: Vec::new(),
            steps: Vec::new(),
            consts: Vec::new(),
            value_of: HashMap::new(),
            scratch: Scratch::default(),
            strips: HashMap::new(),
            packed_values: HashSet::new(),
            triangles: HashMap::new(),
        };
        let needed = graph.needed_by_outputs();
        let constant = graph.constant_nodes();
        b.strips = strip_plan(graph, &constant);
        let CausalSoftmaxes { by_softmax: causal, fused, triangles } = causal_softmaxes(graph, &constant);
        b.triangles = triangles;
        let outputs: HashMap<&str, _> = graph.outputs().iter().map(|(n, id)| (n.as_str(), *id)).collect();
        let mut carried = Vec::new();
        let mut inputs = Vec::new();
        // The carried outputs, by node: appended in place when they are `concat(input, new)`.
        let mut carried_outputs: HashMap<saturn_ir::NodeId, usize> = HashMap::new();
        for id in graph.node_ids().filter(|id| needed[id.index()]) {
            let node = graph.node(id);
            if node.ty.rank() > MAX_RANK {
                return Err(unsupported(node, format!("rank {} is above {MAX_RANK}", node.ty.rank())));
            }
            let elem = elem(node)?;
            let shape: Vec<LinDim> = node.ty.shape.iter().map(|d| LinDim::new(d, &b.symbols)).collect();
            let args: Vec<usize> = graph.inputs(id).iter().map(|i| b.value_of[i]).collect();
            let symbol_free = node.ty.shape.iter().all(|d| d.is_const());
            let storage = match &node.op {
                _ if fused.contains(&id) => Storage::Fused,
                _ if causal.contains_key(&id) => {
                    let (source, scale) = causal[&id];
                    let args = vec![b.value_of[&source]];
                    b.steps.push(Step { kernel: Kernel::CausalSoftmax { scale }, args, out: b.values.len() });
                    Storage::Arena
                }
                Op::Input => match outputs.get(node.name.as_str()) {
                    Some(&out) if node.name.starts_with(carried_prefix) => {
                        let row = carried_row(node)?;
                        carried_outputs.insert(out, carried.len());
                        carried.push(CarriedSpec {
                            name: node.name.clone(),
                            input: b.values.len(),
                            output: usize::MAX,
                            row,
                            in_place: false,
                        });
                        Storage::Carried(carried.len() - 1)
                    }
                    _ => {
                        inputs.push((node.name.clone(), b.values.len()));
                        Storage::Arena
                    }
                },
                Op::Param { key } => b.param(node, id, key, params, cache)?,
                Op::Scalar { value } => b.push_const(Const::Tensor(Arc::new(match elem {
                    Elem::F32 => TensorData::F32(vec![*value as f32]),
                    Elem::I64 => TensorData::I64(vec![*value as i64]),
                    Elem::U8 => TensorData::Bool(vec![*value != 0.0]),
                }))),
                _ => match b.alias(node, id, &args) {
                    Some(alias) => alias,
                    None => {
                        let in_place = carried_outputs.get(&id).copied().filter(|&c| {
                            matches!(node.op, Op::Concat { axis: 0 })
                                && args.len() == 2
                                && args[0] == carried[c].input
                        });
                        let kernel = match in_place {
                            Some(_) => Kernel::CarriedAppend,
                            None => b.kernel(node, id, &args, cache)?,
                        };
                        if constant[id.index()] && symbol_free {
                            b.compute_now(node, id, elem, &kernel, &args, cache)?
                        } else {
                            b.steps.push(Step { kernel, args: args.clone(), out: b.values.len() });
                            match in_place {
                                Some(c) => {
                                    carried[c].in_place = true;
                                    Storage::Carried(c)
                                }
                                None => Storage::Arena,
                            }
                        }
                    }
                },
            };
            if let Some(&c) = carried_outputs.get(&id) {
                carried[c].output = b.values.len();
            }
            b.value_of.insert(id, b.values.len());
            b.values.push(Value { name: node.name.clone(), elem, shape, storage });
        }
        share_normed_rows(&mut b.steps);
        let outputs: Vec<(String, usize)> =
            graph.outputs().iter().map(|(n, id)| (n.clone(), b.value_of[id])).collect();
        let live = lifetimes(&b.values, &b.steps, &outputs);
        let dim_starts = b
            .values
            .iter()
            .scan(0, |at, v| {
                let start = *at;
                *at += v.shape.len();
                Some(start)
            })
            .collect();
        let weight_bytes: usize = b.consts.iter().map(|c| c.len() * c.elem().size()).sum();
        Ok(CpuProgram {
            large: weight_bytes >= super::LARGE_WEIGHT_BYTES,
            name: graph.name.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            symbols: b.symbols,
            values: b.values,
            dim_starts,
            steps: b.steps,
            consts: b.consts,
            inputs,
            carried,
            outputs,
            live,
            rows: cache.rows.clone(),
        })
    }
}

/// Elements per row of a carried input `[rows, ...]` (the dims after the first are constant).
fn carried_row(node: &Node) -> Result<usize, CodegenError> {
    if node.ty.dtype != DType::F32 || node.ty.shape.is_empty() {
        return Err(unsupported(node, "a carried input must be f32 with rows along axis 0"));
    }
    node.ty.shape[1..].iter().try_fold(1usize, |acc, d| {
        d.as_const()
            .map(|v| acc * v as usize)
            .ok_or_else(|| unsupported(node, "a carried input's dims after the first must be constant"))
    })
}

/// The step range each value must stay alive over: time 0 is the input copy, step `j` runs at
/// time `j + 1`, outputs live to the end. An alias keeps the value it aliases alive.
fn lifetimes(values: &[Value], steps: &[Step], outputs: &[(String, usize)]) -> Vec<(usize, usize)> {
    let root = |mut v: usize| {
        while let Storage::Alias { of, .. } = values[v].storage {
            v = of;
        }
        v
    };
    let mut live = vec![(0usize, 0usize); values.len()];
    for (j, step) in steps.iter().enumerate() {
        live[step.out] = (j + 1, j + 1);
    }
    for (j, step) in steps.iter().enumerate() {
        for &a in &step.args {
            let r = root(a);
            live[r].1 = live[r].1.max(j + 1);
        }
    }
    for &(_, v) in outputs {
        live[root(v)].1 = steps.len() + 1;
    }
    live
}

struct Builder<'g> {
    graph: &'g Graph,
    symbols: Vec<String>,
    values: Vec<Value>,
    steps: Vec<Step>,
    consts: Vec<Const>,
    value_of: HashMap<saturn_ir::NodeId, usize>,
    scratch: Scratch,
    /// The constants stored [`packed`](super::super::packed) (see [`strip_plan`]), and their
    /// values.
    strips: HashMap<NodeId, StripSource>,
    packed_values: HashSet<usize>,
    /// Products around a causal softmax, and what they may skip (see [`causal_softmaxes`]).
    triangles: HashMap<NodeId, Triangle>,
}

/// What a packed constant's matrices are (its last two dims): each becomes the strips of `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum StripSource {
    /// `w [n, k]` itself, the weight of `x w^T`.
    Rows,
    /// `b [k, n] = w^T`, the right operand of `a b`.
    Columns,
}

impl StripSource {
    /// `(n, k)` of a constant of this shape.
    fn dims(self, shape: &[usize]) -> (usize, usize) {
        let (a, b) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        match self {
            StripSource::Rows => (a, b),
            StripSource::Columns => (b, a),
        }
    }

    /// Elements of a constant of `shape` packed: whole strips, the last of each matrix padded.
    fn packed_len(self, shape: &[usize]) -> usize {
        let (n, k) = self.dims(shape);
        let matrices: usize = shape[..shape.len() - 2].iter().product();
        matrices * packed_len(n, k)
    }

    /// `data` (of `shape`) packed, one matrix per task: a layer's experts are gigabytes.
    fn pack(self, data: &[f32], shape: &[usize], memory: &WeightMemory) -> Weights {
        let mut out = memory.alloc(self.packed_len(shape));
        pack_matrices(data, self.dims(shape), self == StripSource::Columns, out.as_mut_slice());
        out
    }

    /// Param `key` of `shape` packed straight from where `params` holds it
    /// ([`saturn_ir::load_param_views`]), or `None` where it does not lend it in place: loading
    /// copies every weight once more, into memory the system must first clear, and that was
    /// most of the time a model took to load.
    fn pack_in_place(
        self,
        key: &str,
        shape: &[usize],
        params: &dyn ParamSource,
        memory: &WeightMemory,
    ) -> Option<Weights> {
        let (n, k) = self.dims(shape);
        let views = saturn_ir::load_param_views(key, shape, params)?;
        let matrices: Vec<&[f32]> = views.iter().flat_map(|v| v.chunks_exact((n * k).max(1))).collect();
        // A matrix across stacked tensors (a stack of rows, `[count, k]`) is not in one view.
        if matrices.len() != shape[..shape.len() - 2].iter().product::<usize>() {
            return None;
        }
        let mut out = memory.alloc(self.packed_len(shape));
        pack_matrices_from(|i| matrices[i], (n, k), self == StripSource::Columns, out.as_mut_slice());
        Some(out)
    }
}

/// The constants (params, and nodes computed when the program is built) whose every use is as
/// a matrix operand that its kernel reads in strips ([`strip_use`]), all uses the same way:
/// stored packed, once, instead of as loaded (each matrix's last strip zero-padded to 32
/// columns, so a width that is not a multiple of 32 takes a little more memory).
fn strip_plan(graph: &Graph, constant: &[bool]) -> HashMap<NodeId, StripSource> {
    let outputs: HashSet<NodeId> = graph.outputs().iter().map(|(_, id)| *id).collect();
    let mut plan = HashMap::new();
    for id in graph.node_ids().filter(|id| constant[id.index()] && !outputs.contains(id)) {
        let mut uses = graph.users(id).into_iter().flat_map(|user| {
            let op = &graph.node(user).op;
            graph
                .inputs(user)
                .into_iter()
                .enumerate()
                .filter(|(_, input)| *input == id)
                .map(|(at, _)| strip_use(op, at))
        });
        let Some(Some(source)) = uses.next() else { continue };
        let shape: Option<Vec<usize>> =
            graph.node(id).ty.shape.iter().map(|d| d.as_const().map(|v| v as usize)).collect();
        let matrices = shape.is_some_and(|s| s.len() >= 2);
        if matrices && uses.all(|u| u == Some(source)) {
            plan.insert(id, source);
        }
    }
    plan
}

/// How operand `at` of `op` is read when its kernel reads it in strips, if it does.
fn strip_use(op: &Op, at: usize) -> Option<StripSource> {
    let rows = match op {
        Op::GroupedExperts { .. } => at >= 2,
        Op::Linear => at == 1,
        Op::RmsNormLinear { .. } => at == 2,
        Op::GatedLinear => at >= 1,
        Op::MatMul => return (at == 1).then_some(StripSource::Columns),
        _ => false,
    };
    rows.then_some(StripSource::Rows)
}

/// Marks each `rms_norm_linear` step whose rows and norm weight are those of the one before
/// it (MLA's latent, rope key and query projections all normalize the layer's input the same
/// way): it reuses the normalized rows that step left in the scratch, which no other kernel
/// writes. Its operands are live until it runs, so they still hold what was normalized.
fn share_normed_rows(steps: &mut [Step]) {
    let mut last: Option<(usize, usize, u64)> = None;
    for step in steps {
        if let Kernel::RmsNormLinear { eps, normed_before, .. } = &mut step.kernel {
            let key = (step.args[0], step.args[1], eps.to_bits());
            *normed_before = last == Some(key);
            last = Some(key);
        }
    }
}

/// Softmaxes along the last axis of a causal mask, maybe of scaled scores
/// (`softmax(causal_mask(x))`, `softmax(causal_mask(x * c))` with `c` a constant of a
/// `fused_elementwise` or a scalar), where each intermediate has that one user and is neither
/// an output nor a constant: they run as one `causal_softmax` kernel over `x`, which reads only
/// the unmasked scores and stores neither intermediate (at a 1024-token prefill the scores of
/// one layer are 64 MB a pass). By softmax node: `(x, c)`, `c = 1` without a multiply; the
/// intermediates, which take no memory; and the products around them (`Kernel::MatMul`'s
/// `triangle`): a product `x` read by nothing else, of which only the lower triangle is ever
/// read, and the products whose left operand is the softmax, which is lower triangular.
fn causal_softmaxes(graph: &Graph, constant: &[bool]) -> CausalSoftmaxes {
    let outputs: HashSet<NodeId> = graph.outputs().iter().map(|(_, id)| *id).collect();
    let only_user = |id: NodeId, user: NodeId| {
        graph.users(id) == [user] && !outputs.contains(&id) && !constant[id.index()]
    };
    let f32_node = |id: NodeId| graph.node(id).ty.dtype == DType::F32;
    let (mut causal, mut fused, mut triangles) = (HashMap::new(), HashSet::new(), HashMap::new());
    for id in graph.node_ids() {
        let node = graph.node(id);
        let Op::Softmax { axis } = node.op else { continue };
        let [mask] = graph.inputs(id)[..] else { continue };
        if axis + 1 != node.ty.rank()
            || node.ty.rank() < 2
            || !f32_node(id)
            || constant[id.index()]
            || !matches!(graph.node(mask).op, Op::CausalMask)
            || !only_user(mask, id)
        {
            continue;
        }
        let [scores] = graph.inputs(mask)[..] else { continue };
        let scaled = match scale_of(graph, scores) {
            Some((x, c)) if only_user(scores, mask) && f32_node(x) => Some((x, c)),
            _ => None,
        };
        fused.insert(mask);
        let (x, c) = match scaled {
            Some((x, c)) => {
                fused.insert(scores);
                (x, c)
            }
            None => (scores, 1.0),
        };
        let reader = if scaled.is_some() { scores } else { mask };
        if matches!(graph.node(x).op, Op::MatMul) && only_user(x, reader) {
            triangles.insert(x, Triangle::OutputLower);
        }
        for user in graph.users(id) {
            if matches!(graph.node(user).op, Op::MatMul) && graph.inputs(user)[0] == id {
                triangles.insert(user, Triangle::LeftLower);
            }
        }
        causal.insert(id, (x, c));
    }
    CausalSoftmaxes { by_softmax: causal, fused, triangles }
}

/// What [`causal_softmaxes`] finds.
struct CausalSoftmaxes {
    by_softmax: HashMap<NodeId, (NodeId, f32)>,
    fused: HashSet<NodeId>,
    triangles: HashMap<NodeId, Triangle>,
}

/// `(x, c)` where `id` is `x * c` with `c` a constant (`fused_elementwise` `mul($0, c)` or
/// `mul(c, $0)` of one operand, or `mul` of `x` and a scalar): the multiply, `c` in f32, as the
/// interpreter evaluates it.
fn scale_of(graph: &Graph, id: NodeId) -> Option<(NodeId, f32)> {
    use saturn_ir::{BinaryOp, ElementwiseExpr};
    let inputs = graph.inputs(id);
    match &graph.node(id).op {
        Op::FusedElementwise { .. } if inputs.len() == 1 => {
            let expr = graph.node(id).op.elementwise_expr()?;
            let ElementwiseExpr::Binary(BinaryOp::Mul, a, b) = expr else { return None };
            match (a.as_ref(), b.as_ref()) {
                (ElementwiseExpr::Input(0), ElementwiseExpr::Const(c))
                | (ElementwiseExpr::Const(c), ElementwiseExpr::Input(0)) => Some((inputs[0], *c as f32)),
                _ => None,
            }
        }
        Op::Binary(BinaryOp::Mul) if inputs.len() == 2 => {
            let scalar = |at: usize| match graph.node(inputs[at]).op {
                Op::Scalar { value } if graph.node(inputs[at]).ty.rank() == 0 => Some(value as f32),
                _ => None,
            };
            match (scalar(0), scalar(1)) {
                (_, Some(c)) => Some((inputs[0], c)),
                (Some(c), None) => Some((inputs[1], c)),
                (None, None) => None,
            }
        }
        _ => None,
    }
}

impl Builder<'_> {
    fn push_const(&mut self, data: Const) -> Storage {
        self.consts.push(data);
        Storage::Const(self.consts.len() - 1)
    }

    fn param(
        &mut self,
        node: &Node,
        id: NodeId,
        key: &str,
        params: &dyn ParamSource,
        cache: &mut ProgramCache,
    ) -> Result<Storage, CodegenError> {
        let shape =
            node.ty.shape.iter().map(|d| d.as_const().map(|v| v as usize)).collect::<Option<Vec<_>>>();
        let shape = shape.ok_or_else(|| unsupported(node, "a param's shape must be constant"))?;
        let packing = self.strips.get(&id).copied();
        if elem(node)? != Elem::F32 && packing.is_some() {
            return Err(unsupported(node, "matrices read in strips must be f32"));
        }
        let cached = match packing {
            Some(source) => cache.packed.get(&(key.to_string(), source)).cloned().map(Const::Packed),
            None => cache.params.get(key).cloned().map(Const::Tensor),
        };
        let does_not_hold =
            || CodegenError::Param { key: key.into(), msg: format!("does not hold {}", node.ty) };
        let numel = shape.iter().product::<usize>();
        let data = match cached {
            Some(d) => d,
            None if let Some(source) = packing
                && let Some(packed) = source.pack_in_place(key, &shape, params, &cache.weights) =>
            {
                let d = Arc::new(packed);
                cache.packed.insert((key.to_string(), source), d.clone());
                Const::Packed(d)
            }
            None => {
                let raw = match cache.params.get(key) {
                    Some(d) => d.clone(),
                    None => Arc::new(
                        saturn_ir::load_param(node, key, &shape, params)
                            .map_err(|e| CodegenError::Param { key: key.into(), msg: e.to_string() })?
                            .data,
                    ),
                };
                match (packing, raw.as_ref()) {
                    // The packed weights take the memory of the loaded ones, which are not kept.
                    (Some(source), TensorData::F32(w)) if w.len() == numel => {
                        let d = Arc::new(source.pack(w, &shape, &cache.weights));
                        cache.packed.insert((key.to_string(), source), d.clone());
                        Const::Packed(d)
                    }
                    (Some(_), _) => return Err(does_not_hold()),
                    (None, _) => {
                        cache.params.insert(key.to_string(), raw.clone());
                        Const::Tensor(raw)
                    }
                }
            }
        };
        let stored = packing.map_or(numel, |source| source.packed_len(&shape));
        if data.len() != stored || data.elem() != elem(node)? {
            return Err(does_not_hold());
        }
        if packing.is_some() {
            self.packed_values.insert(self.values.len());
        }
        Ok(self.push_const(data))
    }

    /// Reshapes and contiguous slices read their operand's memory.
    fn alias(&self, node: &Node, id: saturn_ir::NodeId, args: &[usize]) -> Option<Storage> {
        let (of, offset) = match &node.op {
            Op::Reshape { .. } => (args[0], LinDim::zero()),
            // A constant slice stored packed is copied when the program is built (MLA's latent
            // and rope-key weights are row slices of one projection): read in place as rows,
            // the latent's product ran at half the bandwidth of the packed ones in decode.
            Op::Slice { .. } if self.strips.contains_key(&id) => return None,
            Op::Slice { axis, start, .. } => {
                let x = &self.graph.ty(self.graph.inputs(id)[0]).shape;
                // Contiguous: every axis before `axis` has one element.
                if !x[..*axis].iter().all(|d| d.as_const() == Some(1)) {
                    return None;
                }
                let inner = x[axis + 1..].iter().try_fold(1i64, |acc, d| Some(acc * d.as_const()? as i64))?;
                (args[0], LinDim::new(start, &self.symbols).scaled(inner))
            }
            _ => return None,
        };
        // Alias the root, so chains resolve in one step.
        Some(match &self.values[of].storage {
            Storage::Alias { of: root, offset: base } => {
                Storage::Alias { of: *root, offset: base.plus(&offset) }
            }
            _ => Storage::Alias { of, offset },
        })
    }

    fn kernel(
        &self,
        node: &Node,
        id: NodeId,
        args: &[usize],
        cache: &mut ProgramCache,
    ) -> Result<Kernel, CodegenError> {
        let kinds: Vec<Elem> = args.iter().map(|&a| self.values[a].elem).collect();
        let all_f32 = |n: usize| kinds.len() == n && kinds.iter().all(|&k| k == Elem::F32);
        let need = |ok: bool, what: &str| if ok { Ok(()) } else { Err(unsupported(node, what.to_string())) };
        let out = elem(node)?;
        let floats = |n: usize| need(all_f32(n) && out == Elem::F32, "expects f32 operands");
        Ok(match &node.op {
            Op::Unary(_) | Op::Binary(_) | Op::FusedElementwise { .. } => {
                need(
                    kinds.iter().all(|&k| k == Elem::F32) && out == Elem::F32,
                    "only f32 elementwise math is compiled",
                )?;
                let expr =
                    node.op.elementwise_expr().ok_or_else(|| unsupported(node, "no elementwise form"))?;
                let key = (expr.to_string(), args.len());
                let k = match cache.elementwise.get(&key) {
                    Some(k) => k.clone(),
                    None => {
                        let k = Arc::new(compile_elementwise(&node.name, &expr, args.len())?);
                        cache.elementwise.insert(key, k.clone());
                        k
                    }
                };
                Kernel::Elementwise(k)
            }
            Op::Where => {
                need(kinds == [Elem::U8, Elem::F32, Elem::F32], "expects (bool, f32, f32)")?;
                Kernel::Where
            }
            Op::Cast { .. } => Kernel::Cast { from: kinds[0], to: out },
            Op::Reduce { op, axis, .. } => floats(1).map(|_| Kernel::Reduce { op: *op, axis: *axis })?,
            Op::Softmax { axis } => floats(1).map(|_| Kernel::Softmax { axis: *axis })?,
            Op::TopKMask { k } => need(all_f32(1), "expects f32").map(|_| Kernel::TopKMask { k: *k })?,
            Op::RmsNorm { eps } => floats(2).map(|_| Kernel::RmsNorm { eps: *eps })?,
            Op::MatMul => floats(2).map(|_| Kernel::MatMul {
                packed_b: self.packed_values.contains(&args[1]),
                triangle: self.triangles.get(&id).copied().unwrap_or(Triangle::Full),
            })?,
            Op::Linear => {
                floats(2).map(|_| Kernel::Linear { packed: self.packed_values.contains(&args[1]) })?
            }
            Op::Rope(r) => {
                need(kinds == [Elem::F32, Elem::I64], "expects (f32, i64)")?;
                let d =
                    node.ty.shape.last().and_then(|d| d.as_const()).ok_or_else(|| {
                        unsupported(node, "the rotary dim (the last axis) must be constant")
                    })?;
                Kernel::Rope(*r, saturn_ir::rope_inv_freq(r, d as usize))
            }
            Op::CausalMask => floats(1).map(|_| Kernel::CausalMask)?,
            Op::Gather => {
                need(kinds == [Elem::F32, Elem::I64], "expects an f32 table and i64 indices")?;
                Kernel::Gather
            }
            Op::Permute { perm } => Kernel::Permute(perm.clone()),
            Op::Expand { .. } => Kernel::Expand,
            Op::Slice { axis, start, .. } => {
                Kernel::Slice { axis: *axis, start: LinDim::new(start, &self.symbols) }
            }
            Op::Concat { axis } => Kernel::Concat { axis: *axis },
            Op::RmsNormLinear { eps } => floats(3).map(|_| Kernel::RmsNormLinear {
                eps: *eps,
                packed: self.packed_values.contains(&args[2]),
                normed_before: false,
            })?,
            Op::GatedLinear => floats(3).map(|_| Kernel::GatedLinear {
                packed: [1, 2].map(|a| self.packed_values.contains(&args[a])),
            })?,
            Op::RouterTopK(r) => {
                floats(args.len())?;
                let has_bias = args.len() == 2;
                let key = format!("{r:?} bias={has_bias}");
                let k = match cache.routers.get(&key) {
                    Some(k) => k.clone(),
                    None => {
                        let k = Arc::new(RouterKernel::compile(&node.name, r, has_bias)?);
                        cache.routers.insert(key, k.clone());
                        k
                    }
                };
                Kernel::RouterTopK(k)
            }
            Op::GroupedExperts { k } => floats(args.len()).map(|_| Kernel::GroupedExperts {
                k: *k,
                packed: args[2..].iter().map(|a| self.packed_values.contains(a)).collect(),
            })?,
            Op::MlaDecodeAttention { scale } => {
                floats(4).map(|_| Kernel::MlaDecodeAttention { scale: *scale })?
            }
            Op::Arange { start, .. } => Kernel::Arange { start: LinDim::new(start, &self.symbols) },
            Op::Reshape { .. } | Op::Input | Op::Param { .. } | Op::Scalar { .. } => {
                return Err(unsupported(node, "has no kernel (a bug in the program builder)"));
            }
        })
    }

    /// Runs a constant node's kernel once, now, and keeps the result as a constant (packed
    /// where [`strip_plan`] says so).
    fn compute_now(
        &mut self,
        node: &Node,
        id: NodeId,
        elem: Elem,
        kernel: &Kernel,
        args: &[usize],
        cache: &ProgramCache,
    ) -> Result<Storage, CodegenError> {
        let shape: Vec<usize> = node.ty.shape.iter().map(|d| d.as_const().unwrap_or(0) as usize).collect();
        let n = shape.iter().product::<usize>();
        let mut data = match elem {
            Elem::F32 => TensorData::F32(vec![0.0; n]),
            Elem::I64 => TensorData::I64(vec![0; n]),
            Elem::U8 => TensorData::Bool(vec![false; n]),
        };
        let views: Vec<View> =
            args.iter().map(|&a| self.const_view(a)).collect::<Option<_>>().ok_or_else(|| {
                unsupported(node, "a constant operand has no memory yet (a bug in the program builder)")
            })?;
        let out = view(data_ptr_mut(&mut data), elem, &shape);
        let mut env = Env { symbols: &[], rows: &cache.rows, scratch: &mut self.scratch };
        exec(kernel, &views, &out, &mut env)
            .map_err(|msg| CodegenError::Run { node: node.name.clone(), msg })?;
        let data = match (self.strips.get(&id), data) {
            (Some(source), TensorData::F32(values)) => {
                self.packed_values.insert(self.values.len());
                Const::Packed(Arc::new(source.pack(&values, &shape, &cache.weights)))
            }
            (_, data) => Const::Tensor(Arc::new(data)),
        };
        Ok(self.push_const(data))
    }

    /// The view of a constant (or an alias of one), with its concrete shape.
    fn const_view(&self, v: usize) -> Option<View> {
        let value = &self.values[v];
        let shape: Vec<usize> = value.shape.iter().map(|d| d.eval(&[])).collect::<Option<_>>()?;
        let ptr = match &value.storage {
            Storage::Const(c) => self.consts[*c].ptr(),
            Storage::Alias { of, offset } => match &self.values[*of].storage {
                // SAFETY: the offset is inside the constant (a slice of it, checked by the graph).
                Storage::Const(c) => unsafe {
                    self.consts[*c].ptr().add(offset.eval(&[])? * value.elem.size())
                },
                _ => return None,
            },
            _ => return None,
        };
        Some(view(ptr, value.elem, &shape))
    }
}

/// A view of `shape` at `ptr`.
pub(super) fn view(ptr: *mut u8, elem: Elem, shape: &[usize]) -> View {
    let mut s = [0; MAX_RANK];
    s[..shape.len()].copy_from_slice(shape);
    View { ptr, elem, shape: s, rank: shape.len() }
}

fn data_ptr_mut(d: &mut TensorData) -> *mut u8 {
    match d {
        TensorData::F32(v) => v.as_mut_ptr() as *mut u8,
        TensorData::I64(v) => v.as_mut_ptr() as *mut u8,
        TensorData::Bool(v) => v.as_mut_ptr() as *mut u8,
    }
}
