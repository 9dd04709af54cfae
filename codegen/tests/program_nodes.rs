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
            let row: usize = node.ty.shape[1..].iter().map(|d| d.as_const().unwrap() as usize).product();
            let mut shape = vec![0];
            shape.extend(node.ty.shape[1..].iter().map(|d| d.as_const().unwrap() as usize));
            let _ = row;
            inputs.insert(node.name.clone(), Tensor::f32(shape, vec![]));
        }
    }
    let bindings = Bindings {
        symbols: [("S".to_string(), 3), ("P".to_string(), 0)].into(),
        inputs,
        params: weights.as_ref(),
    };
    let want = evaluate(&graph, &bindings).unwrap();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let Some(w) = want.get(&format!("node.{}", node.name)) else { continue };
        let Some((got, shape)) = program.output(&ws, &format!("node.{}", node.name)) else { continue };
        assert_eq!(shape, w.shape, "{}", node.name);
        let w = w.as_f32().unwrap();
        let worst = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4, "%{} = {:?}: differs by {worst}", node.name, node.op.name());
    }
    let _ = Op::Input;
}
