//! Data movement: gather, permute, expand, slice, concat, cast.

use super::*;

/// A shape of rank 1 to 5 (a dim of 0 now and then) and a permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..=5).prop_flat_map(|r| {
        (
            vec(prop_oneof![1 => Just(0usize), 8 => 1usize..=4], r),
            Just((0..r).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

proptest! {
    #![proptest_config(cfg(48))]

    /// `gather` of rows of a table (param or input) at i64 indices of rank 0 to 2, or `[S]`
    /// under several S; exact.
    #[test]
    fn gather_matches(
        v in 1usize..=8,
        rest in vec(1usize..=4, 0..=2),
        idx_shape in vec(1usize..=4, 0..=2),
        symbolic in any::<bool>(),
        table_param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut table_shape = vec![v];
        table_shape.extend(&rest);
        let table = if table_param {
            c.param("table", &table_shape, Fill::Uniform)
        } else {
            c.input("table", &dims(&table_shape), Fill::Uniform)
        };
        let idx_dims = if symbolic { vec![Dim::sym("S")] } else { dims(&idx_shape) };
        let idx = c.input("idx", &idx_dims, Fill::Int(0, v as i64));
        let y = c.op("y", Op::Gather, &[table, idx]);
        c.out(y, true);
        c.check(&if symbolic { s_runs(&[3, 9, 1]) } else { no_symbols() })?;
    }

    /// An index outside the table is an error from `run` naming the gather (and an interpreter
    /// error), never a panic.
    #[test]
    fn gather_out_of_range_is_an_error(
        v in 1usize..=8,
        row in 1usize..=4,
        n in 1usize..=5,
        at in any::<Index>(),
        over in 0i64..3,
        negative in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let table = c.input("table", &dims(&[v, row]), Fill::Uniform);
        let idx = c.input("idx", &dims(&[n]), Fill::Int(0, v as i64));
        let y = c.op("y", Op::Gather, &[table, idx]);
        c.out(y, true);
        let table = Fill::Uniform.tensor(&mut c.rng, vec![v, row]);
        let mut bad = Fill::Int(0, v as i64).tensor(&mut c.rng, vec![n]);
        let TensorData::I64(values) = &mut bad.data else { unreachable!() };
        values[at.index(n)] = if negative { -1 - over } else { v as i64 + over };
        let inputs = vec![("table".to_string(), table), ("idx".to_string(), bad)];
        prop_assert!(interpret(&c.g, &c.params, &SymBindings::new(), &inputs).is_err());
        let mut cache = ProgramCache::new().unwrap();
        let program = CpuProgram::compile(&c.g, &c.params, &mut cache, "cache.").unwrap();
        let mut ws = Workspace::new();
        let mut carried = Carried::new(&program);
        let err = program.run(&mut ws, &mut carried, &[], &input_data(&inputs)).unwrap_err();
        prop_assert!(matches!(&err, CodegenError::Run { node, .. } if node == "y"), "{err}");
    }

    /// `permute` by any permutation of rank 1 to 5 values from any source (empty ones too);
    /// exact.
    #[test]
    fn permute_matches(
        (shape, perm) in shape_and_perm(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, src, Fill::Uniform);
        let y = c.op("y", Op::Permute { perm }, &[x]);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// `expand` stretching dims of 1 and adding leading axes, from any source; exact.
    #[test]
    fn expand_matches(
        to in vec(1usize..=4, 1..=4),
        drop in 0usize..=4,
        ones in vec(any::<bool>(), 4),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let from = broadcast_operand(&to, drop, &ones);
        let x = c.source("x", &from, src, Fill::Uniform);
        let y = c.op("y", Op::Expand { shape: dims(&to) }, &[x]);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// One or two chained `slice`s along any axis, from any source; with the axes before the
    /// first slice's set to 1 it is contiguous (an alias at an offset), else a strided copy;
    /// empty slices too; exact.
    #[test]
    fn slices_match(
        shape in vec(1usize..=5, 1..=4),
        cuts in vec((0usize..4, 0usize..6, 0usize..6), 1..=2),
        ones_before in any::<bool>(),
        src in any_source(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = shape;
        let first_axis = cuts[0].0 % shape.len();
        if ones_before {
            shape[..first_axis].fill(1);
        }
        let mut x = c.source("x", &shape, src, Fill::Uniform);
        for (i, &(axis, a, b)) in cuts.iter().enumerate() {
            let axis = axis % shape.len();
            let (a, b) = (a % (shape[axis] + 1), b % (shape[axis] + 1));
            let (start, end) = (a.min(b), a.max(b));
            x = c.op(&format!("s{i}"), Op::Slice { axis, start: start.into(), end: end.into() }, &[x]);
            shape[axis] = end - start;
        }
        c.out(x, true);
        c.check(&no_symbols())?;
    }

    /// Slices with symbolic bounds of `x [lead?, P + S, ..]`: the new rows `P..P+S` or the old
    /// ones `0..P`; without a leading axis or with a leading 1 they are aliases at a symbolic
    /// offset, else strided copies with a symbolic start; several `(S, P)` on one workspace.
    #[test]
    fn symbolic_slices_match(
        lead in 0usize..=3,
        rest in vec(1usize..=4, 0..=2),
        new_rows in any::<bool>(),
        runs in vec((1u64..=4, 0u64..=6), 1..=3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let mut shape = if lead > 0 { vec![Dim::from(lead)] } else { vec![] };
        let axis = shape.len();
        shape.push(p_plus_s());
        shape.extend(dims(&rest));
        let x = c.input("x", &shape, Fill::Uniform);
        let (start, end) =
            if new_rows { (Dim::sym("P"), p_plus_s()) } else { (Dim::from(0usize), Dim::sym("P")) };
        let y = c.op("y", Op::Slice { axis, start, end }, &[x]);
        c.out(y, true);
        c.check(&sp_runs(&runs))?;
    }

    /// `concat` of 2 or 3 operands (each from any source, some empty along the axis) along any
    /// axis; exact.
    #[test]
    fn concat_matches(
        base in vec(1usize..=4, 1..=4),
        axis in 0usize..4,
        sizes in vec(0usize..=4, 2..=3),
        srcs in vec(any_source(), 3),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let axis = axis % base.len();
        let parts: Vec<NodeId> = sizes
            .iter()
            .zip(&srcs)
            .enumerate()
            .map(|(i, (&size, &src))| {
                let mut shape = base.clone();
                shape[axis] = size;
                c.source(&format!("x{i}"), &shape, src, Fill::Uniform)
            })
            .collect();
        let y = c.op("y", Op::Concat { axis }, &parts);
        c.out(y, true);
        c.check(&no_symbols())?;
    }

    /// `cast` round trips through outputs: f32 -> i64 -> f32 (truncation), f32 -> bool -> f32,
    /// i64 -> bool, bool -> i64, f32 -> f32, i64 input -> f32; the source an input or a param
    /// (folded when the program is built); exact.
    #[test]
    fn casts_match(
        shape in vec(0usize..=4, 0..=3),
        param in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let x = c.source("x", &shape, if param { Source::Param } else { Source::Input }, Fill::Wide);
        let cast = |c: &mut Case, name: &str, dtype: DType, x: NodeId| c.op(name, Op::Cast { dtype }, &[x]);
        let i = cast(&mut c, "i", DType::I64, x);
        let b = cast(&mut c, "b", DType::Bool, x);
        let ib = cast(&mut c, "ib", DType::Bool, i);
        let bi = cast(&mut c, "bi", DType::I64, b);
        let n = c.input("n", &dims(&shape), Fill::Int(-50, 50));
        for (name, v) in [("x_i", i), ("x_b", b), ("x_i_b", ib), ("x_b_i", bi), ("x_x", x), ("n_f", n)] {
            let y = cast(&mut c, name, DType::F32, v);
            c.out(y, true);
        }
        c.check(&no_symbols())?;
    }
}
