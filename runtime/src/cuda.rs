//! The forward, prefill and decode graphs as CUDA programs on one device ([`CudaPrograms`]):
//! a GPU through `cudarc` ([`GpuDevice`]), or the CPU emulator
//! ([`saturn_codegen::cuda::emulate::HostDevice`]), which runs the same plan and kernels
//! without a GPU.

use std::cell::RefCell;
use std::collections::HashMap;

use saturn_codegen::cuda::exec::{Device, ProgramSet};
use saturn_codegen::cuda::{CudaOptions, CudaProgram};
use saturn_ir::{Graph, ParamSource, Tensor};

use crate::session::{PhaseGraphs, check_contract};
use crate::{CACHE_PREFIX, RuntimeError};

pub use crate::gpu::GpuDevice;

/// What a session needs of a [`ProgramSet`], whatever its device.
trait Runner {
    fn run(
        &mut self,
        index: usize,
        symbols: &[(&str, u64)],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<(), RuntimeError>;
    fn output(&mut self, index: usize, name: &str) -> Result<Tensor, RuntimeError>;
    fn clear_carried(&mut self);
    fn reserve_carried(&mut self, rows: usize) -> Result<(), RuntimeError>;
}

impl<D: Device> Runner for ProgramSet<D> {
    fn run(
        &mut self,
        index: usize,
        symbols: &[(&str, u64)],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<(), RuntimeError> {
        Ok(ProgramSet::run(self, index, symbols, inputs)?)
    }

    fn output(&mut self, index: usize, name: &str) -> Result<Tensor, RuntimeError> {
        Ok(ProgramSet::output(self, index, name)?)
    }

    fn clear_carried(&mut self) {
        ProgramSet::clear_carried(self);
    }

    fn reserve_carried(&mut self, rows: usize) -> Result<(), RuntimeError> {
        Ok(ProgramSet::reserve_carried(self, rows)?)
    }
}

/// An executor's graphs as CUDA programs on one device: params uploaded once for all three,
/// one KV cache on the device. One sequence at a time owns the cache: a prefill takes it, and a
/// session whose cache another prefill has since replaced gets an error, not wrong tokens.
pub struct CudaPrograms {
    set: RefCell<Box<dyn Runner>>,
    forward: usize,
    prefill: Option<usize>,
    decode: Option<usize>,
    /// Counts prefills: the session that ran the last one owns the device cache.
    owner: std::cell::Cell<u64>,
}

impl CudaPrograms {
    /// Generates the graphs' CUDA programs (weights stored as `options` says) and loads them on
    /// `device` with the weights from `params`.
    pub fn compile<D: Device + 'static>(
        device: D,
        graph: &Graph,
        phases: PhaseGraphs,
        params: &dyn ParamSource,
        options: CudaOptions,
    ) -> Result<CudaPrograms, RuntimeError> {
        let mut set = ProgramSet::new(device);
        let mut add = |g: &Graph| -> Result<usize, RuntimeError> {
            check_contract(g)?;
            Ok(set.add(CudaProgram::generate_with(g, CACHE_PREFIX, options)?, params)?)
        };
        let forward = add(graph)?;
        let prefill = phases.prefill.map(&mut add).transpose()?;
        let decode = phases.decode.map(&mut add).transpose()?;
        // A decode step is many small launches: replaying them as one graph saves their
        // launch overhead, and its grids and addresses change only when a buffer grows.
        if let Some(d) = decode {
            set.use_graphs(d, true);
        }
        Ok(CudaPrograms {
            set: RefCell::new(Box::new(set)),
            forward,
            prefill,
            decode,
            owner: std::cell::Cell::new(0),
        })
    }

    /// The program a run of `tokens` new tokens after `position` cached ones uses.
    fn pick(&self, position: u64, tokens: usize) -> usize {
        let special = match (position, tokens) {
            (0, _) => self.prefill,
            (_, 1) => self.decode,
            _ => None,
        };
        special.unwrap_or(self.forward)
    }

    /// Runs `ids` (as the graph's i64 input) after `position` cached positions; a fresh run
    /// (a prefill) takes the cache and returns the owner token the session keeps; a later run
    /// must present it. Returns the logits `[S, vocab]`.
    pub(crate) fn run(
        &self,
        ids: &[i64],
        position: u64,
        fresh: bool,
        owner: u64,
    ) -> Result<(u64, Tensor), RuntimeError> {
        let mut set = self.set.borrow_mut();
        let owner = if fresh {
            set.clear_carried();
            self.owner.set(self.owner.get() + 1);
            self.owner.get()
        } else if owner != self.owner.get() {
            return Err(RuntimeError::Device(
                "another sequence has run a prefill on this device since: its KV cache is gone".into(),
            ));
        } else {
            owner
        };
        let index = self.pick(position, ids.len());
        let symbols = [(crate::TOKENS, ids.len() as u64), (crate::CACHED, position)];
        let inputs =
            HashMap::from([(crate::INPUT_IDS.to_string(), Tensor::i64(vec![ids.len()], ids.to_vec()))]);
        set.run(index, &symbols, &inputs)?;
        Ok((owner, set.output(index, crate::LOGITS)?))
    }

    /// Makes room for `positions` cached positions up front.
    pub(crate) fn reserve(&self, positions: usize) -> Result<(), RuntimeError> {
        self.set.borrow_mut().reserve_carried(positions)
    }
}
