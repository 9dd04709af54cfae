//! Weights a param source lends in place (`ParamSource::f32_view`, as a memory-mapped checkpoint
//! does) are packed straight from there: the program computes exactly what it computes from
//! loaded copies, for a plain weight, a weight read as `b` of `matmul`, experts stacked from
//! one key per expert (`{e}`) and a weight stacked from one key per row (which is loaded).
//! Sources that lend only some weights, or none, still work.

mod common;

use std::collections::HashMap;

use common::{Rng, dims, proptest_config as cfg};
use proptest::prelude::*;
use saturn_codegen::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_ir::{Bindings, Graph, NodeId, Op, ParamSource, SymBindings, Tensor, TensorType, evaluate};

/// Tensors by key (one per expert for stacked params), lent in place when `lend` says so.
struct Source {
    tensors: HashMap<String, Tensor>,
    lend: fn(&str) -> bool,
}

impl ParamSource for Source {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let t = self.tensors.get(key).ok_or_else(|| format!("no tensor `{key}`"))?;
        if t.shape != shape {
            return Err(format!("`{key}` has shape {:?}", t.shape));
        }
        Ok(t.clone())
    }

    fn f32_view(&self, key: &str, shape: &[usize]) -> Option<&[f32]> {
        let t = self.tensors.get(key).filter(|t| (self.lend)(key) && t.shape == shape)?;
        t.as_f32()
    }
}

struct Model {
    graph: Graph,
    tensors: HashMap<String, Tensor>,
}

/// `y = grouped_experts(x, routing, experts)`, `z = linear(x, w)`, `p = matmul(x, b)`,
/// `q = linear(x, rows)` with `rows` stacked from one key per row.
fn model(rng: &mut Rng, (t, h, i, e, n): (usize, usize, usize, usize, usize)) -> Model {
    let mut g = Graph::new("lent");
    let mut tensors = HashMap::new();
    let mut fill = |shape: &[usize]| {
        Tensor::f32(shape.to_vec(), (0..shape.iter().product()).map(|_| rng.unit()).collect())
    };
    let f32_node = |g: &mut Graph, name: &str, op: Op, shape: &[usize]| -> NodeId {
        g.add(name, op, &[], Some(TensorType::new(saturn_ir::DType::F32, dims(shape)))).unwrap()
    };
    let x = f32_node(&mut g, "x", Op::Input, &[t, h]);
    let routing = f32_node(&mut g, "routing", Op::Input, &[t, e]);
    let mut stacked = |g: &mut Graph, name: &str, matrix: [usize; 2]| {
        for ex in 0..e {
            tensors.insert(format!("{name}.{ex}"), fill(&matrix));
        }
        f32_node(g, name, Op::Param { key: format!("{name}.{{e}}") }, &[e, matrix[0], matrix[1]])
    };
    let gate = stacked(&mut g, "gate", [i, h]);
    let up = stacked(&mut g, "up", [i, h]);
    let down = stacked(&mut g, "down", [h, i]);
    let w = f32_node(&mut g, "w", Op::Param { key: "w".into() }, &[n, h]);
    // A stack of rows: each matrix spans the stacked tensors, so it is loaded, not lent.
    for row in 0..n {
        tensors.insert(format!("row.{row}"), fill(&[h]));
    }
    let rows = f32_node(&mut g, "rows", Op::Param { key: "row.{e}".into() }, &[n, h]);
    let b = f32_node(&mut g, "b", Op::Param { key: "b".into() }, &[h, n]);
    tensors.insert("w".into(), fill(&[n, h]));
    tensors.insert("b".into(), fill(&[h, n]));
    let y = g.add("y", Op::GroupedExperts { k: 2 }, &[x, routing, gate, up, down], None).unwrap();
    let z = g.add("z", Op::Linear, &[x, w], None).unwrap();
    let p = g.add("p", Op::MatMul, &[x, b], None).unwrap();
    let q = g.add("q", Op::Linear, &[x, rows], None).unwrap();
    for (name, id) in [("y", y), ("z", z), ("p", p), ("q", q)] {
        g.set_output(name, id).unwrap();
    }
    Model { graph: g, tensors }
}

/// Routing weights `[t, e]`: each token to two different experts (the op's `k`), the others 0.
fn routing(rng: &mut Rng, t: usize, e: usize) -> Tensor {
    let mut w = vec![0f32; t * e];
    for row in w.chunks_exact_mut(e) {
        let first = rng.below(e);
        row[first] = rng.unit().abs();
        row[(first + 1 + rng.below(e - 1)) % e] = rng.unit().abs();
    }
    Tensor::f32(vec![t, e], w)
}

/// Every output of `graph` compiled with `source`, run on `inputs`.
fn run(graph: &Graph, source: &Source, inputs: &[(String, Tensor)]) -> Vec<(String, Vec<f32>)> {
    let mut cache = ProgramCache::new().unwrap();
    let program = CpuProgram::compile(graph, source, &mut cache, "cache.").unwrap();
    let (mut ws, mut carried) = (Workspace::new(), Carried::new(&program));
    let data: Vec<(&str, InputData)> =
        inputs.iter().map(|(name, t)| (name.as_str(), InputData::F32(t.as_f32().unwrap()))).collect();
    program.run(&mut ws, &mut carried, &[], &data).unwrap();
    graph
        .outputs()
        .iter()
        .map(|(name, _)| (name.clone(), program.output(&ws, name).unwrap().0.to_vec()))
        .collect()
}

proptest! {
    #![proptest_config(cfg(16))]

    #[test]
    fn lent_weights_give_the_same_program(
        (t, h, i, e, n) in (1usize..=20, 1usize..=40, 1usize..=40, 2usize..=6, 1usize..=70),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let Model { graph, tensors } = model(&mut rng, (t, h, i, e, n));
        let inputs = vec![
            ("x".to_string(), Tensor::f32(vec![t, h], (0..t * h).map(|_| rng.unit()).collect())),
            ("routing".to_string(), routing(&mut rng, t, e)),
        ];
        let loaded = Source { tensors, lend: |_| false };
        let want = run(&graph, &loaded, &inputs);
        let tensors = loaded.tensors;
        for lend in [(|_| true) as fn(&str) -> bool, |key| key != "up.1" && key != "b"] {
            let lent = Source { tensors: tensors.clone(), lend };
            prop_assert_eq!(&run(&graph, &lent, &inputs), &want);
        }
        // And the loaded program is the interpreter's.
        let source = Source { tensors, lend: |_| false };
        let bindings = Bindings {
            symbols: SymBindings::new(),
            inputs: inputs.iter().cloned().collect(),
            params: &source,
        };
        let interp = evaluate(&graph, &bindings).unwrap();
        for (name, got) in &want {
            let w = interp[name].as_f32().unwrap();
            let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
            prop_assert!(got.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-4 * scale), "`{}`", name);
        }
    }
}
