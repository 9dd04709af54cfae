//! One sequence and its KV cache, on the interpreter or on compiled CPU programs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use saturn_codegen::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_ir::{Bindings, DType, Graph, ParamSource, SymBindings, Tensor, eval_shape, evaluate};

use crate::{CACHE_PREFIX, CACHED, INPUT_IDS, LOGITS, RuntimeError, TOKENS};

/// What the model accepts: ids below `vocab_size`, at most `max_positions` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub vocab_size: u64,
    pub max_positions: u64,
}

/// Graphs specialised to a phase, used instead of the forward graph where they apply: `prefill`
/// (`P = 0` bound) for a prompt, `decode` (`S = 1` bound) for one token after the cache. Each
/// has the forward graph's inputs and outputs.
#[derive(Clone, Copy, Default)]
pub struct PhaseGraphs<'a> {
    pub prefill: Option<&'a Graph>,
    pub decode: Option<&'a Graph>,
}

/// The forward, prefill and decode graphs compiled for the CPU (see `saturn_codegen`).
pub struct CpuPrograms {
    forward: CpuProgram,
    prefill: Option<CpuProgram>,
    decode: Option<CpuProgram>,
    cache: ProgramCache,
    /// Workspaces of finished sessions, for the next ones: a prompt's prefill then reuses
    /// memory already faulted in (at 512 tokens of the mid-size model, fresh scratch and
    /// arena pages cost a sixth of the prefill).
    spare: Mutex<Vec<Workspace>>,
}

impl CpuPrograms {
    /// Compiles an executor's graphs; weights are loaded from `params` once for all of them.
    pub fn compile(
        graph: &Graph,
        phases: PhaseGraphs,
        params: &dyn ParamSource,
    ) -> Result<CpuPrograms, RuntimeError> {
        let mut cache = ProgramCache::new()?;
        let mut compile = |g: &Graph| -> Result<CpuProgram, RuntimeError> {
            check_contract(g)?;
            Ok(CpuProgram::compile(g, params, &mut cache, CACHE_PREFIX)?)
        };
        let forward = compile(graph)?;
        let prefill = phases.prefill.map(&mut compile).transpose()?;
        let decode = phases.decode.map(&mut compile).transpose()?;
        for p in [&prefill, &decode].into_iter().flatten() {
            if !p.carried_names().eq(forward.carried_names()) {
                return Err(RuntimeError::BadGraph {
                    graph: p.name().into(),
                    msg: format!("its cache inputs differ from those of `{}`", forward.name()),
                });
            }
        }
        Ok(CpuPrograms { forward, prefill, decode, cache, spare: Mutex::default() })
    }

    /// A workspace for a new session: a finished session's, or a fresh one.
    fn workspace(&self) -> Box<Workspace> {
        let spare = self.spare.lock().map(|mut s| s.pop()).unwrap_or_default();
        Box::new(spare.unwrap_or_default())
    }

    /// Keeps a finished session's workspace for the next session.
    fn recycle(&self, mut ws: Box<Workspace>) {
        ws.recycle();
        if let Ok(mut spare) = self.spare.lock() {
            spare.push(*ws);
        }
    }

    /// Bytes of weights held (each loaded once for all programs).
    pub fn weight_bytes(&self) -> usize {
        self.cache.weight_bytes()
    }

    /// Bytes of weights and KV cache a run of `tokens` new tokens after `position` cached ones
    /// reads (see `CpuProgram::bytes_read`).
    pub fn bytes_read(&self, position: u64, tokens: usize) -> Result<u64, RuntimeError> {
        let symbols = [(TOKENS, tokens as u64), (CACHED, position)];
        Ok(self.pick(position, tokens).bytes_read(&symbols)?)
    }

    /// The program a run of `tokens` new tokens after `position` cached ones uses.
    fn pick(&self, position: u64, tokens: usize) -> &CpuProgram {
        let special = match (position, tokens) {
            (0, _) => self.prefill.as_ref(),
            (_, 1) => self.decode.as_ref(),
            _ => None,
        };
        special.unwrap_or(&self.forward)
    }
}

/// What runs a sequence's steps.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// The reference interpreter on the graphs.
    Interp,
    /// Compiled CPU programs of the same graphs.
    Cpu(&'a CpuPrograms),
    /// CUDA programs of the same graphs on a device (a GPU, or the CPU emulator).
    Cuda(&'a crate::CudaPrograms),
}

/// What runs a sequence: the forward graph, graphs for the phases, and the backend.
#[derive(Clone, Copy)]
pub struct Executor<'a> {
    pub graph: &'a Graph,
    pub phases: PhaseGraphs<'a>,
    pub backend: Backend<'a>,
}

impl<'a> Executor<'a> {
    /// A new session (an empty cache).
    pub fn session(&self, params: &'a dyn ParamSource, limits: Limits) -> Result<Session<'a>, RuntimeError> {
        let engine = match self.backend {
            Backend::Interp => {
                let cache_inputs = check_contract(self.graph)?;
                for g in [self.phases.prefill, self.phases.decode].into_iter().flatten() {
                    let names = |c: &[CacheInput]| c.iter().map(|(n, ..)| n.clone()).collect::<Vec<_>>();
                    if names(&check_contract(g)?) != names(&cache_inputs) {
                        return Err(RuntimeError::BadGraph {
                            graph: g.name.clone(),
                            msg: format!("its cache inputs differ from those of `{}`", self.graph.name),
                        });
                    }
                }
                Engine::Interp { graph: self.graph, phases: self.phases, params, cache_inputs, cache: None }
            }
            Backend::Cpu(programs) => Engine::Cpu {
                programs,
                ws: programs.workspace(),
                carried: Carried::new(&programs.forward),
                started: false,
            },
            Backend::Cuda(programs) => Engine::Cuda { programs, owner: None },
        };
        Ok(Session { engine, limits, position: 0, ids: Vec::new(), logits: Vec::new(), vocab: 0 })
    }
}

/// A cache input: its name, dtype and shape.
type CacheInput = (String, DType, Vec<saturn_ir::Dim>);

/// Checks `graph` against the contract in the crate docs; returns its cache inputs.
pub(crate) fn check_contract(graph: &Graph) -> Result<Vec<CacheInput>, RuntimeError> {
    let bad = |msg: String| RuntimeError::BadGraph { graph: graph.name.clone(), msg };
    if graph.find(INPUT_IDS).is_none() {
        return Err(bad(format!("no input `{INPUT_IDS}`")));
    }
    let outputs: Vec<&str> = graph.outputs().iter().map(|(n, _)| n.as_str()).collect();
    if !outputs.contains(&LOGITS) {
        return Err(bad(format!("no output `{LOGITS}`")));
    }
    let mut cache_inputs = Vec::new();
    for (_, node) in graph.graph_inputs() {
        if node.name.starts_with(CACHE_PREFIX) {
            if !outputs.contains(&node.name.as_str()) {
                return Err(bad(format!("cache input `{}` has no matching output", node.name)));
            }
            cache_inputs.push((node.name.clone(), node.ty.dtype, node.ty.shape.clone()));
        }
    }
    Ok(cache_inputs)
}

enum Engine<'a> {
    Interp {
        graph: &'a Graph,
        phases: PhaseGraphs<'a>,
        params: &'a dyn ParamSource,
        /// The cache inputs' names and types, in graph order.
        cache_inputs: Vec<CacheInput>,
        /// The cache after the last run; `None` before the first prefill.
        cache: Option<BTreeMap<String, Tensor>>,
    },
    Cpu {
        programs: &'a CpuPrograms,
        ws: Box<Workspace>,
        carried: Carried,
        /// Whether a prefill ran (the cache is valid).
        started: bool,
    },
    Cuda {
        programs: &'a crate::CudaPrograms,
        /// The token of this sequence's prefill (see `CudaPrograms::run`); `None` before one.
        owner: Option<u64>,
    },
}

/// A sequence being run, with its cache.
pub struct Session<'a> {
    engine: Engine<'a>,
    limits: Limits,
    position: u64,
    /// Reused buffers: the ids as the graph's i64, and (interpreter) the last logits.
    ids: Vec<i64>,
    logits: Vec<f32>,
    vocab: usize,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Engine::Cpu { programs, ws, .. } = &mut self.engine {
            programs.recycle(std::mem::take(ws));
        }
    }
}

impl Session<'_> {
    /// Positions held in the cache.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Makes room for `positions` cached positions up front, so later steps do not grow the
    /// cache (compiled backend; the interpreter builds a new cache every step).
    pub fn reserve(&mut self, positions: usize) {
        match &mut self.engine {
            Engine::Cpu { carried, ws, .. } => {
                carried.reserve(positions);
                ws.reserve_symbol(CACHED, positions as u64);
            }
            // Best effort: a device that cannot make room now fails the run that needs it,
            // with the device's error.
            Engine::Cuda { programs, .. } => drop(programs.reserve(positions)),
            Engine::Interp { .. } => {}
        }
    }

    /// Times the compiled backend's steps by kernel kind from now on (see [`Session::profile`]).
    pub fn enable_profile(&mut self) {
        if let Engine::Cpu { ws, .. } = &mut self.engine {
            ws.enable_profile();
        }
    }

    /// Seconds and calls per kernel kind since [`Session::enable_profile`] (compiled backend).
    pub fn profile(&self) -> Vec<(&'static str, f64, usize)> {
        match &self.engine {
            Engine::Cpu { ws, .. } => ws.profile(),
            Engine::Interp { .. } | Engine::Cuda { .. } => Vec::new(),
        }
    }

    /// Runs a prompt from an empty cache; returns its logits: `[S, vocab]`, or `[1, vocab]`
    /// for graphs that compute the last position's only.
    pub fn prefill(&mut self, ids: &[u64]) -> Result<Tensor, RuntimeError> {
        self.check(ids, 0)?;
        self.run(ids, true)?;
        Ok(self.logits_tensor())
    }

    /// Runs more tokens after the cache (one token: a decode step); returns their logits (as
    /// [`Session::prefill`]).
    pub fn extend(&mut self, ids: &[u64]) -> Result<Tensor, RuntimeError> {
        self.extend_in_place(ids)?;
        Ok(self.logits_tensor())
    }

    /// The last position's logits after the last run (empty before any).
    pub fn last_row(&self) -> &[f32] {
        let logits = self.last_logits();
        &logits[logits.len().saturating_sub(self.vocab)..]
    }

    /// [`Session::extend`], the logits borrowed from the session (no copy).
    pub fn extend_in_place(&mut self, ids: &[u64]) -> Result<&[f32], RuntimeError> {
        let started = match &self.engine {
            Engine::Interp { cache, .. } => cache.is_some(),
            Engine::Cpu { started, .. } => *started,
            Engine::Cuda { owner, .. } => owner.is_some(),
        };
        if !started {
            return Err(RuntimeError::DecodeWithoutPrefill);
        }
        self.check(ids, self.position)?;
        self.run(ids, false)?;
        Ok(self.last_logits())
    }

    /// [`Session::prefill`], the logits borrowed from the session.
    pub fn prefill_in_place(&mut self, ids: &[u64]) -> Result<&[f32], RuntimeError> {
        self.check(ids, 0)?;
        self.run(ids, true)?;
        Ok(self.last_logits())
    }

    fn check(&self, ids: &[u64], position: u64) -> Result<(), RuntimeError> {
        check_ids_at(ids, position, self.limits)
    }

    fn logits_tensor(&self) -> Tensor {
        let logits = self.last_logits();
        Tensor::f32(vec![logits.len().checked_div(self.vocab).unwrap_or(0), self.vocab], logits.to_vec())
    }

    /// The logits of the last run.
    fn last_logits(&self) -> &[f32] {
        match &self.engine {
            Engine::Interp { .. } | Engine::Cuda { .. } => &self.logits,
            Engine::Cpu { programs, ws, .. } => {
                let program = programs.pick(self.position - self.ids.len() as u64, self.ids.len());
                program.output(ws, LOGITS).map(|(d, _)| d).unwrap_or(&[])
            }
        }
    }

    /// Runs `ids` after the cache (an empty one when `fresh`).
    fn run(&mut self, ids: &[u64], fresh: bool) -> Result<(), RuntimeError> {
        let position = if fresh { 0 } else { self.position };
        self.ids.clear();
        self.ids.extend(ids.iter().map(|&i| i as i64));
        let symbols = [(TOKENS, ids.len() as u64), (CACHED, position)];
        match &mut self.engine {
            Engine::Interp { graph, phases, params, cache_inputs, cache } => {
                let mut inputs: HashMap<String, Tensor> = HashMap::new();
                let previous = if fresh { None } else { cache.take() };
                match previous {
                    Some(previous) => inputs.extend(previous),
                    None => {
                        for (name, dtype, shape) in cache_inputs.iter() {
                            inputs.insert(name.clone(), empty(*dtype, shape, ids.len() as u64)?);
                        }
                    }
                }
                inputs.insert(INPUT_IDS.into(), Tensor::i64(vec![ids.len()], self.ids.clone()));
                let bindings = Bindings {
                    symbols: symbols.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
                    inputs,
                    params: *params,
                };
                let graph = match (position, ids.len()) {
                    (0, _) => phases.prefill.unwrap_or(graph),
                    (_, 1) => phases.decode.unwrap_or(graph),
                    _ => graph,
                };
                let mut outputs = evaluate(graph, &bindings)?;
                let mut take = |name: &str| {
                    outputs.remove(name).ok_or_else(|| RuntimeError::BadGraph {
                        graph: graph.name.clone(),
                        msg: format!("evaluation produced no output `{name}`"),
                    })
                };
                let logits = take(LOGITS)?;
                let next = cache_inputs.iter().map(|(n, ..)| Ok((n.clone(), take(n)?))).collect::<Result<
                    _,
                    RuntimeError,
                >>(
                )?;
                *cache = Some(next);
                self.vocab = logits.shape.last().copied().unwrap_or(0);
                self.logits = logits.as_f32().map(<[f32]>::to_vec).unwrap_or_default();
            }
            Engine::Cpu { programs, ws, carried, started } => {
                if fresh {
                    carried.clear();
                    *started = false;
                }
                let program = programs.pick(position, ids.len());
                program.run(ws, carried, &symbols, &[(INPUT_IDS, InputData::I64(&self.ids))])?;
                *started = true;
                let (_, shape) = program.output(ws, LOGITS).ok_or_else(|| RuntimeError::BadGraph {
                    graph: program.name().into(),
                    msg: format!("no f32 output `{LOGITS}`"),
                })?;
                self.vocab = shape.last().copied().unwrap_or(0);
            }
            Engine::Cuda { programs, owner } => {
                let (token, logits) = programs.run(&self.ids, position, fresh, owner.unwrap_or(0))?;
                *owner = Some(token);
                self.vocab = logits.shape.last().copied().unwrap_or(0);
                self.logits.clear();
                self.logits.extend_from_slice(logits.as_f32().unwrap_or_default());
            }
        }
        self.position = position + ids.len() as u64;
        Ok(())
    }
}

/// Checks a whole sequence against `limits` before anything runs: not empty, every id in the
/// vocabulary, no more positions than the model has.
pub fn check_ids(ids: &[u64], limits: Limits) -> Result<(), RuntimeError> {
    check_ids_at(ids, 0, limits)
}

/// [`check_ids`] for ids that start at `position`.
fn check_ids_at(ids: &[u64], position: u64, limits: Limits) -> Result<(), RuntimeError> {
    if ids.is_empty() {
        return Err(RuntimeError::EmptyPrompt);
    }
    if let Some(i) = ids.iter().position(|&id| id >= limits.vocab_size) {
        return Err(RuntimeError::TokenOutOfRange {
            id: ids[i],
            position: position as usize + i,
            vocab_size: limits.vocab_size,
        });
    }
    let needed = position + ids.len() as u64;
    if needed > limits.max_positions {
        return Err(RuntimeError::ContextTooLong { needed, max: limits.max_positions });
    }
    Ok(())
}

/// A cache input with no rows (`P = 0`).
fn empty(dtype: DType, shape: &[saturn_ir::Dim], tokens: u64) -> Result<Tensor, RuntimeError> {
    let syms = SymBindings::from([(TOKENS.into(), tokens), (CACHED.into(), 0)]);
    let shape =
        eval_shape(shape, &syms).map_err(|msg| RuntimeError::BadGraph { graph: "cache".into(), msg })?;
    let n = shape.iter().product();
    Ok(match dtype {
        DType::I64 => Tensor::i64(shape, vec![0; n]),
        DType::Bool => Tensor::bool(shape, vec![false; n]),
        _ => Tensor::f32(shape, vec![0.0; n]),
    })
}
