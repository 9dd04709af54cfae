//! Running [`CudaProgram`]s on a [`Device`]: the part of the runtime that does not depend on
//! what the device is, so the CPU emulator (CI) and a GPU run the same plan.
//!
//! A [`ProgramSet`] holds the programs of one model (forward, prefill, decode) on one device.
//! They share the params (uploaded once per checkpoint key) and the carried buffers (the KV
//! cache, by name). Per program it keeps the scalars and the `init` results, an input buffer per
//! graph input, the `sym` array, and the arena. The arena is planned for symbol capacities that
//! at least double when they grow (as the CPU program does), so a decode loop replans and
//! reallocates a logarithmic number of times; carried buffers grow the same way. A run
//! evaluates every buffer's address, checks it against its memory, and launches the kernels
//! with grids evaluated at the run's symbols.

mod values;

use std::collections::HashMap;

use saturn_ir::{DType, ParamSource, Tensor};

use super::{BlasGemm, CudaProgram, Extent, Gemm, Launch, Storage, Work};
use crate::CodegenError;
use crate::arena::grow_caps;
use values::{buffer_dtype, load_param, scalar_bytes};
pub use values::{bytes_of, tensor_of};

/// What runs kernels: device memory, copies, and launches. Addresses are device addresses as
/// kernels see them; `args` of a launch are the `sym` array's address and then one address per
/// kernel parameter.
pub trait Device {
    /// One allocation.
    type Mem;
    /// A program's kernels, loaded.
    type Module;
    /// Compiles or loads the kernels of `program`.
    fn load(&mut self, program: &CudaProgram) -> Result<Self::Module, CodegenError>;
    /// `bytes` bytes (at least one), 64-byte aligned; the contents are undefined.
    fn alloc(&mut self, bytes: usize) -> Result<Self::Mem, CodegenError>;
    fn address(&self, mem: &Self::Mem) -> u64;
    fn upload(&mut self, mem: &mut Self::Mem, offset: usize, data: &[u8]) -> Result<(), CodegenError>;
    fn download(&mut self, mem: &Self::Mem, offset: usize, out: &mut [u8]) -> Result<(), CodegenError>;
    /// Copies `bytes` bytes of `src` from `offset` to the start of `dst`.
    fn copy(
        &mut self,
        dst: &mut Self::Mem,
        src: &Self::Mem,
        offset: usize,
        bytes: usize,
    ) -> Result<(), CodegenError>;
    /// A recorded sequence of launches, replayed as one (a CUDA graph).
    type Graph;
    /// Records the launches that follow instead of running them.
    fn begin_capture(&mut self) -> Result<(), CodegenError>;
    /// Stops recording: the graph of the launches since [`Device::begin_capture`].
    fn end_capture(&mut self) -> Result<Self::Graph, CodegenError>;
    /// Runs a recorded graph (its kernels read the `sym` array as it is now).
    fn replay(&mut self, graph: &Self::Graph) -> Result<(), CodegenError>;
    /// Waits until everything queued so far has finished (for timing).
    fn synchronize(&mut self) -> Result<(), CodegenError>;
    /// Launches `kernel` of `module`: `args[0]` is the `sym` array, then the kernel's params.
    /// A failure is the device's message; the executor names the node and kernel.
    fn launch(
        &mut self,
        module: &Self::Module,
        kernel: &str,
        grid: [u32; 3],
        block: u32,
        shared_bytes: u32,
        args: &[u64],
    ) -> Result<(), String>;
    /// Runs `call` in the device's BLAS library (cuBLAS on a GPU) over the device addresses
    /// `a`, `b` and `c`. A failure is the device's message.
    fn gemm(&mut self, call: &BlasGemm, a: u64, b: u64, c: u64) -> Result<(), String>;
}

/// CUDA's limits on a launch: grid y and z, threads per block, and dynamic shared memory (an
/// H100's 227 KiB with the opt-in).
const GRID_YZ_MAX: u64 = 65535;
const MAX_BLOCK: u32 = 1024;
const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// An allocation and its size in bytes.
struct Sized<M> {
    mem: M,
    bytes: usize,
}

/// A carried buffer: its memory (with room to grow), the bytes of rows it holds, and the
/// bytes per row.
struct CarriedMem<M> {
    mem: Sized<M>,
    held: usize,
    row_bytes: usize,
    dtype: DType,
    row: Vec<usize>,
}

/// One program on the device.
struct Loaded<D: Device> {
    program: CudaProgram,
    module: D::Module,
    /// Scalars and persistent (`init`) buffers, by buffer index.
    fixed: Vec<Option<Sized<D::Mem>>>,
    /// Input buffers by buffer index, reused (grown) from run to run.
    inputs: Vec<Option<Sized<D::Mem>>>,
    sym: D::Mem,
    arena: Option<Sized<D::Mem>>,
    /// The capacities and offsets of the current arena plan.
    plan: Option<(Vec<u64>, Vec<Option<usize>>)>,
    /// The symbol values of the last run (for reading its outputs).
    last: Option<Vec<u64>>,
    /// Whether runs go through a recorded graph (see [`ProgramSet::use_graphs`]).
    graphs: bool,
    /// The recorded graph and what it was recorded for: every argument address and grid.
    graph: Option<(Vec<u64>, D::Graph)>,
    /// How many runs replayed a recorded graph.
    replays: usize,
}

/// The programs of one model on one device. See the module docs.
pub struct ProgramSet<D: Device> {
    device: D,
    /// Params by checkpoint key.
    params: HashMap<String, Sized<D::Mem>>,
    /// Carried buffers by name.
    carried: HashMap<String, CarriedMem<D::Mem>>,
    programs: Vec<Loaded<D>>,
}

fn run_error(node: &str, msg: impl Into<String>) -> CodegenError {
    CodegenError::Run { node: node.into(), msg: msg.into() }
}

impl<D: Device> ProgramSet<D> {
    pub fn new(device: D) -> ProgramSet<D> {
        ProgramSet { device, params: HashMap::new(), carried: HashMap::new(), programs: Vec::new() }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Loads `program`: its kernels, its params (each key once for all programs), scalars and
    /// carried buffers; then runs its `init` launches. Returns its index.
    pub fn add(&mut self, program: CudaProgram, params: &dyn ParamSource) -> Result<usize, CodegenError> {
        let module = self.device.load(&program)?;
        let n = program.buffers.len();
        let mut fixed: Vec<Option<Sized<D::Mem>>> = (0..n).map(|_| None).collect();
        let zeros = vec![0u64; program.symbols.len()];
        for (i, b) in program.buffers.iter().enumerate() {
            match &b.storage {
                Storage::Param { key } if !self.params.contains_key(key) => {
                    let data = load_param(b, key, params)?;
                    let mem = self.upload_new(&data)?;
                    self.params.insert(key.clone(), mem);
                }
                Storage::Scalar { value } => fixed[i] = Some(self.upload_new(&scalar_bytes(b, *value)?)?),
                Storage::Persistent => {
                    let bytes = eval(&b.name, &b.bytes, &program, &zeros)?;
                    fixed[i] = Some(Sized { mem: self.device.alloc(bytes.max(1))?, bytes });
                }
                Storage::Carried => {
                    let dtype = buffer_dtype(b)?;
                    let row: Option<Vec<usize>> =
                        b.shape.iter().skip(1).map(|d| d.as_const().map(|v| v as usize)).collect();
                    let row = row.filter(|_| !b.shape.is_empty()).ok_or_else(|| {
                        run_error(&b.name, "a carried buffer's dims after the first must be constant")
                    })?;
                    let row_bytes = row.iter().product::<usize>() * dtype.size_bytes();
                    match self.carried.get(&b.name) {
                        Some(c) if c.dtype != dtype || c.row != row => {
                            return Err(run_error(&b.name, "carried with another type by another program"));
                        }
                        Some(_) => {}
                        None => {
                            let mem = Sized { mem: self.device.alloc(row_bytes.max(1))?, bytes: row_bytes };
                            let c = CarriedMem { mem, held: 0, row_bytes, dtype, row };
                            self.carried.insert(b.name.clone(), c);
                        }
                    }
                }
                _ => {}
            }
        }
        let sym = self.device.alloc(8 * program.symbols.len().max(1))?;
        let loaded = Loaded {
            program,
            module,
            fixed,
            inputs: (0..n).map(|_| None).collect(),
            sym,
            arena: None,
            plan: None,
            last: None,
            graphs: false,
            graph: None,
            replays: 0,
        };
        self.programs.push(loaded);
        let index = self.programs.len() - 1;
        let init = self.programs[index].program.init.clone();
        if !init.is_empty() {
            self.upload_symbols(index, &zeros)?;
            let addresses = self.addresses(index, &zeros, false)?;
            for launch in &init {
                self.launch(index, launch, &zeros, &zeros, &addresses)?;
            }
        }
        Ok(index)
    }

    fn upload_new(&mut self, data: &[u8]) -> Result<Sized<D::Mem>, CodegenError> {
        let mut mem = self.device.alloc(data.len().max(1))?;
        self.device.upload(&mut mem, 0, data)?;
        Ok(Sized { mem, bytes: data.len() })
    }

    /// The program at `index`.
    pub fn program(&self, index: usize) -> &CudaProgram {
        &self.programs[index].program
    }

    /// Runs program `index` with `symbols` (name, value) and `inputs` by input name (extra
    /// entries are ignored). Carried buffers must hold the rows their input's shape has at these
    /// symbols; outputs appended to them grow them. Read the results with [`ProgramSet::output`].
    pub fn run(
        &mut self,
        index: usize,
        symbols: &[(&str, u64)],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<(), CodegenError> {
        let name = self.programs[index].program.name.clone();
        let values: Vec<u64> = self.programs[index]
            .program
            .symbols
            .iter()
            .map(|s| {
                let v = symbols.iter().find(|(n, _)| n == s).map(|&(_, v)| v);
                v.ok_or_else(|| run_error(&name, format!("symbol `{s}` is not bound")))
            })
            .collect::<Result<_, _>>()?;
        self.upload_inputs(index, &values, inputs)?;
        self.prepare_carried(index, &values)?;
        self.prepare_arena(index, &values)?;
        self.upload_symbols(index, &values)?;
        self.launch_all(index, &values)?;
        self.finish_carried(index, &values)?;
        self.programs[index].last = Some(values);
        Ok(())
    }

    /// Runs program `index`'s launches again on what its last run left on the device (the same
    /// symbols and inputs; nothing is uploaded), for timing the kernels alone. A program with
    /// carried buffers would append to them again: it is refused.
    pub fn rerun(&mut self, index: usize) -> Result<(), CodegenError> {
        let p = &self.programs[index];
        let name = &p.program.name;
        if p.program.buffers.iter().any(|b| matches!(b.storage, Storage::Carried)) {
            return Err(run_error(name, "a program with carried buffers cannot be run again in place"));
        }
        let values = p.last.clone().ok_or_else(|| run_error(name, "rerun before any run"))?;
        self.launch_all(index, &values)
    }

    /// Every launch of program `index` at symbol `values` (through its recorded graph if it
    /// uses one).
    fn launch_all(&mut self, index: usize, values: &[u64]) -> Result<(), CodegenError> {
        let addresses = self.addresses(index, values, true)?;
        let launches = std::mem::take(&mut self.programs[index].program.launches);
        let result = match self.programs[index].graphs {
            true => self.run_graph(index, &launches, values, &addresses),
            false => launches.iter().try_for_each(|l| self.launch(index, l, values, values, &addresses)),
        };
        self.programs[index].program.launches = launches;
        result
    }

    /// Runs program `index` through a recorded graph (a CUDA graph on a GPU): its launches are
    /// recorded once, with grids for the symbol capacities the arena is planned for (every
    /// kernel guards against its runtime dims, which it reads from `sym`), and replayed while
    /// every address and grid stays the same; a replan or a grown buffer records anew. Library
    /// products have no such guard: they are recorded at the run's sizes, which then must stay
    /// the same too.
    pub fn use_graphs(&mut self, index: usize, on: bool) {
        let p = &mut self.programs[index];
        p.graphs = on;
        p.graph = None;
    }

    /// How many runs of program `index` replayed a recorded graph.
    pub fn replays(&self, index: usize) -> usize {
        self.programs[index].replays
    }

    fn run_graph(
        &mut self,
        index: usize,
        launches: &[Launch],
        values: &[u64],
        addresses: &[u64],
    ) -> Result<(), CodegenError> {
        let p = &self.programs[index];
        let caps = p.plan.as_ref().expect("planned before the run").0.clone();
        let mut signature = addresses.to_vec();
        let symbols = &p.program.symbols;
        for l in launches {
            let sizes: Vec<Option<u64>> = match &l.work {
                Work::Kernel(k) => k.grid.iter().map(|e| e.eval(symbols, &caps)).collect(),
                Work::Gemm(g) => g.extents().map(|e| e.eval(symbols, values)).collect(),
            };
            signature.extend(sizes.into_iter().map(|v| v.unwrap_or(u64::MAX)));
        }
        if let Some((recorded, graph)) = &p.graph
            && *recorded == signature
        {
            self.device.replay(graph)?;
            self.programs[index].replays += 1;
            return Ok(());
        }
        self.programs[index].graph = None;
        self.device.begin_capture()?;
        let recorded = launches.iter().try_for_each(|l| self.launch(index, l, &caps, values, addresses));
        let graph = self.device.end_capture()?;
        recorded?;
        self.device.replay(&graph)?;
        self.programs[index].graph = Some((signature, graph));
        Ok(())
    }

    /// Output `name` of program `index`'s last run, downloaded.
    pub fn output(&mut self, index: usize, name: &str) -> Result<Tensor, CodegenError> {
        let p = &self.programs[index];
        let values = p.last.clone().ok_or_else(|| run_error(&p.program.name, "has not run"))?;
        let &(_, i) = p
            .program
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| run_error(&p.program.name, format!("no output `{name}`")))?;
        let b = &p.program.buffers[i];
        let (dtype, bytes) = (buffer_dtype(b)?, eval(&b.name, &b.bytes, &p.program, &values)?);
        let shape = shape_at(b, &p.program, &values)?;
        let mut out = vec![0u8; bytes];
        let (root, offset) = root_offset(&self.programs[index].program, i, &values)?;
        let (mem, base) = root_mem(&self.programs[index], &self.params, &self.carried, root)?;
        self.device.download(mem, base + offset, &mut out)?;
        Ok(tensor_of(&out, dtype, shape))
    }

    /// The rows carried buffer `name` holds, or `None` if there is none of that name.
    pub fn carried(&mut self, name: &str) -> Result<Option<Tensor>, CodegenError> {
        let Some(c) = self.carried.get(name) else { return Ok(None) };
        let mut out = vec![0u8; c.held];
        let rows = c.held.checked_div(c.row_bytes).unwrap_or(0);
        let (dtype, shape) = (c.dtype, [vec![rows], c.row.clone()].concat());
        self.device.download(&c.mem.mem, 0, &mut out)?;
        Ok(Some(tensor_of(&out, dtype, shape)))
    }

    /// Replaces the rows of carried buffer `name` (a cache filled elsewhere); f32 rows into a
    /// bf16 buffer are rounded, as appended rows are.
    pub fn set_carried(&mut self, name: &str, rows: &Tensor) -> Result<(), CodegenError> {
        let c = self.carried.get(name).ok_or_else(|| run_error(name, "not a carried buffer"))?;
        let dtype = values::tensor_dtype(rows);
        let fits = dtype == c.dtype || (dtype == DType::F32 && c.dtype == DType::BF16);
        if !fits || rows.shape.get(1..) != Some(&c.row[..]) {
            let msg = format!("rows of {} {:?} expected, got {dtype} {:?}", c.dtype, c.row, rows.shape);
            return Err(run_error(name, msg));
        }
        let data = values::stored_bytes(rows, c.dtype);
        self.grow_carried(name, data.len())?;
        let c = self.carried.get_mut(name).expect("checked above");
        self.device.upload(&mut c.mem.mem, 0, &data)?;
        c.held = data.len();
        Ok(())
    }

    /// Empties every carried buffer (a new sequence); their memory stays.
    pub fn clear_carried(&mut self) {
        for c in self.carried.values_mut() {
            c.held = 0;
        }
    }

    /// Makes room for `rows` rows in every carried buffer, so later runs do not grow them.
    pub fn reserve_carried(&mut self, rows: usize) -> Result<(), CodegenError> {
        let names: Vec<(String, usize)> =
            self.carried.iter().map(|(n, c)| (n.clone(), rows * c.row_bytes)).collect();
        names.into_iter().try_for_each(|(n, bytes)| self.grow_carried(&n, bytes))
    }

    /// At least `bytes` bytes in carried buffer `name`, keeping its rows (doubling, so a
    /// growing cache reallocates rarely).
    fn grow_carried(&mut self, name: &str, bytes: usize) -> Result<(), CodegenError> {
        let c = self.carried.get_mut(name).expect("a carried buffer");
        if bytes <= c.mem.bytes {
            return Ok(());
        }
        let size = bytes.max(c.mem.bytes * 2);
        let mut mem = self.device.alloc(size)?;
        self.device.copy(&mut mem, &c.mem.mem, 0, c.held)?;
        c.mem = Sized { mem, bytes: size };
        Ok(())
    }

    fn upload_symbols(&mut self, index: usize, values: &[u64]) -> Result<(), CodegenError> {
        let bytes: Vec<u8> = values.iter().flat_map(|&v| (v as i64).to_ne_bytes()).collect();
        let p = &mut self.programs[index];
        if !bytes.is_empty() {
            self.device.upload(&mut p.sym, 0, &bytes)?;
        }
        Ok(())
    }

    fn upload_inputs(
        &mut self,
        index: usize,
        values: &[u64],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<(), CodegenError> {
        let p = &mut self.programs[index];
        for (name, i) in p.program.inputs.clone() {
            let b = &p.program.buffers[i];
            let t = inputs
                .get(&name)
                .ok_or_else(|| run_error(&p.program.name, format!("input `{name}` is not given")))?;
            let shape = shape_at(b, &p.program, values)?;
            let dtype = buffer_dtype(b)?;
            if t.shape != shape || values::tensor_dtype(t) != dtype {
                let msg =
                    format!("expected {dtype} {shape:?}, got {} {:?}", values::tensor_dtype(t), t.shape);
                return Err(run_error(&name, msg));
            }
            let data = bytes_of(t);
            if p.inputs[i].as_ref().is_none_or(|m| m.bytes < data.len()) {
                let size = data.len().max(p.inputs[i].as_ref().map_or(0, |m| m.bytes * 2));
                p.inputs[i] = Some(Sized { mem: self.device.alloc(size.max(1))?, bytes: size });
            }
            let mem = p.inputs[i].as_mut().expect("allocated above");
            self.device.upload(&mut mem.mem, 0, &data)?;
        }
        Ok(())
    }

    /// Checks every carried input holds the rows these symbols imply, and makes room for the
    /// outputs appended in place.
    fn prepare_carried(&mut self, index: usize, values: &[u64]) -> Result<(), CodegenError> {
        let p = &self.programs[index].program;
        // Bytes each carried buffer must hold: its rows, and its aliases (the in-place append).
        let mut room: Vec<Option<usize>> = vec![None; p.buffers.len()];
        for (i, b) in p.buffers.iter().enumerate() {
            if matches!(b.storage, Storage::Carried) {
                let held = self.carried[&b.name].held;
                let rows = eval(&b.name, &b.bytes, p, values)?;
                if rows != held {
                    let msg = format!("the carried buffer holds {held} bytes, these symbols need {rows}");
                    return Err(run_error(&b.name, msg));
                }
                room[i] = Some(rows);
            }
        }
        for (i, b) in p.buffers.iter().enumerate() {
            let (root, start) = root_offset(p, i, values)?;
            if root != i
                && let Some(r) = room[root]
            {
                room[root] = Some(r.max(start + eval(&b.name, &b.bytes, p, values)?));
            }
        }
        let need: Vec<(String, usize)> =
            room.iter().enumerate().filter_map(|(i, r)| Some((p.buffers[i].name.clone(), (*r)?))).collect();
        need.into_iter().try_for_each(|(n, bytes)| self.grow_carried(&n, bytes))
    }

    /// Plans the arena for capacities covering `values` (reusing the last plan when they fit)
    /// and makes sure the arena is large enough.
    fn prepare_arena(&mut self, index: usize, values: &[u64]) -> Result<(), CodegenError> {
        let p = &mut self.programs[index];
        let fits = p.plan.as_ref().is_some_and(|(caps, _)| caps.iter().zip(values).all(|(c, v)| v <= c));
        if !fits {
            let caps = grow_caps(p.plan.as_ref().map(|(c, _)| &c[..]), values);
            let plan = p.program.arena(&caps).ok_or_else(|| {
                run_error(&p.program.name, format!("the arena plan does not evaluate at {caps:?}"))
            })?;
            if p.arena.as_ref().is_none_or(|a| a.bytes < plan.bytes) {
                p.arena = Some(Sized { mem: self.device.alloc(plan.bytes.max(1))?, bytes: plan.bytes });
            }
            p.plan = Some((caps, plan.offsets));
        }
        Ok(())
    }

    /// Every buffer's device address (0 where it has no memory: the run's buffers during
    /// `init`), each checked to lie within its memory.
    fn addresses(&self, index: usize, values: &[u64], run: bool) -> Result<Vec<u64>, CodegenError> {
        let p = &self.programs[index];
        let prog = &p.program;
        let mut addr = vec![0u64; prog.buffers.len()];
        let mut room = vec![0usize; prog.buffers.len()];
        for (i, b) in prog.buffers.iter().enumerate() {
            let (base, offset, size) = match &b.storage {
                Storage::Alias { .. } => continue,
                Storage::Param { key } => {
                    let m = &self.params[key];
                    (self.device.address(&m.mem), 0, m.bytes)
                }
                Storage::Scalar { .. } | Storage::Persistent => {
                    let m = p.fixed[i].as_ref().expect("allocated when loaded");
                    (self.device.address(&m.mem), 0, m.bytes)
                }
                _ if !run => continue,
                Storage::Input => {
                    let m = p.inputs[i].as_ref().expect("uploaded before the run");
                    (self.device.address(&m.mem), 0, m.bytes)
                }
                Storage::Carried => {
                    let m = &self.carried[&b.name].mem;
                    (self.device.address(&m.mem), 0, m.bytes)
                }
                Storage::Arena { .. } => {
                    let (caps, offsets) = p.plan.as_ref().expect("planned before the run");
                    let (Some(offset), Some(arena)) = (offsets[i], p.arena.as_ref()) else { continue };
                    // Planned at the capacities: at most that size, at least what this run needs.
                    let size = eval(&b.name, &b.bytes, prog, caps)?;
                    (self.device.address(&arena.mem), offset, size)
                }
            };
            check_room(&b.name, eval(&b.name, &b.bytes, prog, values)?, size)?;
            addr[i] = base + offset as u64;
            room[i] = size;
        }
        for (i, b) in prog.buffers.iter().enumerate() {
            // An alias of a buffer with no memory yet (`init`, at zero symbols) is skipped
            // before its offset is evaluated, which may be negative there (`S - 1` rows in).
            let Storage::Alias { of, .. } = b.storage else { continue };
            if addr[of] == 0 {
                continue;
            }
            let (of, start) = root_offset(prog, i, values)?;
            check_room(&b.name, start + eval(&b.name, &b.bytes, prog, values)?, room[of])?;
            addr[i] = addr[of] + start as u64;
        }
        Ok(addr)
    }

    /// Runs one launch: a kernel with its grid at `grid_values` (within CUDA's limits), or a
    /// library product at the run's `values`.
    fn launch(
        &mut self,
        index: usize,
        launch: &Launch,
        grid_values: &[u64],
        values: &[u64],
        addr: &[u64],
    ) -> Result<(), CodegenError> {
        let p = &self.programs[index];
        let err =
            |msg: String| run_error(&launch.node, format!("{} `{}`: {msg}", kind(launch), launch.what()));
        let mut args = Vec::with_capacity(launch.args.len() + 1);
        for &a in &launch.args {
            if addr[a] == 0 {
                return Err(err(format!("buffer `{}` has no memory here", p.program.buffers[a].name)));
            }
            args.push(addr[a]);
        }
        let k = match &launch.work {
            Work::Kernel(k) => k,
            Work::Gemm(g) => {
                let call = g
                    .blas(&p.program.symbols, values)
                    .ok_or_else(|| err("its sizes do not evaluate".into()))?;
                let buffers = Gemm::BLAS_OPERANDS.map(|i| launch.args[i]);
                let elems = [g.operands.size_bytes(), g.operands.size_bytes(), 4];
                for ((buffer, span), elem) in buffers.into_iter().zip(call.spans()).zip(elems) {
                    let b = &p.program.buffers[buffer];
                    check_room(&b.name, span * elem, eval(&b.name, &b.bytes, &p.program, values)?)?;
                }
                if call.m == 0 || call.n == 0 || call.batch == 0 {
                    return Ok(());
                }
                let [a, b, c] = Gemm::BLAS_OPERANDS.map(|i| args[i]);
                return self.device.gemm(&call, a, b, c).map_err(|msg| err(format!("{call:?}: {msg}")));
            }
        };
        let mut grid = [0u32; 3];
        for (axis, e) in k.grid.iter().enumerate() {
            let v = e
                .eval(&p.program.symbols, grid_values)
                .ok_or_else(|| err(format!("grid extent {e} does not evaluate")))?;
            let limit = if axis == 0 { i32::MAX as u64 } else { GRID_YZ_MAX };
            if v > limit {
                return Err(err(format!("grid {axis} is {v} (= {e}), above CUDA's {limit}")));
            }
            grid[axis] = v as u32;
        }
        if k.block == 0 || k.block > MAX_BLOCK || k.shared_bytes > MAX_SHARED_BYTES {
            return Err(err(format!("{} threads and {} bytes of shared memory", k.block, k.shared_bytes)));
        }
        if grid.contains(&0) {
            return Ok(());
        }
        args.insert(0, self.device.address(&p.sym));
        self.device
            .launch(&p.module, &k.kernel, grid, k.block, k.shared_bytes, &args)
            .map_err(|msg| err(format!("grid {grid:?} x {} threads: {msg}", k.block)))
    }

    /// After a run: carried outputs not appended in place are copied into their buffers (on
    /// the device); every carried buffer now holds its output's rows.
    fn finish_carried(&mut self, index: usize, values: &[u64]) -> Result<(), CodegenError> {
        for o in 0..self.programs[index].program.outputs.len() {
            let prog = &self.programs[index].program;
            let (name, i) = &prog.outputs[o];
            if !self.carried.contains_key(name) {
                continue;
            }
            let name = name.clone();
            let bytes = eval(&name, &prog.buffers[*i].bytes, prog, values)?;
            let (root, offset) = root_offset(prog, *i, values)?;
            if !matches!(prog.buffers[root].storage, Storage::Carried) {
                self.grow_carried(&name, bytes)?;
                // Out of the map while it is written, so the source may be any other buffer.
                let mut dst = self.carried.remove(&name).expect("checked above");
                let copied = root_mem(&self.programs[index], &self.params, &self.carried, root)
                    .and_then(|(src, base)| self.device.copy(&mut dst.mem.mem, src, base + offset, bytes));
                self.carried.insert(name.clone(), dst);
                copied?;
            }
            self.carried.get_mut(&name).expect("checked above").held = bytes;
        }
        Ok(())
    }
}

/// What a launch runs, for messages.
fn kind(launch: &Launch) -> &'static str {
    match launch.work {
        Work::Kernel(_) => "kernel",
        Work::Gemm(_) => "library product",
    }
}

/// The buffer whose memory buffer `i` is (itself unless it is an alias), and `i`'s byte offset
/// in it.
fn root_offset(p: &CudaProgram, i: usize, values: &[u64]) -> Result<(usize, usize), CodegenError> {
    let b = &p.buffers[i];
    match &b.storage {
        Storage::Alias { of, offset } => {
            let elem = buffer_dtype(b)?.size_bytes() as u64;
            Ok((*of, eval(&b.name, &Extent::of([offset.clone()]).times(elem), p, values)?))
        }
        _ => Ok((i, 0)),
    }
}

/// The memory of root buffer `root` of program `p`, and the buffer's offset in it (the
/// set's fields apart, so the device stays free to use it).
fn root_mem<'a, D: Device>(
    p: &'a Loaded<D>,
    params: &'a HashMap<String, Sized<D::Mem>>,
    carried: &'a HashMap<String, CarriedMem<D::Mem>>,
    root: usize,
) -> Result<(&'a D::Mem, usize), CodegenError> {
    let b = &p.program.buffers[root];
    Ok(match &b.storage {
        Storage::Param { key } => (&params[key].mem, 0),
        Storage::Scalar { .. } | Storage::Persistent => (&p.fixed[root].as_ref().expect("allocated").mem, 0),
        Storage::Input => (&p.inputs[root].as_ref().expect("uploaded").mem, 0),
        Storage::Carried => (&carried[&b.name].mem.mem, 0),
        Storage::Arena { .. } => {
            let offsets = &p.plan.as_ref().expect("planned").1;
            let o = offsets[root].ok_or_else(|| run_error(&b.name, "has no arena slot"))?;
            (&p.arena.as_ref().expect("allocated").mem, o)
        }
        Storage::Alias { .. } => return Err(run_error(&b.name, "an alias of an alias")),
    })
}

fn check_room(name: &str, need: usize, room: usize) -> Result<(), CodegenError> {
    if need > room {
        return Err(run_error(name, format!("needs {need} bytes, its memory has {room}")));
    }
    Ok(())
}

fn eval(name: &str, e: &Extent, p: &CudaProgram, values: &[u64]) -> Result<usize, CodegenError> {
    e.eval(&p.symbols, values)
        .map(|v| v as usize)
        .ok_or_else(|| run_error(name, format!("extent {e} does not evaluate")))
}

/// A buffer's shape at the symbols' values.
fn shape_at(b: &super::Buffer, p: &CudaProgram, values: &[u64]) -> Result<Vec<usize>, CodegenError> {
    b.shape.iter().map(|d| eval(&b.name, &Extent::of([d.clone()]), p, values)).collect()
}
