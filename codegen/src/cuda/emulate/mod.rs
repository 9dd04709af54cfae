//! A test executor for [`CudaProgram`]s on the CPU, so every generated kernel is checked
//! against the interpreter where there is no GPU (CI).
//!
//! The program's `kernels.cu` is compiled as C++ by g++ with `emulation.h` (CUDA keywords,
//! intrinsics, and a fiber per thread of a block: barriers and warp shuffles behave as on a
//! GPU, see the header) and one launcher per kernel, then loaded. [`Emulator::new`] uploads the
//! params and scalars and runs the `init` launches; [`Emulator::run`] lays out the arena as the
//! device runtime will ([`CudaProgram::arena`], so the memory plan is tested too), appends the
//! KV cache in its carried buffers, and runs the launches with grids from their extents. Memory
//! the kernels should overwrite starts as NaN bytes, so a read of an unwritten element shows.
//! Grids, block sizes and shared memory are checked against CUDA's limits.
//!
//! It is a checker, not a runtime: blocks run one after another on the calling thread.

mod compile;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::Arc;

use saturn_ir::{DType, Dim, Node, Op, ParamSource, Tensor};

use self::compile::Library;
use self::memory::{Memory, bytes_of, dtype_of, tensor_of};
use super::{Buffer, CudaProgram, Extent, Launch, Storage};
use crate::CodegenError;

/// The largest dynamic shared memory of a block on an H100 (227 KiB, with the opt-in).
const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// A [`CudaProgram`] loaded for the CPU, with its params and carried buffers.
pub struct Emulator<'p> {
    program: &'p CudaProgram,
    lib: Arc<Library>,
    /// Params, scalars and persistent buffers, by buffer index.
    fixed: Vec<Option<Memory>>,
    /// Carried buffers by buffer index: memory (with room to grow) and the bytes of rows held.
    carried: Vec<Option<(Memory, usize)>>,
}

impl<'p> Emulator<'p> {
    /// Compiles `program` (once per source in this process), loads its params from `params`
    /// and runs its `init` launches. Carried buffers start empty.
    pub fn new(program: &'p CudaProgram, params: &dyn ParamSource) -> Result<Emulator<'p>, CodegenError> {
        let lib = compile::library(program)?;
        let mut fixed: Vec<Option<Memory>> = (0..program.buffers.len()).map(|_| None).collect();
        let mut carried: Vec<Option<(Memory, usize)>> = (0..program.buffers.len()).map(|_| None).collect();
        let zeros = vec![0; program.symbols.len()];
        for (i, b) in program.buffers.iter().enumerate() {
            match &b.storage {
                Storage::Param { key } => fixed[i] = Some(load_param(b, key, params)?),
                Storage::Scalar { value } => {
                    let dtype = dtype(b)?;
                    let t = match dtype {
                        DType::I64 => Tensor::i64(vec![], vec![*value as i64]),
                        DType::Bool => Tensor::bool(vec![], vec![*value != 0.0]),
                        _ => Tensor::f32(vec![], vec![*value as f32]),
                    };
                    fixed[i] = Some(Memory::from_bytes(&bytes_of(&t)));
                }
                Storage::Persistent => fixed[i] = Some(Memory::poisoned(eval(b, &b.bytes, program, &zeros)?)),
                Storage::Carried => carried[i] = Some((Memory::poisoned(0), 0)),
                _ => {}
            }
        }
        let mut emulator = Emulator { program, lib, fixed, carried };
        let ptrs = emulator.pointers(&zeros, None)?;
        for launch in &program.init {
            emulator.launch(launch, &zeros, &ptrs)?;
        }
        Ok(emulator)
    }

    /// Runs the program once with `symbols` (name, value) and `inputs` by input name (extra
    /// entries are ignored) and returns every output by name. Carried buffers must hold the rows
    /// their input's shape has at these symbols; outputs appended to them grow them.
    pub fn run(
        &mut self,
        symbols: &[(&str, u64)],
        inputs: &HashMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, CodegenError> {
        let p = self.program;
        let run_error = |msg: String| CodegenError::Run { node: p.name.clone(), msg };
        let values: Vec<u64> = p
            .symbols
            .iter()
            .map(|s| {
                let v = symbols.iter().find(|(n, _)| n == s).map(|&(_, v)| v);
                v.ok_or_else(|| run_error(format!("symbol `{s}` is not bound")))
            })
            .collect::<Result<_, _>>()?;
        let mut input_mem: Vec<Option<Memory>> = (0..p.buffers.len()).map(|_| None).collect();
        for (name, i) in &p.inputs {
            let b = &p.buffers[*i];
            let t = inputs.get(name).ok_or_else(|| run_error(format!("input `{name}` is not given")))?;
            let shape = shape(b, p, &values)?;
            if t.shape != shape || tensor_dtype(t) != dtype(b)? {
                let got = format!("{} {:?}", tensor_dtype(t), t.shape);
                return Err(run_error(format!("input `{name}`: expected {} {shape:?}, got {got}", b.dtype)));
            }
            input_mem[*i] = Some(Memory::from_bytes(&bytes_of(t)));
        }
        for (i, b) in p.buffers.iter().enumerate() {
            if let Some((mem, held)) = &mut self.carried[i] {
                let need = eval(b, &b.bytes, p, &values)?;
                if need != *held {
                    return Err(CodegenError::Run {
                        node: b.name.clone(),
                        msg: format!("the carried buffer holds {held} bytes, these symbols need {need}"),
                    });
                }
                let mut aliases = p.buffers.iter().enumerate().filter(|&(a, _)| root_of(p, a) == i);
                let room = aliases.try_fold(need, |m, (_, a)| {
                    Ok::<_, CodegenError>(
                        m.max(alias_offset(a, p, &values)? + eval(a, &a.bytes, p, &values)?),
                    )
                })?;
                mem.grow(room);
            }
        }
        // The device runtime's plan: buffers alive at one launch never overlap.
        let plan = p.arena(&values).ok_or_else(|| run_error("the arena plan does not evaluate".into()))?;
        let mut arena = Memory::poisoned(plan.bytes);
        let arena_plan: Vec<Option<(usize, usize)>> = (p.buffers.iter().zip(&plan.offsets))
            .map(|(b, o)| o.map(|o| Ok::<_, CodegenError>((o, eval(b, &b.bytes, p, &values)?))).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs = self.pointers(
            &values,
            Some(RunMemory { inputs: &mut input_mem, arena: &mut arena, plan: &arena_plan }),
        )?;
        for launch in &p.launches {
            self.launch(launch, &values, &ptrs)?;
        }
        // Reads every output before carried buffers take theirs (which may live in the arena).
        let mut outputs = BTreeMap::new();
        for (name, i) in &p.outputs {
            let b = &p.buffers[*i];
            let bytes = eval(b, &b.bytes, p, &values)?;
            // SAFETY: `pointers` checked that the buffer's bytes lie in its memory.
            let data = unsafe { std::slice::from_raw_parts(ptrs[*i] as *const u8, bytes) };
            outputs.insert(name.clone(), tensor_of(data, dtype(b)?, shape(b, p, &values)?));
        }
        for (name, i) in &p.outputs {
            let Some(c) = p.buffers.iter().position(|b| &b.name == name && is_carried(b)) else {
                continue;
            };
            let bytes = bytes_of(&outputs[name]);
            let (mem, held) = self.carried[c].as_mut().expect("a carried buffer");
            if root_of(p, *i) != c {
                mem.grow(bytes.len());
                mem.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
            }
            *held = bytes.len();
        }
        Ok(outputs)
    }

    /// The rows a carried buffer holds, or `None` if `name` is not one.
    pub fn carried(&self, name: &str) -> Option<Tensor> {
        let p = self.program;
        let (i, b) = p.buffers.iter().enumerate().find(|(_, b)| b.name == name && is_carried(b))?;
        let (mem, held) = self.carried[i].as_ref()?;
        let (dtype, row) = carried_row(b).ok()?;
        let rows = held.checked_div(row.iter().product::<usize>() * dtype.size_bytes()).unwrap_or(0);
        Some(tensor_of(&mem.bytes()[..*held], dtype, [vec![rows], row].concat()))
    }

    /// Replaces the rows of carried buffer `name` (a cache filled by earlier steps).
    pub fn set_carried(&mut self, name: &str, rows: &Tensor) -> Result<(), CodegenError> {
        let p = self.program;
        let not = || CodegenError::Run { node: name.into(), msg: "not a carried buffer".into() };
        let i = p.buffers.iter().position(|b| b.name == name && is_carried(b)).ok_or_else(not)?;
        let (dtype, row) = carried_row(&p.buffers[i])?;
        if tensor_dtype(rows) != dtype || rows.shape.get(1..) != Some(&row[..]) {
            let msg =
                format!("rows of {} {row:?} expected, got {} {:?}", dtype, tensor_dtype(rows), rows.shape);
            return Err(CodegenError::Run { node: name.into(), msg });
        }
        let bytes = bytes_of(rows);
        let (mem, held) = self.carried[i].as_mut().ok_or_else(not)?;
        mem.grow(bytes.len());
        mem.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        *held = bytes.len();
        Ok(())
    }

    /// Every buffer's address (null where it has no memory: the run's buffers during `init`),
    /// each checked to lie within its memory.
    fn pointers(&mut self, values: &[u64], mut run: Option<RunMemory>) -> Result<Vec<*mut u8>, CodegenError> {
        let p = self.program;
        let mut ptrs = vec![std::ptr::null_mut(); p.buffers.len()];
        // Roots first: aliases point into them.
        for (i, b) in p.buffers.iter().enumerate() {
            let (mem, offset, room) = match (&b.storage, run.as_mut()) {
                (Storage::Alias { .. }, _) => continue,
                (Storage::Param { .. } | Storage::Scalar { .. } | Storage::Persistent, _) => {
                    (self.fixed[i].as_mut(), 0, usize::MAX)
                }
                (_, None) => continue,
                (Storage::Arena { .. }, Some(r)) => match r.plan[i] {
                    Some((offset, size)) => (Some(&mut *r.arena), offset, size),
                    None => (None, 0, 0),
                },
                (Storage::Input, Some(r)) => (r.inputs[i].as_mut(), 0, usize::MAX),
                (Storage::Carried, Some(_)) => (self.carried[i].as_mut().map(|(m, _)| m), 0, usize::MAX),
            };
            let Some(mem) = mem else { continue };
            let room = room.min(mem.len().saturating_sub(offset));
            check_room(b, eval(b, &b.bytes, p, values)?, room)?;
            // SAFETY: `offset` is within `mem` (the arena plan places every buffer inside it).
            ptrs[i] = unsafe { mem.as_mut_ptr().add(offset) };
        }
        for (i, b) in p.buffers.iter().enumerate() {
            let Storage::Alias { of, .. } = b.storage else { continue };
            if ptrs[of].is_null() {
                continue;
            }
            let offset = alias_offset(b, p, values)?;
            let root = &p.buffers[of];
            let room = match root.storage {
                Storage::Carried => self.carried[of].as_ref().map_or(0, |(m, _)| m.len()),
                _ => eval(root, &root.bytes, p, values)?,
            };
            check_room(b, offset + eval(b, &b.bytes, p, values)?, room)?;
            // SAFETY: checked above to lie within the root's memory.
            ptrs[i] = unsafe { ptrs[of].add(offset) };
        }
        Ok(ptrs)
    }

    /// Runs one launch: evaluates its grid, checks the CUDA limits, calls its launcher.
    fn launch(&self, launch: &Launch, values: &[u64], ptrs: &[*mut u8]) -> Result<(), CodegenError> {
        let p = self.program;
        let err = |msg: String| CodegenError::Run {
            node: launch.node.clone(),
            msg: format!("kernel `{}`: {msg}", launch.kernel),
        };
        let mut grid = [0u32; 3];
        for (axis, e) in launch.grid.iter().enumerate() {
            let v = e
                .eval(&p.symbols, values)
                .ok_or_else(|| err(format!("grid extent {e} does not evaluate")))?;
            let limit = if axis == 0 { i32::MAX as u64 } else { 65535 };
            if v > limit {
                return Err(err(format!("grid {axis} is {v} (= {e}), above CUDA's {limit}")));
            }
            grid[axis] = v as u32;
        }
        if launch.shared_bytes > MAX_SHARED_BYTES {
            return Err(err(format!("{} bytes of shared memory", launch.shared_bytes)));
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let args: Vec<*mut c_void> = launch.args.iter().map(|&a| ptrs[a].cast()).collect();
        if let Some(&a) = launch.args.iter().find(|&&a| ptrs[a].is_null()) {
            return Err(err(format!("buffer `{}` has no memory here", p.buffers[a].name)));
        }
        let f = self.lib.launchers.get(&launch.kernel).ok_or_else(|| err("is not in the library".into()))?;
        let sym: Vec<i64> = values.iter().map(|&v| v as i64).chain([0]).collect();
        let mut msg = [0 as std::ffi::c_char; 512];
        // SAFETY: the launcher reads `sym` (one value per symbol) and the argument pointers, each
        // within memory holding its buffer's extent at these symbols; the kernels were compared
        // with the interpreter for staying within those extents.
        let rc = unsafe {
            f(
                sym.as_ptr(),
                args.as_ptr(),
                args.len() as u32,
                grid.as_ptr(),
                launch.block,
                launch.shared_bytes,
                msg.as_mut_ptr(),
                msg.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the launcher writes a NUL-terminated message within `msg` (snprintf).
            let text = unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned();
            return Err(err(format!("grid {grid:?} x {} threads: {text}", launch.block)));
        }
        Ok(())
    }
}

/// The memory of one run: inputs by buffer index, the arena, and each arena buffer's offset
/// and size.
struct RunMemory<'a> {
    inputs: &'a mut [Option<Memory>],
    arena: &'a mut Memory,
    plan: &'a [Option<(usize, usize)>],
}

fn check_room(b: &Buffer, need: usize, room: usize) -> Result<(), CodegenError> {
    if need > room {
        let msg = format!("needs {need} bytes, its memory has {room}");
        return Err(CodegenError::Run { node: b.name.clone(), msg });
    }
    Ok(())
}

/// The buffer whose memory buffer `i` is (itself unless it is an alias).
fn root_of(p: &CudaProgram, i: usize) -> usize {
    match p.buffers[i].storage {
        Storage::Alias { of, .. } => of,
        _ => i,
    }
}

/// An alias's byte offset in the buffer it reads.
fn alias_offset(b: &Buffer, p: &CudaProgram, values: &[u64]) -> Result<usize, CodegenError> {
    match &b.storage {
        Storage::Alias { offset, .. } => {
            let elem = dtype(b)?.size_bytes() as u64;
            eval(b, &Extent::of([offset.clone()]).times(elem), p, values)
        }
        _ => Ok(0),
    }
}

fn eval(b: &Buffer, e: &Extent, p: &CudaProgram, values: &[u64]) -> Result<usize, CodegenError> {
    e.eval(&p.symbols, values).map(|v| v as usize).ok_or_else(|| CodegenError::Run {
        node: b.name.clone(),
        msg: format!("extent {e} does not evaluate"),
    })
}

fn dtype(b: &Buffer) -> Result<DType, CodegenError> {
    dtype_of(&b.dtype).ok_or_else(|| CodegenError::Run {
        node: b.name.clone(),
        msg: format!("dtype {} is not emulated", b.dtype),
    })
}

fn tensor_dtype(t: &Tensor) -> DType {
    match t.data {
        saturn_ir::TensorData::F32(_) => DType::F32,
        saturn_ir::TensorData::I64(_) => DType::I64,
        saturn_ir::TensorData::Bool(_) => DType::Bool,
    }
}

/// The buffer's shape at the symbols' values.
fn shape(b: &Buffer, p: &CudaProgram, values: &[u64]) -> Result<Vec<usize>, CodegenError> {
    b.shape.iter().map(|d| eval(b, &Extent::of([d.clone()]), p, values)).collect()
}

fn is_carried(b: &Buffer) -> bool {
    matches!(b.storage, Storage::Carried)
}

/// A carried buffer's dtype and dims per row (the dims after the first).
fn carried_row(b: &Buffer) -> Result<(DType, Vec<usize>), CodegenError> {
    let dtype = dtype(b)?;
    let row: Option<Vec<usize>> = b.shape.iter().skip(1).map(|d| d.as_const().map(|v| v as usize)).collect();
    let row = row.filter(|_| !b.shape.is_empty()).ok_or_else(|| CodegenError::Run {
        node: b.name.clone(),
        msg: "a carried buffer's dims after the first must be constant".into(),
    })?;
    Ok((dtype, row))
}

/// A param's values as bytes, loaded as the interpreter loads them (stacked `{e}` keys too).
fn load_param(b: &Buffer, key: &str, params: &dyn ParamSource) -> Result<Memory, CodegenError> {
    let dtype = dtype(b)?;
    let shape: Option<Vec<usize>> = b.shape.iter().map(|d| d.as_const().map(|v| v as usize)).collect();
    let shape =
        shape.ok_or_else(|| CodegenError::Param { key: key.into(), msg: "shape is not constant".into() })?;
    let node = Node {
        name: b.name.clone(),
        op: Op::Param { key: key.into() },
        ty: saturn_ir::TensorType::new(dtype, shape.iter().map(|&d| Dim::from(d))),
    };
    let t = saturn_ir::load_param(&node, key, &shape, params)
        .map_err(|e| CodegenError::Param { key: key.into(), msg: e.to_string() })?;
    Ok(Memory::from_bytes(&bytes_of(&t)))
}
