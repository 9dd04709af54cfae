//! Elementwise chains.

use super::*;

/// A random expression over `inputs` operands that stays finite: logarithms, roots and
/// divisors only see positive values (`exp(tanh(e))` or `sigmoid(e) + 0.5`), `exp` only a
/// `tanh`.
fn safe_expr(rng: &mut Rng, inputs: usize, depth: usize) -> ElementwiseExpr {
    use ElementwiseExpr::{Binary, Const, Input, Unary};
    if depth == 0 || rng.below(4) == 0 {
        return if rng.below(5) == 0 {
            Const([0.5, -2.0, 1.5][rng.below(3)])
        } else {
            Input(rng.below(inputs))
        };
    }
    let sub = |rng: &mut Rng| Box::new(safe_expr(rng, inputs, depth - 1));
    let positive = |rng: &mut Rng, e: Box<ElementwiseExpr>| {
        Box::new(if rng.below(2) == 0 {
            Unary(UnaryOp::Exp, Box::new(Unary(UnaryOp::Tanh, e)))
        } else {
            Binary(BinaryOp::Add, Box::new(Unary(UnaryOp::Sigmoid, e)), Box::new(Const(0.5)))
        })
    };
    match rng.below(6) {
        0 => {
            let op = [UnaryOp::Neg, UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::Tanh][rng.below(4)];
            Unary(op, sub(rng))
        }
        1 | 2 => {
            let op =
                [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min][rng.below(5)];
            Binary(op, sub(rng), sub(rng))
        }
        3 => {
            let (a, b) = (sub(rng), sub(rng));
            Binary(BinaryOp::Div, a, positive(rng, b))
        }
        4 => {
            let op = [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Recip][rng.below(4)];
            let e = sub(rng);
            Unary(op, positive(rng, e))
        }
        _ => {
            let e = sub(rng);
            *positive(rng, e)
        }
    }
}

/// The inputs `e` reads, in increasing order.
fn inputs_of(e: &ElementwiseExpr, out: &mut Vec<usize>) {
    match e {
        ElementwiseExpr::Input(i) => {
            if let Err(at) = out.binary_search(i) {
                out.insert(at, *i);
            }
        }
        ElementwiseExpr::Const(_) => {}
        ElementwiseExpr::Unary(_, a) => inputs_of(a, out),
        ElementwiseExpr::Binary(_, a, b) => {
            inputs_of(a, out);
            inputs_of(b, out);
        }
    }
}

/// Adds `e` over the nodes `leaves` to the graph: each op its own node (constants as scalars),
/// except that a subtree now and then becomes one `fused_elementwise` node over the leaves it
/// reads.
fn emit(c: &mut Case, e: &ElementwiseExpr, leaves: &[NodeId]) -> NodeId {
    let mut used = Vec::new();
    inputs_of(e, &mut used);
    let compound = matches!(e, ElementwiseExpr::Unary(..) | ElementwiseExpr::Binary(..));
    if compound && !used.is_empty() && c.rng.below(3) == 0 {
        let expr = e.map_inputs(&|i| ElementwiseExpr::Input(used.binary_search(&i).unwrap()));
        let args: Vec<NodeId> = used.iter().map(|&i| leaves[i]).collect();
        let name = c.fresh("f");
        return c.op(&name, Op::FusedElementwise { expr }, &args);
    }
    match e {
        ElementwiseExpr::Input(i) => leaves[*i],
        ElementwiseExpr::Const(v) => c.scalar(*v),
        ElementwiseExpr::Unary(op, a) => {
            let a = emit(c, a, leaves);
            let name = c.fresh("u");
            c.op(&name, Op::Unary(*op), &[a])
        }
        ElementwiseExpr::Binary(op, a, b) => {
            let (a, b) = (emit(c, a, leaves), emit(c, b, leaves));
            let name = c.fresh("b");
            c.op(&name, Op::Binary(*op), &[a, b])
        }
    }
}

proptest! {
    #![proptest_config(cfg(64))]

    /// Random chains of unary and binary ops and `fused_elementwise` nodes over 1 to 3 operands
    /// (inputs or params) that broadcast together, with scalar constants (constant subchains are
    /// computed when the program is built); intermediate values are outputs now and then.
    #[test]
    fn elementwise_chains_match(
        out_shape in vec(1usize..=4, 0..=3),
        n_inputs in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let mut c = Case::new(seed);
        let rank = out_shape.len();
        let leaves: Vec<NodeId> = (0..n_inputs)
            .map(|i| {
                let keep = c.rng.below(rank + 1);
                let ones: Vec<bool> = (0..rank).map(|_| c.rng.below(3) == 0).collect();
                let shape = broadcast_operand(&out_shape, rank - keep, &ones);
                let src = if c.rng.below(3) == 0 { Source::Param } else { Source::Input };
                c.source(&format!("x{i}"), &shape, src, Fill::Uniform)
            })
            .collect();
        let e = safe_expr(&mut c.rng, n_inputs, 4);
        let y = emit(&mut c, &e, &leaves);
        c.g.set_output("y", y).unwrap();
        c.exact.insert("y".into(), false);
        let computed: Vec<NodeId> = c.g.node_ids().filter(|&id| !c.g.node(id).op.is_leaf()).collect();
        for id in computed {
            if c.rng.below(4) == 0 {
                let name = format!("o.{}", c.g.node(id).name);
                c.g.set_output(&name, id).unwrap();
                c.exact.insert(name, false);
            }
        }
        c.check(&no_symbols())?;
    }
}
