//! Type inference: the result type of each op from its operand types, with every check the op's
//! documentation states. Messages name the operand and the mismatch; the caller adds the node.

use crate::dim::{Dim, Shape, fmt_shape, numel};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;

/// Infers the type of `op` applied to `operands`. Leaves take `declared`; for other ops a
/// `declared` type must match.
pub fn infer_type(
    op: &Op,
    operands: &[&TensorType],
    declared: Option<&TensorType>,
) -> Result<TensorType, String> {
    match op.arity() {
        Some(n) if n != operands.len() => {
            return Err(format!("expects {n} operand(s), got {}", operands.len()));
        }
        None if operands.is_empty() => return Err("expects at least one operand".into()),
        _ => {}
    }
    let inferred = infer(op, operands, declared)?;
    if let Some(d) = declared
        && *d != inferred
    {
        return Err(format!("declared type {d} but the operands give {inferred}"));
    }
    Ok(inferred)
}

fn infer(op: &Op, x: &[&TensorType], declared: Option<&TensorType>) -> Result<TensorType, String> {
    Ok(match op {
        Op::Input | Op::Param { .. } => declared.cloned().ok_or("a leaf needs a declared type")?,
        Op::Scalar { .. } => {
            let d = declared.cloned().ok_or("a scalar needs a declared type")?;
            if d.rank() != 0 {
                return Err(format!("a scalar has rank 0, declared {d}"));
            }
            d
        }
        Op::Arange { len, .. } => TensorType { dtype: DType::I64, shape: vec![len.clone()] },
        Op::Unary(_) => {
            float("operand", x[0])?;
            x[0].clone()
        }
        Op::Binary(_) => {
            same_dtype(x[0], x[1])?;
            if x[0].dtype == DType::Bool {
                return Err("arithmetic on bool operands".into());
            }
            TensorType { dtype: x[0].dtype, shape: broadcast(&[&x[0].shape, &x[1].shape])? }
        }
        Op::Where => {
            if x[0].dtype != DType::Bool {
                return Err(format!("condition must be bool, got {}", x[0]));
            }
            same_dtype(x[1], x[2])?;
            TensorType { dtype: x[1].dtype, shape: broadcast(&[&x[0].shape, &x[1].shape, &x[2].shape])? }
        }
        Op::Cast { dtype } => TensorType { dtype: *dtype, shape: x[0].shape.clone() },
        Op::Reduce { axis, keepdim, .. } => {
            float("operand", x[0])?;
            check_axis(*axis, x[0])?;
            let mut shape = x[0].shape.clone();
            if *keepdim {
                shape[*axis] = Dim::constant(1);
            } else {
                shape.remove(*axis);
            }
            TensorType { dtype: x[0].dtype, shape }
        }
        Op::Softmax { axis } => {
            float("operand", x[0])?;
            check_axis(*axis, x[0])?;
            x[0].clone()
        }
        Op::TopKMask { k } => {
            float("operand", x[0])?;
            let last = x[0].shape.last().ok_or("operand must have rank >= 1")?;
            match last.as_const() {
                Some(n) if *k <= n => {}
                Some(n) => return Err(format!("k = {k} exceeds the last axis ({n})")),
                None => return Err(format!("the last axis must be a constant, got `{last}`")),
            }
            TensorType { dtype: DType::Bool, shape: x[0].shape.clone() }
        }
        Op::RmsNorm { .. } => {
            float("input", x[0])?;
            float("weight", x[1])?;
            let d = x[0].shape.last().ok_or("input must have rank >= 1")?;
            if x[1].shape.as_slice() != std::slice::from_ref(d) {
                return Err(format!("weight {} does not match the input's last axis `{d}`", x[1]));
            }
            x[0].clone()
        }
        Op::MatMul => {
            float("lhs", x[0])?;
            same_dtype(x[0], x[1])?;
            let (a, b) = (&x[0].shape, &x[1].shape);
            if a.len() < 2 || b.len() < 2 {
                return Err(format!("operands need rank >= 2, got {} and {}", x[0], x[1]));
            }
            let (m, ka) = (&a[a.len() - 2], &a[a.len() - 1]);
            let (kb, n) = (&b[b.len() - 2], &b[b.len() - 1]);
            if ka != kb {
                return Err(format!(
                    "contraction dims differ: lhs {} has `{ka}`, rhs {} has `{kb}`",
                    x[0], x[1]
                ));
            }
            let mut shape = broadcast(&[&a[..a.len() - 2], &b[..b.len() - 2]])?;
            shape.extend([m.clone(), n.clone()]);
            TensorType { dtype: x[0].dtype, shape }
        }
        Op::Linear => linear_type(x[0], x[1])?,
        Op::Rope(_) => {
            float("input", x[0])?;
            if x[1].dtype != DType::I64 || x[1].rank() != 1 {
                return Err(format!("positions must be i64 of rank 1, got {}", x[1]));
            }
            if x[0].rank() < 2 || x[0].shape[0] != x[1].shape[0] {
                return Err(format!("input {} must be [S, ..., d] with S from positions {}", x[0], x[1]));
            }
            match x[0].shape.last().and_then(Dim::as_const) {
                Some(d) if d % 2 == 0 && d > 0 => {}
                _ => return Err(format!("the rotary (last) axis of {} must be an even constant", x[0])),
            }
            x[0].clone()
        }
        Op::CausalMask => {
            float("operand", x[0])?;
            if x[0].rank() < 2 {
                return Err(format!("operand must be [..., Sq, Sk], got {}", x[0]));
            }
            x[0].clone()
        }
        Op::Gather => {
            if x[0].rank() < 1 {
                return Err("table must have rank >= 1".into());
            }
            if x[1].dtype != DType::I64 {
                return Err(format!("indices must be i64, got {}", x[1]));
            }
            let mut shape = x[1].shape.clone();
            shape.extend(x[0].shape[1..].iter().cloned());
            TensorType { dtype: x[0].dtype, shape }
        }
        Op::Reshape { shape } => {
            let (to, from) = (numel(shape), numel(&x[0].shape));
            if to.is_none() || from.is_none() {
                return Err(format!("the element count of {} or {} overflows", x[0], fmt_shape(shape)));
            }
            if to != from {
                return Err(format!(
                    "cannot reshape {} to {}: element counts differ",
                    x[0],
                    fmt_shape(shape)
                ));
            }
            TensorType { dtype: x[0].dtype, shape: shape.clone() }
        }
        Op::Permute { perm } => {
            let mut seen = vec![false; x[0].rank()];
            if perm.len() != x[0].rank()
                || perm.iter().any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!("perm {perm:?} is not a permutation of the axes of {}", x[0]));
            }
            TensorType { dtype: x[0].dtype, shape: perm.iter().map(|&p| x[0].shape[p].clone()).collect() }
        }
        Op::Expand { shape } => {
            let from = &x[0].shape;
            let ok = shape.len() >= from.len()
                && from.iter().rev().zip(shape.iter().rev()).all(|(f, t)| f == t || f.as_const() == Some(1));
            if !ok {
                return Err(format!("cannot expand {} to {}", x[0], fmt_shape(shape)));
            }
            TensorType { dtype: x[0].dtype, shape: shape.clone() }
        }
        Op::Slice { axis, start, end } => {
            check_axis(*axis, x[0])?;
            let len = end.sub(start);
            let dim = &x[0].shape[*axis];
            if let (Some(s), Some(e)) = (start.as_const(), end.as_const())
                && (s > e || dim.as_const().is_some_and(|d| e > d))
            {
                return Err(format!("slice {start}..{end} of axis {axis} is outside {}", x[0]));
            }
            if len.constant_part() < 0 && len.is_const() {
                return Err(format!("slice {start}..{end} has negative length"));
            }
            let mut shape = x[0].shape.clone();
            shape[*axis] = len;
            TensorType { dtype: x[0].dtype, shape }
        }
        Op::FusedElementwise { expr } => {
            if let Some(i) = expr.max_input()
                && i >= x.len()
            {
                return Err(format!("the expression uses ${i} but there are {} operands", x.len()));
            }
            for t in x {
                float("operand", t)?;
                same_dtype(x[0], t)?;
            }
            let shapes: Vec<&[Dim]> = x.iter().map(|t| t.shape.as_slice()).collect();
            TensorType { dtype: x[0].dtype, shape: broadcast(&shapes)? }
        }
        Op::RmsNormLinear { .. } => {
            float("input", x[0])?;
            float("norm weight", x[1])?;
            let k = x[0].shape.last().ok_or("input must have rank >= 1")?;
            if x[1].shape.as_slice() != std::slice::from_ref(k) {
                return Err(format!("norm weight {} does not match the input's last axis `{k}`", x[1]));
            }
            linear_type(x[0], x[2])?
        }
        Op::GatedLinear => {
            let gate = linear_type(x[0], x[1])?;
            if x[2] != x[1] {
                return Err(format!("up weight {} differs from gate weight {}", x[2], x[1]));
            }
            gate
        }
        Op::RouterTopK(r) => {
            float("logits", x[0])?;
            let [t, e] = x[0].shape.as_slice() else {
                return Err(format!("logits must be [T, E], got {}", x[0]));
            };
            let experts =
                e.as_const().ok_or_else(|| format!("the expert count must be a constant, got `{e}`"))?;
            if x.len() > 2 || x.len() == 2 && x[1].shape.as_slice() != std::slice::from_ref(e) {
                return Err(format!(
                    "operands must be logits [T, E] and an optional bias [E], got {} operands",
                    x.len()
                ));
            }
            if r.n_group == 0
                || !experts.is_multiple_of(r.n_group)
                || r.topk_group == 0
                || r.topk_group > r.n_group
            {
                return Err(format!(
                    "{} groups (keeping {}) do not fit {experts} experts",
                    r.n_group, r.topk_group
                ));
            }
            if r.group_score == crate::op::GroupScore::SumTop2 && r.n_group > 1 && experts / r.n_group < 2 {
                return Err("groups scored by their top 2 need at least 2 experts each".into());
            }
            if r.k == 0 || r.k > r.topk_group * (experts / r.n_group) {
                return Err(format!("k = {} experts cannot be chosen from the kept groups", r.k));
            }
            TensorType { dtype: x[0].dtype, shape: vec![t.clone(), e.clone()] }
        }
        Op::GroupedExperts { k } => {
            if x.len() != 5 && x.len() != 8 {
                return Err(format!("expects 5 operands (8 with a shared expert), got {}", x.len()));
            }
            for (i, t) in x.iter().enumerate() {
                float(&format!("operand #{i}"), t)?;
                same_dtype(x[0], t)?;
            }
            let [tokens, h] = x[0].shape.as_slice() else {
                return Err(format!("x must be [T, H], got {}", x[0]));
            };
            let [t2, e] = x[1].shape.as_slice() else {
                return Err(format!("routing must be [T, E], got {}", x[1]));
            };
            if t2 != tokens {
                return Err(format!("routing {} does not match x {}", x[1], x[0]));
            }
            let i = match x[2].shape.as_slice() {
                [e2, i, h2] if e2 == e && h2 == h => i.clone(),
                _ => return Err(format!("w_gate must be [E, I, H] = [{e}, I, {h}], got {}", x[2])),
            };
            if x[3] != x[2] {
                return Err(format!("w_up {} differs from w_gate {}", x[3], x[2]));
            }
            if x[4].shape != [e.clone(), h.clone(), i.clone()] {
                return Err(format!("w_down must be [{e}, {h}, {i}], got {}", x[4]));
            }
            if x.len() == 8 {
                let j = match x[5].shape.as_slice() {
                    [j, h2] if h2 == h => j.clone(),
                    _ => return Err(format!("shared w_gate must be [J, {h}], got {}", x[5])),
                };
                if x[6] != x[5] || x[7].shape != [h.clone(), j.clone()] {
                    return Err(format!("shared weights {}, {}, {} do not fit", x[5], x[6], x[7]));
                }
            }
            if *k == 0 || e.as_const().is_some_and(|e| *k > e) {
                return Err(format!("k = {k} does not fit {e} experts"));
            }
            x[0].clone()
        }
        Op::MlaDecodeAttention { .. } => {
            for (i, t) in x.iter().enumerate() {
                float(&format!("operand #{i}"), t)?;
                same_dtype(x[0], t)?;
            }
            let (q, qr, lat, kpe) = (&x[0].shape, &x[1].shape, &x[2].shape, &x[3].shape);
            // Leading batch dims: whatever precedes [H, S, C], the same on every operand.
            let b = q.len().saturating_sub(3);
            let ok = q.len() >= 3
                && qr.len() == b + 3
                && lat.len() == b + 2
                && kpe.len() == b + 2
                && qr[..b] == q[..b]
                && lat[..b] == q[..b]
                && kpe[..b] == q[..b]
                && qr[b..b + 2] == q[b..b + 2]
                && lat[b + 1] == q[b + 2]
                && kpe[b] == lat[b]
                && kpe[b + 1] == qr[b + 2];
            if !ok {
                return Err(format!(
                    "operands must be q_latent [B.., H, S, C], q_rope [B.., H, S, R], latent [B.., T, C], k_pe [B.., T, R] (the same batch dims B.. on each); got {}, {}, {}, {}",
                    x[0], x[1], x[2], x[3]
                ));
            }
            x[0].clone()
        }
        Op::Concat { axis } => {
            let first = x[0];
            check_axis(*axis, first)?;
            let mut total = Dim::constant(0);
            for (i, t) in x.iter().enumerate() {
                same_dtype(first, t)?;
                let same_rest = t.rank() == first.rank()
                    && (0..first.rank()).all(|a| a == *axis || t.shape[a] == first.shape[a]);
                if !same_rest {
                    return Err(format!(
                        "operand #{i} {t} does not match operand #0 {first} off axis {axis}"
                    ));
                }
                total = total.add(&t.shape[*axis]);
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            TensorType { dtype: first.dtype, shape }
        }
    })
}

/// The type of `x w^T` for `x [..., K]`, `w [N, K]`.
fn linear_type(x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
    float("input", x)?;
    same_dtype(x, w)?;
    let k = x.shape.last().ok_or("input must have rank >= 1")?;
    if w.rank() != 2 || &w.shape[1] != k {
        return Err(format!("weight {w} must be [N, {k}] for input {x}"));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = w.shape[0].clone();
    Ok(TensorType { dtype: x.dtype, shape })
}

fn float(what: &str, t: &TensorType) -> Result<(), String> {
    if t.dtype.is_float() { Ok(()) } else { Err(format!("{what} must be a float tensor, got {t}")) }
}

fn same_dtype(a: &TensorType, b: &TensorType) -> Result<(), String> {
    if a.dtype == b.dtype { Ok(()) } else { Err(format!("dtypes differ: {a} and {b}")) }
}

fn check_axis(axis: usize, t: &TensorType) -> Result<(), String> {
    if axis < t.rank() { Ok(()) } else { Err(format!("axis {axis} is out of range for {t}")) }
}

/// Numpy broadcasting of several shapes (right-aligned; a constant 1 stretches).
pub fn broadcast(shapes: &[&[Dim]]) -> Result<Shape, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = Dim::constant(1);
        for s in shapes {
            if i + s.len() < rank {
                continue;
            }
            let e = &s[i + s.len() - rank];
            if e.as_const() == Some(1) {
                continue;
            }
            if d.as_const() == Some(1) {
                d = e.clone();
            } else if d != *e {
                let all: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                return Err(format!("shapes {} do not broadcast", all.join(" and ")));
            }
        }
        out.push(d);
    }
    Ok(out)
}
