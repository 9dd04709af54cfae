//! Cranelift row kernels against the interpreter: each kernel on random shapes (empty axes,
//! `d` of 1 or 2, `outer` or `inner` of 1) and values (NaN, ±inf, slices all `-inf`), compared
//! bit for bit (any NaN meeting any NaN) with a one-node graph run by `saturn_ir::evaluate`.

mod common;

use common::Rng;

use std::collections::HashMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use saturn_codegen::{RowKernels, rope_tables};
use saturn_ir::{
    BinaryOp, Bindings, DType, Graph, NodeId, Op, ReduceOp, Rope, RopeLayout, Tensor, TensorType, Yarn,
    evaluate,
};

/// Test data of this file, drawn from the shared generator.
trait RowData {
    fn values(&mut self, len: usize) -> Vec<f32>;
    fn shape(&mut self) -> Vec<usize>;
}

impl RowData for Rng {
    /// `len` values in one of three moods: plain finite, mixed with NaN and ±inf, or mostly
    /// `-inf` (so that softmax meets slices that are all `-inf`).
    fn values(&mut self, len: usize) -> Vec<f32> {
        let mood = self.below(3);
        (0..len)
            .map(|_| match (mood, self.below(20)) {
                (1, 0) => f32::NAN,
                (1, 1) => f32::INFINITY,
                (1, 2) | (2, 0..=15) => f32::NEG_INFINITY,
                (_, 3) => 0.0,
                (_, 4) => -0.0,
                _ => (self.below(4001) as f32 - 2000.0) / 250.0,
            })
            .collect()
    }
    /// A shape of rank 1 to 4, its dims 0 to 4 (1 the most likely); one in eight is large
    /// (tens of thousands of elements), which the kernels split across threads.
    fn shape(&mut self) -> Vec<usize> {
        if self.below(8) == 0 {
            return vec![self.pick(&[1, 3, 130, 257]), self.pick(&[130, 257]), self.pick(&[1, 2])];
        }
        let rank = 1 + self.below(4);
        (0..rank).map(|_| self.pick(&[0, 1, 1, 2, 3, 4])).collect()
    }
}

/// One compiled set shared by every test (and so called from several threads).
fn kernels() -> &'static RowKernels {
    static KERNELS: OnceLock<RowKernels> = OnceLock::new();
    KERNELS.get_or_init(|| RowKernels::compile().unwrap())
}

/// The output of the one-node graph `op(inputs)`, each input a named tensor of `dtype`.
fn interpret(op: Op, inputs: Vec<(&str, DType, Tensor)>) -> Tensor {
    let mut g = Graph::new("t");
    let args: Vec<NodeId> = inputs
        .iter()
        .map(|(name, dtype, t)| {
            g.add(*name, Op::Input, &[], Some(TensorType::new(*dtype, t.shape.iter().copied()))).unwrap()
        })
        .collect();
    let y = g.add("y", op, &args, None).unwrap();
    g.set_output("y", y).unwrap();
    let params: HashMap<String, Tensor> = HashMap::new();
    let bindings = Bindings {
        symbols: Default::default(),
        inputs: inputs.into_iter().map(|(name, _, t)| (name.to_string(), t)).collect(),
        params: &params,
    };
    evaluate(&g, &bindings).unwrap().remove("y").unwrap()
}

/// `got` equals `want` bit for bit, NaN matching any NaN.
fn same(got: &[f32], want: &Tensor) -> Result<(), String> {
    let want = want.as_f32().unwrap();
    if got.len() != want.len() {
        return Err(format!("{} elements, the interpreter gives {}", got.len(), want.len()));
    }
    match got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan())) {
        Some(i) => Err(format!("element {i}: kernel {} vs interpreter {}", got[i], want[i])),
        None => Ok(()),
    }
}

/// `shape` split around `axis` into `(outer, n, inner)`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reductions_compute_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let shape = rng.shape();
        let axis = rng.below(shape.len());
        let op = rng.pick(&ReduceOp::ALL);
        let x = rng.values(shape.iter().product());
        let (outer, n, inner) = split(&shape, axis);
        let mut out = vec![0f32; outer * inner];
        kernels().reduce(op, &x, outer, n, inner, &mut out);
        let want = interpret(
            Op::Reduce { op, axis, keepdim: false },
            vec![("x", DType::F32, Tensor::f32(shape.clone(), x))],
        );
        let r = same(&out, &want);
        prop_assert!(r.is_ok(), "{} of {shape:?} along {axis}: {}", op.name(), r.unwrap_err());
    }

    #[test]
    fn softmax_computes_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let shape = rng.shape();
        let axis = rng.below(shape.len());
        let x = rng.values(shape.iter().product());
        let (outer, n, inner) = split(&shape, axis);
        // Garbage in `out`: the kernel must write every element, zeros included.
        let mut out = vec![f32::NAN; x.len()];
        kernels().softmax(&x, outer, n, inner, &mut out);
        let want = interpret(Op::Softmax { axis }, vec![("x", DType::F32, Tensor::f32(shape.clone(), x))]);
        let r = same(&out, &want);
        prop_assert!(r.is_ok(), "softmax of {shape:?} along {axis}: {}", r.unwrap_err());
    }

    #[test]
    fn rms_norm_computes_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut shape = rng.shape();
        let d = rng.pick(&[0, 1, 2, 3, 7, 16, 64, 300]);
        *shape.last_mut().unwrap() = d;
        let eps = rng.pick(&[0.0, 1e-6, 1e-5, 0.5]);
        let x = rng.values(shape.iter().product());
        let w = rng.values(d);
        let mut out = vec![f32::NAN; x.len()];
        kernels().rms_norm(&x, &w, eps, &mut out);
        let want = interpret(
            Op::RmsNorm { eps },
            vec![("x", DType::F32, Tensor::f32(shape.clone(), x)), ("w", DType::F32, Tensor::f32(vec![d], w))],
        );
        let r = same(&out, &want);
        prop_assert!(r.is_ok(), "rms_norm of {shape:?} (eps {eps}): {}", r.unwrap_err());
    }

    #[test]
    fn rope_computes_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let rows = rng.below(4);
        let d = rng.pick(&[2, 4, 6, 8, 16, 64]);
        let mut shape = vec![rows];
        shape.extend((0..rng.below(3)).map(|_| rng.pick(&[0, 1, 1, 2, 3])));
        shape.push(d);
        let yarn = Yarn { factor: 40.0, original_max_position: 4096, beta_fast: 32.0, beta_slow: 1.0 };
        let rope = Rope {
            layout: rng.pick(&[RopeLayout::Interleaved, RopeLayout::HalfSplit]),
            theta: rng.pick(&[10000.0, 1e6]),
            yarn: rng.pick(&[None, Some(yarn)]),
            attention_factor: rng.pick(&[1.0, 0.75, 1.3466]),
        };
        let positions: Vec<i64> = (0..rows)
            .map(|_| if rng.below(4) == 0 { rng.below(200_000) as i64 } else { rng.below(6000) as i64 - 3000 })
            .collect();
        let x = rng.values(shape.iter().product());
        let (mut cos, mut sin) = (vec![0f32; rows * d / 2], vec![0f32; rows * d / 2]);
        rope_tables(&rope, &saturn_ir::rope_inv_freq(&rope, d), &positions, &mut cos, &mut sin);
        let mut out = vec![f32::NAN; x.len()];
        kernels().rope(rope.layout, &x, d, &cos, &sin, &mut out);
        let want = interpret(
            Op::Rope(rope),
            vec![
                ("x", DType::F32, Tensor::f32(shape.clone(), x)),
                ("pos", DType::I64, Tensor::i64(vec![rows], positions)),
            ],
        );
        let r = same(&out, &want);
        prop_assert!(r.is_ok(), "{rope:?} of {shape:?}: {}", r.unwrap_err());
    }
}

proptest! {
    /// The causal softmax (a scale and a causal mask folded in) against the interpreter's
    /// `softmax(causal_mask(x * c))`, on values with NaN and infinities (which give NaN totals,
    /// whose masked terms are NaN too), more queries than keys included, large shapes split
    /// across threads.
    #[test]
    fn causal_softmax_computes_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (lead, sq, sk) = if rng.below(8) == 0 {
            (rng.pick(&[2, 5]), rng.pick(&[130, 200]), rng.pick(&[130, 257]))
        } else {
            (rng.pick(&[0, 1, 2, 3]), 1 + rng.below(6), 1 + rng.below(6))
        };
        let scale = rng.pick(&[1.0, 0.125, 0.1323, -2.0]);
        let shape = vec![lead, sq, sk];
        let x = rng.values(lead * sq * sk);
        let mut out = vec![f32::NAN; x.len()];
        kernels().causal_softmax(&x, (lead * sq, sk, sq), scale as f32, &mut out);
        let mut g = Graph::new("t");
        let ty = TensorType::new(DType::F32, shape.iter().copied());
        let input = g.add("x", Op::Input, &[], Some(ty)).unwrap();
        let c = g.add("c", Op::Scalar { value: scale }, &[], Some(TensorType::new(DType::F32, Vec::<usize>::new()))).unwrap();
        let scaled = g.add("scaled", Op::Binary(BinaryOp::Mul), &[input, c], None).unwrap();
        let masked = g.add("masked", Op::CausalMask, &[scaled], None).unwrap();
        let y = g.add("y", Op::Softmax { axis: 2 }, &[masked], None).unwrap();
        g.set_output("y", y).unwrap();
        let params: HashMap<String, Tensor> = HashMap::new();
        let bindings = Bindings {
            symbols: Default::default(),
            inputs: [("x".to_string(), Tensor::f32(shape.clone(), x))].into_iter().collect(),
            params: &params,
        };
        let want = evaluate(&g, &bindings).unwrap().remove("y").unwrap();
        let r = same(&out, &want);
        prop_assert!(r.is_ok(), "causal softmax of {shape:?} by {scale}: {}", r.unwrap_err());
    }
}

#[test]
fn empty_axes_give_the_identities_and_max_keeps_the_first_nan() {
    let k = kernels();
    let mut out = [1f32; 2];
    k.reduce(ReduceOp::Sum, &[], 2, 0, 1, &mut out);
    assert_eq!(out, [0.0; 2]);
    k.reduce(ReduceOp::Max, &[], 2, 0, 1, &mut out);
    assert_eq!(out, [f32::NEG_INFINITY; 2]);
    k.reduce(ReduceOp::Mean, &[], 2, 0, 1, &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
    // [2, 2] along axis 0: column 0 meets NaN after 1, column 1 keeps its max.
    k.reduce(ReduceOp::Max, &[1.0, -1.0, f32::NAN, -2.0], 1, 2, 2, &mut out);
    assert!(out[0].is_nan() && out[1] == -1.0, "{out:?}");
}

#[test]
fn row_kernels_are_send_and_sync_and_serve_many_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RowKernels>();
    // A set of its own, so that dropping it (which frees its code) is exercised too.
    let k = RowKernels::compile().unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let k = &k;
            scope.spawn(move || {
                let x = [t as f32, t as f32];
                let mut out = [0f32; 2];
                k.softmax(&x, 1, 2, 1, &mut out);
                assert_eq!(out, [0.5, 0.5]);
            });
        }
    });
    drop(k);
}
