//! Every node of model graphs, compiled for the CPU, against the interpreter.

use std::collections::HashMap;
use std::path::Path;

use saturn_codegen::{Carried, CpuProgram, InputData, ProgramCache, Workspace};
use saturn_frontend::{Phase, load_model, phase_graph};
use saturn_ir::{Bindings, Graph, Op, Tensor, evaluate};

/// `graph` with every non-leaf f32 node as an output (so both executors keep them).
fn all_outputs(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let taken = graph.outputs().iter().any(|(n, _)| n == &node.name);
        if !node.op.is_leaf() && node.ty.dtype == saturn_ir::DType::F32 && !taken {
            g.set_output(format!("node.{}", node.name), id).unwrap();
        }
    }
    g
}

#[test]
fn every_node_of_the_tiny_v3_prefill_matches_the_interpreter() {
    let model =
        load_model(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/deepseek-v3-tiny"))).unwrap();
    let graph = all_outputs(&phase_graph(&model.config, Phase::Prefill).unwrap());
    let weights = model.open_weights(&graph).unwrap();
    let ids = [3i64, 17, 42];
    let mut cache = ProgramCache::new().unwrap();
    let program = CpuProgram::compile(&graph, weights.as_ref(), &mut cache, "cache.").unwrap();
    let mut ws = Workspace::new();
    let mut carried = Carried::new(&program);
    program
        .run(&mut ws, &mut carried, &[("S", 3), ("P", 0)], &[("input_ids", InputData::I64(&ids))])
        .unwrap();
    let mut inputs = HashMap::from([("input_ids".to_string(), Tensor::i64(vec![3], ids.to_vec()))]);
    for (_, node) in graph.graph_inputs() {
        if node.name.starts_with("cache.") {
            let mut shape = vec![0];
            shape.extend(node.ty.shape[1..].iter().map(|d| d.as_const().unwrap() as usize));
            inputs.insert(node.name.clone(), Tensor::f32(shape, vec![]));
        }
    }
    let bindings = Bindings {
        symbols: [("S".to_string(), 3), ("P".to_string(), 0)].into(),
        inputs,
        params: weights.as_ref(),
    };
    let want = evaluate(&graph, &bindings).unwrap();
    let close = |name: &str, got: &[f32], want: &Tensor| {
        let want = want.as_f32().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{name} differs by {worst}");
    };
    // The appended caches live in the carried buffers, every other node in the arena.
    let mut compared = 0;
    for (name, _) in graph.outputs() {
        let w = &want[name];
        if let Some(cache) = name.strip_prefix("cache.").map(|_| name.as_str()) {
            close(cache, carried.get(cache).unwrap(), w);
        } else if let Some((got, shape)) = program.output(&ws, name) {
            assert_eq!(shape, w.shape.as_slice(), "{name}");
            close(name, got, w);
        } else {
            // A node output aliasing an appended cache (the same value as its `cache.` output).
            let node = graph.node(graph.outputs().iter().find(|(n, _)| n == name).unwrap().1);
            assert!(matches!(node.op, Op::Concat { axis: 0 }), "{name} has no output");
            continue;
        }
        compared += 1;
    }
    let caches = graph.outputs().iter().filter(|(n, _)| n.starts_with("cache.")).count();
    assert_eq!(compared, graph.outputs().len() - caches, "every non-aliased output was compared");
}
