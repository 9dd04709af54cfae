//! Row kernels: softmax, reductions, RoPE, masks.

use super::*;

proptest! {
    #![proptest_config(cfg(48))]

    /// `softmax` along any axis of inputs where some, most or all elements are `-inf` (rows that
    /// are all `-inf` give zeros).
    #[test]
    fn softmax_matches(
        shape in vec(1usize..=5, 1..=4),
        axis in 0usize..4,
        neg_inf in prop_oneof![Just(0.0), Just(0.3), Just(0.8), Just(1.0)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::NegInf(neg_inf));
        let y = c.op("y", Op::Softmax { axis: axis % shape.len() }, &[x]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `softmax(causal_mask(x))` along any axis, with more queries than keys too, so whole rows
    /// are masked.
    #[test]
    fn softmax_of_a_causal_mask_matches(
        b in 1usize..=3,
        sq in 1usize..=6,
        sk in 1usize..=6,
        axis in 0usize..3,
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &dims(&[b, sq, sk]), Fill::NegInf(0.0));
        let m = c.op("m", Op::CausalMask, &[x]);
        let y = c.op("y", Op::Softmax { axis }, &[m]);
        c.out(m, true);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `reduce_sum`, `reduce_mean` and `reduce_max` along any axis, with and without keepdim,
    /// some inputs holding `-inf` (max is compared exactly).
    #[test]
    fn reductions_match(
        op in prop_oneof![Just(ReduceOp::Sum), Just(ReduceOp::Mean), Just(ReduceOp::Max)],
        shape in vec(1usize..=5, 1..=4),
        axis in 0usize..4,
        keepdim in any::<bool>(),
        neg_inf in prop_oneof![Just(0.0), Just(0.2)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::NegInf(neg_inf));
        let y = c.op("y", Op::Reduce { op, axis: axis % shape.len(), keepdim }, &[x]);
        c.out(y, op == ReduceOp::Max);
        c.check(&no_symbols())?;
    }

    /// `rope` in both layouts, with and without YaRN, on `x [S, .., d]`, positions up to 5000:
    /// an i64 input of constant or symbolic length, or `arange(P, S)` (`P` mentioned only there,
    /// or also in a cache `[P, .., d]` the rotated rows are appended to, as keys are).
    #[test]
    fn rope_matches(
        interleaved in any::<bool>(),
        yarn in any::<bool>(),
        (s, mid, half) in (1usize..=5, vec(1usize..=3, 0..=2), 1usize..=16),
        theta in prop_oneof![Just(10000.0), Just(500.0)],
        attention_factor in prop_oneof![Just(1.0), Just(0.75)],
        positions in prop_oneof![
            Just(Positions::Input),
            Just(Positions::SymbolicInput),
            Just(Positions::Arange),
            Just(Positions::ArangeAppended),
        ],
        seed in any::<u64>(),
    ) {
        rope_case(interleaved, yarn, (s, &mid, half), (theta, attention_factor), positions, seed)?;
    }

    /// `causal_mask` of `x [.., S, P + S]` (queries no more than keys), compared exactly, and the
    /// softmax over its keys, under several `(S, P)` on one workspace.
    #[test]
    fn causal_mask_matches(
        lead in vec(1usize..=3, 0..=2),
        runs in vec((1u64..=5, 0u64..=6), 1..=3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = dims(&lead);
        shape.extend([Dim::sym("S"), p_plus_s()]);
        let x = c.input("x", &shape, Fill::Uniform);
        let y = c.op("y", Op::CausalMask, &[x]);
        let p = c.op("p", Op::Softmax { axis: shape.len() - 1 }, &[y]);
        c.out(y, true);
        c.out(p, false);
        c.check(&sp_runs(&runs))?;
    }

    /// `softmax(causal_mask(x * c))` (the scale a `fused_elementwise` or a `mul` by a scalar,
    /// either side, or absent), with only the softmax an output: the three run as one
    /// `causal_softmax` kernel, equal to the interpreter exactly, with queries no more than
    /// keys under several `(S, P)`, or more (whole rows masked), scores with `-inf` or large.
    #[test]
    fn a_scaled_causal_softmax_runs_as_one_kernel(
        lead in vec(1usize..=3, 0..=2),
        shape in prop_oneof![
            (1u64..=9, 0u64..=9).prop_map(|sp| Err(vec![sp, (sp.0 + 2, sp.1 / 2), (1, sp.1 + 3)])),
            (1usize..=7, 1usize..=7).prop_map(Ok),
        ],
        scale in 0usize..5,
        fill in prop_oneof![Just(Fill::Uniform), Just(Fill::NegInf(0.3)), Just(Fill::Wide)],
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut dims_x = dims(&lead);
        let runs = match &shape {
            Err(runs) => {
                dims_x.extend([Dim::sym("S"), p_plus_s()]);
                sp_runs(runs)
            }
            Ok((sq, sk)) => {
                dims_x.extend([Dim::from(*sq), Dim::from(*sk)]);
                no_symbols()
            }
        };
        let x = c.input("x", &dims_x, fill);
        let c_value = 0.125 + seed as f64 % 7.0 / 16.0;
        let scaled = match scale {
            0 => x,
            1 | 2 => {
                let (input, constant) = (ElementwiseExpr::Input(0), ElementwiseExpr::Const(c_value));
                let (a, b) = if scale == 1 { (input, constant) } else { (constant, input) };
                let expr = ElementwiseExpr::Binary(BinaryOp::Mul, Box::new(a), Box::new(b));
                c.op("scaled", Op::FusedElementwise { expr }, &[x])
            }
            _ => {
                let k = c.scalar(c_value);
                let args = if scale == 3 { [x, k] } else { [k, x] };
                c.op("scaled", Op::Binary(BinaryOp::Mul), &args)
            }
        };
        let m = c.op("m", Op::CausalMask, &[scaled]);
        let y = c.op("y", Op::Softmax { axis: dims_x.len() - 1 }, &[m]);
        c.out(y, true);
        let program = c.compile()?;
        let mut ws = Workspace::new();
        ws.enable_profile();
        for syms in &runs {
            c.run_and_compare(&program, &mut ws, syms)?;
        }
        let kinds: Vec<&str> = ws.profile().iter().map(|k| k.0).collect();
        prop_assert!(kinds == ["causal_softmax"], "kernels {kinds:?}");
    }

    /// Attention, `softmax(causal_mask(q kt * c)) v`: the scores product, which only the causal
    /// softmax reads, computes just the lower triangle (the strips each query row reaches),
    /// over runs of several lengths sharing one workspace, so a skipped entry the softmax
    /// needed would read another run's leftovers; the product with `v` sums each tile of
    /// query rows only over the keys they see. Within matmul's tolerance of the interpreter.
    #[test]
    fn the_products_around_a_causal_softmax_skip_only_its_masked_part(
        heads in 1usize..=3,
        (d, dv) in (1usize..=12, 1usize..=40),
        runs in vec((1u64..=80, 0u64..=40), 1..=3),
        scaled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let q = c.input("q", &[Dim::from(heads), Dim::sym("S"), Dim::from(d)], Fill::Uniform);
        let kt = c.input("kt", &[Dim::from(heads), Dim::from(d), p_plus_s()], Fill::Uniform);
        let scores = c.op("scores", Op::MatMul, &[q, kt]);
        let x = if scaled {
            let (input, constant) = (ElementwiseExpr::Input(0), ElementwiseExpr::Const(0.3));
            let expr = ElementwiseExpr::Binary(BinaryOp::Mul, Box::new(input), Box::new(constant));
            c.op("scaled", Op::FusedElementwise { expr }, &[scores])
        } else {
            scores
        };
        let m = c.op("m", Op::CausalMask, &[x]);
        let y = c.op("y", Op::Softmax { axis: 2 }, &[m]);
        c.out(y, false);
        let v = c.input("v", &[Dim::from(heads), p_plus_s(), Dim::from(dv)], Fill::Uniform);
        let attn = c.op("attn", Op::MatMul, &[y, v]);
        c.out(attn, false);
        let program = c.compile()?;
        let mut ws = Workspace::new();
        ws.enable_profile();
        for syms in &sp_runs(&runs) {
            c.run_and_compare(&program, &mut ws, syms)?;
        }
        let kinds: Vec<&str> = ws.profile().iter().map(|k| k.0).collect();
        prop_assert!(kinds.len() == 2 && kinds.contains(&"matmul"), "kernels {kinds:?}");
    }

    /// `where(topk_mask(x, k), a, b)` with ties and NaN in `x`, `a` and `b` broadcast (a scalar,
    /// a row, or the full shape), the mask itself compared through a cast; all exact.
    #[test]
    fn where_of_a_topk_mask_matches(
        lead in vec(1usize..=3, 0..=2),
        n in 1usize..=8,
        k in 0usize..=8,
        nan in any::<bool>(),
        small_cond in any::<bool>(),
        other in 0u8..3,
        swap in any::<bool>(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(n);
        let cond_shape = if small_cond { vec![n] } else { shape.clone() };
        let x = c.input("x", &dims(&cond_shape), if nan { Fill::Nan(0.25) } else { Fill::Ties });
        let cond = c.op("cond", Op::TopKMask { k: (k % (n + 1)) as u64 }, &[x]);
        let a = c.source("a", &shape, src, Fill::Uniform);
        let b = match other {
            0 => c.scalar(-1.5),
            1 => c.param("b", &[n], Fill::Uniform),
            _ => c.input("b", &dims(&[1, n]), Fill::Uniform),
        };
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let y = c.op("y", Op::Where, &[cond, a, b]);
        let mask = c.op("mask", Op::Cast { dtype: DType::F32 }, &[cond]);
        c.out(y, true);
        c.out(mask, true);
        c.check(&no_symbols())?;
    }
}
