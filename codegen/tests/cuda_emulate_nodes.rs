//! Every node of the tiny fixtures' optimised (h100) prefill and decode graphs, generated as
//! CUDA kernels and run on the CPU emulator, against the interpreter: a prefill of three tokens,
//! then two decode steps on the KV cache the earlier steps left in the carried buffers.
//!
//! Each phase runs twice: with only the graph's outputs (the arena plan reuses memory as on the
//! device) and with every node an output (a wrong kernel is named by its node).

use std::collections::HashMap;
use std::path::Path;

use saturn_codegen::cuda::CudaProgram;
use saturn_codegen::cuda::emulate::Emulator;
use saturn_frontend::{CACHED, Model, Phase, TOKENS, load_model, phase_graph};
use saturn_ir::{Bindings, Graph, ParamSource, SymBindings, Tensor, TensorData, evaluate};
use saturn_passes::{OptimizeOptions, optimize};

const CACHE: &str = "cache.";

fn optimised(model: &Model, phase: Phase) -> Graph {
    let mut options = OptimizeOptions::for_target("h100").unwrap();
    options.symbols = SymBindings::from([(TOKENS.to_string(), 2048), (CACHED.to_string(), 4096)]);
    optimize(&phase_graph(&model.config, phase).unwrap(), &options).unwrap().graph
}

/// `graph` with every non-leaf node also an output `node.<name>`.
fn all_outputs(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    for id in graph.node_ids() {
        let node = graph.node(id);
        if !node.op.is_leaf() {
            g.set_output(format!("node.{}", node.name), id).unwrap();
        }
    }
    g
}

/// Runs `graph` on the emulator and the interpreter with the tokens `ids` and the caches
/// `past`; returns the mismatches (output, op, error) and the caches after it.
fn step(
    graph: &Graph,
    weights: &dyn ParamSource,
    ids: &[i64],
    past: &HashMap<String, Tensor>,
) -> (Vec<String>, HashMap<String, Tensor>) {
    let (s, p) = (ids.len() as u64, past.values().next().map_or(0, |t| t.shape[0]) as u64);
    let program = CudaProgram::generate(graph, CACHE).unwrap();
    let mut emu = Emulator::new(&program, weights).unwrap_or_else(|e| panic!("{}: {e}", graph.name));
    let mut inputs = HashMap::new();
    inputs.insert("input_ids".to_string(), Tensor::i64(vec![ids.len()], ids.to_vec()));
    for (_, node) in graph.graph_inputs() {
        if let Some(t) = past.get(&node.name) {
            emu.set_carried(&node.name, t).unwrap();
            inputs.insert(node.name.clone(), t.clone());
        } else if node.name.starts_with(CACHE) {
            let mut shape = vec![0];
            shape.extend(node.ty.shape[1..].iter().map(|d| d.as_const().unwrap() as usize));
            inputs.insert(node.name.clone(), Tensor::f32(shape, vec![]));
        }
    }
    let got = emu.run(&[(TOKENS, s), (CACHED, p)], &inputs).unwrap_or_else(|e| panic!("{}: {e}", graph.name));
    let symbols = SymBindings::from([(TOKENS.to_string(), s), (CACHED.to_string(), p)]);
    let want = evaluate(graph, &Bindings { symbols, inputs, params: weights }).unwrap();
    let mut wrong = Vec::new();
    for (name, id) in graph.outputs() {
        let op = graph.node(*id).op.name();
        if let Err(m) = close(&got[name], &want[name]) {
            wrong.push(format!("{name} ({op}): {m}"));
        }
    }
    let caches = graph
        .outputs()
        .iter()
        .filter(|(n, _)| n.starts_with(CACHE))
        .map(|(n, _)| (n.clone(), emu.carried(n).unwrap()))
        .collect();
    (wrong, caches)
}

/// Equal shapes, integers and bools exactly, floats within `1e-4 * max(1, |want|)`.
fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, want {:?}", got.shape, want.shape));
    }
    match (&got.data, &want.data) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| if a == b { 0.0 } else { (a - b).abs() / b.abs().max(1.0) })
                .fold(0f32, |m, e| if e.is_nan() || m.is_nan() { f32::NAN } else { m.max(e) });
            if worst <= 1e-4 { Ok(()) } else { Err(format!("differs by {worst} (relative)")) }
        }
        (g, w) if g == w => Ok(()),
        _ => Err("values differ".into()),
    }
}

#[test]
fn fixture_nodes_match_the_interpreter() {
    for fixture in ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"] {
        let model =
            load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(fixture)).unwrap();
        let mut past: HashMap<String, Tensor> = HashMap::new();
        for (phase, ids) in
            [(Phase::Prefill, vec![3i64, 17, 42]), (Phase::Decode, vec![7]), (Phase::Decode, vec![9])]
        {
            let graph = optimised(&model, phase);
            let weights = model.open_weights(&graph).unwrap();
            let (mut wrong, caches) = step(&graph, weights.as_ref(), &ids, &past);
            let (every, _) = step(&all_outputs(&graph), weights.as_ref(), &ids, &past);
            wrong.extend(every.into_iter().map(|w| format!("(every node an output) {w}")));
            assert!(
                wrong.is_empty(),
                "{fixture} {phase:?}: outputs differ from the interpreter:\n{}",
                wrong.join("\n")
            );
            past = caches;
        }
    }
}

/// Decode steps replayed from a recorded graph (grids for the planned capacities, the symbols
/// read from `sym` at replay) give the logits the launches give one by one, bit for bit, and a
/// graph is recorded anew only when a buffer moves.
#[test]
fn decode_steps_replayed_from_a_graph_match_direct_launches() {
    use saturn_codegen::cuda::emulate::HostDevice;
    use saturn_codegen::cuda::exec::ProgramSet;

    let model =
        load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/deepseek-v3-tiny")).unwrap();
    let (prefill, decode) = (optimised(&model, Phase::Prefill), optimised(&model, Phase::Decode));
    let weights = model.open_weights(&prefill).unwrap();
    let decode_weights = model.open_weights(&decode).unwrap();
    let mut sets = Vec::new();
    for graphs in [false, true] {
        let mut set = ProgramSet::new(HostDevice::default());
        let p = set.add(CudaProgram::generate(&prefill, CACHE).unwrap(), weights.as_ref()).unwrap();
        let d = set.add(CudaProgram::generate(&decode, CACHE).unwrap(), decode_weights.as_ref()).unwrap();
        set.use_graphs(d, graphs);
        sets.push((set, p, d));
    }
    let ids = |v: &[i64]| HashMap::from([("input_ids".to_string(), Tensor::i64(vec![v.len()], v.to_vec()))]);
    for (set, p, _) in &mut sets {
        set.run(*p, &[(TOKENS, 3), (CACHED, 0)], &ids(&[3, 17, 42])).unwrap();
    }
    for step in 0..12u64 {
        let token = [(step * 37 + 5) as i64 % 100];
        let logits: Vec<Tensor> = sets
            .iter_mut()
            .map(|(set, _, d)| {
                set.run(*d, &[(TOKENS, 1), (CACHED, 3 + step)], &ids(&token)).unwrap();
                set.output(*d, "logits").unwrap()
            })
            .collect();
        assert_eq!(logits[0], logits[1], "step {step}");
    }
    let (set, _, d) = &sets[1];
    // Capacities and carried buffers double as P grows, so most steps replay.
    assert!(set.replays(*d) >= 8, "{} of 12 steps replayed", set.replays(*d));
    assert_eq!(sets[0].0.replays(sets[0].2), 0);
}

/// A library product in a recorded graph is recorded at the run's sizes (it has no guard
/// against capacity-sized grids): a batch that shrinks while every address stays records anew,
/// and the same sizes again replay.
#[test]
fn recorded_library_products_follow_the_run_sizes() {
    use saturn_codegen::cuda::CudaOptions;
    use saturn_codegen::cuda::emulate::HostDevice;
    use saturn_codegen::cuda::exec::ProgramSet;
    use saturn_ir::{DType, Dim, Op, TensorType};

    let mut g = Graph::new("batched");
    let ty = |dims: [u64; 2]| {
        TensorType::new(DType::F32, [Dim::sym("S"), Dim::from(dims[0] as usize), Dim::from(dims[1] as usize)])
    };
    let a = g.add("a", Op::Input, &[], Some(ty([10, 8]))).unwrap();
    let b = g.add("b", Op::Input, &[], Some(ty([8, 5]))).unwrap();
    let y = g.add("y", Op::MatMul, &[a, b], None).unwrap();
    g.set_output("y", y).unwrap();
    let options = CudaOptions { cublas: true, ..CudaOptions::default() };
    let program = CudaProgram::generate_with(&g, CACHE, options).unwrap();
    assert!(program.launches.iter().all(|l| l.kernel().is_none()), "one library product");
    let mut set = ProgramSet::new(HostDevice::default());
    let index = set.add(program, &HashMap::<String, Tensor>::new()).unwrap();
    set.use_graphs(index, true);
    for (run, s) in [3usize, 2, 2].into_iter().enumerate() {
        let fill = |n: usize, seed: usize| {
            (0..s * n).map(|i| ((i * 7 + seed) % 11) as f32 - 5.0).collect::<Vec<_>>()
        };
        let inputs = HashMap::from([
            ("a".to_string(), Tensor::f32(vec![s, 10, 8], fill(80, run))),
            ("b".to_string(), Tensor::f32(vec![s, 8, 5], fill(40, run + 3))),
        ]);
        set.run(index, &[("S", s as u64)], &inputs).unwrap();
        let bindings = Bindings {
            symbols: SymBindings::from([("S".to_string(), s as u64)]),
            inputs: inputs.clone(),
            params: &HashMap::<String, Tensor>::new(),
        };
        let want = evaluate(&g, &bindings).unwrap().remove("y").unwrap();
        assert_eq!(set.output(index, "y").unwrap(), want, "run {run}, S = {s}");
    }
    assert_eq!(set.replays(index), 1, "S = 3 and the first S = 2 record, the second replays");
}
