//! Timing one graph on a backend ([`time_interp`], [`time_cpu`], [`time_device`]): typically a
//! single op at a production model's shapes, for `saturn bench-op`. The graph is compiled and
//! its inputs bound once; one untimed run warms up (uploads, JIT, caches), then every timed
//! run executes the whole graph. On a CUDA device a timed run replays the kernels on what the
//! first run left there (nothing uploaded) and waits for them to finish, so it times the
//! kernels and their launches alone. [`device_copy_bandwidth`] measures the device memory
//! bandwidth a kernel's traffic is compared with.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use saturn_codegen::cpu::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_codegen::cuda::exec::{Device, ProgramSet};
use saturn_codegen::cuda::{CudaOptions, CudaProgram};
use saturn_ir::{Bindings, Graph, ParamSource, SymBindings, Tensor, TensorData, evaluate};

use crate::{CACHE_PREFIX, RuntimeError};

/// A graph with everything one run needs.
pub struct OpCase<'a> {
    pub graph: &'a Graph,
    pub params: &'a dyn ParamSource,
    /// Every input by name.
    pub inputs: &'a HashMap<String, Tensor>,
    /// Values of the graph's symbols, by name.
    pub symbols: &'a [(&'a str, u64)],
}

/// The seconds of each timed run and the outputs of the last one.
pub struct Timing {
    pub seconds: Vec<f64>,
    pub outputs: BTreeMap<String, Tensor>,
}

impl Timing {
    /// The median run time in seconds.
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }
}

/// The middle of `v` once sorted (the upper one of an even count; NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `run` once untimed, then `repeat` times timed.
fn timed(repeat: usize, mut run: impl FnMut() -> Result<(), RuntimeError>) -> Result<Vec<f64>, RuntimeError> {
    run()?;
    (0..repeat)
        .map(|_| {
            let start = Instant::now();
            run()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

/// The graph through the reference interpreter.
pub fn time_interp(case: &OpCase, repeat: usize) -> Result<Timing, RuntimeError> {
    let symbols: SymBindings = case.symbols.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let bindings = Bindings { symbols, inputs: case.inputs.clone(), params: case.params };
    let mut outputs = BTreeMap::new();
    let seconds = timed(repeat, || {
        outputs = evaluate(case.graph, &bindings)?.into_iter().collect();
        Ok(())
    })?;
    Ok(Timing { seconds, outputs })
}

/// The graph compiled for the CPU backend.
pub fn time_cpu(case: &OpCase, repeat: usize) -> Result<Timing, RuntimeError> {
    let program = CpuProgram::compile(case.graph, case.params, &mut ProgramCache::new()?, CACHE_PREFIX)?;
    let mut ws = Workspace::new();
    let mut carried = Carried::new(&program);
    let inputs: Vec<(&str, InputData)> = case
        .inputs
        .iter()
        .map(|(name, t)| {
            let data = match &t.data {
                TensorData::F32(v) => InputData::F32(v),
                TensorData::I64(v) => InputData::I64(v),
                TensorData::Bool(_) => {
                    return Err(RuntimeError::BadGraph {
                        graph: case.graph.name.clone(),
                        msg: format!("input `{name}` is bool: the cpu backend takes f32 and i64 inputs"),
                    });
                }
            };
            Ok((name.as_str(), data))
        })
        .collect::<Result<_, _>>()?;
    let seconds = timed(repeat, || {
        carried.clear();
        Ok(program.run(&mut ws, &mut carried, case.symbols, &inputs)?)
    })?;
    let outputs = case
        .graph
        .outputs()
        .iter()
        .filter_map(|(name, _)| {
            let (data, shape) = program.output(&ws, name)?;
            Some((name.clone(), Tensor::f32(shape.to_vec(), data.to_vec())))
        })
        .collect();
    Ok(Timing { seconds, outputs })
}

/// The graph's CUDA program (generated with `options`) on `device`: the first run uploads the
/// inputs, the timed runs replay its launches (as one recorded graph when `graphs`) and wait
/// for them.
pub fn time_device<D: Device>(
    device: D,
    case: &OpCase,
    repeat: usize,
    (options, graphs): (CudaOptions, bool),
) -> Result<Timing, RuntimeError> {
    let mut set = ProgramSet::new(device);
    let index = set.add(CudaProgram::generate_with(case.graph, CACHE_PREFIX, options)?, case.params)?;
    set.use_graphs(index, graphs);
    set.run(index, case.symbols, case.inputs)?;
    let seconds = timed(repeat, || {
        set.rerun(index)?;
        Ok(set.device_mut().synchronize()?)
    })?;
    let outputs = case
        .graph
        .outputs()
        .iter()
        .map(|(name, _)| Ok((name.clone(), set.output(index, name)?)))
        .collect::<Result<_, RuntimeError>>()?;
    Ok(Timing { seconds, outputs })
}

/// The device's copy bandwidth in bytes of memory traffic per second (each copied byte read
/// once and written once, as CUDA's bandwidth test counts it): the best of `repeat` copies of
/// `bytes` bytes between two device buffers.
pub fn device_copy_bandwidth<D: Device>(
    device: &mut D,
    bytes: usize,
    repeat: usize,
) -> Result<f64, RuntimeError> {
    let src = device.alloc(bytes)?;
    let mut dst = device.alloc(bytes)?;
    let mut best = f64::INFINITY;
    for _ in 0..=repeat {
        let start = Instant::now();
        device.copy(&mut dst, &src, 0, bytes)?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * bytes as f64 / best)
}
