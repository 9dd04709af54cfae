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
    fn at(&mut self, base: Value, k: Value, stride: Value) -> Value {
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
    fn for_slices(&mut self, [outer, n, inner]: [Value; 3], body: impl Fn(&mut Self, &[(Value, Value)])) {
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

/// `interp::reduce::softmax`, a [`GROUP`] of slices at a time. The exponentials are kept in
/// `out` (the interpreter's scratch vector) and normalized in place.
/// `contiguous`: `inner` is 1 by construction (the kernel for the last axis).
pub(super) fn emit_softmax(e: &mut Emit, [x, out, outer, n, inner]: [Value; 5], contiguous: bool) {
    let ops = SoftmaxOperands { x, out, n, inner, contiguous };
    e.for_slices([outer, n, inner], |e, slices| softmax_slices(e, ops, slices, None));
}

/// The operands of a softmax: the scores `x` and the probabilities `out`, slices of `n`
/// elements `inner` apart; `contiguous` where `inner` is 1 by construction, which lets the
/// divisions run two at a time.
#[derive(Clone, Copy)]
pub(super) struct SoftmaxOperands {
    pub(super) x: Value,
    pub(super) out: Value,
    pub(super) n: Value,
    pub(super) inner: Value,
    pub(super) contiguous: bool,
}

/// `softmax(causal_mask(x * scale))` along contiguous rows of `n` keys, `fn(x, out, rows, n, sq,
/// first, scale)`: row `r` is query `i = (first + r) % sq` of `sq`, whose first
/// `clamp(i + 1 + n - sq, 0, n)` keys are unmasked. What the three ops compute, bit for bit
/// (`x * scale` in f32, masked keys `-inf`), reading only the unmasked keys and never storing
/// the scaled or masked scores.
pub(super) fn emit_causal_softmax(e: &mut Emit, [x, out, rows, n, sq, first, scale]: [Value; 7]) {
    let one = e.unit();
    e.for_slices([rows, n, one], |e, slices| {
        let valid = slices
            .iter()
            .map(|&(row, _)| {
                let row = e.b.ins().iadd(row, first);
                let i = e.b.ins().urem(row, sq);
                let reach = e.b.ins().iadd(i, n);
                let reach = e.b.ins().iadd_imm_u(reach, 1);
                let some = e.b.ins().icmp(IntCC::UnsignedGreaterThan, reach, sq);
                let count = e.b.ins().isub(reach, sq);
                let count = e.b.ins().umin(count, n);
                let zero = e.b.ins().iconst(e.ptr, 0);
                e.b.ins().select(some, count, zero)
            })
            .collect();
        let ops = SoftmaxOperands { x, out, n, inner: one, contiguous: true };
        softmax_slices(e, ops, slices, Some(&Masked { scale, valid }));
    });
}

/// A causal mask and a scale folded into a softmax: slice `j` counts element `k` as
/// `x[k] * scale` below `valid[j]` and as `-inf` from there on.
pub(super) struct Masked {
    pub(super) scale: Value,
    pub(super) valid: Vec<Value>,
}

/// Softmax of `slices` (`(index, base)`, elements `inner` apart) of `x` into `out`, their maxima
/// found together and, where every slice is normalized, their sums too; with `masked`, of the
/// scaled and masked scores.
pub(super) fn softmax_slices(
    e: &mut Emit,
    ops: SoftmaxOperands,
    slices: &[(Value, Value)],
    masked: Option<&Masked>,
) {
    let SoftmaxOperands { x, out, n, inner, .. } = ops;
    // Each slice's count of scores to read, and how far the joint loops run.
    let counts: Vec<Value> = match masked {
        Some(m) => m.valid.clone(),
        None => vec![n; slices.len()],
    };
    let bound = match masked {
        Some(_) => counts.iter().copied().reduce(|a, b| e.b.ins().umax(a, b)).unwrap_or(n),
        None => n,
    };
    let minus_inf = e.b.ins().f32const(f32::NEG_INFINITY);
    let no = e.b.ins().iconst(types::I8, 0);
    let (maxes, nans) = (e.vars(slices.len(), minus_inf), e.vars(slices.len(), no));
    e.for_range(bound, |e, k| {
        for (((&(_, base), &max), &any_nan), &count) in slices.iter().zip(&maxes).zip(&nans).zip(&counts) {
            let at = e.at(base, k, inner);
            let mut v = e.load(x, at);
            if let Some(m) = masked {
                v = e.b.ins().fmul(v, m.scale);
                let inside = e.b.ins().icmp(IntCC::UnsignedLessThan, k, count);
                v = e.b.ins().select(inside, v, minus_inf);
            }
            // `if s > m { s } else { m }`: NaN never wins.
            let m = e.b.use_var(max);
            let wins = e.b.ins().fcmp(FloatCC::GreaterThan, v, m);
            let m = e.b.ins().select(wins, v, m);
            e.b.def_var(max, m);
            let nan = e.b.ins().fcmp(FloatCC::Unordered, v, v);
            let seen = e.b.use_var(any_nan);
            let seen = e.b.ins().bor(seen, nan);
            e.b.def_var(any_nan, seen);
        }
    });
    // Each slice's max, and whether it is normalized: some score above -inf, or a NaN.
    let heads: Vec<Head> = slices
        .iter()
        .zip(maxes.iter().zip(&nans))
        .zip(&counts)
        .map(|((&(_, base), (&max, &any_nan)), &count)| {
            let m = e.b.use_var(max);
            let seen = e.b.use_var(any_nan);
            let above = e.b.ins().fcmp(FloatCC::NotEqual, m, minus_inf);
            Head { base, max: m, count, normalize: e.b.ins().bor(above, seen) }
        })
        .collect();
    let scale = masked.map(|m| m.scale);
    let one_by_one = |e: &mut Emit| {
        for head in &heads {
            e.if_else(
                head.normalize,
                |e| normalize_slices(e, ops, std::slice::from_ref(head), scale, head.count),
                |e| {
                    // All -inf (or empty): zeros, which the interpreter's output starts as.
                    let zero = e.b.ins().f32const(0.0);
                    e.for_range(n, |e, k| {
                        let at = e.at(head.base, k, inner);
                        e.store(out, at, zero);
                    });
                },
            );
        }
    };
    if heads.len() == 1 {
        one_by_one(e);
    } else {
        let all = heads.iter().map(|h| h.normalize).reduce(|a, b| e.b.ins().band(a, b)).expect("a group");
        e.if_else(all, |e| normalize_slices(e, ops, &heads, scale, bound), one_by_one);
    }
}

/// One slice of a softmax: its first element, its max, how many of its scores are read (the
/// rest are masked), and whether it is normalized.
struct Head {
    base: Value,
    max: Value,
    count: Value,
    normalize: Value,
}

/// Softmax of slices that are normalized: the shifted scores into `out` (scaled first, with a
/// `scale`), their exponentials in place (vectorized where contiguous; bit-identical to one
/// `exp` call each), the f64 sums (one chain per slice, over `bound` steps that each slice
/// takes up to its count), then each exponential divided by its sum; masked elements beyond a
/// slice's count get what the interpreter gives an element of `-inf`.
fn normalize_slices(e: &mut Emit, ops: SoftmaxOperands, slices: &[Head], scale: Option<Value>, bound: Value) {
    let SoftmaxOperands { x, out, n, inner, contiguous } = ops;
    for head in slices {
        e.for_range(head.count, |e, k| {
            let at = e.at(head.base, k, inner);
            let mut v = e.load(x, at);
            if let Some(scale) = scale {
                v = e.b.ins().fmul(v, scale);
            }
            let shifted = e.b.ins().fsub(v, head.max);
            e.store(out, at, shifted);
        });
        let first = e.address(out, head.base);
        e.b.ins().call(e.exp, &[first, head.count, inner]);
    }
    let zero = e.b.ins().f64const(0.0);
    let sums = e.vars(slices.len(), zero);
    e.for_range(bound, |e, k| {
        for (head, &sum) in slices.iter().zip(&sums) {
            let at = e.at(head.base, k, inner);
            let ek = e.load(out, at);
            let wide = e.b.ins().fpromote(types::F64, ek);
            let s = e.b.use_var(sum);
            let mut added = e.b.ins().fadd(s, wide);
            if scale.is_some() {
                // Past its count a slice's chain waits (what is stored there is not its own).
                let inside = e.b.ins().icmp(IntCC::UnsignedLessThan, k, head.count);
                added = e.b.ins().select(inside, added, s);
            }
            e.b.def_var(sum, added);
        }
    });
    for (head, &sum) in slices.iter().zip(&sums) {
        let total = e.b.use_var(sum);
        if contiguous {
            divide_pairs(e, out, head.base, head.count, total);
        } else {
            // One at a time: a zero (a masked score) stays zero, as `0 / total` is for a
            // total that is a number (at least 1: the max's own term); a NaN total divides
            // every term.
            let total_number = e.b.ins().fcmp(FloatCC::Ordered, total, total);
            let total_number = e.settle(total_number);
            let fzero = e.b.ins().f32const(0.0);
            e.for_range(head.count, |e, k| {
                let at = e.at(head.base, k, inner);
                let ek = e.load(out, at);
                let is_zero = e.b.ins().fcmp(FloatCC::Equal, ek, fzero);
                let keep = e.b.ins().band(is_zero, total_number);
                e.if_else(
                    keep,
                    |_| {},
                    |e| {
                        let wide = e.b.ins().fpromote(types::F64, ek);
                        let p = e.b.ins().fdiv(wide, total);
                        let p = e.b.ins().fdemote(types::F32, p);
                        e.store(out, at, p);
                    },
                );
            });
        }
        if scale.is_some() {
            // A masked score is `-inf`, so its term `exp(-inf - max)` is 0 divided by the total
            // (NaN for a NaN total). A max of `-inf` makes that term NaN instead, but such a
            // slice is normalized only for a NaN score, and then the total is NaN anyway.
            let zero = e.b.ins().f64const(0.0);
            let fill = e.b.ins().fdiv(zero, total);
            let fill = e.b.ins().fdemote(types::F32, fill);
            let fill = e.settle(fill);
            let rest = e.b.ins().isub(n, head.count);
            e.for_range(rest, |e, k| {
                let k = e.b.ins().iadd(k, head.count);
                let at = e.at(head.base, k, inner);
                e.store(out, at, fill);
            });
        }
    }
}

/// `out[base + k] = (out[base + k] as f64 / total) as f32` for `k < count` (contiguous), two
/// at a time in an `f64x2` division (each lane rounded as a scalar division is), the odd last
/// one alone.
fn divide_pairs(e: &mut Emit, out: Value, base: Value, count: Value, total: Value) {
    let lanes = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let totals = e.b.ins().splat(types::F64X2, total);
    let totals = e.settle(totals);
    let pairs = e.b.ins().ushr_imm_u(count, 1);
    e.for_range(pairs, |e, j| {
        let k = e.b.ins().ishl_imm_u(j, 1);
        let at = e.b.ins().iadd(base, k);
        let address = e.address(out, at);
        let two = e.b.ins().load(types::F64, MemFlagsData::trusted(), address, 0);
        let two = e.b.ins().scalar_to_vector(types::F64X2, two);
        let two = e.b.ins().bitcast(types::F32X4, lanes, two);
        let wide = e.b.ins().fvpromote_low(two);
        let p = e.b.ins().fdiv(wide, totals);
        let p = e.b.ins().fvdemote(p);
        let p = e.b.ins().bitcast(types::F64X2, lanes, p);
        let p = e.b.ins().extractlane(p, 0);
        e.b.ins().store(MemFlagsData::trusted(), p, address, 0);
    });
    let odd = e.b.ins().band_imm_u(count, 1);
    e.for_range(odd, |e, _| {
        let last = e.b.ins().iadd(base, count);
        let last = e.b.ins().iadd_imm_s(last, -1);
        let ek = e.load(out, last);
        let wide = e.b.ins().fpromote(types::F64, ek);
        let p = e.b.ins().fdiv(wide, total);
        let p = e.b.ins().fdemote(types::F32, p);
        e.store(out, last, p);
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
