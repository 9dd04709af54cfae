//! One sequence and its KV cache.

use std::collections::{BTreeMap, HashMap};

use saturn_ir::{
    Bindings, DType, Graph, Kernels, ParamSource, SymBindings, Tensor, eval_shape, evaluate_with,
};

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

/// What runs a sequence: the forward graph, graphs for the phases, and compiled kernels.
#[derive(Clone, Copy)]
pub struct Executor<'a> {
    pub graph: &'a Graph,
    pub phases: PhaseGraphs<'a>,
    pub kernels: Option<&'a dyn Kernels>,
}

impl<'a> Executor<'a> {
    /// A new session (an empty cache).
    pub fn session(&self, params: &'a dyn ParamSource, limits: Limits) -> Result<Session<'a>, RuntimeError> {
        let session = Session::new(self.graph, params, limits)?.with_phase_graphs(self.phases)?;
        Ok(match self.kernels {
            Some(k) => session.with_kernels(k),
            None => session,
        })
    }
}

/// A cache input: its name, dtype and shape.
type CacheInput = (String, DType, Vec<saturn_ir::Dim>);

/// Checks `graph` against the contract in the crate docs; returns its cache inputs.
fn cache_inputs(graph: &Graph) -> Result<Vec<CacheInput>, RuntimeError> {
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

/// A sequence being run through a forward graph, with its cache.
pub struct Session<'a> {
    graph: &'a Graph,
    phases: PhaseGraphs<'a>,
    /// Compiled kernels that take the nodes they can; the interpreter runs the rest.
    kernels: Option<&'a dyn Kernels>,
    params: &'a dyn ParamSource,
    limits: Limits,
    /// The cache inputs' names and types, in graph order.
    cache_inputs: Vec<CacheInput>,
    /// The cache after the last run; `None` before the first prefill.
    cache: Option<BTreeMap<String, Tensor>>,
    position: u64,
}

impl<'a> Session<'a> {
    /// Checks the graph against the contract in the crate docs.
    pub fn new(
        graph: &'a Graph,
        params: &'a dyn ParamSource,
        limits: Limits,
    ) -> Result<Session<'a>, RuntimeError> {
        let cache_inputs = cache_inputs(graph)?;
        Ok(Session {
            graph,
            phases: PhaseGraphs::default(),
            kernels: None,
            params,
            limits,
            cache_inputs,
            cache: None,
            position: 0,
        })
    }

    /// Runs the nodes `kernels` takes with them (a compiled backend), the rest in the interpreter.
    pub fn with_kernels(mut self, kernels: &'a dyn Kernels) -> Session<'a> {
        self.kernels = Some(kernels);
        self
    }

    /// Runs prefills and decode steps on graphs specialised to them (checked like the forward
    /// graph); chunks of several tokens after a cache still run the forward graph.
    pub fn with_phase_graphs(mut self, phases: PhaseGraphs<'a>) -> Result<Session<'a>, RuntimeError> {
        for g in [phases.prefill, phases.decode].into_iter().flatten() {
            let names = |c: &[CacheInput]| c.iter().map(|(n, ..)| n.clone()).collect::<Vec<_>>();
            if names(&cache_inputs(g)?) != names(&self.cache_inputs) {
                return Err(RuntimeError::BadGraph {
                    graph: g.name.clone(),
                    msg: format!("its cache inputs differ from those of `{}`", self.graph.name),
                });
            }
        }
        self.phases = phases;
        Ok(self)
    }

    /// Positions held in the cache.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Runs a prompt from an empty cache; returns its logits `[S, vocab]`.
    pub fn prefill(&mut self, ids: &[u64]) -> Result<Tensor, RuntimeError> {
        self.check(ids, 0)?;
        let mut cache = BTreeMap::new();
        for (name, dtype, shape) in &self.cache_inputs {
            cache.insert(name.clone(), empty(*dtype, shape, ids.len() as u64)?);
        }
        self.run(ids, cache, 0)
    }

    /// Runs more tokens after the cache (one token: a decode step); returns their logits.
    pub fn extend(&mut self, ids: &[u64]) -> Result<Tensor, RuntimeError> {
        let cache = self.cache.take().ok_or(RuntimeError::DecodeWithoutPrefill)?;
        if let Err(e) = self.check(ids, self.position) {
            self.cache = Some(cache);
            return Err(e);
        }
        self.run(ids, cache, self.position)
    }

    fn check(&self, ids: &[u64], position: u64) -> Result<(), RuntimeError> {
        check_ids_at(ids, position, self.limits)
    }

    fn run(
        &mut self,
        ids: &[u64],
        cache: BTreeMap<String, Tensor>,
        position: u64,
    ) -> Result<Tensor, RuntimeError> {
        let mut inputs: HashMap<String, Tensor> = cache.into_iter().collect();
        inputs
            .insert(INPUT_IDS.into(), Tensor::i64(vec![ids.len()], ids.iter().map(|&i| i as i64).collect()));
        let bindings = Bindings {
            symbols: SymBindings::from([(TOKENS.into(), ids.len() as u64), (CACHED.into(), position)]),
            inputs,
            params: self.params,
        };
        let graph = match (position, ids.len()) {
            (0, _) => self.phases.prefill.unwrap_or(self.graph),
            (_, 1) => self.phases.decode.unwrap_or(self.graph),
            _ => self.graph,
        };
        let mut outputs = evaluate_with(graph, &bindings, self.kernels)?;
        let mut take = |name: &str| {
            outputs.remove(name).ok_or_else(|| RuntimeError::BadGraph {
                graph: graph.name.clone(),
                msg: format!("evaluation produced no output `{name}`"),
            })
        };
        let logits = take(LOGITS)?;
        let cache = self
            .cache_inputs
            .iter()
            .map(|(n, ..)| Ok((n.clone(), take(n)?)))
            .collect::<Result<_, RuntimeError>>()?;
        self.cache = Some(cache);
        self.position = position + ids.len() as u64;
        Ok(logits)
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
