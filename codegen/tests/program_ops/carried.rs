//! Carried inputs (the KV cache).

use super::*;

/// How a carried output is made from the carried input `cache.x [P, 4]` and `new [S, 4]`.
#[derive(Clone, Copy, Debug)]
enum Carry {
    /// `concat(cache.x, new)`: an in-place append.
    Append,
    /// `concat(cache.x, 2 * new)`: an in-place append of computed rows.
    AppendComputed,
    /// `concat(new, cache.x)`: computed in the arena and copied after the run.
    Prepend,
    /// `concat(cache.x, new, new)`: three operands, copied after the run.
    AppendTwice,
}

impl Carry {
    /// Rows added per new row.
    fn growth(self) -> u64 {
        if matches!(self, Carry::AppendTwice) { 2 } else { 1 }
    }

    fn in_place(self) -> bool {
        matches!(self, Carry::Append | Carry::AppendComputed)
    }
}

/// The graph of a carried `cache.x` updated as `kind` says, with `sum`, the column sums of the
/// updated rows (which read the carried output), as a second output.
fn carried_graph(kind: Carry) -> Graph {
    let mut c = Case::new(0);
    let old = c.input("cache.x", &[Dim::sym("P"), Dim::from(4usize)], Fill::Uniform);
    let new = c.input("new", &[Dim::sym("S"), Dim::from(4usize)], Fill::Uniform);
    let cat = |c: &mut Case, args: &[NodeId]| c.op("cat", Op::Concat { axis: 0 }, args);
    let updated = match kind {
        Carry::Append => cat(&mut c, &[old, new]),
        Carry::AppendComputed => {
            let two = c.scalar(2.0);
            let doubled = c.op("doubled", Op::Binary(BinaryOp::Mul), &[new, two]);
            cat(&mut c, &[old, doubled])
        }
        Carry::Prepend => cat(&mut c, &[new, old]),
        Carry::AppendTwice => cat(&mut c, &[old, new, new]),
    };
    c.g.set_output("cache.x", updated).unwrap();
    let sum = c.op("sum", Op::Reduce { op: ReduceOp::Sum, axis: 0, keepdim: false }, &[updated]);
    c.g.set_output("sum", sum).unwrap();
    c.g
}

proptest! {
    #![proptest_config(cfg(32))]

    /// A carried input over 3-4 runs on one `Carried` (P growing from 0, S of 0 to 3): after
    /// each run the buffer holds exactly the interpreter's updated rows and other outputs match;
    /// only `concat(cache.x, new)` along axis 0 is appended in place, other forms are copied.
    #[test]
    fn carried_outputs_match(
        kind in prop_oneof![
            Just(Carry::Append),
            Just(Carry::AppendComputed),
            Just(Carry::Prepend),
            Just(Carry::AppendTwice),
        ],
        steps in vec(0u64..=3, 3..=4),
        seed in any::<u64>(),
    ) {
        let g = carried_graph(kind);
        let params = HashMap::new();
        let mut cache = ProgramCache::new().unwrap();
        let program = CpuProgram::compile(&g, &params, &mut cache, "cache.").unwrap();
        prop_assert_eq!(program.in_place_appends(), usize::from(kind.in_place()));
        prop_assert_eq!(program.carried_names().collect::<Vec<_>>(), vec!["cache.x"]);
        let mut ws = Workspace::new();
        let mut carried = Carried::new(&program);
        let mut rng = Rng::new(seed);
        let mut rows: Vec<f32> = Vec::new();
        for s in steps {
            let p = carried.rows() as u64;
            prop_assert_eq!(p as usize * 4, rows.len());
            let new = Fill::Uniform.tensor(&mut rng, vec![s as usize, 4]);
            let syms: Syms = vec![("S", s), ("P", p)];
            let bound: SymBindings = syms.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            let inputs = vec![
                ("cache.x".to_string(), Tensor::f32(vec![p as usize, 4], rows.clone())),
                ("new".to_string(), new),
            ];
            let want = interpret(&g, &params, &bound, &inputs).unwrap();
            program
                .run(&mut ws, &mut carried, &syms, &input_data(&inputs[1..]))
                .map_err(|e| fail(e.to_string()))?;
            prop_assert_eq!(carried.rows() as u64, p + kind.growth() * s);
            rows = want["cache.x"].as_f32().unwrap().to_vec();
            compare(carried.get("cache.x").unwrap(), &rows, true).map_err(fail)?;
            let (got, shape) = program.output(&ws, "sum").unwrap();
            prop_assert_eq!(shape, vec![4]);
            compare(got, want["sum"].as_f32().unwrap(), false).map_err(fail)?;
        }
    }
}

/// The plain KV-cache pattern: three runs (P = 0, 2, 3) append in place and `Carried` holds
/// every row in order; a run whose P disagrees with the rows held is an error.
#[test]
fn a_carried_cache_holds_every_appended_row() {
    let g = carried_graph(Carry::Append);
    let params = HashMap::new();
    let mut cache = ProgramCache::new().unwrap();
    let program = CpuProgram::compile(&g, &params, &mut cache, "cache.").unwrap();
    assert_eq!(program.in_place_appends(), 1);
    let mut ws = Workspace::new();
    let mut carried = Carried::new(&program);
    let mut all: Vec<f32> = Vec::new();
    let mut p = 0;
    for (step, s) in [2u64, 1, 3].into_iter().enumerate() {
        let new: Vec<f32> = (0..s * 4).map(|i| (step * 100) as f32 + i as f32).collect();
        program.run(&mut ws, &mut carried, &[("S", s), ("P", p)], &[("new", InputData::F32(&new))]).unwrap();
        all.extend(&new);
        p += s;
        assert_eq!(carried.rows() as u64, p);
        assert_eq!(carried.get("cache.x").unwrap(), &all[..]);
        let (sum, _) = program.output(&ws, "sum").unwrap();
        let want: Vec<f32> = (0..4).map(|col| all.iter().skip(col).step_by(4).sum()).collect();
        compare(sum, &want, false).unwrap();
    }
    let err =
        program.run(&mut ws, &mut carried, &[("S", 1), ("P", 2)], &[("new", InputData::F32(&[0.0; 4]))]);
    assert!(matches!(err, Err(CodegenError::Run { .. })), "{:?}", err.err());
}
