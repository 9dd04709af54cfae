//! One step: a kernel on resolved operand views.

use std::sync::Arc;

use saturn_ir::{ReduceOp, Rope};

use super::super::ElementwiseKernel;
use super::super::attention::{MlaOperands, MlaScratch, mla_decode_attention};
use super::super::layout::{MAX_RANK, Strided, broadcast_strides, copy_strided, gather, row_major};
use super::super::linalg::{Triangle, Weight, gated, matmul_batched, product};
use super::super::masks::{causal_mask, topk_mask};
use super::super::moe::{ExpertScratch, Mlp, grouped_experts};
use super::super::packed::{pack_matrices, packed_len};
use super::super::router::{RouterKernel, RouterScratch};
use super::super::rows::{RowKernels, rope_tables};
use super::Elem;
use super::plan::LinDim;

/// What a step runs. Operand and result kinds were checked when the program was built.
pub(super) enum Kernel {
    Elementwise(Arc<ElementwiseKernel>),
    Where,
    Cast {
        from: Elem,
        to: Elem,
    },
    Reduce {
        op: ReduceOp,
        axis: usize,
    },
    Softmax {
        axis: usize,
    },
    TopKMask {
        k: u64,
    },
    RmsNorm {
        eps: f64,
    },
    /// `packed_b`: the right operand is stored in strips (see `build::strip_plan`);
    /// `triangle`: what a causal softmax around the product lets it skip (its scores, or its
    /// probabilities as the left operand; see `build::causal_softmaxes`).
    MatMul {
        packed_b: bool,
        triangle: Triangle,
    },
    /// `packed`: the weight is stored in strips (see `build::strip_plan`).
    Linear {
        packed: bool,
    },
    /// RoPE with its inverse frequencies, computed once when the program is built.
    Rope(Rope, Vec<f32>),
    CausalMask,
    /// `softmax(causal_mask(x * scale))` along the last axis, of `x` (scale 1 where there was
    /// no multiply); see `build::causal_softmaxes`.
    CausalSoftmax {
        scale: f32,
    },
    Gather,
    Permute(Vec<usize>),
    Expand,
    Slice {
        axis: usize,
        start: LinDim,
    },
    Concat {
        axis: usize,
    },
    /// `normed_before`: the step before of this kind normalized the same rows with the same
    /// weight (see `build::share_normed_rows`), and they are still in the scratch.
    RmsNormLinear {
        eps: f64,
        packed: bool,
        normed_before: bool,
    },
    GatedLinear {
        packed: [bool; 2],
    },
    RouterTopK(Arc<RouterKernel>),
    GroupedExperts {
        k: u64,
        /// Per weight operand (operands 2 and on): whether it was packed when the program
        /// was built; the others are packed at every run.
        packed: Vec<bool>,
    },
    MlaDecodeAttention {
        scale: f64,
    },
    Arange {
        start: LinDim,
    },
    /// `concat(carried, new)` along axis 0, in place: the new rows are written after the
    /// carried ones, which are already there.
    CarriedAppend,
}

impl Kernel {
    /// The kernel's name in profiles.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Kernel::Elementwise(_) => "elementwise",
            Kernel::Where => "where",
            Kernel::Cast { .. } => "cast",
            Kernel::Reduce { .. } => "reduce",
            Kernel::Softmax { .. } => "softmax",
            Kernel::CausalSoftmax { .. } => "causal_softmax",
            Kernel::TopKMask { .. } => "topk_mask",
            Kernel::RmsNorm { .. } => "rms_norm",
            Kernel::MatMul { .. } => "matmul",
            Kernel::Linear { .. } => "linear",
            Kernel::Rope(..) => "rope",
            Kernel::CausalMask => "causal_mask",
            Kernel::Gather => "gather",
            Kernel::Permute(_) => "permute",
            Kernel::Expand => "expand",
            Kernel::Slice { .. } => "slice",
            Kernel::Concat { .. } => "concat",
            Kernel::RmsNormLinear { .. } => "rms_norm_linear",
            Kernel::GatedLinear { .. } => "gated_linear",
            Kernel::RouterTopK(_) => "router_topk",
            Kernel::GroupedExperts { .. } => "grouped_experts",
            Kernel::MlaDecodeAttention { .. } => "mla_decode_attention",
            Kernel::Arange { .. } => "arange",
            Kernel::CarriedAppend => "carried_append",
        }
    }
}

/// A value's memory and concrete shape during one step.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub(super) ptr: *mut u8,
    pub(super) elem: Elem,
    pub(super) shape: [usize; MAX_RANK],
    pub(super) rank: usize,
}

impl View {
    pub(super) fn shape(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    // SAFETY (for the accessors below): a view covers `numel` elements of its kind in memory the
    // program owns for the whole step (the plan's invariant), and no view written by a step
    // overlaps one it reads (values alive together never share memory; the in-place append
    // writes only rows after the ones it reads).
    fn f32(&self) -> &[f32] {
        unsafe { std::slice::from_raw_parts(self.ptr as *const f32, self.numel()) }
    }

    #[allow(clippy::mut_from_ref)]
    fn f32_mut(&self) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, self.numel()) }
    }

    fn i64(&self) -> &[i64] {
        unsafe { std::slice::from_raw_parts(self.ptr as *const i64, self.numel()) }
    }

    #[allow(clippy::mut_from_ref)]
    fn i64_mut(&self) -> &mut [i64] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut i64, self.numel()) }
    }

    /// A constant stored packed (`build::strip_plan`): the strips of each of its matrices
    /// `[n, k]`, `packed_len(n, k)` elements each (whole strips, zero-padded), which is what
    /// the builder allocates for it.
    fn strips(&self, (n, k): (usize, usize)) -> &[f32] {
        let matrices = self.numel().checked_div(n * k).unwrap_or(0);
        // SAFETY: the builder stores a packed constant with this many elements, and a step
        // reads it as packed only when it was stored so (`packed_values`).
        unsafe { std::slice::from_raw_parts(self.ptr as *const f32, matrices * packed_len(n, k)) }
    }

    fn u8(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.numel()) }
    }

    #[allow(clippy::mut_from_ref)]
    fn u8_mut(&self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.numel()) }
    }
}

/// Buffers kernels reuse from step to step (grown, never shrunk: no allocation per token once
/// the largest step has run).
#[derive(Default)]
pub(super) struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    idx: Vec<usize>,
    pairs: Vec<(usize, usize)>,
    router: RouterScratch,
    experts: ExpertScratch,
    /// Expert weights packed at run time (see `Kernel::GroupedExperts`), one per operand.
    packing: [Vec<f32>; 6],
    mla: MlaScratch,
    /// `rms_norm_linear`'s normalized rows, kept for the next such step on the same rows.
    normed: Vec<f32>,
}

impl Scratch {
    /// Makes room for `floats` attention scores, so runs up to a plan's capacities do not grow
    /// the buffer step by step.
    pub(super) fn reserve_scores(&mut self, floats: usize) {
        self.mla.reserve(floats);
    }
}

/// What a step may use besides its operands.
pub(super) struct Env<'a> {
    pub(super) symbols: &'a [u64],
    pub(super) rows: &'a RowKernels,
    pub(super) scratch: &'a mut Scratch,
}

/// The product of `shape[from..to]`.
fn span(shape: &[usize], from: usize, to: usize) -> usize {
    shape[from..to].iter().product()
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Runs `kernel` on `args` into `out`; an error message for value-dependent failures.
pub(super) fn exec(kernel: &Kernel, args: &[View], out: &View, env: &mut Env) -> Result<(), String> {
    let s = &mut *env.scratch;
    match kernel {
        Kernel::Elementwise(k) => {
            let mut operands: [(&[f32], &[usize]); 8] = [(&[], &[]); 8];
            if args.len() > operands.len() {
                return Err(format!("{} operands; at most 8 are supported", args.len()));
            }
            for (o, a) in operands.iter_mut().zip(args) {
                *o = (a.f32(), a.shape());
            }
            k.run(&operands[..args.len()], out.shape(), out.f32_mut()).map_err(|e| e.to_string())?;
        }
        Kernel::Where => {
            let shape = out.shape();
            let dst = out.f32_mut();
            let (c, a, b) = (args[0], args[1], args[2]);
            let strides = [
                broadcast_strides(c.shape(), shape),
                broadcast_strides(a.shape(), shape),
                broadcast_strides(b.shape(), shape),
            ];
            let (cv, av, bv) = (c.u8(), a.f32(), b.f32());
            let mut o = 0;
            for_each_index(shape, |index| {
                let at = |st: &[usize; MAX_RANK]| index.iter().zip(st).map(|(i, s)| i * s).sum::<usize>();
                dst[o] = if cv[at(&strides[0])] != 0 { av[at(&strides[1])] } else { bv[at(&strides[2])] };
                o += 1;
            });
        }
        Kernel::Cast { from, to } => cast(args[0], *from, out, *to),
        Kernel::Reduce { op, axis } => {
            let x = args[0].shape();
            let (outer, n, inner) = (span(x, 0, *axis), x[*axis], span(x, axis + 1, x.len()));
            env.rows.reduce(*op, args[0].f32(), outer, n, inner, out.f32_mut());
        }
        Kernel::Softmax { axis } => {
            let x = args[0].shape();
            let (outer, n, inner) = (span(x, 0, *axis), x[*axis], span(x, axis + 1, x.len()));
            env.rows.softmax(args[0].f32(), outer, n, inner, out.f32_mut());
        }
        Kernel::TopKMask { k } => {
            let n = *args[0].shape().last().unwrap_or(&0);
            topk_mask(args[0].f32(), n, *k, &mut s.idx, out.u8_mut());
        }
        Kernel::RmsNorm { eps } => env.rows.rms_norm(args[0].f32(), args[1].f32(), *eps, out.f32_mut()),
        Kernel::MatMul { packed_b, triangle } => matmul(args[0], args[1], (*packed_b, *triangle), out, s),
        Kernel::Linear { packed } => {
            let (k, n) = (*args[0].shape().last().unwrap_or(&0), args[1].shape()[0]);
            let m = out.numel().checked_div(n).unwrap_or(0);
            product(args[0].f32(), weight(&args[1], *packed), (m, k, n), out.f32_mut());
        }
        Kernel::Rope(rope, inv_freq) => {
            let d = *args[0].shape().last().unwrap_or(&0);
            let positions = args[1].i64();
            let half = d / 2;
            let (cos, sin) = (grow(&mut s.a, positions.len() * half), grow(&mut s.b, positions.len() * half));
            rope_tables(rope, inv_freq, positions, cos, sin);
            env.rows.rope(rope.layout, args[0].f32(), d, cos, sin, out.f32_mut());
        }
        Kernel::CausalSoftmax { scale } => {
            let x = args[0].shape();
            let r = x.len();
            let (sq, sk) = (x[r - 2], x[r - 1]);
            let rows = args[0].numel().checked_div(sk).unwrap_or(0);
            env.rows.causal_softmax(args[0].f32(), (rows, sk, sq), *scale, out.f32_mut());
        }
        Kernel::CausalMask => {
            let x = args[0].shape();
            let r = x.len();
            causal_mask(args[0].f32(), x[r - 2], x[r - 1], out.f32_mut());
        }
        Kernel::Gather => {
            let row = span(args[0].shape(), 1, args[0].rank);
            gather(args[0].f32(), row, args[1].i64(), out.f32_mut())?;
        }
        Kernel::Permute(perm) => {
            let own = row_major(args[0].shape());
            let mut strides = [0; MAX_RANK];
            for (i, &p) in perm.iter().enumerate() {
                strides[i] = own[p];
            }
            copy_view(args[0], 0, &strides, out, 0, &row_major(out.shape()));
        }
        Kernel::Expand => {
            let strides = broadcast_strides(args[0].shape(), out.shape());
            copy_view(args[0], 0, &strides, out, 0, &row_major(out.shape()));
        }
        Kernel::Slice { axis, start } => {
            let own = row_major(args[0].shape());
            let start = start.eval(env.symbols).ok_or("the slice starts at a negative index")?;
            copy_view(args[0], start * own[*axis], &own, out, 0, &row_major(out.shape()));
        }
        Kernel::Concat { axis } => {
            let dst = row_major(out.shape());
            let mut at = 0;
            for a in args {
                copy_view(*a, 0, &row_major(a.shape()), &with_shape(out, a.shape()), at * dst[*axis], &dst);
                at += a.shape()[*axis];
            }
        }
        Kernel::RmsNormLinear { eps, packed, normed_before } => {
            let x = args[0];
            let k = *x.shape().last().unwrap_or(&0);
            let normed = grow(&mut s.normed, x.numel());
            if !normed_before {
                env.rows.rms_norm(x.f32(), args[1].f32(), *eps, normed);
            }
            let n = args[2].shape()[0];
            let m = out.numel().checked_div(n).unwrap_or(0);
            product(normed, weight(&args[2], *packed), (m, k, n), out.f32_mut());
        }
        Kernel::GatedLinear { packed } => {
            let k = *args[0].shape().last().unwrap_or(&0);
            let n = args[1].shape()[0];
            let m = out.numel().checked_div(n).unwrap_or(0);
            let up = grow(&mut s.a, m * n);
            let weights = (weight(&args[1], packed[0]), weight(&args[2], packed[1]));
            gated(args[0].f32(), weights, (m, k, n), up, out.f32_mut());
        }
        Kernel::RouterTopK(r) => {
            let e = args[0].shape()[1];
            let bias = args.get(1).map(|b| b.f32());
            r.run(args[0].f32(), bias, e, &mut s.router, out.f32_mut());
        }
        Kernel::GroupedExperts { packed, .. } => experts(args, out, packed, s),
        Kernel::MlaDecodeAttention { scale } => {
            let (q, qr, lat) = (args[0].shape(), args[1].shape(), args[2].shape());
            let ops = MlaOperands {
                q_latent: args[0].f32(),
                q_rope: args[1].f32(),
                latent: args[2].f32(),
                k_pe: args[3].f32(),
            };
            // Leading batch dims, flattened.
            let nb = q.len() - 3;
            let batch = q[..nb].iter().product();
            mla_decode_attention(
                &ops,
                (batch, q[nb], q[nb + 1], q[nb + 2], qr[nb + 2], lat[nb]),
                *scale as f32,
                &mut s.mla,
                out.f32_mut(),
            );
        }
        Kernel::Arange { start } => {
            let start = start.eval(env.symbols).ok_or("the range starts at a negative index")? as i64;
            out.i64_mut().iter_mut().enumerate().for_each(|(i, v)| *v = start + i as i64);
        }
        Kernel::CarriedAppend => {
            let (old, new) = (args[0], args[1]);
            let row = span(new.shape(), 1, new.rank);
            let at = old.shape()[0] * row;
            // SAFETY: the carried buffer holds the output's rows (reserved before the run); rows
            // from `at` on are written here and not read by `old`'s view.
            let dst = unsafe { std::slice::from_raw_parts_mut((out.ptr as *mut f32).add(at), new.numel()) };
            dst.copy_from_slice(new.f32());
        }
    }
    Ok(())
}

/// `view` with another shape (same memory): a concat operand's block in the output.
fn with_shape(view: &View, shape: &[usize]) -> View {
    let mut v = *view;
    v.shape[..shape.len()].copy_from_slice(shape);
    v.rank = shape.len();
    v
}

/// A strided copy between views of one element kind; `dst` covers the written elements' span.
fn copy_view(
    src: View,
    src_offset: usize,
    src_strides: &[usize; MAX_RANK],
    dst: &View,
    dst_offset: usize,
    dst_strides: &[usize; MAX_RANK],
) {
    let shape = dst.shape();
    let r = shape.len();
    // The destination slice spans from its start to the last written element.
    let reach = |strides: &[usize; MAX_RANK], offset: usize| {
        if shape.contains(&0) {
            offset
        } else {
            offset + shape.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum::<usize>() + 1
        }
    };
    let (src_len, dst_len) = (reach(src_strides, src_offset), reach(dst_strides, dst_offset));
    /// The copy for one element type.
    ///
    /// # Safety
    /// `src` and `dst` hold `src_len` and `dst_len` elements of `T`.
    unsafe fn typed<T: Copy + Send + Sync>(
        shape: &[usize],
        (src, src_len, src_offset, src_strides): (*const u8, usize, usize, &[usize]),
        (dst, dst_len, dst_offset, dst_strides): (*mut u8, usize, usize, &[usize]),
    ) {
        // SAFETY: per the function's contract.
        let (data, out) = unsafe {
            (
                std::slice::from_raw_parts(src as *const T, src_len),
                std::slice::from_raw_parts_mut(dst as *mut T, dst_len),
            )
        };
        copy_strided(
            shape,
            Strided { data, offset: src_offset, strides: src_strides },
            out,
            dst_offset,
            dst_strides,
        );
    }
    let from = (src.ptr as *const u8, src_len, src_offset, &src_strides[..r]);
    let to = (dst.ptr, dst_len, dst_offset, &dst_strides[..r]);
    // SAFETY: both spans are inside their values (the shapes come from the verified graph), and
    // both views hold elements of `src.elem`.
    unsafe {
        match src.elem {
            Elem::F32 => typed::<f32>(shape, from, to),
            Elem::I64 => typed::<i64>(shape, from, to),
            Elem::U8 => typed::<u8>(shape, from, to),
        }
    }
}

/// Calls `f` with every index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut index = [0usize; MAX_RANK];
    let r = shape.len();
    loop {
        f(&index[..r]);
        let mut axis = r;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

fn cast(x: View, from: Elem, out: &View, to: Elem) {
    match (from, to) {
        (Elem::F32, Elem::F32) => out.f32_mut().copy_from_slice(x.f32()),
        (Elem::I64, Elem::I64) => out.i64_mut().copy_from_slice(x.i64()),
        (Elem::U8, Elem::U8) => out.u8_mut().copy_from_slice(x.u8()),
        (Elem::F32, Elem::I64) => out.i64_mut().iter_mut().zip(x.f32()).for_each(|(o, &v)| *o = v as i64),
        (Elem::F32, Elem::U8) => {
            out.u8_mut().iter_mut().zip(x.f32()).for_each(|(o, &v)| *o = u8::from(v != 0.0))
        }
        (Elem::I64, Elem::F32) => out.f32_mut().iter_mut().zip(x.i64()).for_each(|(o, &v)| *o = v as f32),
        (Elem::I64, Elem::U8) => {
            out.u8_mut().iter_mut().zip(x.i64()).for_each(|(o, &v)| *o = u8::from(v != 0))
        }
        (Elem::U8, Elem::F32) => out.f32_mut().iter_mut().zip(x.u8()).for_each(|(o, &v)| *o = f32::from(v)),
        (Elem::U8, Elem::I64) => out.i64_mut().iter_mut().zip(x.u8()).for_each(|(o, &v)| *o = i64::from(v)),
    }
}

/// A weight operand in the layout the program stored it in.
fn weight(w: &View, packed: bool) -> Weight<'_> {
    let shape = w.shape();
    let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if packed { Weight::Strips(w.strips((n, k))) } else { Weight::Rows(w.f32()) }
}

/// `a [..., m, k] @ b [..., k, n]`, batch dims broadcast to the output's.
fn matmul(a: View, b: View, (packed_b, triangle): (bool, Triangle), out: &View, s: &mut Scratch) {
    let (sa, sb, so) = (a.shape(), b.shape(), out.shape());
    let (ra, rb, ro) = (sa.len(), sb.len(), so.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let batch = &so[..ro - 2];
    let (ba, bb) = (broadcast_strides(&sa[..ra - 2], batch), broadcast_strides(&sb[..rb - 2], batch));
    // A packed `b` holds each batch's strips of `b^T`, `packed_len(n, k)` elements apart.
    let (b_data, b_block) = if packed_b { (b.strips((n, k)), packed_len(n, k)) } else { (b.f32(), k * n) };
    s.pairs.clear();
    for_each_index(batch, |index| {
        let at = |st: &[usize; MAX_RANK], block: usize| {
            index.iter().zip(st).map(|(i, s)| i * s).sum::<usize>() * block
        };
        s.pairs.push((at(&ba, m * k), at(&bb, b_block)));
    });
    matmul_batched(a.f32(), b_data, (packed_b, triangle), &s.pairs, (m, k, n), out.f32_mut());
}

/// `grouped_experts(x, routing, w_gate, w_up, w_down [, shared gate, up, down])`, each weight
/// packed already (`packed[w]` for operand `2 + w`) or packed here into scratch.
fn experts(args: &[View], out: &View, packed: &[bool], s: &mut Scratch) {
    let (x, routing) = (args[0], args[1]);
    let (t, h) = (x.shape()[0], x.shape()[1]);
    let (e, i) = (args[2].shape()[0], args[2].shape()[1]);
    // Each weight as matrices `[n, k]` (one per expert, or the shared expert's one).
    let dims = |w: &View| {
        let shape = w.shape();
        let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        (n, k, w.numel().checked_div(n * k).unwrap_or(0))
    };
    for (w, arg) in args[2..].iter().enumerate().filter(|&(w, _)| !packed[w]) {
        let (n, k, count) = dims(arg);
        s.packing[w].resize(count * packed_len(n, k), 0.0);
        pack_matrices(arg.f32(), (n, k), false, &mut s.packing[w]);
    }
    let packing = &s.packing;
    let weight = |w: usize| {
        let (n, k, _) = dims(&args[2 + w]);
        if packed[w] { args[2 + w].strips((n, k)) } else { &packing[w][..] }
    };
    let (wg, wu, wd) = (weight(0), weight(1), weight(2));
    let (up, down) = (packed_len(i, h), packed_len(h, i));
    let expert = |ex: usize| Mlp {
        gate: &wg[ex * up..(ex + 1) * up],
        up: &wu[ex * up..(ex + 1) * up],
        down: &wd[ex * down..(ex + 1) * down],
        inner: i,
    };
    let shared = (args.len() == 8).then(|| Mlp {
        gate: weight(3),
        up: weight(4),
        down: weight(5),
        inner: dims(&args[5]).0,
    });
    grouped_experts(x.f32(), routing.f32(), (t, h, e), expert, shared, &mut s.experts, out.f32_mut());
}
