//! Running a [`CpuProgram`]: the workspace (arena, plans, scratch) and carried buffers.

use std::collections::HashMap;

use super::build::view;
use super::exec::{Env, Kernel, Scratch, View, exec};
use super::plan::{Plan, Storage, assign_offsets, grow_caps};
use super::pool::{awake, pool};
use super::{CpuProgram, Elem};
use crate::CodegenError;

/// Memory a sequence's runs reuse: the arena, one plan per program, scratch buffers. Buffers
/// grow to the largest run seen and are then reused, so steady-state runs allocate nothing.
#[derive(Default)]
pub struct Workspace {
    /// The arena, as u64 words so every offset (a multiple of 64 bytes) is aligned.
    arena: Vec<u64>,
    plans: HashMap<u64, Plan>,
    /// The concrete dims of every value of the last run, flat.
    dims: Vec<usize>,
    /// The address of every value of the last run.
    addrs: Vec<*mut u8>,
    scratch: Scratch,
    /// The program whose outputs `dims` and `addrs` describe.
    last: Option<u64>,
    /// Least capacities to plan symbols for (see [`Workspace::reserve_symbol`]).
    hints: Vec<(String, u64)>,
    /// Reused per run: the symbols' values and a step's operand views.
    syms: Vec<u64>,
    args: Vec<View>,
    /// Seconds and calls per kernel kind, when profiling.
    profile: Option<Vec<(&'static str, f64, usize)>>,
}

// SAFETY: the raw addresses point into memory the workspace, a program or a `Carried` owns;
// they are recomputed at the start of every run and only dereferenced during it.
unsafe impl Send for Workspace {}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace::default()
    }

    /// Plans every program for `symbol` up to `value` from the start, so runs that stay below
    /// it never plan again (a session that knows its length allocates nothing per token).
    pub fn reserve_symbol(&mut self, symbol: &str, value: u64) {
        match self.hints.iter_mut().find(|(s, _)| s == symbol) {
            Some(h) => h.1 = h.1.max(value),
            None => self.hints.push((symbol.to_string(), value)),
        }
    }

    /// Readies a workspace a finished sequence used for another: its memory (arena, plans,
    /// scratch) stays, so the new sequence's runs neither allocate nor fault in fresh pages up
    /// to the sizes already seen; its profile and last outputs go.
    pub fn recycle(&mut self) {
        self.profile = None;
        self.last = None;
    }

    /// Starts timing every step by kernel kind (see [`Workspace::profile`]).
    pub fn enable_profile(&mut self) {
        self.profile.get_or_insert_with(Vec::new);
    }

    /// Seconds and calls per kernel kind since profiling was enabled, most time first.
    pub fn profile(&self) -> Vec<(&'static str, f64, usize)> {
        let mut p = self.profile.clone().unwrap_or_default();
        p.sort_by(|a, b| b.1.total_cmp(&a.1));
        p
    }

    /// Bytes of arena memory held.
    pub fn arena_bytes(&self) -> usize {
        self.arena.len() * 8
    }
}

/// The buffers that carry state from run to run (the KV cache): one per carried input of a
/// program, rows appended in place. Reserve the rows a sequence needs up front to avoid any
/// reallocation; otherwise capacity doubles as rows are added.
pub struct Carried {
    names: Vec<String>,
    rows_per: Vec<usize>,
    data: Vec<Vec<f32>>,
    rows: usize,
}

impl Carried {
    /// Empty buffers for `program`'s carried inputs.
    pub fn new(program: &CpuProgram) -> Carried {
        Carried {
            names: program.carried.iter().map(|c| c.name.clone()).collect(),
            rows_per: program.carried.iter().map(|c| c.row).collect(),
            data: program.carried.iter().map(|_| Vec::new()).collect(),
            rows: 0,
        }
    }

    /// Drops every row, keeping the memory.
    pub fn clear(&mut self) {
        self.rows = 0;
    }

    /// Rows held (the cached positions).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Makes room for `rows` rows in every buffer.
    pub fn reserve(&mut self, rows: usize) {
        for (d, &row) in self.data.iter_mut().zip(&self.rows_per) {
            if d.len() < rows * row {
                d.resize(rows * row, 0.0);
            }
        }
    }

    /// The rows held in the buffer `name` (`rows * row` elements).
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.data[i][..self.rows * self.rows_per[i]])
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.iter().map(|d| d.len() * 4).sum()
    }
}

/// An input tensor's elements (its shape is the graph's, under the run's symbols).
#[derive(Clone, Copy)]
pub enum InputData<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

impl CpuProgram {
    /// Runs the program: `symbols` binds the graph's symbols by name (extra ones are ignored),
    /// `inputs` its non-carried inputs by name; carried inputs are `carried`'s rows, and the
    /// carried outputs become its new rows. Read outputs with [`CpuProgram::output`].
    pub fn run(
        &self,
        ws: &mut Workspace,
        carried: &mut Carried,
        symbols: &[(&str, u64)],
        inputs: &[(&str, InputData)],
    ) -> Result<(), CodegenError> {
        let mut syms = std::mem::take(&mut ws.syms);
        let result =
            self.symbol_values(symbols, &mut syms).and_then(|()| self.run_with(ws, carried, &syms, inputs));
        ws.syms = syms;
        result
    }

    /// The values of the program's symbols, in program order, from bindings by name (into a
    /// reused buffer; extra bindings are ignored).
    pub(super) fn symbol_values(
        &self,
        symbols: &[(&str, u64)],
        out: &mut Vec<u64>,
    ) -> Result<(), CodegenError> {
        out.clear();
        for s in &self.symbols {
            match symbols.iter().find(|(n, _)| n == s) {
                Some(&(_, v)) => out.push(v),
                None => {
                    let msg = format!("symbol `{s}` is not bound");
                    return Err(CodegenError::Run { node: self.name.clone(), msg });
                }
            }
        }
        Ok(())
    }

    /// [`CpuProgram::run`] with the symbols' values in program order.
    fn run_with(
        &self,
        ws: &mut Workspace,
        carried: &mut Carried,
        syms: &[u64],
        inputs: &[(&str, InputData)],
    ) -> Result<(), CodegenError> {
        let bad = |node: &str, msg: String| CodegenError::Run { node: node.to_string(), msg };
        self.eval_dims(ws, syms)?;
        self.plan(ws, syms);
        let plan = &ws.plans[&self.id];
        let words = plan.arena_bytes.div_ceil(8);
        if ws.arena.len() < words {
            ws.arena.resize(words, 0);
        }
        // Carried outputs need their rows before any address is taken.
        for c in &self.carried {
            let (input_rows, output_rows) =
                (ws.dims[self.dim_start(c.input)], ws.dims[self.dim_start(c.output)]);
            if input_rows != carried.rows {
                return Err(bad(
                    &c.name,
                    format!("holds {} rows, the run expects {input_rows}", carried.rows),
                ));
            }
            carried.reserve(output_rows);
        }
        self.resolve(ws, carried, syms);
        for (name, v) in &self.inputs {
            let data = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, d)| d)
                .ok_or_else(|| bad(name, "is not bound".into()))?;
            let out = self.view(ws, *v);
            let expected = out.shape().iter().product::<usize>();
            match (data, self.values[*v].elem) {
                (InputData::F32(d), Elem::F32) if d.len() == expected => {
                    // SAFETY: the view is the input's arena slot of `expected` elements.
                    unsafe { std::slice::from_raw_parts_mut(out.ptr as *mut f32, expected) }
                        .copy_from_slice(d)
                }
                (InputData::I64(d), Elem::I64) if d.len() == expected => {
                    // SAFETY: as above.
                    unsafe { std::slice::from_raw_parts_mut(out.ptr as *mut i64, expected) }
                        .copy_from_slice(d)
                }
                _ => {
                    return Err(bad(
                        name,
                        format!("expected {expected} elements of {:?}", self.values[*v].elem),
                    ));
                }
            }
        }
        // A program with large weights runs its steps on a pool thread, the other threads
        // polling for work, so the kernels' parallel parts start on a warm pool instead of
        // being injected from outside it at every step; a small one stays on this thread (the
        // handoff would cost more).
        if self.large {
            pool().install(|| awake(|| self.run_steps(ws, syms)))?;
        } else {
            self.run_steps(ws, syms)?;
        }
        for (i, c) in self.carried.iter().enumerate() {
            if !c.in_place {
                let out = self.view(ws, c.output);
                let n = out.shape().iter().product::<usize>();
                // SAFETY: the output is an arena value of `n` f32 elements.
                let src = unsafe { std::slice::from_raw_parts(out.ptr as *const f32, n) };
                carried.data[i][..n].copy_from_slice(src);
            }
        }
        if let Some(c) = self.carried.first() {
            carried.rows = ws.dims[self.dim_start(c.output)];
        }
        ws.last = Some(self.id);
        Ok(())
    }

    /// An output of the last run of this program on `ws`: its f32 elements and shape.
    pub fn output<'w>(&self, ws: &'w Workspace, name: &str) -> Option<(&'w [f32], &'w [usize])> {
        if ws.last != Some(self.id) {
            return None;
        }
        let &(_, v) = self.outputs.iter().find(|(n, _)| n == name)?;
        if self.values[v].elem != Elem::F32 || matches!(self.values[v].storage, Storage::Carried(_)) {
            return None;
        }
        let start = self.dim_start(v);
        let shape = &ws.dims[start..start + self.values[v].shape.len()];
        let n = shape.iter().product();
        let view = self.view(ws, v);
        // SAFETY: the output lives in the workspace's arena (or a constant) until the next run,
        // which needs `&mut Workspace` and so cannot happen while this borrow lives.
        Some((unsafe { std::slice::from_raw_parts(view.ptr as *const f32, n) }, shape))
    }

    /// Runs every step in order.
    fn run_steps(&self, ws: &mut Workspace, syms: &[u64]) -> Result<(), CodegenError> {
        let mut args = std::mem::take(&mut ws.args);
        let result = self.run_steps_with(ws, syms, &mut args);
        ws.args = args;
        result
    }

    fn run_steps_with(
        &self,
        ws: &mut Workspace,
        syms: &[u64],
        args: &mut Vec<View>,
    ) -> Result<(), CodegenError> {
        for step in &self.steps {
            args.clear();
            args.extend(step.args.iter().map(|&a| self.view(ws, a)));
            let out = self.view(ws, step.out);
            let started = ws.profile.is_some().then(std::time::Instant::now);
            let mut env = Env { symbols: syms, rows: &self.rows, scratch: &mut ws.scratch };
            exec(&step.kernel, args, &out, &mut env)
                .map_err(|msg| CodegenError::Run { node: self.values[step.out].name.clone(), msg })?;
            if let (Some(t), Some(profile)) = (started, ws.profile.as_mut()) {
                let name = step.kernel.name();
                let seconds = t.elapsed().as_secs_f64();
                match profile.iter_mut().find(|(n, ..)| *n == name) {
                    Some(entry) => {
                        entry.1 += seconds;
                        entry.2 += 1;
                    }
                    None => profile.push((name, seconds, 1)),
                }
            }
        }
        Ok(())
    }

    fn dim_start(&self, v: usize) -> usize {
        self.dim_starts[v]
    }

    /// Evaluates every value's shape into `ws.dims`.
    fn eval_dims(&self, ws: &mut Workspace, syms: &[u64]) -> Result<(), CodegenError> {
        ws.dims.clear();
        for value in &self.values {
            for d in &value.shape {
                let v = d.eval(syms).ok_or_else(|| CodegenError::Run {
                    node: value.name.clone(),
                    msg: "a dim evaluates negative under the run's symbols".into(),
                })?;
                ws.dims.push(v);
            }
        }
        Ok(())
    }

    fn bytes(&self, ws: &Workspace, v: usize) -> usize {
        let value = &self.values[v];
        let start = self.dim_start(v);
        ws.dims[start..start + value.shape.len()].iter().product::<usize>() * value.elem.size()
    }

    /// Makes sure `ws` holds a plan of this program that fits the run's sizes.
    fn plan(&self, ws: &mut Workspace, syms: &[u64]) {
        let fits = |plan: &Plan| {
            syms.iter().zip(&plan.caps).all(|(v, c)| v <= c)
                && (0..self.values.len()).all(|v| plan.sizes[v] >= self.arena_size(ws, v).unwrap_or(0))
        };
        let caps = match ws.plans.get(&self.id) {
            Some(plan) if fits(plan) => return,
            Some(plan) => grow_caps(Some(&plan.caps), syms),
            None => grow_caps(None, syms),
        };
        let mut caps = caps;
        for (cap, name) in caps.iter_mut().zip(&self.symbols) {
            if let Some((_, hint)) = ws.hints.iter().find(|(s, _)| s == name) {
                *cap = (*cap).max(*hint);
            }
        }
        let mut sizes = self.sizes_at(&caps);
        // A dim that shrinks as a symbol grows can exceed its size at the caps: plan that
        // value at the run's size.
        for (v, size) in sizes.iter_mut().enumerate() {
            if let (Some(s), Some(now)) = (size.as_mut(), self.arena_size(ws, v)) {
                *s = (*s).max(now);
            }
        }
        ws.scratch.reserve_scores(self.scores_at(&caps));
        let (offsets, arena_bytes) = assign_offsets(&sizes, &self.live);
        let sizes = sizes.into_iter().map(|s| s.unwrap_or(0)).collect();
        ws.plans.insert(self.id, Plan { caps, offsets, sizes, arena_bytes });
    }

    /// The arena bytes of value `v` in the current run (`None` when it is not in the arena).
    fn arena_size(&self, ws: &Workspace, v: usize) -> Option<usize> {
        matches!(self.values[v].storage, Storage::Arena).then(|| self.bytes(ws, v))
    }

    /// The most attention scores a step holds with symbols at `caps` (`h * s * t` floats of an
    /// `mla_decode_attention`, one batch element at a time).
    fn scores_at(&self, caps: &[u64]) -> usize {
        let dims =
            |v: usize| self.values[v].shape.iter().map(|d| d.eval(caps).unwrap_or(0)).collect::<Vec<_>>();
        self.steps
            .iter()
            .filter(|s| matches!(s.kernel, Kernel::MlaDecodeAttention { .. }))
            .map(|s| {
                let (q, latent) = (dims(s.args[0]), dims(s.args[2]));
                // [H, S] rows of T keys (q is [B.., H, S, C], latent [B.., T, C]).
                q[q.len().saturating_sub(3)..q.len().saturating_sub(1)].iter().product::<usize>()
                    * latent.len().checked_sub(2).map_or(0, |at| latent[at])
            })
            .max()
            .unwrap_or(0)
    }

    /// Arena bytes per value with symbols at `caps`.
    fn sizes_at(&self, caps: &[u64]) -> Vec<Option<usize>> {
        self.values
            .iter()
            .map(|value| {
                matches!(value.storage, Storage::Arena).then(|| {
                    value.shape.iter().map(|d| d.eval(caps).unwrap_or(0)).product::<usize>()
                        * value.elem.size()
                })
            })
            .collect()
    }

    /// The address of every value for this run.
    fn resolve(&self, ws: &mut Workspace, carried: &mut Carried, syms: &[u64]) {
        let plan = &ws.plans[&self.id];
        let base = ws.arena.as_mut_ptr() as *mut u8;
        ws.addrs.clear();
        for (v, value) in self.values.iter().enumerate() {
            let addr = match &value.storage {
                Storage::Const(c) => self.consts[*c].ptr(),
                // SAFETY: the plan's offsets lie inside the arena, sized to `arena_bytes` above.
                Storage::Arena => unsafe { base.add(plan.offsets[v]) },
                Storage::Carried(c) => carried.data[*c].as_mut_ptr() as *mut u8,
                Storage::Fused => std::ptr::null_mut(),
                Storage::Alias { of, offset } => {
                    let at = offset.eval(syms).unwrap_or(0) * self.values[*of].elem.size();
                    // SAFETY: an alias is a reshape or an in-bounds slice of its operand.
                    unsafe { ws.addrs[*of].add(at) }
                }
            };
            ws.addrs.push(addr);
        }
    }

    fn view(&self, ws: &Workspace, v: usize) -> View {
        let start = self.dim_start(v);
        view(ws.addrs[v], self.values[v].elem, &ws.dims[start..start + self.values[v].shape.len()])
    }
}
