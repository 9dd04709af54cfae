//! Matrix products and norms.

use super::*;

proptest! {
    #![proptest_config(cfg(48))]

    /// `linear` of `x [lead.., K]` and `w [N, K]`: 1 to 49 rows (the dot-product path up to 12
    /// and the GEMM path above), K of 0 and non-multiples of 16, a symbolic leading dim (run at
    /// three sizes on one workspace), the weight a param or an input, and x a param (the
    /// product computed when the program is built). N of whole strips (32, 64) has a param
    /// weight loaded packed.
    #[test]
    fn linear_matches(
        lead in vec(1usize..=7, 0..=2),
        symbolic in any::<bool>(),
        k in k_dim(),
        n in strips_or_not(),
        w_input in any::<bool>(),
        x_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let symbolic = symbolic && !lead.is_empty();
        let mut shape = lead.clone();
        shape.push(k);
        let x = if symbolic {
            let mut d = dims(&shape);
            d[0] = Dim::sym("S");
            c.input("x", &d, Fill::Uniform)
        } else if x_param {
            c.param("x", &shape, Fill::Uniform)
        } else {
            c.input("x", &dims(&shape), Fill::Uniform)
        };
        let w = if w_input {
            c.input("w", &dims(&[n, k]), Fill::Uniform)
        } else {
            c.param("w", &[n, k], Fill::Uniform)
        };
        let y = c.op("y", Op::Linear, &[x, w]);
        c.out(y, false);
        let runs = if symbolic { s_runs(&[lead[0] as u64, lead[0] as u64 + 9, 1]) } else { no_symbols() };
        c.check(&runs)?;
    }

    /// `matmul` with batch dims broadcast both ways (`[1, M, K] @ [B, K, N]`, `[B, M, K] @ [K, N]`,
    /// `[M, K] @ [B, K, N]`, `[M, K] @ [K, N]`, ...): one row (the axpy loop) and several (GEMM),
    /// K of 0, operands from any source; a constant right operand of whole strips (N of 32 or
    /// 64) is stored packed.
    #[test]
    fn matmul_matches(
        batch in vec(1usize..=3, 0..=3),
        drops in (0usize..=3, 0usize..=3),
        ones in (vec(any::<bool>(), 3), vec(any::<bool>(), 3)),
        (m, k, n) in (1usize..=20, 0usize..=20, strips_or_not()),
        srcs in (any_source(), any_source()),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut a_shape = broadcast_operand(&batch, drops.0, &ones.0);
        a_shape.extend([m, k]);
        let mut b_shape = broadcast_operand(&batch, drops.1, &ones.1);
        b_shape.extend([k, n]);
        let a = c.source("a", &a_shape, srcs.0, Fill::Uniform);
        let b = c.source("b", &b_shape, srcs.1, Fill::Uniform);
        let y = c.op("y", Op::MatMul, &[a, b]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm` over the last axis of any-rank inputs from any source, with several epsilons.
    #[test]
    fn rms_norm_matches(
        lead in vec(1usize..=5, 0..=2),
        d in 1usize..=40,
        eps in prop_oneof![Just(1e-6), Just(1e-5), Just(0.5)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(d);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let w = c.param("w", &[d], Fill::Uniform);
        let y = c.op("y", Op::RmsNorm { eps }, &[x, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm_linear` (the norm fused into the product) on 1 to 49 rows, K including 0, the
    /// weight packed or not.
    #[test]
    fn rms_norm_linear_matches(
        lead in vec(1usize..=7, 0..=2),
        k in k_dim(),
        n in strips_or_not(),
        eps in prop_oneof![Just(1e-6), Just(0.5)],
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(k);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let g = c.param("g", &[k], Fill::Uniform);
        let w = c.param("w", &[n, k], Fill::Uniform);
        let y = c.op("y", Op::RmsNormLinear { eps }, &[x, g, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `rms_norm_linear` steps in a row over the same rows and norm weight share the
    /// normalized rows (the first one's), across a kernel that uses scratch of its own
    /// (`gated_linear`); a different norm weight, eps or input normalizes anew.
    #[test]
    fn rms_norm_linear_steps_share_only_the_same_normed_rows(
        rows in 1usize..=40,
        k in k_dim(),
        (n1, n2) in (strips_or_not(), strips_or_not()),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let other = c.input("other", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let (g, g2) = (c.param("g", &[k], Fill::Uniform), c.param("g2", &[k], Fill::Uniform));
        let w1 = c.param("w1", &[n1, k], Fill::Uniform);
        let w2 = c.param("w2", &[n2, k], Fill::Uniform);
        let eps = 1e-6;
        let first = c.op("first", Op::RmsNormLinear { eps }, &[x, g, w1]);
        let between = c.op("between", Op::GatedLinear, &[other, w1, w1]);
        let shared = c.op("shared", Op::RmsNormLinear { eps }, &[x, g, w2]);
        let new_weight = c.op("new_weight", Op::RmsNormLinear { eps }, &[x, g2, w2]);
        let new_eps = c.op("new_eps", Op::RmsNormLinear { eps: 0.5 }, &[x, g2, w1]);
        let new_rows = c.op("new_rows", Op::RmsNormLinear { eps: 0.5 }, &[other, g2, w1]);
        for id in [first, between, shared, new_weight, new_eps, new_rows] {
            c.out(id, false);
        }
        c.check(&no_symbols())?;
    }

    /// Products whose weights are row slices of one param (MLA's latent and rope-key
    /// projections): each slice read only by products is stored packed, copied out of the
    /// param; a slice that something else also reads stays an alias of the param.
    #[test]
    fn products_over_slices_of_a_param_match(
        rows in 1usize..=20,
        k in k_dim(),
        (n1, n2) in (strips_or_not(), strips_or_not()),
        also_read in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &[Dim::from(rows), Dim::from(k)], Fill::Uniform);
        let g = c.param("g", &[k], Fill::Uniform);
        let w = c.param("w", &[n1 + n2, k], Fill::Uniform);
        let w1 = c.op("w1", Op::Slice { axis: 0, start: 0usize.into(), end: n1.into() }, &[w]);
        let w2 = c.op("w2", Op::Slice { axis: 0, start: n1.into(), end: (n1 + n2).into() }, &[w]);
        let first = c.op("first", Op::RmsNormLinear { eps: 1e-6 }, &[x, g, w1]);
        let second = c.op("second", Op::Linear, &[x, w2]);
        for id in [first, second] {
            c.out(id, false);
        }
        if also_read {
            let doubled = c.op("doubled", Op::Binary(BinaryOp::Add), &[w2, w2]);
            c.out(doubled, true);
        }
        c.check(&no_symbols())?;
    }

    /// `gated_linear` (`silu(x w_gate^T) * (x w_up^T)`) on 1 to 49 rows, K including 0, the
    /// weights packed or not.
    #[test]
    fn gated_linear_matches(
        lead in vec(1usize..=7, 0..=2),
        k in k_dim(),
        n in strips_or_not(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = lead.clone();
        shape.push(k);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let wg = c.param("wg", &[n, k], Fill::Uniform);
        let wu = c.param("wu", &[n, k], Fill::Uniform);
        let y = c.op("y", Op::GatedLinear, &[x, wg, wu]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }
}
