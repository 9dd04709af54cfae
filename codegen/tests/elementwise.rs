//! Cranelift elementwise kernels against the interpreter's scalar semantics
//! (`ElementwiseExpr::eval`): random expressions and values, bit-identical results.

mod common;

use common::Rng;

use proptest::prelude::*;
use saturn_codegen::compile_elementwise;
use saturn_ir::{BinaryOp, ElementwiseExpr, UnaryOp};

/// Test data of this file, drawn from the shared generator.
trait ElementwiseData {
    fn value(&mut self) -> f32;
}

impl ElementwiseData for Rng {
    fn value(&mut self) -> f32 {
        match self.below(20) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => 0.0,
            _ => (self.below(4001) as f32 - 2000.0) / 250.0,
        }
    }
}

/// A random expression over `inputs` operands, `depth` levels deep at most.
fn expr(rng: &mut Rng, inputs: usize, depth: usize) -> ElementwiseExpr {
    if depth == 0 || rng.below(4) == 0 {
        return if rng.below(5) == 0 {
            ElementwiseExpr::Const([0.5, -2.0, 1e-6, f64::NEG_INFINITY][rng.below(4)])
        } else {
            ElementwiseExpr::Input(rng.below(inputs))
        };
    }
    if rng.below(2) == 0 {
        let op = UnaryOp::ALL[rng.below(UnaryOp::ALL.len())];
        ElementwiseExpr::Unary(op, Box::new(expr(rng, inputs, depth - 1)))
    } else {
        let op = BinaryOp::ALL[rng.below(BinaryOp::ALL.len())];
        ElementwiseExpr::Binary(
            op,
            Box::new(expr(rng, inputs, depth - 1)),
            Box::new(expr(rng, inputs, depth - 1)),
        )
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn kernels_compute_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let inputs = 1 + rng.below(3);
        let e = expr(&mut rng, inputs, 4);
        let n = rng.below(40);
        let data: Vec<Vec<f32>> = (0..inputs)
            .map(|_| {
                let len = if rng.below(3) == 0 { 1 } else { n };
                (0..len).map(|_| rng.value()).collect()
            })
            .collect();
        let kernel = compile_elementwise("test", &e, inputs).unwrap();
        let mut out = vec![0f32; n];
        let shapes: Vec<[usize; 1]> = data.iter().map(|d| [d.len()]).collect();
        let operands: Vec<(&[f32], &[usize])> = data.iter().zip(&shapes).map(|(d, s)| (d.as_slice(), &s[..])).collect();
        kernel.run(&operands, &[n], &mut out).unwrap();
        for (i, got) in out.iter().enumerate() {
            let point: Vec<f32> = data.iter().map(|d| if d.len() == 1 { d[0] } else { d[i] }).collect();
            let want = e.eval(&point);
            prop_assert!(same(*got, want), "{} at {:?}: kernel {} vs interpreter {}", e, point, got, want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Broadcasting over any rank and size, against a reference that indexes each operand directly.
    #[test]
    fn broadcast_kernels_compute_what_the_interpreter_computes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let inputs = 1 + rng.below(3);
        let e = expr(&mut rng, inputs, 3);
        // One in eight is large enough (over 2^15 elements) to be split across threads.
        let out_shape: Vec<usize> = if rng.below(8) == 0 {
            vec![rng.pick(&[1, 3]), rng.pick(&[130, 257]), rng.pick(&[97, 130])]
        } else {
            (0..rng.below(4)).map(|_| 1 + rng.below(4)).collect()
        };
        let rank = out_shape.len();
        let shapes: Vec<Vec<usize>> = (0..inputs)
            .map(|_| {
                let keep = rng.below(rank + 1);
                out_shape[rank - keep..].iter().map(|&d| if rng.below(3) == 0 { 1 } else { d }).collect()
            })
            .collect();
        let data: Vec<Vec<f32>> = shapes.iter().map(|s| (0..s.iter().product::<usize>()).map(|_| rng.value()).collect()).collect();
        let kernel = compile_elementwise("test", &e, inputs).unwrap();
        let total: usize = out_shape.iter().product();
        let mut out = vec![0f32; total];
        let operands: Vec<(&[f32], &[usize])> = data.iter().zip(&shapes).map(|(d, s)| (d.as_slice(), s.as_slice())).collect();
        kernel.run(&operands, &out_shape, &mut out).unwrap();
        for (flat, got) in out.iter().enumerate() {
            // The output's multi-index, then each operand's element under broadcasting.
            let mut idx = vec![0usize; rank];
            let mut rest = flat;
            for axis in (0..rank).rev() {
                idx[axis] = rest % out_shape[axis];
                rest /= out_shape[axis];
            }
            let point: Vec<f32> = data
                .iter()
                .zip(&shapes)
                .map(|(d, s)| {
                    let off = rank - s.len();
                    let mut at = 0;
                    for (axis, &dim) in s.iter().enumerate() {
                        at = at * dim + if dim == 1 { 0 } else { idx[axis + off] };
                    }
                    d[at]
                })
                .collect();
            let want = e.eval(&point);
            prop_assert!(same(*got, want), "{} at {:?}: kernel {} vs interpreter {}", e, point, got, want);
        }
    }
}

#[test]
fn bad_calls_are_errors_naming_the_kernel() {
    let e: ElementwiseExpr = "mul(silu($0), $1)".parse().unwrap();
    let k = compile_elementwise("mlp.act", &e, 2).unwrap();
    let mut out = vec![0f32; 3];
    let err = k.run(&[(&[1.0, 2.0, 3.0], &[3])], &[3], &mut out).unwrap_err().to_string();
    assert!(err.contains("mlp.act") && err.contains("expects 2 operands"), "{err}");
    let err =
        k.run(&[(&[1.0, 2.0, 3.0], &[3]), (&[1.0, 2.0], &[2])], &[3], &mut out).unwrap_err().to_string();
    assert!(err.contains("operand 1 of shape [2] does not broadcast to [3]"), "{err}");
    let err =
        k.run(&[(&[1.0, 2.0, 3.0], &[3]), (&[1.0, 2.0], &[3])], &[3], &mut out).unwrap_err().to_string();
    assert!(err.contains("operand 1 of shape [3] does not broadcast"), "{err}");
    let err = compile_elementwise("bad", &e, 1).err().unwrap().to_string();
    assert!(err.contains("bad") && err.contains("more than 1 operands"), "{err}");
}

#[test]
fn a_swiglu_kernel_by_hand() {
    let e: ElementwiseExpr = "mul(silu($0), $1)".parse().unwrap();
    let k = compile_elementwise("swiglu", &e, 2).unwrap();
    let (gate, up) = ([0.0f32, 1.0, -2.0, 3.0], [2.0f32]);
    let mut out = [0f32; 4];
    k.run(&[(&gate, &[4]), (&up, &[1])], &[4], &mut out).unwrap();
    for (g, o) in gate.iter().zip(out) {
        assert_eq!(o, g / (1.0 + (-g).exp()) * 2.0);
    }
}
