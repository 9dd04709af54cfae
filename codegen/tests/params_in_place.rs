//! Weights a param source lends in place (`ParamSource::f32_view`, as a memory-mapped checkpoint
//! does) are packed straight from there: the program computes exactly what it computes from
//! loaded copies, for a plain weight, a weight read as `b` of `matmul`, and experts stacked
//! from one key per expert (`{e}`). Sources that lend only some weights, or none, still work.

mod common;

use std::collections::HashMap;

use common::{Rng, dims, proptest_config as cfg};
use proptest::prelude::*;
use saturn_codegen::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_ir::{
    Bindings, Graph, GroupScore, NodeId, Op, ParamSource, Router, RouterScoring, SymBindings, Tensor,
    TensorType, evaluate,
};

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

/// `routing = router_topk(logits)`, `y = grouped_experts(x, routing, experts)`,
/// `z = linear(x, w)`, `p = matmul(x, b)`.
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
    let logits = f32_node(&mut g, "logits", Op::Input, &[t, e]);
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
    let b = f32_node(&mut g, "b", Op::Param { key: "b".into() }, &[h, n]);
    tensors.insert("w".into(), fill(&[n, h]));
    tensors.insert("b".into(), fill(&[h, n]));
    let router = Router {
        scoring: RouterScoring::Softmax,
        k: 2,
        n_group: 1,
        topk_group: 1,
        group_score: GroupScore::Max,
        masked_fill: 0.0,
        weights_from_candidates: false,
        normalize: false,
        scale: 1.0,
    };
    let routing = g.add("routing", Op::RouterTopK(router), &[logits], None).unwrap();
    let y = g.add("y", Op::GroupedExperts { k: 2 }, &[x, routing, gate, up, down], None).unwrap();
    let z = g.add("z", Op::Linear, &[x, w], None).unwrap();
    let p = g.add("p", Op::MatMul, &[x, b], None).unwrap();
    for (name, id) in [("y", y), ("z", z), ("p", p)] {
        g.set_output(name, id).unwrap();
    }
    Model { graph: g, tensors }
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
            ("logits".to_string(), Tensor::f32(vec![t, e], (0..t * e).map(|_| rng.unit()).collect())),
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
