//! The Cranelift IR of [`RouterKernel`](super::router::RouterKernel): `router_topk` for one
//! router configuration, token after token.
//!
//! It follows `interp::moe::router_topk`, which composes softmax or sigmoid, a bias, group
//! scores, top-k masks, `where` and f64 sums: each step here computes what the op it stands for
//! computes, in the same order, so the kernel picks the same experts with the same weights, bit
//! for bit. The configuration is fixed when the kernel is compiled, so only its steps are
//! emitted; the expert count comes at run time.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use saturn_ir::{GroupScore, Router, RouterScoring};

use super::rows_ir::Emit;
use super::softmax_ir::{SoftmaxOperands, softmax_slices};

/// `fn(logits, bias, out, floats, marks, tokens, e)`: `logits` and `out` are `[tokens, e]`,
/// `bias` `[e]` (unread without one); `floats` holds `2 e + groups` and `marks` `e + groups`
/// scratch elements.
pub(super) fn emit_router(e: &mut Emit, r: &Router, has_bias: bool, args: [Value; 7]) {
    let [logits, bias, out, floats, marks, tokens, n] = args;
    let groups = if r.n_group > 1 { r.n_group as i64 } else { 0 };
    // Scratch: the scores, then the candidates (a copy only where a bias or the group mask
    // changes them), then the group scores; the chosen marks, then the kept groups.
    let scores = floats;
    let candidates = if has_bias || groups > 0 { e.address(floats, n) } else { scores };
    let twice = e.b.ins().ishl_imm_u(n, 1);
    let group_scores = e.address(floats, twice);
    let group_marks = e.b.ins().iadd(marks, n);
    e.for_range(tokens, |e, t| {
        let row = e.b.ins().imul(t, n);
        let (x, o) = (e.address(logits, row), e.address(out, row));
        match r.scoring {
            RouterScoring::Softmax => {
                let zero = e.b.ins().iconst(e.ptr, 0);
                let one = e.unit();
                let ops = SoftmaxOperands { x, out: scores, n, inner: one, contiguous: true };
                softmax_slices(e, ops, &[(zero, zero)], None);
            }
            RouterScoring::Sigmoid => {
                // `1 / (1 + exp(-x))` in f32, the exponentials of the whole row at once.
                e.for_range(n, |e, i| {
                    let v = e.load(x, i);
                    let minus = e.b.ins().fneg(v);
                    e.store(scores, i, minus);
                });
                let one = e.unit();
                e.b.ins().call(e.exp, &[scores, n, one]);
                e.for_range(n, |e, i| {
                    let ex = e.load(scores, i);
                    let one = e.b.ins().f32const(1.0);
                    let denominator = e.b.ins().fadd(one, ex);
                    let s = e.b.ins().fdiv(one, denominator);
                    e.store(scores, i, s);
                });
            }
        }
        if candidates != scores {
            e.for_range(n, |e, i| {
                let mut c = e.load(scores, i);
                if has_bias {
                    let b = e.load(bias, i);
                    c = e.b.ins().fadd(c, b);
                }
                e.store(candidates, i, c);
            });
        }
        if groups > 0 {
            let per = e.b.ins().udiv_imm_u(n, groups);
            let count = e.b.ins().iconst(e.ptr, groups);
            e.for_range(count, |e, g| {
                let first = e.b.ins().imul(g, per);
                let members = e.address(candidates, first);
                let score = match r.group_score {
                    GroupScore::Max => group_max(e, members, per),
                    GroupScore::SumTop2 => {
                        // The interpreter's `where(top2, x, 0)` summed in f64, in member order.
                        let two = e.b.ins().iconst(e.ptr, 2);
                        emit_topk(e, members, per, two, marks);
                        let zero = e.b.ins().f64const(0.0);
                        let sum = e.var(zero);
                        e.for_range(per, |e, i| {
                            let v = e.load(members, i);
                            let chosen = load_mark(e, marks, i);
                            let wide = e.b.ins().fpromote(types::F64, v);
                            let zero = e.b.ins().f64const(0.0);
                            let term = e.b.ins().select(chosen, wide, zero);
                            let s = e.b.use_var(sum);
                            let s = e.b.ins().fadd(s, term);
                            e.b.def_var(sum, s);
                        });
                        let s = e.b.use_var(sum);
                        e.b.ins().fdemote(types::F32, s)
                    }
                };
                e.store(group_scores, g, score);
            });
            let keep = e.b.ins().iconst(e.ptr, clamp(r.topk_group));
            emit_topk(e, group_scores, count, keep, group_marks);
            e.for_range(count, |e, g| {
                let kept = load_mark(e, group_marks, g);
                e.if_else(
                    kept,
                    |_| {},
                    |e| {
                        let first = e.b.ins().imul(g, per);
                        let members = e.address(candidates, first);
                        let fill = e.b.ins().f32const(r.masked_fill as f32);
                        e.for_range(per, |e, i| e.store(members, i, fill));
                    },
                );
            });
        }
        let k = e.b.ins().iconst(e.ptr, clamp(r.k));
        emit_topk(e, candidates, n, k, marks);
        let source = if r.weights_from_candidates { candidates } else { scores };
        e.for_range(n, |e, i| {
            let chosen = load_mark(e, marks, i);
            let v = e.load(source, i);
            let zero = e.b.ins().f32const(0.0);
            let w = e.b.ins().select(chosen, v, zero);
            e.store(o, i, w);
        });
        if r.normalize {
            // `w / (sum(w) + 1e-20)`: the sum in f64 rounded once, the rest in f32.
            let zero = e.b.ins().f64const(0.0);
            let sum = e.var(zero);
            e.for_range(n, |e, i| {
                let w = e.load(o, i);
                let wide = e.b.ins().fpromote(types::F64, w);
                let s = e.b.use_var(sum);
                let s = e.b.ins().fadd(s, wide);
                e.b.def_var(sum, s);
            });
            let s = e.b.use_var(sum);
            let s = e.b.ins().fdemote(types::F32, s);
            let tiny = e.b.ins().f32const(1e-20);
            let denominator = e.b.ins().fadd(s, tiny);
            let denominator = e.settle(denominator);
            e.for_range(n, |e, i| {
                let w = e.load(o, i);
                let w = e.b.ins().fdiv(w, denominator);
                e.store(o, i, w);
            });
        }
        if r.scale != 1.0 {
            e.for_range(n, |e, i| {
                let w = e.load(o, i);
                let scale = e.b.ins().f32const(r.scale as f32);
                let w = e.b.ins().fmul(w, scale);
                e.store(o, i, w);
            });
        }
    });
}

/// A count from the op as an immediate: counts beyond `i64` take everything anyway.
fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The max of `n` values with `reduce_max`'s rule: the first NaN wins, `-inf` over none.
fn group_max(e: &mut Emit, values: Value, n: Value) -> Value {
    let minus_inf = e.b.ins().f32const(f32::NEG_INFINITY);
    let acc = e.var(minus_inf);
    e.for_range(n, |e, i| {
        let v = e.load(values, i);
        let a = e.b.use_var(acc);
        // `!a.is_nan() && (v.is_nan() || v > a)`: `v > a` already fails on a NaN `a`.
        let greater = e.b.ins().fcmp(FloatCC::GreaterThan, v, a);
        let v_nan = e.b.ins().fcmp(FloatCC::Unordered, v, v);
        let a_number = e.b.ins().fcmp(FloatCC::Ordered, a, a);
        let first_nan = e.b.ins().band(v_nan, a_number);
        let take = e.b.ins().bor(greater, first_nan);
        let a = e.b.ins().select(take, v, a);
        e.b.def_var(acc, a);
    });
    e.b.use_var(acc)
}

/// Marks (1, else 0) the `k` first of `values[..n]` in the interpreter's top-k order (larger
/// first, NaN after every number, ties to the lower index), as `k` passes that each mark the
/// first of the unmarked: that order is total, so its first `k` are the interpreter's set.
fn emit_topk(e: &mut Emit, values: Value, n: Value, k: Value, marks: Value) {
    let zero = e.b.ins().iconst(types::I8, 0);
    e.for_range(n, |e, i| store_mark(e, marks, i, zero));
    let passes = e.b.ins().umin(k, n);
    e.for_range(passes, |e, _| {
        // `best == n`: nothing unmarked seen yet in this pass.
        let nan = e.b.ins().f32const(f32::NAN);
        let (best, best_value) = (e.var(n), e.var(nan));
        e.for_range(n, |e, j| {
            let at = e.b.ins().iadd(marks, j);
            let mark = e.b.ins().load(types::I8, MemFlagsData::trusted(), at, 0);
            let free = e.b.ins().icmp_imm_u(IntCC::Equal, mark, 0);
            let v = e.load(values, j);
            let (b, bv) = (e.b.use_var(best), e.b.use_var(best_value));
            let none = e.b.ins().icmp(IntCC::Equal, b, n);
            let v_number = e.b.ins().fcmp(FloatCC::Ordered, v, v);
            let bv_nan = e.b.ins().fcmp(FloatCC::Unordered, bv, bv);
            let greater = e.b.ins().fcmp(FloatCC::GreaterThan, v, bv);
            let beats = e.b.ins().bor(bv_nan, greater);
            let better = e.b.ins().band(v_number, beats);
            let wins = e.b.ins().bor(none, better);
            let take = e.b.ins().band(free, wins);
            let b = e.b.ins().select(take, j, b);
            let bv = e.b.ins().select(take, v, bv);
            e.b.def_var(best, b);
            e.b.def_var(best_value, bv);
        });
        // Each pass finds an unmarked element: there are `n - pass > 0` of them.
        let b = e.b.use_var(best);
        let one = e.b.ins().iconst(types::I8, 1);
        store_mark(e, marks, b, one);
    });
}

/// Whether `marks[i]` is set, as a condition.
fn load_mark(e: &mut Emit, marks: Value, i: Value) -> Value {
    let at = e.b.ins().iadd(marks, i);
    let mark = e.b.ins().load(types::I8, MemFlagsData::trusted(), at, 0);
    e.b.ins().icmp_imm_u(IntCC::NotEqual, mark, 0)
}

fn store_mark(e: &mut Emit, marks: Value, i: Value, mark: Value) {
    let at = e.b.ins().iadd(marks, i);
    e.b.ins().store(MemFlagsData::trusted(), mark, at, 0);
}
