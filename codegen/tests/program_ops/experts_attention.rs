//! Mixture of experts and attention.

use super::*;

prop_compose! {
    /// An expert count and a router that fits it: softmax or sigmoid scoring, 1 or more groups
    /// scored by max or top-2 sum, normalized or not, scaled or not, weights from scores or
    /// candidates, masked groups filled with 0 or `-inf`.
    fn router()(
        e in prop_oneof![1usize..=4, Just(6usize), Just(8usize), Just(12usize), Just(16usize)],
        (group, kept, k) in (any::<Index>(), any::<Index>(), any::<Index>()),
        (softmax, sum_top2, weights_from_candidates, normalize) in
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        masked_fill in prop_oneof![Just(0.0), Just(f64::NEG_INFINITY)],
        scale in prop_oneof![Just(1.0), Just(2.5)],
    ) -> (usize, Router) {
        let divisors: Vec<u64> = (1..=e as u64).filter(|&d| (e as u64).is_multiple_of(d)).collect();
        let n_group = *group.get(&divisors);
        let per = e as u64 / n_group;
        let group_score =
            if sum_top2 && (n_group == 1 || per >= 2) { GroupScore::SumTop2 } else { GroupScore::Max };
        let topk_group = 1 + kept.index(n_group as usize) as u64;
        let k = 1 + k.index((topk_group * per) as usize) as u64;
        let scoring = if softmax { RouterScoring::Softmax } else { RouterScoring::Sigmoid };
        let router = Router {
            scoring,
            k,
            n_group,
            topk_group,
            group_score,
            masked_fill,
            weights_from_candidates,
            normalize,
            scale,
        };
        (e, router)
    }
}

proptest! {
    #![proptest_config(cfg(64))]

    /// `router_topk` weights equal the interpreter's exactly, for every router kind, with or
    /// without a bias, logits plain, with ties or with `-inf`, T constant or symbolic,
    /// few tokens or enough to be routed on several threads.
    #[test]
    fn router_topk_matches(
        (e, router) in router(),
        t in prop_oneof![1usize..=5, 16usize..=40],
        bias in any::<bool>(),
        fill in 0usize..3,
        symbolic in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let rows = if symbolic { Dim::sym("S") } else { Dim::from(t) };
        let fill = [Fill::Uniform, Fill::Ties, Fill::NegInf(0.3)][fill];
        let logits = c.input("logits", &[rows, Dim::from(e)], fill);
        let mut args = vec![logits];
        if bias {
            args.push(c.param("bias", &[e], if matches!(fill, Fill::Ties) { Fill::Ties } else { Fill::Uniform }));
        }
        let y = c.op("y", Op::RouterTopK(router), &args);
        c.out(y, true);
        c.check(&if symbolic { s_runs(&[t as u64, 1, t as u64 + 3]) } else { no_symbols() })?;
    }
}

/// `grouped_experts` of `x [rows, h]` over `e` experts of width `i`, routed by a `router_topk`
/// choosing `k` (so at most `k` weights per token are non-zero; softmax scores, or normalized
/// sigmoid ones), with a shared expert of width `j` or none; weights scaled by `1 / sqrt(fan_in)`
/// so results stay of order 1, params (stored packed when the program is built) or, with
/// `weights_input`, graph inputs (packed at every run). Outputs: the routing (exact) and the
/// result.
fn experts_case(
    seed: u64,
    rows: Dim,
    (h, i, e, k): (usize, usize, usize, u64),
    shared: Option<usize>,
    sigmoid: bool,
    weights_input: bool,
) -> Case {
    let mut c = Case::new(seed);
    let x = c.input("x", &[rows.clone(), Dim::from(h)], Fill::Uniform);
    let logits = c.input("logits", &[rows, Dim::from(e)], Fill::Uniform);
    let router = Router {
        scoring: if sigmoid { RouterScoring::Sigmoid } else { RouterScoring::Softmax },
        k,
        n_group: 1,
        topk_group: 1,
        group_score: GroupScore::Max,
        masked_fill: 0.0,
        weights_from_candidates: false,
        normalize: sigmoid,
        scale: 1.0,
    };
    let routing = c.op("routing", Op::RouterTopK(router), &[logits]);
    let fan_in = |n: usize| Fill::Scaled(1.0 / (n as f32).sqrt());
    let weight = |c: &mut Case, name: &str, shape: &[usize], fan: usize| match weights_input {
        true => c.input(name, &dims(shape), fan_in(fan)),
        false => c.param(name, shape, fan_in(fan)),
    };
    let mut args = vec![
        x,
        routing,
        weight(&mut c, "w_gate", &[e, i, h], h),
        weight(&mut c, "w_up", &[e, i, h], h),
        weight(&mut c, "w_down", &[e, h, i], i),
    ];
    if let Some(j) = shared {
        args.push(weight(&mut c, "s_gate", &[j, h], h));
        args.push(weight(&mut c, "s_up", &[j, h], h));
        args.push(weight(&mut c, "s_down", &[h, j], j));
    }
    let y = c.op("y", Op::GroupedExperts { k }, &args);
    c.out(routing, true);
    c.out(y, false);
    c
}

/// `mla_decode_attention` of `h` heads over `T = P + S` latent rows of width `c_dim` (rope width
/// `r`), with leading `batch` dims: the rows an input, or the concat of cached `[.., P, ..]` and
/// new `[.., S, ..]` rows.
fn mla_case(
    seed: u64,
    batch: &[usize],
    (h, c_dim, r): (usize, usize, usize),
    scale: f64,
    from_cache: bool,
) -> Case {
    let mut c = Case::new(seed);
    let s = Dim::sym("S");
    let batched =
        |rest: &[Dim]| batch.iter().map(|&b| Dim::from(b)).chain(rest.iter().cloned()).collect::<Vec<_>>();
    let q = c.input("q_latent", &batched(&[Dim::from(h), s.clone(), Dim::from(c_dim)]), Fill::Uniform);
    let qr = c.input("q_rope", &batched(&[Dim::from(h), s.clone(), Dim::from(r)]), Fill::Uniform);
    let rows = |c: &mut Case, name: &str, width: usize| {
        if from_cache {
            let old = batched(&[Dim::sym("P"), Dim::from(width)]);
            let old = c.input(&format!("{name}.old"), &old, Fill::Uniform);
            let new =
                c.input(&format!("{name}.new"), &batched(&[s.clone(), Dim::from(width)]), Fill::Uniform);
            c.op(name, Op::Concat { axis: batch.len() }, &[old, new])
        } else {
            c.input(name, &batched(&[p_plus_s(), Dim::from(width)]), Fill::Uniform)
        }
    };
    let latent = rows(&mut c, "latent", c_dim);
    let k_pe = rows(&mut c, "k_pe", r);
    let y = c.op("y", Op::MlaDecodeAttention { scale }, &[q, qr, latent, k_pe]);
    c.out(y, false);
    c
}

proptest! {
    #![proptest_config(cfg(48))]

    /// `grouped_experts` routed by a `router_topk` (at most k experts per token), with and
    /// without the shared expert, T = 1 (the decode path) and T > 1 (up to tiles of 12 rows and
    /// beyond); with a symbolic T the same program runs both paths on one workspace. Weights
    /// that are params are packed when the program is built (zero-padded to whole strips of
    /// 32), weights that are inputs at every run.
    #[test]
    fn grouped_experts_match(
        t in prop_oneof![Just(1usize), 2usize..=6, 12usize..=14],
        (h, i, e) in (
            prop_oneof![1usize..=16, Just(32), Just(64)],
            prop_oneof![1usize..=12, Just(32), Just(64)],
            1usize..=8,
        ),
        k in any::<Index>(),
        shared in proptest::option::of(prop_oneof![1usize..=10, Just(32)]),
        sigmoid in any::<bool>(),
        symbolic in any::<bool>(),
        weights_input in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let k = 1 + k.index(e) as u64;
        let rows = if symbolic { Dim::sym("S") } else { Dim::from(t) };
        let mut c = experts_case(seed, rows, (h, i, e, k), shared, sigmoid, weights_input);
        c.check(&if symbolic { s_runs(&[t as u64, 1, t as u64 + 2]) } else { no_symbols() })?;
    }

    /// `mla_decode_attention` over `T = P + S` latent rows (an input, or the concat of cached
    /// and new rows), S = 1 and S > 1, several `(S, P)` on one workspace, with and without
    /// batch dims.
    #[test]
    fn mla_decode_attention_matches(
        batch in prop_oneof![Just(vec![]), vec(1usize..=3, 1..=2)],
        (h, c_dim, r) in (1usize..=4, 1usize..=40, 1usize..=8),
        scale in prop_oneof![Just(0.1), Just(0.35), Just(1.0)],
        runs in vec((1u64..=4, 0u64..=6), 1..=3),
        from_cache in any::<bool>(),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &batch, (h, c_dim, r), scale, from_cache).check(&sp_runs(&runs))?;
    }
}

proptest! {
    #![proptest_config(cfg(8))]

    /// `linear` above the size where products split across threads: one decode row (the
    /// dot-product path by weight rows), up to 12 rows, a block of rows, and more rows than the
    /// row blocks take (the weight packed for the call); the weight a param (stored packed) or
    /// an input; rows of 1024 (4 KiB apart: the shorter tiles of rows that alias in L1).
    #[test]
    fn large_linear_matches(
        m in prop_oneof![Just(1usize), 2usize..=12, 13usize..=40, 129usize..=140],
        (k, n) in (prop_oneof![250usize..=300, Just(1024)], prop_oneof![250usize..=300, Just(256), Just(288)]),
        w_input in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.input("x", &dims(&[m, k]), Fill::Uniform);
        let fill = Fill::Scaled(1.0 / (k as f32).sqrt());
        let w = if w_input { c.input("w", &dims(&[n, k]), fill) } else { c.param("w", &[n, k], fill) };
        let y = c.op("y", Op::Linear, &[x, w]);
        c.out(y, false);
        c.check(&no_symbols())?;
    }

    /// `grouped_experts` large enough for its parallel passes (decode: gate/up rows, then
    /// output columns; prefill: items of an expert's rows from both ends of a queue, more
    /// than 96 rows split into several), T = 1 and T > 1 on one workspace; a hidden width of
    /// 1024 gathers the tokens into rows padded apart (`packed::pad_stride`).
    #[test]
    fn large_grouped_experts_match(
        t in prop_oneof![2u64..=8, 20u64..=30, 97u64..=200],
        h in prop_oneof![Just(256usize), Just(1024)],
        shared in proptest::option::of(Just(64usize)),
        sigmoid in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = experts_case(seed, Dim::sym("S"), (h, 96, 8, 2), shared, sigmoid, false);
        c.check(&s_runs(&[1, t]))?;
    }

    /// `permute` and `concat` large enough to split across threads (along the first axis of
    /// more than one index: a leading axis of 1 moves it); from any source; exact.
    #[test]
    fn large_layout_copies_match(
        (rows, heads, width) in (100usize..=140, 16usize..=20, 24usize..=40),
        lead in any::<bool>(),
        perm in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        axis in 0usize..4,
        srcs in vec(any_source(), 2),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let shape = [usize::from(!lead) + 1, rows, heads, width];
        let x = c.source("x", &shape, srcs[0], Fill::Uniform);
        let permuted = c.op("permuted", Op::Permute { perm }, &[x]);
        c.out(permuted, true);
        let mut other = shape;
        other[axis] = 1 + other[axis] / 3;
        let more = c.source("more", &other, srcs[1], Fill::Uniform);
        let joined = c.op("joined", Op::Concat { axis }, &[x, more]);
        c.out(joined, true);
        c.check(&no_symbols())?;
    }

    /// `mla_decode_attention` large enough that its (head, query) rows split across threads:
    /// 7 heads, so that with several queries a part starts in the middle of a head's queries
    /// (each row's query decides which keys it sees).
    #[test]
    fn large_mla_decode_attention_matches(
        batch in prop_oneof![Just(vec![]), Just(vec![2])],
        runs in vec((1u64..=3, 130u64..=160), 1..=2),
        from_cache in any::<bool>(),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &batch, (7, 64, 16), 0.125, from_cache).check(&sp_runs(&runs))?;
    }

    /// `mla_decode_attention` over a cache long enough that the rows' softmaxes split across
    /// threads (16 heads over more than 1024 positions).
    #[test]
    fn long_cache_mla_decode_attention_matches(
        runs in vec((1u64..=2, 1030u64..=1100), 1..=2),
        seed in any::<u64>(),
    ) {
        mla_case(seed, &[], (16, 64, 16), 0.125, true).check(&sp_runs(&runs))?;
    }
}

proptest! {
    #![proptest_config(cfg(16))]

    /// Two programs alternate on one workspace (each keeps its own plan, resized as symbols
    /// change): every run's outputs match, and a program's outputs are gone once the other ran.
    #[test]
    fn programs_share_a_workspace(
        runs in vec((1u64..=4, 0u64..=6), 2..=4),
        from_cache in any::<bool>(),
        sigmoid in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut a = mla_case(seed, &[], (2, 8, 4), 0.3, from_cache);
        let mut b = experts_case(seed ^ 1, Dim::sym("S"), (8, 6, 4, 2), Some(3), sigmoid, true);
        let (pa, pb) = (a.compile()?, b.compile()?);
        let mut ws = Workspace::new();
        for (s, p) in runs {
            a.run_and_compare(&pa, &mut ws, &vec![("S", s), ("P", p)])?;
            b.run_and_compare(&pb, &mut ws, &vec![("S", s)])?;
            prop_assert!(pa.output(&ws, "y").is_none());
        }
    }
}
