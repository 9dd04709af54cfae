//! The Cranelift side of [`RowKernels`](super::RowKernels): the JIT module, helpers that
//! build loop nests, and the IR of RMSNorm, softmax (also with a causal mask and a scale folded
//! in), the reductions and RoPE. Each emitter follows its interpreter function line by line;
//! the comments say where the two could look different but are not.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, UserFuncName, Value,
    types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use saturn_ir::{ReduceOp, RopeLayout};

use super::CodegenError;

fn compile_error(kernel: &str, msg: String) -> CodegenError {
    CodegenError::Compile { kernel: format!("rows.{kernel}"), msg }
}

/// The module being filled, with what every kernel definition needs.
pub(super) struct Jit {
    module: JITModule,
    exp: FuncId,
    fctx: FunctionBuilderContext,
}

impl Jit {
    /// A JIT module for the host that imports `exp` over strided runs.
    pub(super) fn new() -> Result<Jit, CodegenError> {
        let err = |msg: String| compile_error("setup", msg);
        let mut module = super::jit::host_module("setup")?;
        let pointer = module.target_config().pointer_type();
        let mut strided = module.make_signature();
        strided.params.extend([AbiParam::new(pointer); 3]);
        let exp = module
            .declare_function(super::jit::EXP_STRIDED, Linkage::Import, &strided)
            .map_err(|e| err(e.to_string()))?;
        Ok(Jit { module, exp, fctx: FunctionBuilderContext::new() })
    }

    /// The type of pointers, and of the counts passed as `usize`.
    pub(super) fn pointer_type(&self) -> Type {
        self.module.target_config().pointer_type()
    }

    /// Finalizes every definition: the module now owns their executable code.
    pub(super) fn finish(mut self) -> Result<JITModule, CodegenError> {
        self.module.finalize_definitions().map_err(|e| compile_error("finalize", e.to_string()))?;
        Ok(self.module)
    }

    /// Defines `name(params) -> ()` with the body `body` builds from the parameter values.
    pub(super) fn define<const N: usize>(
        &mut self,
        name: &str,
        params: [Type; N],
        body: impl FnOnce(&mut Emit, [Value; N]),
    ) -> Result<FuncId, CodegenError> {
        let err = |msg: String| compile_error(name, msg);
        let mut sig = self.module.make_signature();
        sig.params.extend(params.map(AbiParam::new));
        let id = self.module.declare_function(name, Linkage::Local, &sig).map_err(|e| err(e.to_string()))?;
        let mut ctx = self.module.make_context();
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let config = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
        let exp = self.module.declare_func_in_func(self.exp, b.func);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let args: [Value; N] = b
            .block_params(entry)
            .try_into()
            .map_err(|_| err("the entry block lost its parameters".into()))?;
        let mut e = Emit { b, exp, ptr: config.pointer_type() };
        body(&mut e, args);
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(config);
        self.module.define_function(id, &mut ctx).map_err(|e| err(format!("{e:?}")))?;
        self.module.clear_context(&mut ctx);
        Ok(id)
    }
}

/// Builds one kernel body: the function builder plus the loop and memory helpers.
pub(super) struct Emit<'a> {
    pub(super) b: FunctionBuilder<'a>,
    /// The imported `exp` over a strided run, `(p, n, stride)`.
    pub(super) exp: FuncRef,
    /// The pointer type, also that of counts and indices (`usize` in the kernels' ABI).
    pub(super) ptr: Type,
}

impl Emit<'_> {
    /// `for i in 0..n { body(i) }`; the builder continues after the loop.
    pub(super) fn for_range(&mut self, n: Value, body: impl FnOnce(&mut Self, Value)) {
        let (header, block, exit) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let i = self.b.append_block_param(header, self.ptr);
        let zero = self.b.ins().iconst(self.ptr, 0);
        self.b.ins().jump(header, &[zero.into()]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, i, n);
        self.b.ins().brif(more, block, &[], exit, &[]);
        self.b.switch_to_block(block);
        body(self, i);
        let next = self.b.ins().iadd_imm_u(i, 1);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
    }

    /// `if cond { then } else { otherwise }`; the builder continues after both.
    pub(super) fn if_else(
        &mut self,
        cond: Value,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let (yes, no, merge) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(cond, yes, &[], no, &[]);
        self.b.switch_to_block(yes);
        then(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(no);
        otherwise(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
    }

    /// `value`, passed through a stack slot so that what is computed from it is computed
    /// here, once: Cranelift's optimiser places pure instructions at their uses and does not
    /// hoist them out of a loop that follows another one whose result they use (the earlier
    /// loop's header dominates the later loop, and its loop still counts as enclosing), so
    /// a root and divisions after a sum would run for every element of the next loop. A load
    /// stays where it is written.
    pub(super) fn settle(&mut self, value: Value) -> Value {
        let ty = self.b.func.dfg.value_type(value);
        let slot =
            self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, ty.bytes(), 0));
        self.b.ins().stack_store(self.ptr, value, slot, 0);
        self.b.ins().stack_load(self.ptr, ty, slot, 0)
    }

    /// The count 1, as a constant the optimiser folds into addresses.
    pub(super) fn unit(&mut self) -> Value {
        self.b.ins().iconst(self.ptr, 1)
    }

    /// A mutable local (an SSA variable) starting at `init`.
    pub(super) fn var(&mut self, init: Value) -> Variable {
        let ty = self.b.func.dfg.value_type(init);
        let var = self.b.declare_var(ty);
        self.b.def_var(var, init);
        var
    }

    /// `base + k * stride`: element `k` along a strided axis.
    pub(super) fn at(&mut self, base: Value, k: Value, stride: Value) -> Value {
        let offset = self.b.ins().imul(k, stride);
        self.b.ins().iadd(base, offset)
    }

    /// `base[index]`, an f32.
    pub(super) fn load(&mut self, base: Value, index: Value) -> Value {
        let address = self.address(base, index);
        self.b.ins().load(types::F32, MemFlagsData::trusted(), address, 0)
    }

    /// `base[index] = value`, an f32.
    pub(super) fn store(&mut self, base: Value, index: Value, value: Value) {
        let address = self.address(base, index);
        self.b.ins().store(MemFlagsData::trusted(), value, address, 0);
    }

    /// `base + 4 * index`: the address of f32 element `index`.
    pub(super) fn address(&mut self, base: Value, index: Value) -> Value {
        let offset = self.b.ins().ishl_imm_u(index, 2);
        self.b.ins().iadd(base, offset)
    }
}

/// Slices reduced together: each slice's sum is a chain of dependent adds (an f64 add waits
/// several cycles for the last), so interleaving the chains of `GROUP` slices keeps the adder
/// busy. Each slice still sums in its own order, so results do not change.
const GROUP: usize = 4;

impl Emit<'_> {
    /// Calls `body(e, slices)` over the slices along `n` of `[outer, n, inner]` in flat order
    /// (`o * inner + i`), [`GROUP`] at a time and then one at a time for the rest. A slice is
    /// `(index, base)`: its flat index and its first element; the others are at
    /// `base + k * inner`.
    pub(super) fn for_slices(
        &mut self,
        [outer, n, inner]: [Value; 3],
        body: impl Fn(&mut Self, &[(Value, Value)]),
    ) {
        let total = self.b.ins().imul(outer, inner);
        let span = self.b.ins().imul(n, inner);
        let zero = self.b.ins().iconst(self.ptr, 0);
        let (slab, i, index) = (self.var(zero), self.var(zero), self.var(zero));
        // The current slice, then a step to the next: `i` along `inner`, `slab` by whole
        // `[n, inner]` blocks.
        let next = |e: &mut Self| {
            let (at_slab, at_i, at) = (e.b.use_var(slab), e.b.use_var(i), e.b.use_var(index));
            let base = e.b.ins().iadd(at_slab, at_i);
            let stepped = e.b.ins().iadd_imm_u(at_i, 1);
            let wraps = e.b.ins().icmp(IntCC::Equal, stepped, inner);
            let to_i = e.b.ins().select(wraps, zero, stepped);
            let moved = e.b.ins().iadd(at_slab, span);
            let to_slab = e.b.ins().select(wraps, moved, at_slab);
            let to_index = e.b.ins().iadd_imm_u(at, 1);
            e.b.def_var(i, to_i);
            e.b.def_var(slab, to_slab);
            e.b.def_var(index, to_index);
            // Settled, or the optimiser would recompute the steps in every loop below.
            (e.settle(at), e.settle(base))
        };
        let groups = self.b.ins().udiv_imm_u(total, GROUP as i64);
        self.for_range(groups, |e, _| {
            let slices: [(Value, Value); GROUP] = std::array::from_fn(|_| next(e));
            body(e, &slices);
        });
        let rest = self.b.ins().urem_imm_u(total, GROUP as i64);
        self.for_range(rest, |e, _| {
            let slice = next(e);
            body(e, &[slice]);
        });
    }

    /// Accumulators, one per slice, each starting at `init`.
    pub(super) fn vars(&mut self, count: usize, init: Value) -> Vec<Variable> {
        (0..count).map(|_| self.var(init)).collect()
    }
}

/// `interp::reduce::rms_norm`, a [`GROUP`] of rows at a time.
pub(super) fn emit_rms_norm(e: &mut Emit, [x, w, out, rows, d, eps]: [Value; 6]) {
    let one = e.unit();
    e.for_slices([rows, d, one], |e, rows| {
        let zero = e.b.ins().f64const(0.0);
        // The interpreter's `sum::<f64>()` may start at -0.0; the first square (never -0.0)
        // makes that the same as starting at 0.0.
        let accs = e.vars(rows.len(), zero);
        e.for_range(d, |e, k| {
            for (&(_, base), &acc) in rows.iter().zip(&accs) {
                let i = e.b.ins().iadd(base, k);
                let v = e.load(x, i);
                let v = e.b.ins().fpromote(types::F64, v);
                let square = e.b.ins().fmul(v, v);
                let sum = e.b.use_var(acc);
                let sum = e.b.ins().fadd(sum, square);
                e.b.def_var(acc, sum);
            }
        });
        for (&(_, base), &acc) in rows.iter().zip(&accs) {
            let sum = e.b.use_var(acc);
            let count = e.b.ins().fcvt_from_uint(types::F64, d);
            let mean = e.b.ins().fdiv(sum, count);
            let shifted = e.b.ins().fadd(mean, eps);
            let root = e.b.ins().sqrt(shifted);
            let one = e.b.ins().f64const(1.0);
            let rinv = e.b.ins().fdiv(one, root);
            let rinv = e.b.ins().fdemote(types::F32, rinv);
            let rinv = e.settle(rinv);
            e.for_range(d, |e, k| {
                let i = e.b.ins().iadd(base, k);
                let v = e.load(x, i);
                let wk = e.load(w, k);
                let scaled = e.b.ins().fmul(v, rinv);
                let y = e.b.ins().fmul(scaled, wk);
                e.store(out, i, y);
            });
        }
    });
}

/// `interp::reduce::reduce`, a [`GROUP`] of output elements at a time (each over its inputs in
/// the same order).
pub(super) fn emit_reduce(e: &mut Emit, op: ReduceOp, [x, out, outer, n, inner]: [Value; 5]) {
    e.for_slices([outer, n, inner], |e, slices| {
        let init = match op {
            ReduceOp::Sum | ReduceOp::Mean => e.b.ins().f64const(0.0),
            ReduceOp::Max => e.b.ins().f32const(f32::NEG_INFINITY),
        };
        let accs = e.vars(slices.len(), init);
        e.for_range(n, |e, k| {
            for (&(_, base), &acc) in slices.iter().zip(&accs) {
                let at = e.at(base, k, inner);
                let s = e.load(x, at);
                let a = e.b.use_var(acc);
                let a = match op {
                    ReduceOp::Sum | ReduceOp::Mean => {
                        let s = e.b.ins().fpromote(types::F64, s);
                        e.b.ins().fadd(a, s)
                    }
                    ReduceOp::Max => {
                        // `!a.is_nan() && (s.is_nan() || s > a)`: `s > a` already fails on a
                        // NaN `a`.
                        let greater = e.b.ins().fcmp(FloatCC::GreaterThan, s, a);
                        let s_nan = e.b.ins().fcmp(FloatCC::Unordered, s, s);
                        let a_number = e.b.ins().fcmp(FloatCC::Ordered, a, a);
                        let first_nan = e.b.ins().band(s_nan, a_number);
                        let take = e.b.ins().bor(greater, first_nan);
                        e.b.ins().select(take, s, a)
                    }
                };
                e.b.def_var(acc, a);
            }
        });
        for (&(index, _), &acc) in slices.iter().zip(&accs) {
            let mut a = e.b.use_var(acc);
            if op != ReduceOp::Max {
                if op == ReduceOp::Mean {
                    let count = e.b.ins().fcvt_from_uint(types::F64, n);
                    a = e.b.ins().fdiv(a, count);
                }
                a = e.b.ins().fdemote(types::F32, a);
            }
            e.store(out, index, a);
        }
    });
}

/// The rotation, `fn(x, cos, sin, out, rows, vectors, d)`: `rows` table rows, each applied to
/// `vectors` consecutive vectors of `d`. The layout is fixed per compiled function, so the pair
/// offsets are constants in the loop.
pub(super) fn emit_rope(e: &mut Emit, layout: RopeLayout, [x, cos, sin, out, rows, vectors, d]: [Value; 7]) {
    let half = e.b.ins().ushr_imm_u(d, 1);
    e.for_range(rows, |e, r| {
        let table = e.b.ins().imul(r, half);
        let first = e.b.ins().imul(r, vectors);
        e.for_range(vectors, |e, v| {
            let vector = e.b.ins().iadd(first, v);
            let base = e.b.ins().imul(vector, d);
            e.for_range(half, |e, j| {
                let t = e.b.ins().iadd(table, j);
                let c = e.load(cos, t);
                let s = e.load(sin, t);
                let (i0, i1) = match layout {
                    RopeLayout::Interleaved => {
                        let twice = e.b.ins().ishl_imm_u(j, 1);
                        let i0 = e.b.ins().iadd(base, twice);
                        (i0, e.b.ins().iadd_imm_u(i0, 1))
                    }
                    RopeLayout::HalfSplit => {
                        let i0 = e.b.ins().iadd(base, j);
                        (i0, e.b.ins().iadd(i0, half))
                    }
                };
                let x0 = e.load(x, i0);
                let x1 = e.load(x, i1);
                let x0c = e.b.ins().fmul(x0, c);
                let x1s = e.b.ins().fmul(x1, s);
                let y0 = e.b.ins().fsub(x0c, x1s);
                let x1c = e.b.ins().fmul(x1, c);
                let x0s = e.b.ins().fmul(x0, s);
                let y1 = e.b.ins().fadd(x1c, x0s);
                e.store(out, i0, y0);
                e.store(out, i1, y1);
            });
        });
    });
}
