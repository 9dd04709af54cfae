//! The softmax kernels' Cranelift IR (see [`super::rows_ir`] for the module and the loop
//! helpers): the softmax of the last axis or a strided one, and the causal softmax that folds
//! a scale and a causal mask in. Each follows `interp::reduce::softmax` (and for the causal
//! one `causal_mask` and the scale before it) so that results are bit-identical.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::Variable;

use super::rows_ir::Emit;

/// `interp::reduce::softmax`, four slices at a time (`rows_ir::GROUP`). The exponentials are kept in
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
    let scale = masked.map(|m| m.scale);
    if ops.contiguous {
        // Each slice alone over its own count, four lanes at a time: the max is the same
        // number in any order (only a tie of 0 and -0 could pick the other zero, and a score
        // minus either zero is the same, so are the probabilities), and masked scores are
        // `-inf`, which never wins.
        for ((&(_, base), (&max, &any_nan)), &count) in
            slices.iter().zip(maxes.iter().zip(&nans)).zip(&counts)
        {
            max_run(e, x, base, count, scale, (max, any_nan));
        }
    } else {
        e.for_range(bound, |e, k| {
            for (((&(_, base), &max), &any_nan), &count) in slices.iter().zip(&maxes).zip(&nans).zip(&counts)
            {
                let at = e.at(base, k, inner);
                let mut v = e.load(x, at);
                if let Some(m) = masked {
                    v = e.b.ins().fmul(v, m.scale);
                    let inside = e.b.ins().icmp(IntCC::UnsignedLessThan, k, count);
                    v = e.b.ins().select(inside, v, minus_inf);
                }
                keep_max(e, v, (max, any_nan));
            }
        });
    }
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
        let shift = |e: &mut Emit, v: Value, max: Value| {
            let v = match scale {
                Some(scale) => {
                    let scale = if e.b.func.dfg.value_type(v).is_vector() { splat(e, scale) } else { scale };
                    e.b.ins().fmul(v, scale)
                }
                None => v,
            };
            e.b.ins().fsub(v, max)
        };
        if contiguous {
            let maxes = splat(e, head.max);
            for_quads(
                e,
                (head.base, head.count),
                |e, at| {
                    let v = load_quad(e, x, at);
                    let shifted = shift(e, v, maxes);
                    store_quad(e, out, at, shifted);
                },
                |e, at| {
                    let v = e.load(x, at);
                    let shifted = shift(e, v, head.max);
                    e.store(out, at, shifted);
                },
            );
        } else {
            e.for_range(head.count, |e, k| {
                let at = e.at(head.base, k, inner);
                let v = e.load(x, at);
                let shifted = shift(e, v, head.max);
                e.store(out, at, shifted);
            });
        }
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
            // Masked scores are contiguous (`contiguous` is set for the causal kernel).
            let rest = e.b.ins().isub(n, head.count);
            let first = e.b.ins().iadd(head.base, head.count);
            let fills = splat(e, fill);
            for_quads(
                e,
                (first, rest),
                |e, at| store_quad(e, out, at, fills),
                |e, at| e.store(out, at, fill),
            );
        }
    }
}

/// `out[base + k] = (out[base + k] as f64 / total) as f32` for `k < count` (contiguous), two
/// at a time in an `f64x2` division (each lane rounded as a scalar division is), the odd last
/// one alone.
fn divide_pairs(e: &mut Emit, out: Value, base: Value, count: Value, total: Value) {
    let lanes = lane_order();
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

/// `if v > max { v } else { max }` (NaN never wins) into the variable `max`, and whether `v` is
/// NaN into `any_nan`: one step of the interpreter's max, for an f32 or lane by lane for four
/// (`any_nan` then a lane mask).
fn keep_max(e: &mut Emit, v: Value, (max, any_nan): (Variable, Variable)) {
    let m = e.b.use_var(max);
    let wins = e.b.ins().fcmp(FloatCC::GreaterThan, v, m);
    let m = if e.b.func.dfg.value_type(v).is_vector() {
        let wins = e.b.ins().bitcast(types::F32X4, lane_order(), wins);
        e.b.ins().bitselect(wins, v, m)
    } else {
        e.b.ins().select(wins, v, m)
    };
    e.b.def_var(max, m);
    let nan = e.b.ins().fcmp(FloatCC::Unordered, v, v);
    let seen = e.b.use_var(any_nan);
    let seen = e.b.ins().bor(seen, nan);
    e.b.def_var(any_nan, seen);
}

/// [`keep_max`] over the `count` contiguous scores from `base` of `x` (each times `scale`,
/// where given): four lanes, each keeping its own max the same way, and the last few scores
/// one at a time, then the lanes (the max is the same number in any order).
fn max_run(
    e: &mut Emit,
    x: Value,
    base: Value,
    count: Value,
    scale: Option<Value>,
    acc: (Variable, Variable),
) {
    let minus_inf = e.b.ins().f32const(f32::NEG_INFINITY);
    let lanes_max = splat(e, minus_inf);
    let none = e.b.ins().iconst(types::I32, 0);
    let none = e.b.ins().splat(types::I32X4, none);
    let lanes = (e.var(lanes_max), e.var(none));
    let scales = scale.map(|s| splat(e, s));
    for_quads(
        e,
        (base, count),
        |e, at| {
            let v = load_quad(e, x, at);
            let v = scales.map_or(v, |s| e.b.ins().fmul(v, s));
            keep_max(e, v, lanes);
        },
        |e, at| {
            let v = e.load(x, at);
            let v = scale.map_or(v, |s| e.b.ins().fmul(v, s));
            keep_max(e, v, acc);
        },
    );
    let m = e.b.use_var(lanes.0);
    for lane in 0..4 {
        let v = e.b.ins().extractlane(m, lane);
        keep_max(e, v, acc);
    }
    let seen = e.b.use_var(lanes.1);
    let seen = e.b.ins().vany_true(seen);
    let before = e.b.use_var(acc.1);
    let seen = e.b.ins().bor(before, seen);
    e.b.def_var(acc.1, seen);
}

/// Calls `quad(e, at)` for the contiguous elements `at = first, first + 4, ..` while four
/// remain of the `count` from `first`, then `one(e, at)` for each of the rest.
fn for_quads(
    e: &mut Emit,
    (first, count): (Value, Value),
    quad: impl FnOnce(&mut Emit, Value),
    one: impl FnOnce(&mut Emit, Value),
) {
    let quads = e.b.ins().ushr_imm_u(count, 2);
    e.for_range(quads, |e, j| {
        let k = e.b.ins().ishl_imm_u(j, 2);
        let at = e.b.ins().iadd(first, k);
        quad(e, at);
    });
    let done = e.b.ins().ishl_imm_u(quads, 2);
    let rest = e.b.ins().isub(count, done);
    let from = e.b.ins().iadd(first, done);
    e.for_range(rest, |e, t| {
        let at = e.b.ins().iadd(from, t);
        one(e, at);
    });
}

/// Four f32 lanes: `v` in each.
fn splat(e: &mut Emit, v: Value) -> Value {
    e.b.ins().splat(types::F32X4, v)
}

/// Elements `at..at + 4` of `base`, as four lanes.
fn load_quad(e: &mut Emit, base: Value, at: Value) -> Value {
    let address = e.address(base, at);
    e.b.ins().load(types::F32X4, MemFlagsData::trusted(), address, 0)
}

/// Four lanes into elements `at..at + 4` of `base`.
fn store_quad(e: &mut Emit, base: Value, at: Value, v: Value) {
    let address = e.address(base, at);
    e.b.ins().store(MemFlagsData::trusted(), v, address, 0);
}

/// The flags of a bitcast between vector types: lanes in little-endian order.
fn lane_order() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}
